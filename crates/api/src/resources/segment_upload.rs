//! Segment uploads: a static segment's members from a file of user ids, sent as
//! `text/csv` or `text/plain` to `POST /v1/segments` and named by the query, as Pinpoint
//! imported segments were.
//!
//! The file lists one user id per line. A first line that is a header (`user_id`, `Id` or
//! `User.UserId`, any case) is skipped; in a file of several columns that header names
//! the column of the ids. A UTF-8 byte order mark, CRLF line ends, blank lines and spaces
//! around a field are tolerated. Fields follow CSV quoting, so an id holding a comma or a
//! quote is written quoted (`"a,b"`).

use herald_core::{
    segments::{MAX_STATIC_MEMBERS, SegmentInput, SegmentKind},
    validation,
    validation::ValidationErrors,
};
use lambda_http::aws_lambda_events::query_map::QueryMap;

use crate::problem::Problem;

/// Header names of the user id column (compared without regard to case).
pub const ID_HEADERS: [&str; 3] = ["user_id", "id", "user.userid"];

/// Lines at fault reported in one answer; the rest are counted.
const MAX_REPORTED: usize = 100;

fn is_id_header(field: &str) -> bool {
    ID_HEADERS.iter().any(|h| field.eq_ignore_ascii_case(h))
}

/// The id (if the query chooses one) and definition of the static segment a file of user
/// ids makes: named by `?name=` (required), described by `?description=`; every fault of
/// the name and of the file's lines in one 400.
pub fn segment(body: &[u8], query: &QueryMap) -> Result<(Option<String>, SegmentInput), Problem> {
    let mut errors = ValidationErrors::default();
    let name = query.first("name").filter(|n| !n.trim().is_empty());
    if name.is_none() {
        errors.add("name", "is required: name the imported segment with the name query parameter");
    }
    let user_ids = match user_ids(body) {
        Ok(ids) => ids,
        Err(faults) => {
            errors.0.extend(faults.0);
            Vec::new()
        }
    };
    errors.into_result()?;
    let input = SegmentInput {
        name: name.unwrap_or_default().to_owned(),
        description: query.first("description").map(str::to_owned),
        kind: SegmentKind::Static,
        rule: None,
        user_ids: Some(user_ids),
    };
    Ok((query.first("segment_id").map(str::to_owned), input))
}

/// The user ids a file lists, in file order (repeats kept; the segment is a set), or
/// every line at fault, each named `line N` (1-based, as an editor counts them).
pub fn user_ids(body: &[u8]) -> Result<Vec<String>, ValidationErrors> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(body);
    // The reader's own line count misses the blank lines it skips, and a record's
    // position is where the reader stood before skipping them: lines are counted here,
    // from the first byte of the record (offsets only grow).
    let mut counted = (0usize, 1u64);
    let mut line_at = |byte: u64| {
        let mut byte = (byte as usize).min(body.len());
        while body.get(byte).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
            byte += 1;
        }
        let (from, line) = counted;
        counted = (byte.max(from), line + body[from.min(byte)..byte].iter().filter(|b| **b == b'\n').count() as u64);
        counted.1
    };
    let mut errors = ValidationErrors::default();
    let mut faults = 0usize;
    let mut fault = |errors: &mut ValidationErrors, line: u64, message: String| {
        faults += 1;
        if faults <= MAX_REPORTED {
            errors.add(format!("line {line}"), message);
        }
    };
    // The column of the ids and whether the file has a header; decided by the first
    // line that is not blank.
    let mut layout: Option<(usize, bool)> = None;
    let mut ids = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| line_at(p.byte()));
                if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    fault(&mut errors, line, "is not valid UTF-8".into());
                    continue;
                }
                fault(&mut errors, line, format!("cannot be read: {e}"));
                break;
            }
        }
        let line = record.position().map_or(0, |p| line_at(p.byte()));
        if record.iter().all(str::is_empty) {
            continue;
        }
        let (column, headed) = match layout {
            Some(layout) => layout,
            None => match record.iter().position(is_id_header) {
                Some(column) => {
                    layout = Some((column, true));
                    continue;
                }
                None if record.iter().filter(|f| !f.is_empty()).count() > 1 => {
                    fault(
                        &mut errors,
                        line,
                        "holds several columns but is not a header: a file of several columns starts with a header \
                         naming the user id column (user_id, Id or User.UserId)"
                            .into(),
                    );
                    break;
                }
                None => *layout.insert((0, false)),
            },
        };
        if !headed && record.iter().skip(1).any(|f| !f.is_empty()) {
            fault(&mut errors, line, "holds several fields: quote an id that holds a comma (\"a,b\")".into());
            continue;
        }
        let id = record.get(column).unwrap_or_default();
        if id.is_empty() {
            fault(&mut errors, line, "has no user id".into());
            continue;
        }
        match validation::user_id(id) {
            Ok(()) => ids.push(id.to_owned()),
            Err(message) => fault(&mut errors, line, format!("the user id {message}")),
        }
    }
    if faults > MAX_REPORTED {
        errors.add("body", format!("{} more lines are at fault", faults - MAX_REPORTED));
    }
    if faults == 0 && ids.is_empty() {
        errors.add("body", "lists no user ids");
    }
    if ids.len() > MAX_STATIC_MEMBERS {
        errors.add("body", format!("may list at most {MAX_STATIC_MEMBERS} user ids"));
    }
    errors.into_result().map(|()| ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: ValidationErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn one_id_per_line_with_bom_crlf_header_and_blank_lines() {
        let body = b"\xEF\xBB\xBFUser_Id\r\n\r\nu1\r\n  u2  \r\n\r\nana@example.com\r\n";
        assert_eq!(user_ids(body).unwrap(), ["u1", "u2", "ana@example.com"]);
    }

    #[test]
    fn a_file_without_header_lists_ids_from_its_first_line() {
        assert_eq!(user_ids(b"a\nb\n").unwrap(), ["a", "b"]);
        assert_eq!(user_ids(b"\n\nId\nb").unwrap(), ["b"]);
    }

    #[test]
    fn the_header_names_the_id_column_of_a_file_of_several_columns() {
        let body = b"email,User.UserId,plan\nx@example.com,u1,pro\n,u2,\n";
        assert_eq!(user_ids(body).unwrap(), ["u1", "u2"]);
    }

    #[test]
    fn quoted_ids_may_hold_commas() {
        assert_eq!(user_ids(b"user_id\n\"a,b\"\n").unwrap(), ["a,b"]);
    }

    #[test]
    fn bad_lines_are_named_by_their_line_number() {
        let body = "user_id\nok\nbad/id\n\na\u{1}b\n".as_bytes();
        assert_eq!(fields(user_ids(body).unwrap_err()), ["line 3", "line 5"]);
        assert_eq!(fields(user_ids(b"u1\nu2,u3\n").unwrap_err()), ["line 2"]);
        assert_eq!(fields(user_ids(b"a,b\nc,d\n").unwrap_err()), ["line 1"]);
        assert_eq!(fields(user_ids(b"id,email\n,x@example.com\n").unwrap_err()), ["line 2"]);
        assert_eq!(fields(user_ids(&[b'a', b'\n', 0xff, b'\n', b'b']).unwrap_err()), ["line 2"]);
        assert_eq!(fields(user_ids(b"\r\n\r\nid\r\n\r\n\r\na\r\n\r\nb/c\r\n").unwrap_err()), ["line 8"]);
        assert_eq!(fields(user_ids(b"\xEF\xBB\xBF\n\"a\nb\"\nc/d\n").unwrap_err()), ["line 2", "line 4"]);
        let long = format!("{}\n", "x".repeat(129));
        assert_eq!(fields(user_ids(long.as_bytes()).unwrap_err()), ["line 1"]);
    }

    #[test]
    fn a_file_without_ids_is_refused() {
        assert_eq!(fields(user_ids(b"").unwrap_err()), ["body"]);
        assert_eq!(fields(user_ids(b"\xEF\xBB\xBFuser_id\r\n\r\n").unwrap_err()), ["body"]);
    }

    #[test]
    fn at_most_a_hundred_faults_are_listed_and_the_rest_counted() {
        let body = "a/b\n".repeat(150);
        let errors = user_ids(body.as_bytes()).unwrap_err();
        assert_eq!(errors.0.len(), 101);
        assert_eq!(errors.0[100].field, "body");
        assert_eq!(errors.0[100].message, "50 more lines are at fault");
    }

    #[test]
    fn more_ids_than_a_request_may_hold_are_refused() {
        let body: String = (0..=MAX_STATIC_MEMBERS).map(|i| format!("u{i}\n")).collect();
        assert_eq!(fields(user_ids(body.as_bytes()).unwrap_err()), ["body"]);
    }
}
