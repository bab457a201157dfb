//! The segment rule language against a reference: random rules (as the JSON an API client
//! sends, covering every kind of node) over random profiles and activity must parse and
//! evaluate exactly as a plain interpreter of the JSON, written here from the documented
//! semantics, says. Then what a rule says it reads: a change of anything else never
//! changes its result, and the activity it asks for is all it needs. Then examples, one
//! behaviour each, and the refusals of invalid rules.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, Duration, NaiveDate, NaiveTime, Utc};
use herald_core::{
    activity::{Activity, ActivityEvent, CounterKey},
    profiles::{DeviceToken, ExternalChannel, Platform, Profile},
    segments::rules::{MAX_DEPTH, MAX_NODES, Rule, Subject},
};
use proptest::{prelude::*, sample::subsequence, strategy::ValueTree, test_runner::Config};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------
// The world the cases live in: small alphabets, so that tests hold as often as not.
// ---------------------------------------------------------------------------------------

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 15).unwrap()
}

const ATTRIBUTES: [&str; 5] = ["tag", "plan", "age", "signup", "city"];
/// Read by no generated rule: what the affectedness property changes freely.
const UNREAD_ATTRIBUTE: &str = "untouched";

/// Profile and rule values: tags, numbers (some that do not parse as numbers), dates as
/// YYYY-MM-DD and RFC 3339 (some in other offsets, whose UTC date differs), non-dates.
const VALUES: [&str; 22] = [
    "1",
    "11",
    "a",
    "gold",
    "0",
    "5",
    "10",
    "-2.5",
    "1e1",
    "NaN",
    "inf",
    "2024-03-15",
    "2024-03-14",
    "2024-03-10",
    "2024-02-20",
    "2023-12-31",
    "2024-03-16",
    // 2024-03-15 01:30 UTC.
    "2024-03-14T22:30:00-03:00",
    // 2024-03-16 04:30 UTC: tomorrow.
    "2024-03-15T23:30:00-05:00",
    // 2024-03-09 22:00 UTC.
    "2024-03-10T00:00:00+02:00",
    "2024-02-30",
    "x",
];

/// Tags: most set tests draw from these, so that sets are often equal.
const TAGS: [&str; 4] = ["1", "11", "a", "gold"];
/// Number-like values and date-like values of `VALUES`: number and date tests meet them often.
const NUMBER_VALUES: [&str; 9] = ["0", "1", "5", "10", "11", "-2.5", "1e1", "NaN", "inf"];
const DATE_VALUES: [&str; 10] = [
    "2024-03-15",
    "2024-03-14",
    "2024-03-10",
    "2024-02-20",
    "2023-12-31",
    "2024-03-16",
    "2024-03-14T22:30:00-03:00",
    "2024-03-15T23:30:00-05:00",
    "2024-03-10T00:00:00+02:00",
    "2024-02-30",
];

const NUMBERS: [f64; 8] = [-3.0, -2.5, 0.0, 1.0, 2.5, 5.0, 10.0, 11.0];

const DATES: [&str; 8] = [
    "2024-03-15",
    "2024-03-14",
    "2024-03-10",
    "2024-02-20",
    "2023-12-31",
    "2024-03-16",
    // 2024-03-11 01:30 UTC.
    "2024-03-10T23:30:00-02:00",
    "2024-03-09T12:00:00Z",
];

const DAYS: [u64; 7] = [1, 2, 3, 7, 30, 89, 90];

const EVENTS: [&str; 3] = ["order", "login", "view"];
/// Has no rule reading it.
const UNREAD_EVENT: &str = "unread";
const PROPERTIES: [&str; 2] = ["plan", "src"];
const PROPERTY_VALUES: [&str; 4] = ["pro", "free", "1", "11"];
const CHANNELS: [&str; 2] = ["slack", "teams"];
const PLATFORMS: [Platform; 3] = [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm];

/// Days ago counters may be on: -1 is tomorrow (a little future is accepted).
const COUNTER_DAYS: [i64; 12] = [-1, 0, 1, 2, 3, 6, 7, 29, 30, 88, 89, 90];

/// Last-seen times: (days ago, time of day).
const SEEN: [(i64, (u32, u32, u32)); 13] = [
    (-1, (0, 5, 0)),
    (0, (0, 0, 0)),
    (0, (23, 59, 59)),
    (1, (23, 59, 59)),
    (1, (0, 0, 0)),
    (2, (12, 0, 0)),
    (6, (0, 0, 0)),
    (7, (23, 0, 0)),
    (29, (0, 0, 0)),
    (30, (12, 0, 0)),
    (89, (0, 0, 0)),
    (90, (0, 0, 0)),
    (200, (0, 0, 0)),
];

fn days_ago(days: i64) -> NaiveDate {
    today() - Duration::days(days)
}

fn seen_at((days, (h, m, s)): (i64, (u32, u32, u32))) -> DateTime<Utc> {
    days_ago(days).and_time(NaiveTime::from_hms_opt(h, m, s).unwrap()).and_utc()
}

// ---------------------------------------------------------------------------------------
// Random rules, as JSON.
// ---------------------------------------------------------------------------------------

fn strings(values: &[&'static str], size: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Value> + use<> {
    subsequence(values.to_vec(), size).prop_shuffle().prop_map(|v| json!(v))
}

fn number() -> impl Strategy<Value = Value> {
    prop::sample::select(NUMBERS.to_vec()).prop_map(|n| json!(n))
}

fn date() -> impl Strategy<Value = &'static str> {
    prop::sample::select(DATES.to_vec())
}

/// Each of `keys` at most once, at least one.
fn some_keys(keys: &[&'static str]) -> impl Strategy<Value = Vec<&'static str>> + use<> {
    subsequence(keys.to_vec(), 1..=keys.len())
}

fn attribute_rule() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(ATTRIBUTES.to_vec());
    let values = prop_oneof![2 => strings(&TAGS, 1..=2), 1 => strings(&VALUES, 1..=3)];
    let sets = (prop::sample::select(vec!["equals", "any_of", "all_of", "none_of"]), values)
        .prop_map(|(key, values)| vec![(key.to_owned(), values)]);
    let exists = any::<bool>().prop_map(|b| vec![("exists".to_owned(), json!(b))]);
    let bounds = (some_keys(&["gt", "gte", "lt", "lte", "eq"]), prop::collection::vec(number(), 5))
        .prop_map(|(keys, numbers)| keys.into_iter().zip(numbers).map(|(k, n)| (k.to_owned(), n)).collect());
    let between = (number(), number()).prop_map(|(a, b)| {
        let (low, high) = if a.as_f64() <= b.as_f64() { (a, b) } else { (b, a) };
        vec![("between".to_owned(), json!([low, high]))]
    });
    let dates = (some_keys(&["before", "after", "on", "between_dates"]), date(), date(), date(), date()).prop_map(
        |(keys, d1, d2, d3, d4)| {
            keys.into_iter()
                .map(|key| {
                    let value = match key {
                        "before" => json!(d1),
                        "after" => json!(d2),
                        "on" => json!(d3),
                        _ => {
                            let (from, to) = if date_of(d3) <= date_of(d4) { (d3, d4) } else { (d4, d3) };
                            json!([from, to])
                        }
                    };
                    (key.to_owned(), value)
                })
                .collect()
        },
    );
    let within = prop::sample::select(DAYS.to_vec()).prop_map(|d| vec![("within_last_days".to_owned(), json!(d))]);
    let test = prop_oneof![4 => sets, 1 => exists, 2 => bounds, 1 => between, 2 => dates, 1 => within];
    (name, test).prop_map(|(name, test)| {
        let mut node = Map::new();
        node.insert("attribute".into(), json!(name));
        node.extend(test);
        Value::Object(node)
    })
}

fn contact_rule() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"has": "email"})),
        Just(json!({"has": "phone"})),
        Just(json!({"has": "push"})),
        prop::sample::select(vec!["apns", "apns_sandbox", "fcm"]).prop_map(|p| json!({"has": "push", "platform": p})),
        prop::sample::select(CHANNELS.to_vec()).prop_map(|p| json!({"has": "channel", "platform": p})),
    ]
}

fn event_rule() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(EVENTS.to_vec());
    let window = prop_oneof![
        Just(json!("today")),
        Just(json!("yesterday")),
        prop::sample::select(DAYS.to_vec()).prop_map(|d| json!({"last_days": d})),
    ];
    let count = (some_keys(&["gt", "gte", "lt", "lte", "eq"]), prop::collection::vec(0u64..6, 5))
        .prop_map(|(keys, n)| Value::Object(keys.into_iter().zip(n).map(|(k, n)| (k.to_owned(), json!(n))).collect()));
    let filter = proptest::option::of(
        (prop::sample::select(PROPERTIES.to_vec()), strings(&PROPERTY_VALUES, 1..=3))
            .prop_map(|(property, any_of)| json!({"property": property, "any_of": any_of})),
    );
    let counted = (name.clone(), window, count, filter).prop_map(|(name, window, count, filter)| {
        let mut node = json!({"event": name, "window": window, "count": count});
        if let Some(filter) = filter {
            node["where"] = filter;
        }
        node
    });
    let seen = (name.clone(), prop::sample::select(vec!["last_seen_within_days", "not_seen_within_days"]))
        .prop_flat_map(|(name, key)| {
            prop::sample::select(DAYS.to_vec()).prop_map(move |d| {
                let mut node = json!({"event": name});
                node[key] = json!(d);
                node
            })
        });
    let since = (name, date()).prop_map(|(name, d)| json!({"event": name, "not_seen_since": d}));
    prop_oneof![3 => counted, 2 => seen, 1 => since]
}

fn rule() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![4 => attribute_rule(), 1 => contact_rule(), 3 => event_rule()];
    leaf.prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..=4).prop_map(|rules| json!({"all": rules})),
            prop::collection::vec(inner.clone(), 1..=4).prop_map(|rules| json!({"any": rules})),
            inner.prop_map(|rule| json!({"not": rule})),
        ]
    })
    .prop_filter("a rule within the node limit", |rule| nodes(rule) <= MAX_NODES)
}

fn nodes(rule: &Value) -> usize {
    let object = rule.as_object().unwrap();
    match (object.get("all").or(object.get("any")), object.get("not")) {
        (Some(list), _) => 1 + list.as_array().unwrap().iter().map(nodes).sum::<usize>(),
        (_, Some(inner)) => 1 + nodes(inner),
        _ => 1,
    }
}

// ---------------------------------------------------------------------------------------
// Random profiles and activity.
// ---------------------------------------------------------------------------------------

fn profile() -> impl Strategy<Value = Profile> {
    let names: Vec<&str> = ATTRIBUTES.iter().copied().chain([UNREAD_ATTRIBUTE]).collect();
    let values = prop_oneof![
        subsequence(TAGS.to_vec(), 1..=2),
        subsequence(NUMBER_VALUES.to_vec(), 1..=2),
        subsequence(DATE_VALUES.to_vec(), 1..=2),
        subsequence(VALUES.to_vec(), 1..=3),
    ];
    let attributes = prop::collection::vec(proptest::option::weighted(0.7, values), 6).prop_map(move |sets| {
        names
            .iter()
            .zip(sets)
            .filter_map(|(name, set)| Some((name.to_string(), set?.into_iter().map(str::to_owned).collect())))
            .collect::<BTreeMap<String, BTreeSet<String>>>()
    });
    let tokens = prop::collection::vec(prop::sample::select(PLATFORMS.to_vec()), 0..3);
    let channels = prop::collection::vec((prop::sample::select(CHANNELS.to_vec()), any::<bool>()), 0..3);
    (attributes, any::<bool>(), any::<bool>(), tokens, channels).prop_map(
        |(attributes, email, phone, tokens, channels)| {
            let mut profile = Profile::new("u1");
            profile.version = 3;
            profile.attributes = attributes;
            profile.email = email.then(|| "ada@example.com".to_owned());
            profile.phone = phone.then(|| "+14155550100".to_owned());
            profile.device_tokens = tokens
                .into_iter()
                .enumerate()
                .map(|(i, platform)| DeviceToken { token: format!("token-{i}"), platform })
                .collect();
            profile.external_channels = channels
                .into_iter()
                .map(|(platform, enabled)| ExternalChannel {
                    platform: platform.to_owned(),
                    url: format!("https://hooks.example.com/{platform}"),
                    enabled,
                })
                .collect();
            profile
        },
    )
}

fn counter_keys() -> Vec<CounterKey> {
    let events = EVENTS.iter().chain([&UNREAD_EVENT]);
    events
        .flat_map(|event| {
            std::iter::once(CounterKey::total(event)).chain(PROPERTIES.iter().flat_map(move |property| {
                PROPERTY_VALUES.iter().map(move |value| CounterKey::property(event, property, value))
            }))
        })
        .collect()
}

fn activity() -> impl Strategy<Value = Activity> {
    let keys = counter_keys();
    let counts = prop::collection::vec(
        (prop::sample::select(keys), prop::sample::select(COUNTER_DAYS.to_vec()), 1u64..4),
        0..14,
    );
    let seen = prop::collection::vec(proptest::option::of(prop::sample::select(SEEN.to_vec())), EVENTS.len() + 1);
    (counts, seen).prop_map(|(counts, seen)| {
        let mut activity = Activity::default();
        for (key, ago, n) in counts {
            *activity.counts.entry(key).or_default().entry(days_ago(ago)).or_default() += n;
        }
        for (event, at) in EVENTS.iter().chain([&UNREAD_EVENT]).zip(seen) {
            if let Some(at) = at {
                activity.last_seen.insert(event.to_string(), seen_at(at));
            }
        }
        activity
    })
}

// ---------------------------------------------------------------------------------------
// The reference: a direct interpreter of the JSON.
// ---------------------------------------------------------------------------------------

/// `YYYY-MM-DD` exactly, or an RFC 3339 timestamp's UTC date.
fn date_of(value: &str) -> Option<NaiveDate> {
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() });
    if shaped {
        let number = |range: std::ops::Range<usize>| value[range].parse::<u32>().unwrap();
        return NaiveDate::from_ymd_opt(number(0..4) as i32, number(5..7), number(8..10));
    }
    DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc).date_naive())
}

fn number_of(value: &str) -> Option<f64> {
    value.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn list(value: &Value) -> BTreeSet<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

fn reference(rule: &Value, profile: Option<&Profile>, activity: &Activity, today: NaiveDate) -> bool {
    match profile {
        None => false,
        Some(profile) => holds(rule, profile, activity, today),
    }
}

fn holds(rule: &Value, profile: &Profile, activity: &Activity, today: NaiveDate) -> bool {
    let node = rule.as_object().unwrap();
    let each = |key: &str| -> Vec<bool> {
        node[key].as_array().unwrap().iter().map(|r| holds(r, profile, activity, today)).collect()
    };
    if node.contains_key("all") {
        return each("all").into_iter().all(|h| h);
    }
    if node.contains_key("any") {
        return each("any").into_iter().any(|h| h);
    }
    if let Some(inner) = node.get("not") {
        return !holds(inner, profile, activity, today);
    }
    if let Some(name) = node.get("attribute") {
        let values: BTreeSet<&str> = profile
            .attributes
            .get(name.as_str().unwrap())
            .map(|set| set.iter().map(String::as_str).collect())
            .unwrap_or_default();
        return attribute_holds(node, &values, today);
    }
    if let Some(contact) = node.get("has") {
        let platform = node.get("platform").and_then(Value::as_str);
        return match contact.as_str().unwrap() {
            "email" => profile.email.is_some(),
            "phone" => profile.phone.is_some(),
            "push" => profile
                .device_tokens
                .iter()
                .any(|t| platform.is_none_or(|p| serde_json::to_value(t.platform).unwrap() == json!(p))),
            "channel" => profile.external_channels.iter().any(|c| c.enabled && Some(c.platform.as_str()) == platform),
            other => panic!("not a contact: {other}"),
        };
    }
    let event = node["event"].as_str().unwrap();
    event_holds(node, event, activity, today)
}

fn attribute_holds(node: &Map<String, Value>, values: &BTreeSet<&str>, today: NaiveDate) -> bool {
    if let Some(set) = node.get("equals") {
        return *values == list(set);
    }
    if let Some(set) = node.get("any_of") {
        return list(set).iter().any(|v| values.contains(v));
    }
    if let Some(set) = node.get("all_of") {
        return list(set).iter().all(|v| values.contains(v));
    }
    if let Some(set) = node.get("none_of") {
        return !list(set).iter().any(|v| values.contains(v));
    }
    if let Some(exists) = node.get("exists") {
        return exists.as_bool().unwrap() != values.is_empty();
    }
    if let Some(days) = node.get("within_last_days") {
        let since = today - Duration::days(days.as_i64().unwrap() - 1);
        return values.iter().filter_map(|v| date_of(v)).any(|d| since <= d && d <= today);
    }
    let number_test = |n: f64| {
        node.iter().filter(|(k, _)| *k != "attribute").all(|(key, bound)| match key.as_str() {
            "gt" => n > bound.as_f64().unwrap(),
            "gte" => n >= bound.as_f64().unwrap(),
            "lt" => n < bound.as_f64().unwrap(),
            "lte" => n <= bound.as_f64().unwrap(),
            "eq" => n == bound.as_f64().unwrap(),
            "between" => bound[0].as_f64().unwrap() <= n && n <= bound[1].as_f64().unwrap(),
            other => panic!("not a number test: {other}"),
        })
    };
    let date_test = |d: NaiveDate| {
        let date = |v: &Value| date_of(v.as_str().unwrap()).unwrap();
        node.iter().filter(|(k, _)| *k != "attribute").all(|(key, bound)| match key.as_str() {
            "before" => d < date(bound),
            "after" => d > date(bound),
            "on" => d == date(bound),
            "between_dates" => date(&bound[0]) <= d && d <= date(&bound[1]),
            other => panic!("not a date test: {other}"),
        })
    };
    let is_date_test = ["before", "after", "on", "between_dates"].iter().any(|k| node.contains_key(*k));
    if is_date_test {
        values.iter().filter_map(|v| date_of(v)).any(date_test)
    } else {
        values.iter().filter_map(|v| number_of(v)).any(number_test)
    }
}

fn event_holds(node: &Map<String, Value>, event: &str, activity: &Activity, today: NaiveDate) -> bool {
    let last_seen = activity.last_seen.get(event).map(|at| at.date_naive());
    if let Some(days) = node.get("last_seen_within_days") {
        // Today is the first of the `days` days.
        return last_seen.is_some_and(|d| d >= today - Duration::days(days.as_i64().unwrap() - 1));
    }
    if let Some(days) = node.get("not_seen_within_days") {
        return last_seen.is_none_or(|d| d < today - Duration::days(days.as_i64().unwrap() - 1));
    }
    if let Some(date) = node.get("not_seen_since") {
        let since = date_of(date.as_str().unwrap()).unwrap();
        return last_seen.is_none_or(|d| d < since);
    }
    let days: Vec<NaiveDate> = match &node["window"] {
        Value::String(s) if s == "today" => vec![today],
        Value::String(s) if s == "yesterday" => vec![today - Duration::days(1)],
        window => (0..window["last_days"].as_i64().unwrap()).map(|ago| today - Duration::days(ago)).collect(),
    };
    let keys: Vec<CounterKey> = match node.get("where") {
        None => vec![CounterKey::total(event)],
        Some(filter) => {
            let property = filter["property"].as_str().unwrap();
            list(&filter["any_of"]).into_iter().map(|value| CounterKey::property(event, property, value)).collect()
        }
    };
    let count: u64 = keys
        .iter()
        .filter_map(|key| activity.counts.get(key))
        .flat_map(|per_day| days.iter().filter_map(|day| per_day.get(day)))
        .sum();
    node["count"].as_object().unwrap().iter().all(|(key, bound)| {
        let bound = bound.as_u64().unwrap();
        match key.as_str() {
            "gt" => count > bound,
            "gte" => count >= bound,
            "lt" => count < bound,
            "lte" => count <= bound,
            "eq" => count == bound,
            other => panic!("not a count bound: {other}"),
        }
    })
}

fn evaluate(rule: &Rule, profile: Option<&Profile>, activity: &Activity) -> bool {
    rule.evaluate(&Subject { profile, activity, today: today() })
}

// ---------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------

fn config(cases: u32) -> Config {
    // No regression files: a failure prints its minimal case.
    Config { cases, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn every_generated_rule_parses_and_evaluates_as_the_reference(
        rule in rule(),
        profile in proptest::option::weighted(0.95, profile()),
        activity in activity(),
    ) {
        let parsed = Rule::parse(&rule);
        prop_assert!(parsed.is_ok(), "refused {rule}: {:?}", parsed.err());
        let parsed = parsed.unwrap();
        prop_assert_eq!(
            evaluate(&parsed, profile.as_ref(), &activity),
            reference(&rule, profile.as_ref(), &activity, today()),
            "rule {}", rule
        );
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn changing_only_what_a_rule_does_not_read_never_changes_its_result(
        rule in rule(),
        profile in profile(),
        activity in activity(),
        other_profile in profile(),
        other_activity in activity(),
    ) {
        let parsed = Rule::parse(&rule).unwrap();
        let reads = parsed.reads();
        // Everything the rule does not read taken from the other profile and activity.
        let mut changed = profile.clone();
        let names: BTreeSet<&String> = profile.attributes.keys().chain(other_profile.attributes.keys()).collect();
        for name in names.into_iter().filter(|n| !reads.attributes.contains(*n)) {
            match other_profile.attributes.get(name) {
                Some(values) => changed.attributes.insert(name.clone(), values.clone()),
                None => changed.attributes.remove(name),
            };
        }
        let unread_field = |field: &str| !reads.fields.contains(field);
        if unread_field("email") {
            changed.email = other_profile.email.clone();
        }
        if unread_field("phone") {
            changed.phone = other_profile.phone.clone();
        }
        if unread_field("device_tokens") {
            changed.device_tokens = other_profile.device_tokens.clone();
        }
        if unread_field("external_channels") {
            changed.external_channels = other_profile.external_channels.clone();
        }
        let mut changed_activity = activity.clone();
        changed_activity.counts.retain(|key, _| reads.events.contains(&key.event));
        changed_activity.counts.extend(
            other_activity.counts.iter().filter(|(key, _)| !reads.events.contains(&key.event)).map(|(k, v)| (k.clone(), v.clone())),
        );
        changed_activity.last_seen.retain(|event, _| reads.events.contains(event));
        changed_activity.last_seen.extend(
            other_activity.last_seen.iter().filter(|(event, _)| !reads.events.contains(*event)).map(|(k, v)| (k.clone(), *v)),
        );
        prop_assert_eq!(
            evaluate(&parsed, Some(&profile), &activity),
            evaluate(&parsed, Some(&changed), &changed_activity),
            "rule {} reads {:?}", rule, reads
        );
    }

    #[test]
    fn the_activity_a_rule_asks_for_is_all_its_evaluation_needs(
        rule in rule(),
        profile in profile(),
        activity in activity(),
    ) {
        let parsed = Rule::parse(&rule).unwrap();
        let mut counters = BTreeSet::new();
        parsed.counters(&mut counters);
        let mut seen = BTreeSet::new();
        parsed.last_seen_events(&mut seen);
        let days = u64::from(parsed.window_days());
        let loaded_days: BTreeSet<NaiveDate> =
            (0..days).map(|ago| today().checked_sub_days(Days::new(ago)).unwrap()).collect();
        // What a store that loads only the query holds.
        let loaded = Activity {
            counts: activity
                .counts
                .iter()
                .filter(|(key, _)| counters.contains(*key))
                .map(|(key, per_day)| {
                    let kept = per_day.iter().filter(|(day, _)| loaded_days.contains(day)).map(|(d, n)| (*d, *n));
                    (key.clone(), kept.collect())
                })
                .collect(),
            last_seen: activity.last_seen.iter().filter(|(e, _)| seen.contains(*e)).map(|(e, t)| (e.clone(), *t)).collect(),
            revision: activity.revision,
        };
        prop_assert_eq!(
            evaluate(&parsed, Some(&profile), &activity),
            evaluate(&parsed, Some(&profile), &loaded),
            "rule {}", rule
        );
    }
}

/// The kind of a leaf: the test it makes.
fn kind(leaf: &Value) -> String {
    let node = leaf.as_object().unwrap();
    let known = ["equals", "any_of", "all_of", "none_of", "exists", "between", "within_last_days"];
    let key = |keys: &[&str]| keys.iter().find(|k| node.contains_key(**k)).map(|k| k.to_string());
    if node.contains_key("attribute") {
        let dates = ["before", "after", "on", "between_dates"];
        key(&known).or(key(&dates).map(|_| "dates".into())).unwrap_or_else(|| "numbers".into())
    } else if let Some(contact) = node.get("has") {
        format!("has {contact} {}", node.get("platform").is_some())
    } else {
        let window = match node.get("window") {
            Some(Value::String(w)) => format!(" {w}"),
            Some(_) => " last_days".into(),
            None => String::new(),
        };
        let filter = if node.contains_key("where") { " where" } else { "" };
        let tests = ["count", "last_seen_within_days", "not_seen_within_days", "not_seen_since"];
        format!("{}{window}{filter}", key(&tests).unwrap())
    }
}

/// The properties above test something only if the generated cases go both ways.
#[test]
fn every_kind_of_generated_test_both_holds_and_fails() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let leaf = prop_oneof![attribute_rule(), contact_rule(), event_rule()];
    let mut outcomes: BTreeMap<String, BTreeSet<bool>> = BTreeMap::new();
    for _ in 0..2000 {
        let case = (leaf.clone(), profile(), activity()).new_tree(&mut runner).unwrap().current();
        let (rule, profile, activity) = case;
        outcomes.entry(kind(&rule)).or_default().insert(reference(&rule, Some(&profile), &activity, today()));
    }
    let one_way: Vec<&String> = outcomes.iter().filter(|(_, o)| o.len() < 2).map(|(k, _)| k).collect();
    assert!(one_way.is_empty(), "these kinds went one way only: {one_way:?}");
    assert_eq!(outcomes.len(), 23, "kinds generated: {:?}", outcomes.keys());
}

// ---------------------------------------------------------------------------------------
// Examples.
// ---------------------------------------------------------------------------------------

fn parse(rule: Value) -> Rule {
    Rule::parse(&rule).unwrap_or_else(|e| panic!("{rule} is refused: {e:?}"))
}

fn tagged(values: &[&str]) -> Profile {
    let mut profile = Profile::new("u1");
    profile.attributes.insert("tag".into(), values.iter().map(|v| v.to_string()).collect());
    profile
}

fn holds_for(rule: Value, profile: &Profile) -> bool {
    evaluate(&parse(rule), Some(profile), &Activity::default())
}

#[test]
fn any_of_1_does_not_match_a_profile_tagged_11() {
    assert!(!holds_for(json!({"attribute": "tag", "any_of": ["1"]}), &tagged(&["11"])));
    assert!(holds_for(json!({"attribute": "tag", "any_of": ["1"]}), &tagged(&["11", "1"])));
}

#[test]
fn all_of_1_does_not_match_a_profile_tagged_11() {
    assert!(!holds_for(json!({"attribute": "tag", "all_of": ["1"]}), &tagged(&["11", "2"])));
}

#[test]
fn equals_1_does_not_match_a_profile_tagged_11() {
    assert!(!holds_for(json!({"attribute": "tag", "equals": ["1"]}), &tagged(&["11"])));
    assert!(holds_for(json!({"attribute": "tag", "equals": ["1"]}), &tagged(&["1"])));
}

#[test]
fn none_of_1_holds_for_a_profile_tagged_11() {
    assert!(holds_for(json!({"attribute": "tag", "none_of": ["1"]}), &tagged(&["11"])));
    assert!(!holds_for(json!({"attribute": "tag", "none_of": ["1"]}), &tagged(&["11", "1"])));
}

#[test]
fn none_of_holds_when_the_attribute_is_absent() {
    assert!(holds_for(json!({"attribute": "plan", "none_of": ["pro"]}), &tagged(&["1"])));
}

#[test]
fn equals_is_set_equality_not_containment() {
    let rule = json!({"attribute": "tag", "equals": ["a", "b"]});
    assert!(holds_for(rule.clone(), &tagged(&["b", "a"])));
    assert!(!holds_for(rule.clone(), &tagged(&["a"])));
    assert!(!holds_for(rule, &tagged(&["a", "b", "c"])));
}

#[test]
fn a_number_test_holds_when_one_value_satisfies_every_bound() {
    let rule = json!({"attribute": "tag", "gt": 1, "lt": 5});
    assert!(holds_for(rule.clone(), &tagged(&["0", "3", "x"])));
    // 0 satisfies lt and 7 satisfies gt, but no single value both.
    assert!(!holds_for(rule, &tagged(&["0", "7"])));
}

#[test]
fn values_that_are_not_numbers_never_satisfy_a_number_test() {
    assert!(!holds_for(json!({"attribute": "tag", "lt": 5}), &tagged(&["abc", "NaN", "-inf"])));
    assert!(!holds_for(json!({"attribute": "tag", "lt": 5}), &tagged(&[])));
}

#[test]
fn values_that_are_not_dates_never_satisfy_a_date_test() {
    let rule = json!({"attribute": "tag", "before": "2030-01-01"});
    assert!(!holds_for(rule.clone(), &tagged(&["2024-02-30", "soon", "1"])));
    assert!(holds_for(rule, &tagged(&["2024-02-29"])));
}

#[test]
fn a_timestamp_is_compared_by_its_utc_date() {
    // 23:30 at UTC-5 on the 15th is the 16th in UTC.
    let rule = json!({"attribute": "tag", "on": "2024-03-16"});
    assert!(holds_for(rule, &tagged(&["2024-03-15T23:30:00-05:00"])));
}

#[test]
fn a_missing_profile_is_in_no_segment_even_of_a_negated_rule() {
    let rule = parse(json!({"not": {"has": "email"}}));
    assert!(!evaluate(&rule, None, &Activity::default()));
    assert!(evaluate(&rule, Some(&Profile::new("u1")), &Activity::default()));
}

fn orders(days_ago_each: &[u64]) -> Activity {
    let mut activity = Activity::default();
    let events: Vec<ActivityEvent> = days_ago_each
        .iter()
        .enumerate()
        .map(|(i, ago)| ActivityEvent {
            event_id: format!("e{i}"),
            user_id: "u1".into(),
            name: "order".into(),
            timestamp: today().checked_sub_days(Days::new(*ago)).unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc(),
            properties: Map::new(),
        })
        .collect();
    activity.record(&events);
    activity
}

fn seed_rule() -> Rule {
    parse(json!({"event": "order", "window": {"last_days": 2}, "count": {"gt": 2}}))
}

#[test]
fn more_than_2_orders_over_yesterday_and_today_holds_from_the_third_order() {
    let profile = Profile::new("u1");
    assert!(!evaluate(&seed_rule(), Some(&profile), &orders(&[1, 0])));
    assert!(evaluate(&seed_rule(), Some(&profile), &orders(&[1, 0, 0])));
    assert!(evaluate(&seed_rule(), Some(&profile), &orders(&[1, 1, 1])));
    assert!(evaluate(&seed_rule(), Some(&profile), &orders(&[0, 0, 0, 0])));
}

#[test]
fn orders_from_2_days_ago_do_not_count_towards_the_last_2_days() {
    let profile = Profile::new("u1");
    assert!(!evaluate(&seed_rule(), Some(&profile), &orders(&[2, 2, 2, 2])));
    assert!(!evaluate(&seed_rule(), Some(&profile), &orders(&[2, 2, 1, 0])));
}

#[test]
fn a_property_filter_sums_the_counters_of_the_listed_values() {
    let mut activity = Activity::default();
    let event = |id: &str, plan: &str| ActivityEvent {
        event_id: id.into(),
        user_id: "u1".into(),
        name: "order".into(),
        timestamp: today().and_hms_opt(9, 0, 0).unwrap().and_utc(),
        properties: json!({"plan": plan}).as_object().unwrap().clone(),
    };
    activity.record(&[event("a", "pro"), event("b", "team"), event("c", "free")]);
    let rule = |values: Value| {
        parse(json!({"event": "order", "window": "today", "count": {"eq": 2},
            "where": {"property": "plan", "any_of": values}}))
    };
    let profile = Profile::new("u1");
    assert!(evaluate(&rule(json!(["pro", "team"])), Some(&profile), &activity));
    assert!(!evaluate(&rule(json!(["pro"])), Some(&profile), &activity));
}

// ---------------------------------------------------------------------------------------
// Refusals: each names the node at fault.
// ---------------------------------------------------------------------------------------

fn refused_at(rule: Value) -> Vec<String> {
    match Rule::parse(&rule) {
        Ok(parsed) => panic!("{rule} is accepted as {parsed:?}"),
        Err(errors) => {
            assert!(errors.0.iter().all(|e| !e.message.is_empty()), "every error says why: {errors:?}");
            errors.0.into_iter().map(|e| e.field).collect()
        }
    }
}

#[test]
fn an_attribute_without_a_test_is_refused_at_its_node() {
    assert_eq!(refused_at(json!({"all": [{"attribute": "tag"}]})), ["rule.all[0]"]);
}

#[test]
fn an_unknown_window_is_refused_at_the_window_of_its_node() {
    let rule = json!({"any": [{"has": "email"}, {"event": "order", "window": "last_week", "count": {"gt": 2}}]});
    assert_eq!(refused_at(rule), ["rule.any[1].window"]);
}

#[test]
fn a_missing_window_is_refused_at_the_window_of_its_node() {
    assert_eq!(refused_at(json!({"not": {"event": "order", "count": {"gt": 2}}})), ["rule.not.window"]);
}

#[test]
fn a_window_beyond_90_days_is_refused_at_its_days() {
    let rule = json!({"event": "order", "window": {"last_days": 91}, "count": {"gt": 2}});
    assert_eq!(refused_at(rule), ["rule.window.last_days"]);
}

#[test]
fn an_unknown_key_is_refused_at_its_path() {
    assert_eq!(refused_at(json!({"all": [{"has": "email"}], "extra": 1})), ["rule.extra"]);
    let event = json!({"any": [{"event": "order", "window": "today", "count": {"gt": 0}, "per": "day"}]});
    assert_eq!(refused_at(event), ["rule.any[0].per"]);
    assert_eq!(refused_at(json!({"has": "push", "platform": "fcm", "token": "t"})), ["rule.token"]);
}

#[test]
fn two_kinds_in_one_node_are_refused() {
    assert_eq!(refused_at(json!({"all": [{"attribute": "a", "exists": true, "has": "email"}]})), ["rule.all[0]"]);
}

#[test]
fn a_bad_value_in_a_list_is_refused_at_its_index() {
    assert_eq!(refused_at(json!({"attribute": "tag", "any_of": ["a", 1]})), ["rule.any_of[1]"]);
}

#[test]
fn an_empty_list_of_rules_is_refused() {
    assert_eq!(refused_at(json!({"not": {"all": []}})), ["rule.not.all"]);
}

/// `not` nested `depth - 1` times around a leaf: the leaf is at `depth`.
fn nested(depth: usize) -> Value {
    (1..depth).fold(json!({"has": "email"}), |rule, _| json!({"not": rule}))
}

#[test]
fn rules_nest_10_deep() {
    assert!(Rule::parse(&nested(MAX_DEPTH)).is_ok());
}

#[test]
fn a_rule_nested_deeper_than_10_is_refused_at_the_deepest_node() {
    let path = format!("rule{}", ".not".repeat(MAX_DEPTH));
    assert_eq!(refused_at(nested(MAX_DEPTH + 1)), [path]);
}

fn leaves(count: usize) -> Value {
    json!({"any": (0..count).map(|i| json!({"attribute": format!("a{i}"), "exists": true})).collect::<Vec<_>>()})
}

#[test]
fn a_rule_may_have_100_nodes() {
    assert!(Rule::parse(&leaves(MAX_NODES - 1)).is_ok());
}

#[test]
fn a_rule_of_more_than_100_nodes_is_refused_at_the_101st() {
    // The list node is the first, its 100th leaf the 101st node.
    assert_eq!(refused_at(leaves(MAX_NODES)), ["rule.any[99]"]);
    assert_eq!(refused_at(leaves(150)), ["rule.any[99]"]);
}

#[test]
fn email_with_a_platform_is_refused_at_the_platform() {
    assert_eq!(refused_at(json!({"has": "email", "platform": "fcm"})), ["rule.platform"]);
}

#[test]
fn a_negative_count_bound_is_refused_at_the_count() {
    assert_eq!(refused_at(json!({"event": "order", "window": "today", "count": {"gt": -1}})), ["rule.count"]);
}

#[test]
fn every_fault_of_a_rule_is_reported_not_only_the_first() {
    let rule = json!({"all": [{"attribute": "a"}, {"attribute": "b", "gt": "x"}, {"has": "fax"}]});
    assert_eq!(refused_at(rule), ["rule.all[0]", "rule.all[1].gt", "rule.all[2].has"]);
}

#[test]
fn repeated_values_are_reported_alongside_other_faults() {
    let rule = json!({"all": [{"attribute": "a"}, {"attribute": "b", "any_of": ["x", "x"]}]});
    assert_eq!(refused_at(rule), ["rule.all[0]", "rule.all[1].any_of[1]"]);
}

#[test]
fn a_bad_property_filter_and_a_bad_window_are_both_reported() {
    let rule = json!({"event": "order", "where": {"property": "plan"}, "window": "weekly", "count": {"gt": 0}});
    assert_eq!(refused_at(rule), ["rule.where.any_of", "rule.window"]);
}
