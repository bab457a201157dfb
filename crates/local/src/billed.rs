//! What Lambda would bill for the invocations the local stack runs: per function (its
//! logical id), how many invocations and how long their handlers ran. Benchmarks price
//! it with the template's `MemorySize`. One record for the process: reset it before the
//! work measured, with one stack running.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Billed {
    pub invocations: u64,
    /// The handlers' running time, summed.
    pub duration: Duration,
}

static BILLED: Mutex<BTreeMap<String, Billed>> = Mutex::new(BTreeMap::new());

/// Records one invocation of `function` that started at `started` and ends now.
pub fn record(function: &str, started: Instant) {
    let took = started.elapsed();
    let mut billed = BILLED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = billed.entry(function.to_owned()).or_default();
    entry.invocations += 1;
    entry.duration += took;
}

pub fn snapshot() -> BTreeMap<String, Billed> {
    BILLED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn reset() {
    BILLED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
