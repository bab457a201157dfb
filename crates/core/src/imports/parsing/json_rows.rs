//! JSON Lines files (one profile patch a line) and Pinpoint endpoint exports (one endpoint
//! a line, folded by user).

use std::{
    collections::BTreeMap,
    io::{self, BufRead},
};

use serde::Deserialize;

use crate::profiles::{DeviceToken, Platform, ProfilePatch};

use super::*;

pub(super) struct JsonRows<R> {
    reader: R,
    pub(super) format: Format,
    line: Vec<u8>,
    pub(super) at: ResumeAt,
    done: bool,
}

impl<R: BufRead> JsonRows<R> {
    pub(super) fn new(reader: R, format: Format, from: ResumeAt) -> Self {
        Self { reader, format, line: Vec::new(), at: from, done: false }
    }

    pub(super) fn next_row(&mut self) -> Option<Result<Row, ImportError>> {
        while !self.done {
            let start = self.at;
            let (consumed, cut) = match read_line_capped(&mut self.reader, &mut self.line, MAX_RECORD_BYTES as usize) {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(ImportError::Read(e)));
                }
            };
            if consumed == 0 {
                self.done = true;
                break;
            }
            self.at = ResumeAt { offset: start.offset + consumed as u64, line: start.line + 1 };
            let span = Span { line: start.line, end: self.at };
            if cut {
                // Unlike an unclosed CSV quote, the next line is a clean boundary.
                return Some(Ok(Err(span.error(format!("the line is longer than {MAX_RECORD_BYTES} bytes")))));
            }
            let mut bytes = self.line.as_slice();
            if start.offset == 0 {
                bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
            }
            let bytes = bytes.trim_ascii();
            if bytes.is_empty() {
                continue;
            }
            let parsed = match std::str::from_utf8(bytes) {
                Err(_) => Err("the line is not valid UTF-8".to_owned()),
                Ok(text) if self.format == Format::PinpointExport => endpoint_patch(text),
                Ok(text) => profile_patch(text),
            };
            return Some(Ok(span.row(parsed)));
        }
        None
    }
}

/// Reads one line (through its '\n') into `line`, keeping at most `cap` bytes of it but
/// consuming it all. Returns the bytes consumed and whether the line was cut.
fn read_line_capped<R: BufRead>(reader: &mut R, line: &mut Vec<u8>, cap: usize) -> io::Result<(usize, bool)> {
    line.clear();
    let (mut consumed, mut cut) = (0, false);
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed, cut));
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let room = cap.saturating_sub(line.len());
        cut |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        reader.consume(n);
        consumed += n;
        if done {
            return Ok((consumed, cut));
        }
    }
}

/// Serde's message, prefixed by the path to the faulty value when there is one.
fn describe_json(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if e.inner().is_syntax() || e.inner().is_eof() {
        format!("not a JSON object: {}", e.inner())
    } else if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

fn parse_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(describe_json)?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// A line in Herald's own shape: `{"user_id": "...", ...the body of PUT /v1/users/{id}}`.
fn profile_patch(text: &str) -> Result<(String, ProfilePatch), String> {
    /// Second, cheap pass for the id: the patch accepts and ignores `user_id` (so that a
    /// profile read back from the API can be written as it is).
    #[derive(Deserialize)]
    struct UserIdOnly {
        user_id: Option<serde_json::Value>,
    }
    let patch: ProfilePatch = parse_json(text)?;
    let user_id = match serde_json::from_str::<UserIdOnly>(text).map_err(|e| e.to_string())?.user_id {
        Some(serde_json::Value::String(id)) => id,
        // Warehouse exports often write numeric ids.
        Some(serde_json::Value::Number(n)) if !n.is_f64() => n.to_string(),
        None | Some(serde_json::Value::Null) => return Err("user_id: missing; every line names its user".into()),
        Some(_) => return Err("user_id: must be a string".into()),
    };
    Ok((user_id, patch))
}

/// The fields of an exported Pinpoint endpoint that Herald uses; the others are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Endpoint {
    channel_type: Option<String>,
    address: Option<String>,
    opt_out: Option<String>,
    endpoint_status: Option<String>,
    attributes: Option<BTreeMap<String, Vec<String>>>,
    user: Option<EndpointUser>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointUser {
    user_id: Option<String>,
    user_attributes: Option<BTreeMap<String, Vec<String>>>,
}

/// Where an endpoint's address goes in a profile.
enum Channel {
    Email,
    Sms,
    Push(Platform),
    /// A Pinpoint channel Herald has no contact for: the endpoint brings only attributes.
    Unsupported,
}

impl Channel {
    fn parse(channel_type: &str) -> Result<Channel, String> {
        Ok(match channel_type.to_ascii_uppercase().as_str() {
            "EMAIL" => Channel::Email,
            "SMS" => Channel::Sms,
            "APNS" => Channel::Push(Platform::Apns),
            "APNS_SANDBOX" => Channel::Push(Platform::ApnsSandbox),
            "GCM" => Channel::Push(Platform::Fcm),
            "VOICE" | "CUSTOM" | "ADM" | "BAIDU" | "APNS_VOIP" | "APNS_VOIP_SANDBOX" | "IN_APP" | "PUSH" => {
                Channel::Unsupported
            }
            _ => return Err(format!("unknown ChannelType {channel_type:?}")),
        })
    }
}

/// One exported endpoint as a patch of its user's profile.
fn endpoint_patch(text: &str) -> Result<(String, ProfilePatch), String> {
    let endpoint: Endpoint = parse_json(text)?;
    let channel = Channel::parse(endpoint.channel_type.as_deref().ok_or("no ChannelType")?)?;
    let user = endpoint.user.unwrap_or_default();
    let user_id = user.user_id.filter(|id| !id.is_empty()).ok_or("no User.UserId: Herald profiles are per user")?;

    let mut patch = ProfilePatch::default();
    // An opted-out or inactive endpoint must not become a live contact; its user and
    // attributes still migrate.
    let opted_out = endpoint.opt_out.as_deref().is_some_and(|o| o.eq_ignore_ascii_case("ALL"));
    let inactive = endpoint.endpoint_status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("INACTIVE"));
    let address = endpoint.address.as_deref().map(str::trim).filter(|a| !a.is_empty());
    if let Some(address) = address
        && !opted_out
        && !inactive
    {
        let address = address.to_owned();
        match channel {
            Channel::Email => patch.email = Some(Some(address)),
            Channel::Sms => patch.phone = Some(Some(address)),
            Channel::Push(platform) => patch.device_tokens = Some(Some(vec![DeviceToken { token: address, platform }])),
            Channel::Unsupported => {}
        }
    }
    // Endpoint attributes first, user attributes over them: on a clash the user's win.
    // Empty lists are left out: an export never means "remove".
    let attributes: BTreeMap<String, Option<Vec<String>>> = endpoint
        .attributes
        .into_iter()
        .flatten()
        .chain(user.user_attributes.into_iter().flatten())
        .filter(|(_, values)| !values.is_empty())
        .map(|(name, values)| (name, Some(values)))
        .collect();
    if !attributes.is_empty() {
        patch.attributes = Some(Some(attributes));
    }
    Ok((user_id, patch))
}
