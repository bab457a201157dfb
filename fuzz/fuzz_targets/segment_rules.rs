//! A segment rule as a request body carries it: parsed and validated, and a valid one asked
//! what it reads and evaluated against an empty profile and activity.
#![no_main]

use std::collections::BTreeSet;

use chrono::NaiveDate;
use herald_core::{
    activity::Activity,
    segments::rules::{Rule, Subject},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(rule) = Rule::parse(&value) else { return };
    let _ = rule.reads();
    let mut counters = BTreeSet::new();
    rule.counters(&mut counters);
    let mut events = BTreeSet::new();
    rule.last_seen_events(&mut events);
    let _ = rule.window_days();
    let activity = Activity::default();
    let today = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date");
    let _ = rule.evaluate(&Subject { profile: None, activity: &activity, today });
});
