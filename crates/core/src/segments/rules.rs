//! Segment rules: a JSON language of AND / OR / NOT over profile attributes, contacts and
//! behaviour (event counters), parsed and validated once when a segment is saved, then
//! evaluated for every change that can affect it.
//!
//! Time is in whole UTC days: "today", "the last 7 days" and "within the last 30 days"
//! all start at midnight UTC, so membership of a time-relative rule only changes at
//! midnight, which is when the scheduled sweep runs.

use std::collections::BTreeSet;

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::{
    activity::{Activity, CounterKey, MAX_WINDOW_DAYS},
    profiles::{Platform, Profile},
    validation,
    validation::ValidationErrors,
};

/// How many nodes one rule may have: evaluation cost stays bounded.
pub const MAX_NODES: usize = 100;
pub const MAX_DEPTH: usize = 10;
pub const MAX_VALUES: usize = 100;

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Attribute { name: String, test: AttributeTest },
    Has(Contact),
    Event { name: String, test: EventTest },
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttributeTest {
    /// The attribute's values are exactly this set.
    Equals(BTreeSet<String>),
    AnyOf(BTreeSet<String>),
    AllOf(BTreeSet<String>),
    /// True too when the attribute is absent.
    NoneOf(BTreeSet<String>),
    Exists(bool),
    /// Some value is a number within every bound.
    Number(Vec<Bound<f64>>),
    /// Some value is a date (RFC 3339 or YYYY-MM-DD) within every bound.
    Date(Vec<Bound<NaiveDate>>),
    /// Some value is a date within the last `n` days, today included (as `last_days`
    /// windows count): from `n - 1` days ago to today.
    WithinLastDays(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound<T> {
    Gt(T),
    Gte(T),
    Lt(T),
    Lte(T),
    Eq(T),
}

impl<T: PartialOrd + Copy> Bound<T> {
    pub fn holds(&self, value: T) -> bool {
        match *self {
            Bound::Gt(b) => value > b,
            Bound::Gte(b) => value >= b,
            Bound::Lt(b) => value < b,
            Bound::Lte(b) => value <= b,
            Bound::Eq(b) => value == b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    Email,
    Phone,
    /// A push token, of the platform if given.
    Push(Option<Platform>),
    /// An enabled external channel of the platform (e.g. `slack`).
    Channel(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventTest {
    /// How many times the event (with the property filter) happened within the window.
    Count { filter: Option<PropertyFilter>, window: Window, bounds: Vec<Bound<u64>> },
    /// Seen (true) or not seen (false) on or since the day `days - 1` days ago.
    SeenWithinDays { days: u32, seen: bool },
    /// Not seen on or after this date.
    NotSeenSince(NaiveDate),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyFilter {
    pub property: String,
    pub any_of: BTreeSet<String>,
}

/// A range of whole UTC days, counted back from today (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Most days ago (inclusive).
    pub from_days_ago: u32,
    /// Fewest days ago (inclusive).
    pub to_days_ago: u32,
}

impl Window {
    pub fn days(&self, today: NaiveDate) -> impl Iterator<Item = NaiveDate> {
        (self.to_days_ago..=self.from_days_ago).filter_map(move |ago| today.checked_sub_days(Days::new(ago.into())))
    }
}

/// What a rule reads: a change is evaluated only against the segments that read
/// something it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reads {
    #[serde(default)]
    pub attributes: BTreeSet<String>,
    /// Profile fields other than attributes: email, phone, device_tokens, external_channels.
    #[serde(default)]
    pub fields: BTreeSet<String>,
    #[serde(default)]
    pub events: BTreeSet<String>,
    /// Membership can change with time alone (the scheduled sweep re-evaluates it).
    #[serde(default)]
    pub time_relative: bool,
}

/// What a profile and its activity are evaluated as.
pub struct Subject<'a> {
    /// None when the profile does not exist (or was erased): it is in no segment.
    pub profile: Option<&'a Profile>,
    pub activity: &'a Activity,
    pub today: NaiveDate,
}

impl Rule {
    /// Parses and validates a rule; errors name the node at fault (`rule.all[1].any_of`).
    pub fn parse(value: &Value) -> Result<Rule, ValidationErrors> {
        let mut parser = Parser { errors: ValidationErrors::default(), nodes: 0 };
        let rule = parser.rule(value, "rule", 1);
        match rule {
            Some(rule) if parser.errors.0.is_empty() => Ok(rule),
            _ => {
                if parser.errors.0.is_empty() {
                    parser.errors.add("rule", "is not a valid rule");
                }
                Err(parser.errors)
            }
        }
    }

    pub fn reads(&self) -> Reads {
        let mut reads = Reads::default();
        self.collect_reads(&mut reads);
        reads
    }

    fn collect_reads(&self, reads: &mut Reads) {
        match self {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| r.collect_reads(reads)),
            Rule::Not(rule) => rule.collect_reads(reads),
            Rule::Attribute { name, test } => {
                reads.attributes.insert(name.clone());
                if matches!(test, AttributeTest::WithinLastDays(_)) {
                    reads.time_relative = true;
                }
            }
            Rule::Has(contact) => {
                reads.fields.insert(contact.field().to_owned());
            }
            Rule::Event { name, test } => {
                reads.events.insert(name.clone());
                if !matches!(test, EventTest::NotSeenSince(_)) {
                    reads.time_relative = true;
                }
            }
        }
    }

    /// The counters evaluation reads, and how many days back.
    pub fn counters(&self, keys: &mut BTreeSet<CounterKey>) {
        match self {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| r.counters(keys)),
            Rule::Not(rule) => rule.counters(keys),
            Rule::Event { name, test: EventTest::Count { filter, .. } } => match filter {
                None => {
                    keys.insert(CounterKey::total(name));
                }
                Some(f) => keys.extend(f.any_of.iter().map(|v| CounterKey::property(name, &f.property, v))),
            },
            _ => {}
        }
    }

    /// The events whose last-seen time evaluation reads.
    pub fn last_seen_events(&self, events: &mut BTreeSet<String>) {
        match self {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| r.last_seen_events(events)),
            Rule::Not(rule) => rule.last_seen_events(events),
            Rule::Event { name, test: EventTest::SeenWithinDays { .. } | EventTest::NotSeenSince(_) } => {
                events.insert(name.clone());
            }
            _ => {}
        }
    }

    /// How many days of counters evaluation needs (today is day 0).
    pub fn window_days(&self) -> u32 {
        match self {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().map(Rule::window_days).max().unwrap_or(0),
            Rule::Not(rule) => rule.window_days(),
            Rule::Event { test: EventTest::Count { window, .. }, .. } => window.from_days_ago + 1,
            _ => 0,
        }
    }

    pub fn evaluate(&self, subject: &Subject) -> bool {
        let Some(profile) = subject.profile else { return false };
        self.holds(profile, subject)
    }

    fn holds(&self, profile: &Profile, subject: &Subject) -> bool {
        match self {
            Rule::All(rules) => rules.iter().all(|r| r.holds(profile, subject)),
            Rule::Any(rules) => rules.iter().any(|r| r.holds(profile, subject)),
            Rule::Not(rule) => !rule.holds(profile, subject),
            Rule::Attribute { name, test } => {
                let values = profile.attributes.get(name);
                test.holds(values, subject.today)
            }
            Rule::Has(contact) => contact.holds(profile),
            Rule::Event { name, test } => test.holds(name, subject.activity, subject.today),
        }
    }
}

impl AttributeTest {
    fn holds(&self, values: Option<&BTreeSet<String>>, today: NaiveDate) -> bool {
        let empty = BTreeSet::new();
        let values = values.unwrap_or(&empty);
        match self {
            AttributeTest::Equals(set) => values == set,
            AttributeTest::AnyOf(set) => values.iter().any(|v| set.contains(v)),
            AttributeTest::AllOf(set) => set.is_subset(values),
            AttributeTest::NoneOf(set) => values.is_disjoint(set),
            AttributeTest::Exists(exists) => values.is_empty() != *exists,
            AttributeTest::Number(bounds) => {
                values.iter().filter_map(|v| parse_number(v)).any(|n| bounds.iter().all(|b| b.holds(n)))
            }
            AttributeTest::Date(bounds) => {
                values.iter().filter_map(|v| parse_date(v)).any(|d| bounds.iter().all(|b| b.holds(d)))
            }
            AttributeTest::WithinLastDays(days) => {
                let Some(since) = today.checked_sub_days(Days::new(u64::from(*days) - 1)) else { return false };
                values.iter().filter_map(|v| parse_date(v)).any(|d| d >= since && d <= today)
            }
        }
    }
}

impl Contact {
    /// The profile field this test reads.
    pub fn field(&self) -> &'static str {
        match self {
            Contact::Email => "email",
            Contact::Phone => "phone",
            Contact::Push(_) => "device_tokens",
            Contact::Channel(_) => "external_channels",
        }
    }

    fn holds(&self, profile: &Profile) -> bool {
        match self {
            Contact::Email => profile.email.is_some(),
            Contact::Phone => profile.phone.is_some(),
            Contact::Push(None) => !profile.device_tokens.is_empty(),
            Contact::Push(Some(platform)) => profile.device_tokens.iter().any(|t| t.platform == *platform),
            Contact::Channel(platform) => {
                profile.external_channels.iter().any(|c| c.enabled && c.platform == *platform)
            }
        }
    }
}

impl EventTest {
    fn holds(&self, name: &str, activity: &Activity, today: NaiveDate) -> bool {
        match self {
            EventTest::Count { filter, window, bounds } => {
                let count: u64 = match filter {
                    None => activity.count(&CounterKey::total(name), window.days(today)),
                    Some(f) => f
                        .any_of
                        .iter()
                        .map(|v| activity.count(&CounterKey::property(name, &f.property, v), window.days(today)))
                        .sum(),
                };
                bounds.iter().all(|b| b.holds(count))
            }
            EventTest::SeenWithinDays { days, seen } => {
                let since = today.checked_sub_days(Days::new(u64::from(*days) - 1));
                let recent = match (activity.last_seen(name), since) {
                    (Some(at), Some(since)) => at.date_naive() >= since,
                    _ => false,
                };
                recent == *seen
            }
            EventTest::NotSeenSince(date) => activity.last_seen(name).is_none_or(|at| at.date_naive() < *date),
        }
    }
}

pub fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A date value: `YYYY-MM-DD` or an RFC 3339 timestamp (its UTC date).
pub fn parse_date(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(value).ok().map(|t| t.with_timezone(&Utc).date_naive()))
}

struct Parser {
    errors: ValidationErrors,
    nodes: usize,
}

const ATTRIBUTE_SETS: [&str; 4] = ["equals", "any_of", "all_of", "none_of"];
const NUMBER_BOUNDS: [&str; 5] = ["gt", "gte", "lt", "lte", "eq"];
const DATE_BOUNDS: [&str; 3] = ["before", "after", "on"];

impl Parser {
    fn fail<T>(&mut self, path: &str, message: impl Into<String>) -> Option<T> {
        self.errors.add(path, message);
        None
    }

    fn rule(&mut self, value: &Value, path: &str, depth: usize) -> Option<Rule> {
        self.nodes += 1;
        if self.nodes == MAX_NODES + 1 {
            return self.fail(path, format!("a rule may have at most {MAX_NODES} nodes"));
        }
        if depth > MAX_DEPTH {
            return self.fail(path, format!("rules nest at most {MAX_DEPTH} deep"));
        }
        let Some(node) = value.as_object() else {
            return self.fail(path, "must be an object");
        };
        let kinds: Vec<&str> =
            ["all", "any", "not", "attribute", "has", "event"].into_iter().filter(|k| node.contains_key(*k)).collect();
        match kinds.as_slice() {
            [] => self.fail(path, "must have one of all, any, not, attribute, has or event"),
            [kind] => match *kind {
                "all" | "any" => {
                    self.only(node, path, &[kind]);
                    let rules = self.list(node, kind, path, depth)?;
                    Some(if *kind == "all" { Rule::All(rules) } else { Rule::Any(rules) })
                }
                "not" => {
                    self.only(node, path, &["not"]);
                    let inner = self.rule(&node["not"], &format!("{path}.not"), depth + 1)?;
                    Some(Rule::Not(Box::new(inner)))
                }
                "attribute" => self.attribute(node, path),
                "has" => self.contact(node, path),
                _ => self.event(node, path),
            },
            _ => self.fail(path, format!("has more than one of {}", kinds.join(", "))),
        }
    }

    /// Reports keys of `node` outside `allowed`.
    fn only(&mut self, node: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for key in node.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.errors.add(format!("{path}.{key}"), "is not a field of this kind of rule");
        }
    }

    fn list(&mut self, node: &Map<String, Value>, key: &str, path: &str, depth: usize) -> Option<Vec<Rule>> {
        let path = format!("{path}.{key}");
        let Some(items) = node[key].as_array().filter(|items| !items.is_empty()) else {
            return self.fail(&path, "must be a non-empty list of rules");
        };
        let rules: Vec<Option<Rule>> =
            items.iter().enumerate().map(|(i, item)| self.rule(item, &format!("{path}[{i}]"), depth + 1)).collect();
        rules.into_iter().collect()
    }

    fn name(
        &mut self,
        node: &Map<String, Value>,
        key: &str,
        path: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let path = format!("{path}.{key}");
        let Some(name) = node.get(key).and_then(Value::as_str) else {
            return self.fail(&path, "must be a string");
        };
        match check(name) {
            Ok(()) => Some(name.to_owned()),
            Err(message) => self.fail(&path, message),
        }
    }

    fn values(&mut self, value: &Value, path: &str) -> Option<BTreeSet<String>> {
        let Some(items) = value.as_array().filter(|items| !items.is_empty() && items.len() <= MAX_VALUES) else {
            return self.fail(path, format!("must be a list of 1 to {MAX_VALUES} strings"));
        };
        let mut values = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(v) => match validation::attribute_value(v) {
                    Ok(()) => {
                        if !values.insert(v.to_owned()) {
                            self.errors.add(format!("{path}[{i}]"), "repeats an earlier value");
                        }
                    }
                    Err(message) => {
                        self.errors.add(format!("{path}[{i}]"), message);
                    }
                },
                None => {
                    self.errors.add(format!("{path}[{i}]"), "must be a string");
                }
            }
        }
        (values.len() == items.len()).then_some(values)
    }

    fn attribute(&mut self, node: &Map<String, Value>, path: &str) -> Option<Rule> {
        let name = self.name(node, "attribute", path, validation::attribute_name);
        let tests: Vec<&str> = node.keys().map(String::as_str).filter(|k| *k != "attribute").collect();
        let numbers = tests.iter().all(|k| NUMBER_BOUNDS.contains(k));
        let dates = tests.iter().all(|k| DATE_BOUNDS.contains(k) || *k == "between_dates");
        let test = match tests.as_slice() {
            [] => self.fail(path, "names no test: equals, any_of, all_of, none_of, exists, gt, gte, lt, lte, eq, between, before, after, on, between_dates or within_last_days"),
            [key] if ATTRIBUTE_SETS.contains(key) => {
                let values = self.values(&node[*key], &format!("{path}.{key}"))?;
                Some(match *key {
                    "equals" => AttributeTest::Equals(values),
                    "any_of" => AttributeTest::AnyOf(values),
                    "all_of" => AttributeTest::AllOf(values),
                    _ => AttributeTest::NoneOf(values),
                })
            }
            ["exists"] => match node["exists"].as_bool() {
                Some(exists) => Some(AttributeTest::Exists(exists)),
                None => self.fail(&format!("{path}.exists"), "must be true or false"),
            },
            ["within_last_days"] => self.days(&node["within_last_days"], &format!("{path}.within_last_days")).map(AttributeTest::WithinLastDays),
            ["between"] => {
                let p = format!("{path}.between");
                let pair = node["between"].as_array().filter(|a| a.len() == 2).and_then(|a| Some((a[0].as_f64()?, a[1].as_f64()?)));
                match pair {
                    Some((low, high)) if low <= high => Some(AttributeTest::Number(vec![Bound::Gte(low), Bound::Lte(high)])),
                    _ => self.fail(&p, "must be [low, high], two numbers with low <= high"),
                }
            }
            keys if numbers => {
                let mut bounds = Vec::new();
                for key in keys {
                    match node[*key].as_f64() {
                        Some(n) => bounds.push(bound(key, n)),
                        None => {
                            self.errors.add(format!("{path}.{key}"), "must be a number");
                        }
                    }
                }
                (bounds.len() == keys.len()).then_some(AttributeTest::Number(bounds))
            }
            keys if dates => {
                let mut bounds = Vec::new();
                for key in keys {
                    let p = format!("{path}.{key}");
                    if *key == "between_dates" {
                        let pair = node[*key].as_array().filter(|a| a.len() == 2).and_then(|a| {
                            Some((parse_date(a[0].as_str()?)?, parse_date(a[1].as_str()?)?))
                        });
                        match pair {
                            Some((from, to)) if from <= to => bounds.extend([Bound::Gte(from), Bound::Lte(to)]),
                            _ => {
                                self.errors.add(p, "must be [from, to], two dates (YYYY-MM-DD) with from <= to");
                            }
                        }
                        continue;
                    }
                    match node[*key].as_str().and_then(parse_date) {
                        Some(date) => bounds.push(match *key {
                            "before" => Bound::Lt(date),
                            "after" => Bound::Gt(date),
                            _ => Bound::Eq(date),
                        }),
                        None => {
                            self.errors.add(p, "must be a date: YYYY-MM-DD or RFC 3339");
                        }
                    }
                }
                (self.errors.0.is_empty()).then_some(AttributeTest::Date(bounds))
            }
            keys => self.fail(path, format!("cannot combine {} in one attribute test", keys.join(", "))),
        };
        Some(Rule::Attribute { name: name?, test: test? })
    }

    fn days(&mut self, value: &Value, path: &str) -> Option<u32> {
        match value.as_u64().filter(|d| (1..=u64::from(MAX_WINDOW_DAYS)).contains(d)) {
            Some(days) => Some(days as u32),
            None => self.fail(path, format!("must be a whole number of days from 1 to {MAX_WINDOW_DAYS}")),
        }
    }

    fn contact(&mut self, node: &Map<String, Value>, path: &str) -> Option<Rule> {
        self.only(node, path, &["has", "platform"]);
        let platform = node.get("platform");
        let platform_path = format!("{path}.platform");
        let contact = match node["has"].as_str() {
            Some("email") | Some("phone") if platform.is_some() => {
                return self.fail(&platform_path, "applies only to push and channel");
            }
            Some("email") => Contact::Email,
            Some("phone") => Contact::Phone,
            Some("push") => match platform {
                None => Contact::Push(None),
                Some(p) => match serde_json::from_value::<Platform>(p.clone()) {
                    Ok(p) => Contact::Push(Some(p)),
                    Err(_) => return self.fail(&platform_path, "must be apns, apns_sandbox or fcm"),
                },
            },
            Some("channel") => match platform.and_then(Value::as_str) {
                Some(p) => match validation::channel_platform(p) {
                    Ok(()) => Contact::Channel(p.to_owned()),
                    Err(message) => return self.fail(&platform_path, message),
                },
                None => return self.fail(&platform_path, "names the channel's platform, e.g. slack"),
            },
            _ => return self.fail(&format!("{path}.has"), "must be email, phone, push or channel"),
        };
        Some(Rule::Has(contact))
    }

    fn event(&mut self, node: &Map<String, Value>, path: &str) -> Option<Rule> {
        let name = self.name(node, "event", path, crate::activity::check_event_name);
        let tests: Vec<&str> = ["count", "last_seen_within_days", "not_seen_within_days", "not_seen_since"]
            .into_iter()
            .filter(|k| node.contains_key(*k))
            .collect();
        let test = match tests.as_slice() {
            ["count"] => {
                self.only(node, path, &["event", "count", "window", "where"]);
                // Every part is checked, so that all faults are reported at once.
                let filter = node.get("where").map(|filter| self.filter(filter, &format!("{path}.where")));
                let window = self.window(node.get("window"), &format!("{path}.window"));
                let bounds = self.count(&node["count"], &format!("{path}.count"));
                let filter = match filter {
                    None => None,
                    Some(parsed) => Some(parsed?),
                };
                Some(EventTest::Count { filter, window: window?, bounds: bounds? })
            }
            [key @ ("last_seen_within_days" | "not_seen_within_days")] => {
                self.only(node, path, &["event", key]);
                let days = self.days(&node[*key], &format!("{path}.{key}"))?;
                Some(EventTest::SeenWithinDays { days, seen: *key == "last_seen_within_days" })
            }
            ["not_seen_since"] => {
                self.only(node, path, &["event", "not_seen_since"]);
                match node["not_seen_since"].as_str().and_then(parse_date) {
                    Some(date) => Some(EventTest::NotSeenSince(date)),
                    None => self.fail(&format!("{path}.not_seen_since"), "must be a date: YYYY-MM-DD or RFC 3339"),
                }
            }
            [] => {
                self.fail(path, "names no test: count, last_seen_within_days, not_seen_within_days or not_seen_since")
            }
            _ => self.fail(path, format!("has more than one test: {}", tests.join(", "))),
        };
        Some(Rule::Event { name: name?, test: test? })
    }

    fn filter(&mut self, value: &Value, path: &str) -> Option<PropertyFilter> {
        let Some(node) = value.as_object() else { return self.fail(path, "must be an object") };
        self.only(node, path, &["property", "any_of"]);
        let property = self.name(node, "property", path, crate::activity::check_property_name);
        let any_of = match node.get("any_of") {
            Some(values) => self.values(values, &format!("{path}.any_of")),
            None => self.fail(&format!("{path}.any_of"), "must be a list of 1 to 100 strings"),
        };
        Some(PropertyFilter { property: property?, any_of: any_of? })
    }

    fn window(&mut self, value: Option<&Value>, path: &str) -> Option<Window> {
        let window = match value {
            Some(Value::String(s)) if s == "today" => Some(Window { from_days_ago: 0, to_days_ago: 0 }),
            Some(Value::String(s)) if s == "yesterday" => Some(Window { from_days_ago: 1, to_days_ago: 1 }),
            Some(Value::Object(o)) if o.len() == 1 && o.contains_key("last_days") => {
                let days = self.days(&o["last_days"], &format!("{path}.last_days"))?;
                Some(Window { from_days_ago: days - 1, to_days_ago: 0 })
            }
            _ => None,
        };
        window.or_else(|| {
            self.fail(
                path,
                format!("must be \"today\", \"yesterday\" or {{\"last_days\": N}} with N from 1 to {MAX_WINDOW_DAYS}"),
            )
        })
    }

    fn count(&mut self, value: &Value, path: &str) -> Option<Vec<Bound<u64>>> {
        let bounds: Option<Vec<Bound<u64>>> = value.as_object().filter(|o| !o.is_empty()).and_then(|o| {
            o.iter()
                .map(|(k, v)| if NUMBER_BOUNDS.contains(&k.as_str()) { Some(bound(k, v.as_u64()?)) } else { None })
                .collect()
        });
        bounds.or_else(|| {
            self.fail(path, "must be an object of gt, gte, lt, lte or eq with whole numbers, e.g. {\"gt\": 2}")
        })
    }
}

fn bound<T>(key: &str, value: T) -> Bound<T> {
    match key {
        "gt" => Bound::Gt(value),
        "gte" => Bound::Gte(value),
        "lt" => Bound::Lt(value),
        "lte" => Bound::Lte(value),
        _ => Bound::Eq(value),
    }
}
