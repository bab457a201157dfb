//! Stored message templates: one per notification type, with content per channel, and a
//! new version on every change so that a delivery always renders the version it was
//! created with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    delivery::{rendering, rendering::ChannelContent},
    validation::ValidationErrors,
};

/// Checks that content parses and has what its channel needs.
pub fn check_content(channel: Channel, content: &ChannelContent, field: &str, errors: &mut ValidationErrors) {
    if channel == Channel::Email && content.subject.is_none() {
        errors.add(format!("{field}.subject"), "email needs a subject");
    }
    if content.body.trim().is_empty() {
        errors.add(format!("{field}.body"), "must not be empty");
    }
    if let Err(e) = rendering::check(content) {
        errors.add(format!("{field}.{}", e.part), e.message);
    }
}

/// The body of `PUT /v1/templates/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub channels: BTreeMap<Channel, ChannelContent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTemplate {
    pub template_id: String,
    pub version: u64,
    pub channels: BTreeMap<Channel, ChannelContent>,
    pub updated_at: DateTime<Utc>,
}

impl TemplateInput {
    pub fn validate(&self, template_id: &str) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let id_ok = (1..=64).contains(&template_id.len())
            && template_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
        if !id_ok {
            errors
                .add("template_id", "must be 1 to 64 characters of a-z, 0-9, '_', '-' and '.' (the notification type)");
        }
        if self.channels.is_empty() {
            errors.add("channels", "give content for at least one channel");
        }
        for (channel, content) in &self.channels {
            check_content(*channel, content, &format!("channels.{channel}"), &mut errors);
        }
        errors.into_result()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_template_with_valid_content_per_channel_passes() {
        let t: TemplateInput = serde_json::from_value(json!({"channels": {
            "email": {"subject": "Due {{ date }}", "body": "Pay {{ amount }}", "html": "<p>Pay {{ amount }}</p>"},
            "sms": {"body": "Pay {{ amount }}"}}}))
        .unwrap();
        assert!(t.validate("payment_due").is_ok());
    }

    #[test]
    fn broken_content_and_bad_ids_are_refused() {
        let t: TemplateInput = serde_json::from_value(json!({"channels": {"email": {"body": "{% if %}"}}})).unwrap();
        let mut fields: Vec<String> = t.validate("Payment Due").unwrap_err().0.into_iter().map(|e| e.field).collect();
        fields.sort();
        assert_eq!(fields, ["channels.email.body", "channels.email.subject", "template_id"]);
    }
}
