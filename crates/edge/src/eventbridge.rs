//! The envelope EventBridge puts around an event, as a rule with an SQS target delivers it.
//!
//! Not `aws_lambda_events::eventbridge::EventBridgeEvent`: that one requires `source`,
//! and Herald's queues also carry envelopes without it (events written by tests and
//! tools, the scheduled rules' constant inputs); only `detail-type` and `detail` matter
//! to a consumer.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// An EventBridge event: what it is (`detail-type`), who sent it, and its `detail`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
pub struct Envelope<T = serde_json::Value> {
    pub detail_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub detail: T,
}

impl<T: DeserializeOwned> Envelope<T> {
    /// An envelope from a message body.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// The detail of an event arriving in its envelope (through a bus rule), or the body
/// itself when it was sent to the queue directly. A body is an envelope when it has
/// both `detail-type` and `detail`.
pub fn detail_or_bare<T: DeserializeOwned>(body: &str) -> Result<T, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    if value.get("detail").is_some() && value.get("detail-type").is_some() {
        serde_json::from_value::<Envelope<T>>(value).map(|envelope| envelope.detail)
    } else {
        serde_json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_envelope_needs_its_detail_type_and_detail_only() {
        let full = json!({"version": "0", "id": "e1", "detail-type": "profile.changed", "source": "herald",
            "account": "123456789012", "time": "2026-11-24T10:00:00Z", "region": "eu-west-3", "resources": [],
            "detail": {"user_id": "u1"}});
        let envelope: Envelope = Envelope::parse(&full.to_string()).unwrap();
        assert_eq!((envelope.detail_type.as_str(), envelope.source.as_deref()), ("profile.changed", Some("herald")));
        assert_eq!(envelope.detail["user_id"], "u1");
        let bare: Envelope = Envelope::parse(r#"{"detail-type":"segment.job","detail":{"job":"sweep"}}"#).unwrap();
        assert_eq!(bare.source, None);
        assert!(Envelope::<serde_json::Value>::parse(r#"{"detail-type":"x"}"#).is_err());
        assert!(Envelope::<serde_json::Value>::parse(r#"{"detail":{}}"#).is_err());
    }

    #[test]
    fn a_detail_is_read_from_its_envelope_or_bare() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Job {
            n: u32,
        }
        let wrapped = json!({"detail-type": "notification.sms", "source": "herald", "detail": {"n": 1}});
        assert_eq!(detail_or_bare::<Job>(&wrapped.to_string()).unwrap(), Job { n: 1 });
        assert_eq!(detail_or_bare::<Job>(r#"{"n": 2}"#).unwrap(), Job { n: 2 });
        assert!(detail_or_bare::<Job>(r#"{"detail": {"n": 3}}"#).is_err(), "no detail-type: not an envelope");
    }
}
