//! The body of `POST /v1/events`, `{"events":[…]}`, framed around the events' JSON, each
//! serialised once when queued: the batcher measures it, the transport writes it.

const BODY_PREFIX: &[u8] = b"{\"events\":[";
const BODY_SUFFIX: &[u8] = b"]}";

/// The body's length for `count` events whose JSON totals `bytes`.
pub(crate) fn body_len(count: usize, bytes: usize) -> usize {
    BODY_PREFIX.len() + bytes + count.saturating_sub(1) + BODY_SUFFIX.len()
}

/// The body carrying these events' JSON.
pub(crate) fn events_body<'a>(jsons: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = BODY_PREFIX.to_vec();
    for (i, json) in jsons.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.extend_from_slice(BODY_SUFFIX);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_len_counts_the_commas() {
        assert_eq!(body_len(1, 5), BODY_PREFIX.len() + 5 + BODY_SUFFIX.len());
        assert_eq!(body_len(3, 5), BODY_PREFIX.len() + 5 + 2 + BODY_SUFFIX.len());
    }
}
