//! S3 bucket notifications as the importer's queue receives them from real S3.
//!
//! moto sends bucket notifications to SQS itself, but its bodies lack fields real S3 sends
//! and `aws_lambda_events::s3::S3Event` requires (`userIdentity`, `requestParameters`, the
//! object's `sequencer`…), encode keys differently (`/` as `%2F`), and come after an
//! `s3:TestEvent` message. [`lambda_body`] turns each body into the one real S3 would have
//! sent, so the importer only ever sees what it would see deployed.

use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// What stands for the requester and the bucket owner in completed events.
const PRINCIPAL_ID: &str = "AWS:AIDAHERALDLOCALSTACK";
const OWNER_ID: &str = "A3HERALDLOCALOWNER";

/// The body real S3 would have sent for a notification `body` from moto:
/// - `None` for an `s3:TestEvent`, which is dropped and never reaches the handler;
/// - S3 event records (`{"Records": [...]}`) that lack what real S3 sends, completed;
/// - anything else (e.g. the importer's own `{"continue_job": …}`, or a record that is
///   already complete), unchanged.
pub fn lambda_body(body: &str) -> Option<String> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(body) else {
        return Some(body.to_owned());
    };
    if message.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return None;
    }
    let Some(Value::Array(records)) = message.get_mut("Records") else {
        return Some(body.to_owned());
    };
    let mut changed = false;
    for record in records.iter_mut() {
        if let Value::Object(record) = record
            && record.get("eventSource").and_then(Value::as_str) == Some("aws:s3")
            && !record.contains_key("userIdentity")
        {
            complete(record);
            changed = true;
        }
    }
    if changed { Some(Value::Object(message).to_string()) } else { Some(body.to_owned()) }
}

/// Completes one record of moto's in place, in the shape of
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>.
fn complete(record: &mut Map<String, Value>) {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
    let s3 = record.get("s3").cloned().unwrap_or_default();
    let bucket_name = text(s3.pointer("/bucket/name"));
    let object = s3.get("object").cloned().unwrap_or_default();
    // moto writes keys with Python's quote_plus, which also encodes `/`.
    let key = decode_key(&text(object.get("key")));
    let etag = text(object.get("eTag")).trim_matches('"').to_owned();
    let size = object.get("size").and_then(Value::as_i64).unwrap_or(0);
    let event_time = text(record.get("eventTime"));
    let sequencer = match object.get("sequencer").and_then(Value::as_str) {
        Some(sequencer) => sequencer.to_owned(),
        None => sequencer_for(&event_time, &bucket_name, &key, &etag),
    };
    let request_id: String = hex::encode(Sha256::digest(format!("request\n{sequencer}\n{key}")))
        .to_ascii_uppercase()
        .chars()
        .take(16)
        .collect();

    record.insert("eventVersion".into(), record.get("eventVersion").cloned().unwrap_or_else(|| json!("2.1")));
    record.entry("awsRegion").or_insert_with(|| json!("us-east-1"));
    record.entry("eventName").or_insert_with(|| json!("ObjectCreated:Put"));
    record.insert("userIdentity".into(), json!({"principalId": PRINCIPAL_ID}));
    record.entry("requestParameters").or_insert_with(|| json!({"sourceIPAddress": "127.0.0.1"}));
    record.entry("responseElements").or_insert_with(|| {
        json!({
            "x-amz-request-id": request_id,
            "x-amz-id-2": format!("{request_id}/herald-local/{}", &sequencer),
        })
    });
    let mut object_out = json!({
        "key": encode_key(&key),
        "size": size,
        "eTag": etag,
        "sequencer": sequencer,
    });
    if let Some(version) = object.get("versionId").filter(|v| !v.is_null()) {
        object_out["versionId"] = version.clone();
    }
    let bucket_arn = match s3.pointer("/bucket/arn").and_then(Value::as_str) {
        Some(arn) => arn.to_owned(),
        None => format!("arn:aws:s3:::{bucket_name}"),
    };
    record.insert(
        "s3".into(),
        json!({
            "s3SchemaVersion": s3.get("s3SchemaVersion").cloned().unwrap_or_else(|| json!("1.0")),
            "configurationId": s3.get("configurationId").cloned().unwrap_or_else(|| json!("herald-local")),
            "bucket": {
                "name": bucket_name,
                "ownerIdentity": {"principalId": OWNER_ID},
                "arn": bucket_arn,
            },
            "object": object_out,
        }),
    );
}

/// A sequencer for a write moto did not give one: S3's are hexadecimal and grow with
/// each write of a key. The write's time (in milliseconds) comes first, so later writes
/// compare greater; a digest of the bucket, key and ETag follows, so two writes in one
/// millisecond differ unless they wrote the same bytes to the same key. A redelivered
/// notification gives the same sequencer.
fn sequencer_for(event_time: &str, bucket: &str, key: &str, etag: &str) -> String {
    let millis = DateTime::parse_from_rfc3339(event_time)
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .unwrap_or_default()
        .max(0);
    let digest = hex::encode(Sha256::digest(format!("{bucket}\n{key}\n{etag}\n{event_time}")));
    format!("{millis:012X}{}", digest[..8].to_ascii_uppercase())
}

/// A key as `application/x-www-form-urlencoded` writes it (`+` for a space) decoded.
fn decode_key(encoded: &str) -> String {
    percent_decode_str(&encoded.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// A key URL-encoded as S3 writes it in event notifications: form encoding (a space is
/// `+`), with `/` left as it is.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::s3::S3Event;

    use super::*;

    /// A body as moto 5.2.5 sends it for a PUT of `imports/big users (1).csv`.
    fn moto_body(key: &str, time: &str, etag: &str) -> String {
        json!({"Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": time,
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "ImportsBucket-0",
                "bucket": {"name": "t1-importsbucket", "arn": "arn:aws:s3:::t1-importsbucket"},
                "object": {"key": key, "size": 1234, "eTag": etag},
            },
        }]})
        .to_string()
    }

    const KEY: &str = "imports%2Fbig+users+%281%29.csv";
    const TIME: &str = "2026-11-24T09:00:00.123Z";
    const ETAG: &str = "9b2cf535f27731c974343645a3985328";

    #[test]
    fn a_moto_notification_becomes_the_event_real_s3_sends() {
        let body = lambda_body(&moto_body(KEY, TIME, ETAG)).expect("a real notification");
        let value: Value = serde_json::from_str(&body).unwrap();
        let record = &value["Records"][0];
        assert_eq!(record["eventSource"], "aws:s3");
        assert_eq!(record["eventName"], "ObjectCreated:Put");
        assert_eq!(record["eventTime"], TIME);
        assert_eq!(record["awsRegion"], "us-east-1");
        assert!(record["userIdentity"]["principalId"].is_string());
        assert_eq!(record["requestParameters"]["sourceIPAddress"], "127.0.0.1");
        assert!(record["responseElements"]["x-amz-request-id"].is_string());
        let s3 = &record["s3"];
        assert_eq!(s3["configurationId"], "ImportsBucket-0");
        assert_eq!(s3["bucket"]["name"], "t1-importsbucket");
        assert_eq!(s3["bucket"]["arn"], "arn:aws:s3:::t1-importsbucket");
        assert!(s3["bucket"]["ownerIdentity"]["principalId"].is_string());
        // As S3 encodes keys: `/` stays, a space is `+`, parentheses are escaped.
        assert_eq!(s3["object"]["key"], "imports/big+users+%281%29.csv");
        assert_eq!(s3["object"]["size"], 1234);
        assert_eq!(s3["object"]["eTag"], ETAG);
        let sequencer = s3["object"]["sequencer"].as_str().unwrap();
        assert!(!sequencer.is_empty() && sequencer.chars().all(|c| c.is_ascii_hexdigit()), "{sequencer}");

        let event: S3Event = serde_json::from_str(&body).expect("an S3Event");
        let object = &event.records[0].s3.object;
        assert_eq!(object.key.as_deref(), Some("imports/big+users+%281%29.csv"));
        assert_eq!(object.size, Some(1234));
        assert_eq!(object.sequencer.as_deref(), Some(sequencer));
        assert_eq!(event.records[0].event_time.to_rfc3339(), "2026-11-24T09:00:00.123+00:00");
        assert_eq!(event.records[0].s3.bucket.name.as_deref(), Some("t1-importsbucket"));
    }

    #[test]
    fn moto_bodies_do_not_deserialize_as_they_are() {
        assert!(serde_json::from_str::<S3Event>(&moto_body(KEY, TIME, ETAG)).is_err());
    }

    #[test]
    fn the_test_event_is_dropped() {
        let test_event =
            r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-24T09:00:00.000Z", "Bucket": "b"}"#;
        assert_eq!(lambda_body(test_event), None);
    }

    #[test]
    fn continuation_messages_and_other_bodies_pass_unchanged() {
        for body in [r#"{"continue_job":"imp_0123456789abcdef01234567"}"#, "not json", "[1,2]", r#"{"Records":[]}"#] {
            assert_eq!(lambda_body(body).as_deref(), Some(body));
        }
        let complete = lambda_body(&moto_body(KEY, TIME, ETAG)).unwrap();
        assert_eq!(lambda_body(&complete), Some(complete), "a complete event is kept as it is");
    }

    #[test]
    fn sequencers_name_one_write_each_and_grow_with_time() {
        let sequencer = |key: &str, time: &str, etag: &str| {
            let body: Value = serde_json::from_str(&lambda_body(&moto_body(key, time, etag)).unwrap()).unwrap();
            body["Records"][0]["s3"]["object"]["sequencer"].as_str().unwrap().to_owned()
        };
        let first = sequencer(KEY, TIME, ETAG);
        assert_eq!(sequencer(KEY, TIME, ETAG), first, "a redelivered notification names the same write");
        let rewritten = sequencer(KEY, "2026-11-24T09:00:01.000Z", ETAG);
        assert_ne!(rewritten, first, "writing the same bytes again is another write");
        assert!(rewritten > first, "{rewritten} follows {first}");
        assert_ne!(sequencer(KEY, TIME, "0cc175b9c0f1b6a831c399e269772661"), first);
        assert_ne!(sequencer("imports%2Fother.csv", TIME, ETAG), first);
    }

    #[test]
    fn keys_are_encoded_as_s3_encodes_them() {
        assert_eq!(encode_key("imports/a b/ü=1&x.csv.gz"), "imports/a+b/%C3%BC%3D1%26x.csv.gz");
        assert_eq!(decode_key("imports%2Fa+b%2F%C3%BC%3D1%26x.csv.gz"), "imports/a b/ü=1&x.csv.gz");
        assert_eq!(decode_key(&encode_key("imports/1+1 (a).csv")), "imports/1+1 (a).csv");
    }
}
