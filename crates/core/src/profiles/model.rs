//! User profiles, Pinpoint identifyUser style, and the patch that merges into them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, de::IgnoredAny};

use crate::{
    validation,
    validation::{MAX_ATTRIBUTES, MAX_DEVICE_TOKENS, MAX_EXTERNAL_CHANNELS, ValidationErrors},
};

/// Attribute name → its values. Values are a set: order and repeats carry no meaning,
/// and matching is by exact membership (`"1"` never matches `"11"`).
pub type Attributes = BTreeMap<String, BTreeSet<String>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: String,
    /// Grows by one with every effective change; the store's optimistic concurrency key.
    pub version: u64,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub attributes: Attributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// IANA time zone name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub device_tokens: Vec<DeviceToken>,
    #[serde(default)]
    pub external_channels: Vec<ExternalChannel>,
}

/// [`Profile::stored_bytes`] of a profile given by its parts, so a merge can check the
/// result before it writes anything.
fn stored_bytes(
    user_id: &str,
    attributes: &Attributes,
    texts: [Option<&String>; 3],
    tokens: &[DeviceToken],
    channels: &[ExternalChannel],
) -> usize {
    const FIELD: usize = 16;
    let attributes: usize = attributes
        .iter()
        .map(|(name, values)| FIELD + name.len() + values.iter().map(|v| 4 + v.len()).sum::<usize>())
        .sum();
    let texts: usize = texts.iter().flatten().map(|v| FIELD + v.len()).sum();
    let tokens: usize = tokens.iter().map(|t| 2 * FIELD + t.token.len()).sum();
    let channels: usize = channels.iter().map(|c| 3 * FIELD + c.platform.len() + c.url.len()).sum();
    8 * FIELD + user_id.len() + attributes + texts + tokens + channels
}

/// The most a profile may hold ([`Profile::stored_bytes`]): every job that carries profiles
/// or their contacts stays within AWS's limits (a DynamoDB item, a transaction of an
/// import's writes, a channel message of many recipients).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
const _: () = assert!(MAX_PROFILE_BYTES * 2 < crate::limits::dynamodb::ITEM_BYTES);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Apns,
    ApnsSandbox,
    Fcm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceToken {
    pub token: String,
    pub platform: Platform,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalChannel {
    /// e.g. `slack`.
    pub platform: String,
    /// An https URL, such as a Slack incoming webhook.
    pub url: String,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// A partial update. For every field: absent keeps the current value, `null` removes it,
/// a value replaces it (a list replaces the whole list). In `attributes`, each name given
/// replaces that attribute (`null` or `[]` removes it) and names not given stay.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    #[serde(default, deserialize_with = "present")]
    pub attributes: Option<Option<BTreeMap<String, Option<Vec<String>>>>>,
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub device_tokens: Option<Option<Vec<DeviceToken>>>,
    #[serde(default, deserialize_with = "present")]
    pub external_channels: Option<Option<Vec<ExternalChannel>>>,
    // Read-only fields of a profile: accepted and ignored, so that what GET returns can be
    // edited and PUT back as it is.
    #[serde(default, rename = "user_id")]
    _user_id: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
}

/// Tells a field given as `null` (Some(None)) from an absent one (None, via `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// What a merge changed; empty means the write is a no-op.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub attributes: Vec<String>,
    pub fields: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.fields.is_empty()
    }
}

impl Profile {
    /// An upper bound of the profile's size as stored and carried: every name, value and
    /// contact in UTF-8 bytes, with room for the JSON or DynamoDB framing around each.
    pub fn stored_bytes(&self) -> usize {
        stored_bytes(
            &self.user_id,
            &self.attributes,
            [&self.email, &self.phone, &self.timezone].map(Option::as_ref),
            &self.device_tokens,
            &self.external_channels,
        )
    }

    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            version: 0,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            attributes: Attributes::new(),
            email: None,
            phone: None,
            timezone: None,
            device_tokens: Vec::new(),
            external_channels: Vec::new(),
        }
    }
}

impl ProfilePatch {
    /// Checks every field the patch sets and brings it to canonical form (phone numbers to
    /// E.164, duplicate tokens and channels folded). Returns every fault, not just the first.
    pub fn validate(mut self) -> Result<ValidPatch, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if let Some(Some(attributes)) = &self.attributes {
            if attributes.len() > MAX_ATTRIBUTES {
                errors.add("attributes", format!("at most {MAX_ATTRIBUTES} attributes are allowed"));
            }
            // Field names are built only for faults: an import validates millions of values.
            for (name, values) in attributes {
                if let Err(message) = validation::attribute_name(name) {
                    errors.add(format!("attributes.{name}"), message);
                }
                for (i, value) in values.iter().flatten().enumerate() {
                    if let Err(message) = validation::attribute_value(value) {
                        errors.add(format!("attributes.{name}[{i}]"), message);
                    }
                }
            }
        }
        if let Some(Some(email)) = &self.email {
            errors.check("email", validation::email(email));
        }
        if let Some(Some(phone)) = &mut self.phone {
            match validation::phone_e164(phone) {
                Ok(e164) => *phone = e164,
                Err(message) => errors.add("phone", message),
            }
        }
        if let Some(Some(tz)) = &self.timezone {
            errors.check("timezone", validation::timezone(tz));
        }
        if let Some(Some(tokens)) = &mut self.device_tokens {
            if tokens.len() > MAX_DEVICE_TOKENS {
                errors.add("device_tokens", format!("at most {MAX_DEVICE_TOKENS} device tokens are allowed"));
            }
            for (i, t) in tokens.iter().enumerate() {
                let check = match t.platform {
                    Platform::Apns | Platform::ApnsSandbox => validation::apns_token(&t.token),
                    Platform::Fcm => validation::fcm_token(&t.token),
                };
                errors.check(format!("device_tokens[{i}].token"), check);
            }
            dedup_by_key(tokens, |t| t.token.clone());
        }
        if let Some(Some(channels)) = &mut self.external_channels {
            if channels.len() > MAX_EXTERNAL_CHANNELS {
                errors
                    .add("external_channels", format!("at most {MAX_EXTERNAL_CHANNELS} external channels are allowed"));
            }
            for (i, c) in channels.iter().enumerate() {
                errors.check(format!("external_channels[{i}].platform"), validation::channel_platform(&c.platform));
                errors.check(format!("external_channels[{i}].url"), validation::https_url(&c.url));
            }
            dedup_by_key(channels, |c| (c.platform.clone(), c.url.clone()));
        }
        errors.into_result().map(|()| ValidPatch(self))
    }
}

/// Keeps the last occurrence of each key, in the order of those last occurrences.
fn dedup_by_key<T, K: Ord>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut seen = BTreeSet::new();
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items.drain(..).rev() {
        if seen.insert(key(&item)) {
            kept.push(item);
        }
    }
    kept.reverse();
    *items = kept;
}

/// A patch whose fields passed validation; the only kind that can be merged.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPatch(ProfilePatch);

impl ValidPatch {
    /// The patch in canonical form (what was validated, normalised).
    pub fn into_patch(self) -> ProfilePatch {
        self.0
    }

    /// A patch folded from validated patches by replacing fields (the importer's rows of one
    /// user), which keeps every field valid: the limits that depend on the result are
    /// checked by [`ValidPatch::merge_into`] anyway.
    pub(crate) fn from_validated_rows(patch: ProfilePatch) -> Self {
        Self(patch)
    }

    /// Applies the patch to `profile` and says what changed. Checks the limits that
    /// depend on the merged result (the attribute count, the total size) before touching anything.
    pub fn merge_into(&self, profile: &mut Profile) -> Result<Changes, ValidationErrors> {
        let patch = &self.0;
        let mut attributes = profile.attributes.clone();
        match &patch.attributes {
            None => {}
            Some(None) => attributes.clear(),
            Some(Some(given)) => {
                for (name, values) in given {
                    let values: BTreeSet<String> = values.iter().flatten().cloned().collect();
                    if values.is_empty() {
                        attributes.remove(name);
                    } else {
                        attributes.insert(name.clone(), values);
                    }
                }
            }
        }
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(ValidationErrors::single(
                "attributes",
                format!(
                    "a profile holds at most {MAX_ATTRIBUTES} attributes; this update would make {}",
                    attributes.len()
                ),
            ));
        }

        let bytes = stored_bytes(
            &profile.user_id,
            &attributes,
            [
                after(&patch.email, &profile.email),
                after(&patch.phone, &profile.phone),
                after(&patch.timezone, &profile.timezone),
            ],
            after_list(&patch.device_tokens, &profile.device_tokens),
            after_list(&patch.external_channels, &profile.external_channels),
        );
        if bytes > MAX_PROFILE_BYTES {
            return Err(ValidationErrors::single(
                "profile",
                format!("a profile holds at most {MAX_PROFILE_BYTES} bytes; this update would make {bytes}"),
            ));
        }

        let mut changes = Changes { attributes: changed_names(&profile.attributes, &attributes), fields: Vec::new() };
        profile.attributes = attributes;
        set_field(&mut profile.email, &patch.email, "email", &mut changes);
        set_field(&mut profile.phone, &patch.phone, "phone", &mut changes);
        set_field(&mut profile.timezone, &patch.timezone, "timezone", &mut changes);
        set_list(&mut profile.device_tokens, &patch.device_tokens, "device_tokens", &mut changes);
        set_list(&mut profile.external_channels, &patch.external_channels, "external_channels", &mut changes);
        Ok(changes)
    }
}

/// A field once a patch is applied: the patch's value if it gives one, else the current.
fn after<'a, T>(given: &'a Option<Option<T>>, current: &'a Option<T>) -> Option<&'a T> {
    given.as_ref().map_or(current.as_ref(), Option::as_ref)
}

fn after_list<'a, T>(given: &'a Option<Option<Vec<T>>>, current: &'a [T]) -> &'a [T] {
    given.as_ref().map_or(current, |v| v.as_deref().unwrap_or_default())
}

fn changed_names(before: &Attributes, after: &Attributes) -> Vec<String> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names.into_iter().filter(|n| before.get(*n) != after.get(*n)).cloned().collect()
}

fn set_field<T: Clone + PartialEq>(
    current: &mut Option<T>,
    given: &Option<Option<T>>,
    name: &str,
    changes: &mut Changes,
) {
    if let Some(new) = given
        && current != new
    {
        *current = new.clone();
        changes.fields.push(name.to_owned());
    }
}

fn set_list<T: Clone + PartialEq>(
    current: &mut Vec<T>,
    given: &Option<Option<Vec<T>>>,
    name: &str,
    changes: &mut Changes,
) {
    if let Some(new) = given {
        let new = new.clone().unwrap_or_default();
        if *current != new {
            *current = new;
            changes.fields.push(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with_attributes(count: usize, values: usize) -> ProfilePatch {
        let attributes: serde_json::Map<_, _> = (0..count)
            .map(|i| (format!("a{i}"), json!((0..values).map(|v| format!("{v:0>90}")).collect::<Vec<_>>())))
            .collect();
        serde_json::from_value(json!({ "attributes": attributes })).unwrap()
    }

    #[test]
    fn an_update_that_would_outgrow_the_profile_size_is_refused_and_changes_nothing() {
        let mut profile = Profile::new("u1");
        with_attributes(100, 5).validate().unwrap().merge_into(&mut profile).unwrap();
        let before = profile.clone();
        let errors = with_attributes(200, 5).validate().unwrap().merge_into(&mut profile).unwrap_err();
        assert_eq!(errors.0[0].field, "profile");
        assert!(errors.0[0].message.contains(&MAX_PROFILE_BYTES.to_string()), "{}", errors.0[0].message);
        assert_eq!(profile, before);
    }

    #[test]
    fn a_profile_near_the_size_limit_is_kept() {
        let mut profile = Profile::new("u1");
        with_attributes(100, 6).validate().unwrap().merge_into(&mut profile).unwrap();
        assert!(profile.stored_bytes() <= MAX_PROFILE_BYTES);
        assert!(profile.stored_bytes() > MAX_PROFILE_BYTES * 3 / 4, "{}", profile.stored_bytes());
    }

    #[test]
    fn the_stored_size_bounds_the_profile_json() {
        let mut profile = Profile::new("u1");
        with_attributes(20, 3).validate().unwrap().merge_into(&mut profile).unwrap();
        profile.email = Some("ana@example.com".into());
        assert!(profile.stored_bytes() >= serde_json::to_vec(&profile).unwrap().len());
    }

    const APNS: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn patch(value: serde_json::Value) -> ValidPatch {
        serde_json::from_value::<ProfilePatch>(value).expect("patch parses").validate().expect("patch is valid")
    }

    fn merged(start: serde_json::Value, update: serde_json::Value) -> (Profile, Changes) {
        let mut profile = Profile::new("u1");
        patch(start).merge_into(&mut profile).unwrap();
        let changes = patch(update).merge_into(&mut profile).unwrap();
        (profile, changes)
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn given_attributes_replace_those_names_and_others_stay() {
        let (p, changes) = merged(
            json!({"attributes": {"plan": ["free"], "tags": ["1", "2"]}}),
            json!({"attributes": {"plan": ["pro"]}}),
        );
        assert_eq!(p.attributes["plan"], set(&["pro"]));
        assert_eq!(p.attributes["tags"], set(&["1", "2"]));
        assert_eq!(changes.attributes, ["plan"]);
    }

    #[test]
    fn an_attribute_set_to_null_or_empty_is_removed() {
        let (p, changes) = merged(
            json!({"attributes": {"a": ["1"], "b": ["2"], "c": ["3"]}}),
            json!({"attributes": {"a": null, "b": []}}),
        );
        assert_eq!(p.attributes.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(changes.attributes, ["a", "b"]);
    }

    #[test]
    fn attributes_null_removes_them_all() {
        let (p, changes) = merged(json!({"attributes": {"a": ["1"], "b": ["2"]}}), json!({"attributes": null}));
        assert!(p.attributes.is_empty());
        assert_eq!(changes.attributes, ["a", "b"]);
    }

    #[test]
    fn attribute_values_are_sets_so_order_and_repeats_change_nothing() {
        let (_, changes) =
            merged(json!({"attributes": {"tags": ["1", "2"]}}), json!({"attributes": {"tags": ["2", "1", "2"]}}));
        assert!(changes.is_empty());
    }

    #[test]
    fn tag_1_and_tag_11_are_different_values() {
        let (p, changes) = merged(json!({"attributes": {"tags": ["11"]}}), json!({"attributes": {"tags": ["1"]}}));
        assert_eq!(p.attributes["tags"], set(&["1"]));
        assert_eq!(changes.attributes, ["tags"]);
    }

    #[test]
    fn absent_fields_stay_and_null_fields_are_removed() {
        let (p, changes) = merged(
            json!({"email": "a@example.com", "phone": "+14155552671", "timezone": "Europe/Paris"}),
            json!({"phone": null}),
        );
        assert_eq!(p.email.as_deref(), Some("a@example.com"));
        assert_eq!(p.phone, None);
        assert_eq!(p.timezone.as_deref(), Some("Europe/Paris"));
        assert_eq!(changes.fields, ["phone"]);
    }

    #[test]
    fn a_given_list_replaces_the_old_one() {
        let fcm = "f".repeat(40);
        let (p, changes) = merged(
            json!({"device_tokens": [{"token": APNS, "platform": "apns"}]}),
            json!({"device_tokens": [{"token": fcm, "platform": "fcm"}]}),
        );
        assert_eq!(p.device_tokens, [DeviceToken { token: fcm, platform: Platform::Fcm }]);
        assert_eq!(changes.fields, ["device_tokens"]);
    }

    #[test]
    fn a_null_list_removes_all_its_entries() {
        let (p, changes) = merged(
            json!({"external_channels": [{"platform": "slack", "url": "https://hooks.slack.com/x"}]}),
            json!({"external_channels": null}),
        );
        assert!(p.external_channels.is_empty());
        assert_eq!(changes.fields, ["external_channels"]);
    }

    #[test]
    fn writing_the_same_values_again_changes_nothing() {
        let body = json!({
            "attributes": {"tags": ["1"]}, "email": "a@example.com", "phone": "+1 415 555 2671",
            "timezone": "UTC", "device_tokens": [{"token": APNS, "platform": "apns"}],
            "external_channels": [{"platform": "slack", "url": "https://hooks.slack.com/x", "enabled": true}]
        });
        let (_, changes) = merged(body.clone(), body);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        let (_, changes) = merged(json!({"email": "a@example.com"}), json!({}));
        assert!(changes.is_empty());
    }

    #[test]
    fn phones_are_stored_in_e164() {
        let (p, _) = merged(json!({}), json!({"phone": "+1 (415) 555-2671"}));
        assert_eq!(p.phone.as_deref(), Some("+14155552671"));
    }

    #[test]
    fn repeated_device_tokens_are_folded_last_wins() {
        let p = patch(json!({"device_tokens": [
            {"token": APNS, "platform": "apns"}, {"token": APNS, "platform": "apns_sandbox"}
        ]}));
        let mut profile = Profile::new("u1");
        p.merge_into(&mut profile).unwrap();
        assert_eq!(profile.device_tokens, [DeviceToken { token: APNS.into(), platform: Platform::ApnsSandbox }]);
    }

    #[test]
    fn external_channels_are_enabled_unless_said_otherwise() {
        let (p, _) =
            merged(json!({}), json!({"external_channels": [{"platform": "slack", "url": "https://h.example/x"}]}));
        assert!(p.external_channels[0].enabled);
    }

    #[test]
    fn every_invalid_field_is_reported_with_its_path() {
        let errors = serde_json::from_value::<ProfilePatch>(json!({
            "email": "nope", "phone": "12", "timezone": "Nowhere/Land",
            "device_tokens": [{"token": "abc", "platform": "apns"}, {"token": "x", "platform": "fcm"}],
            "external_channels": [{"platform": "Slack", "url": "http://insecure.example"}],
            "attributes": {"": ["x"], "ok": ["y".repeat(101)]}
        }))
        .unwrap()
        .validate()
        .unwrap_err();
        let fields: BTreeSet<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
        let expected: BTreeSet<&str> = [
            "email",
            "phone",
            "timezone",
            "device_tokens[0].token",
            "device_tokens[1].token",
            "external_channels[0].platform",
            "external_channels[0].url",
            "attributes.",
            "attributes.ok[0]",
        ]
        .into();
        assert_eq!(fields, expected);
    }

    #[test]
    fn more_than_250_attributes_in_one_patch_are_refused() {
        let attributes: serde_json::Map<_, _> = (0..=MAX_ATTRIBUTES).map(|i| (format!("a{i}"), json!(["v"]))).collect();
        let errors = serde_json::from_value::<ProfilePatch>(json!({ "attributes": attributes }))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(errors.0[0].field, "attributes");
    }

    #[test]
    fn a_merge_that_would_exceed_250_attributes_is_refused_and_changes_nothing() {
        let first: serde_json::Map<_, _> = (0..MAX_ATTRIBUTES).map(|i| (format!("a{i}"), json!(["v"]))).collect();
        let mut profile = Profile::new("u1");
        patch(json!({ "attributes": first })).merge_into(&mut profile).unwrap();
        let before = profile.clone();
        let errors = patch(json!({"attributes": {"one_more": ["v"]}})).merge_into(&mut profile).unwrap_err();
        assert_eq!(errors.0[0].field, "attributes");
        assert_eq!(profile, before);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<ProfilePatch>(json!({"emial": "a@example.com"})).is_err());
    }

    #[test]
    fn read_only_fields_of_a_profile_are_accepted_and_ignored() {
        let (p, changes) =
            merged(json!({}), json!({"user_id": "x", "version": 9, "updated_at": "2026-01-01T00:00:00Z"}));
        assert!(changes.is_empty());
        assert_eq!((p.user_id.as_str(), p.version), ("u1", 0));
    }

    #[test]
    fn unknown_platforms_are_refused() {
        assert!(
            serde_json::from_value::<ProfilePatch>(
                json!({"device_tokens": [{"token": APNS, "platform": "blackberry"}]})
            )
            .is_err()
        );
    }
}
