//! Metrics as CloudWatch Embedded Metric Format (EMF) lines on stdout: no API calls.
//!
//! A function's [`Emf`] adds up what its invocation records (herald-core's
//! [`Metrics`] port) and [`Emf::flush`] prints it at the invocation's end as few
//! documents as the values allow, usually one: a document holds one value per dimension
//! name, so two statuses of one metric take two. Each document is one line of its own,
//! written straight to stdout and not through the `tracing` formatter (which would nest
//! it under `fields`): Lambda passes a line its function prints to CloudWatch Logs as it
//! is (it never re-encodes JSON), and CloudWatch Logs extracts the metrics of any log
//! event that is an EMF document (`_aws` at the top level). A function stopped by its
//! timeout before it flushed loses that invocation's metrics, so handlers finish before
//! their deadline (ARCHITECTURE.md, "Handlers know their deadline").
//!
//! The spec's limits are kept: at most [`MAX_METRICS_PER_DOCUMENT`] metrics and
//! [`MAX_VALUES_PER_METRIC`] values of one metric per document; a dimension set holds the
//! function and at most three more, far below [`MAX_DIMENSIONS`].

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

pub use herald_core::metrics::{Dimension, Metric, Metrics, Unit};
use serde_json::{Map, Value, json};

/// The namespace without `METRICS_NAMESPACE` (the template sets `Herald/<stack>`).
pub const DEFAULT_NAMESPACE: &str = "Herald";
/// EMF: "a maximum of 100 metrics" per document's directives.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
/// EMF: a metric's value may be an array of at most 100 values.
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// EMF: a dimension set holds at most 30 dimensions.
pub const MAX_DIMENSIONS: usize = 30;
/// The name of the dimension every metric carries: the function's fixed name.
pub const FUNCTION: &str = "function";

/// Where documents go.
#[derive(Clone, Debug, Default)]
pub enum Sink {
    /// The process's stdout, as Lambda reads it.
    Stdout,
    /// Nowhere: handlers built without a writer (tests, the local stack).
    #[default]
    Discard,
    /// Lines kept for a test to read.
    Memory(Arc<Mutex<Vec<String>>>),
}

#[derive(Clone, Debug)]
enum Recorded {
    Sum(f64),
    Samples(Vec<f64>),
}

/// One function's metrics, added up until [`Emf::flush`].
#[derive(Debug)]
pub struct Emf {
    namespace: String,
    function: &'static str,
    sink: Sink,
    recorded: Mutex<BTreeMap<(Metric, Vec<Dimension>), Recorded>>,
}

impl Emf {
    pub fn new(namespace: impl Into<String>, function: &'static str, sink: Sink) -> Self {
        Self { namespace: namespace.into(), function, sink, recorded: Mutex::default() }
    }

    /// Records nothing anywhere (what a handler built in a test has unless it asks).
    pub fn discard(function: &'static str) -> Self {
        Self::new(DEFAULT_NAMESPACE, function, Sink::Discard)
    }

    /// Writes to stdout under `METRICS_NAMESPACE` (default [`DEFAULT_NAMESPACE`]): a
    /// function's `connect`.
    pub fn stdout(function: &'static str) -> Self {
        let namespace = crate::config::process_env("METRICS_NAMESPACE").filter(|n| !n.trim().is_empty());
        Self::new(namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()), function, Sink::Stdout)
    }

    /// Writes to stdout when the process runs in Lambda (which sets
    /// `AWS_LAMBDA_FUNCTION_NAME`), else nowhere: the local stack and tests call handlers
    /// in-process, where stdout is a terminal or a test's output.
    pub fn for_function(function: &'static str) -> Self {
        match crate::config::process_env("AWS_LAMBDA_FUNCTION_NAME") {
            Some(_) => Self::stdout(function),
            None => Self::discard(function),
        }
    }

    /// Keeps its lines in memory; the vector they go to is returned beside it.
    pub fn in_memory(function: &'static str) -> (Self, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Self::new(DEFAULT_NAMESPACE, function, Sink::Memory(lines.clone())), lines)
    }

    pub fn function(&self) -> &'static str {
        self.function
    }

    /// Writes what was recorded since the last flush, and forgets it.
    pub fn flush(&self) {
        if matches!(self.sink, Sink::Discard) {
            self.recorded.lock().expect("metrics lock").clear();
            return;
        }
        let lines: Vec<String> = self.take_documents().iter().map(Value::to_string).collect();
        match &self.sink {
            Sink::Discard => {}
            Sink::Memory(kept) => kept.lock().expect("metrics lines lock").extend(lines),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                for line in lines {
                    // Metrics are best effort: a closed stdout loses them, nothing else.
                    let _ = out.write_all(format!("{line}\n").as_bytes());
                }
                let _ = out.flush();
            }
        }
    }

    /// The documents of what was recorded since the last flush, which it forgets.
    pub fn take_documents(&self) -> Vec<Value> {
        let recorded = std::mem::take(&mut *self.recorded.lock().expect("metrics lock"));
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        documents(&self.namespace, self.function, timestamp, recorded)
    }
}

impl Metrics for Emf {
    fn record(&self, metric: Metric, dimensions: &[Dimension], value: f64) {
        if !value.is_finite() {
            return;
        }
        let mut dimensions = dimensions.to_vec();
        dimensions.sort();
        dimensions.dedup_by_key(|d| d.name());
        let mut recorded = self.recorded.lock().expect("metrics lock");
        let entry = recorded.entry((metric, dimensions)).or_insert_with(|| match metric.unit() {
            Unit::Count => Recorded::Sum(0.0),
            Unit::Milliseconds => Recorded::Samples(Vec::new()),
        });
        match entry {
            Recorded::Sum(sum) => *sum += value,
            Recorded::Samples(samples) => samples.push(value),
        }
    }
}

/// One document being filled: its dimension values, its metrics' values, and its
/// directives (metrics by dimension set).
#[derive(Default)]
struct Document {
    dimensions: BTreeMap<&'static str, &'static str>,
    values: Map<String, Value>,
    directives: BTreeMap<Vec<&'static str>, Vec<Metric>>,
    metrics: usize,
}

impl Document {
    fn takes(&self, metric: Metric, dimensions: &[Dimension]) -> bool {
        self.metrics < MAX_METRICS_PER_DOCUMENT
            && !self.values.contains_key(metric.name())
            && dimensions.iter().all(|d| self.dimensions.get(d.name()).is_none_or(|v| *v == d.value()))
    }

    fn add(&mut self, metric: Metric, dimensions: &[Dimension], value: Value) {
        let mut set = vec![FUNCTION];
        for d in dimensions {
            self.dimensions.insert(d.name(), d.value());
            set.push(d.name());
        }
        self.values.insert(metric.name().to_owned(), value);
        self.directives.entry(set).or_default().push(metric);
        self.metrics += 1;
    }

    fn into_value(self, namespace: &str, function: &str, timestamp: u64) -> Value {
        let directives: Vec<Value> = self
            .directives
            .into_iter()
            .map(|(set, metrics)| {
                let metrics: Vec<Value> =
                    metrics.iter().map(|m| json!({"Name": m.name(), "Unit": m.unit().as_str()})).collect();
                json!({"Namespace": namespace, "Dimensions": [set], "Metrics": metrics})
            })
            .collect();
        let mut document = self.values;
        document.insert(FUNCTION.to_owned(), json!(function));
        for (name, value) in self.dimensions {
            document.insert(name.to_owned(), json!(value));
        }
        document.insert("_aws".to_owned(), json!({"Timestamp": timestamp, "CloudWatchMetrics": directives}));
        Value::Object(document)
    }
}

/// Packs `recorded` into as few EMF documents as its dimension values allow.
fn documents(
    namespace: &str,
    function: &'static str,
    timestamp: u64,
    recorded: BTreeMap<(Metric, Vec<Dimension>), Recorded>,
) -> Vec<Value> {
    let mut documents: Vec<Document> = Vec::new();
    for ((metric, dimensions), recorded) in recorded {
        let values: Vec<Value> = match recorded {
            Recorded::Sum(sum) => vec![json!(sum)],
            Recorded::Samples(samples) => samples.chunks(MAX_VALUES_PER_METRIC).map(|chunk| json!(chunk)).collect(),
        };
        for value in values {
            match documents.iter_mut().find(|d| d.takes(metric, &dimensions)) {
                Some(document) => document.add(metric, &dimensions, value),
                None => {
                    let mut document = Document::default();
                    document.add(metric, &dimensions, value);
                    documents.push(document);
                }
            }
        }
    }
    documents.into_iter().map(|d| d.into_value(namespace, function, timestamp)).collect()
}

#[cfg(test)]
mod tests {
    use herald_core::channel::Channel;

    use super::*;

    const SENT: Dimension = Dimension::Status("sent");
    const EMAIL: Dimension = Dimension::Channel(Channel::Email);

    /// Checks `document` against the EMF specification and answers its metrics by name,
    /// each with its dimension set.
    fn check_spec(document: &Value) -> BTreeMap<String, Vec<String>> {
        let aws = &document["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "_aws.Timestamp in ms");
        let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
        let mut metrics = BTreeMap::new();
        for directive in directives {
            assert!(directive["Namespace"].as_str().is_some_and(|n| !n.is_empty() && n.len() <= 256));
            let sets = directive["Dimensions"].as_array().expect("Dimensions");
            for set in sets {
                let set = set.as_array().expect("a dimension set");
                assert!(set.len() <= MAX_DIMENSIONS);
                for name in set {
                    let value = &document[name.as_str().expect("a dimension name")];
                    assert!(value.is_string(), "dimension {name} has a string value at the top level");
                }
            }
            for metric in directive["Metrics"].as_array().expect("Metrics") {
                let name = metric["Name"].as_str().expect("Name");
                assert!(["Count", "Milliseconds"].contains(&metric["Unit"].as_str().expect("Unit")));
                let value = &document[name];
                let values = value.as_array().cloned().unwrap_or_else(|| vec![value.clone()]);
                assert!(!values.is_empty() && values.len() <= MAX_VALUES_PER_METRIC);
                assert!(values.iter().all(Value::is_number), "{name} is a number or numbers at the top level");
                let set: Vec<String> = sets[0].as_array().unwrap().iter().map(|d| d.as_str().unwrap().into()).collect();
                assert!(metrics.insert(name.to_owned(), set).is_none(), "{name} defined twice");
            }
        }
        assert!(metrics.len() <= MAX_METRICS_PER_DOCUMENT);
        metrics
    }

    #[test]
    fn a_document_follows_the_emf_specification() {
        let emf = Emf::discard("EmailWorker");
        emf.record(Metric::Invocations, &[Dimension::Outcome("ok")], 1.0);
        emf.record(Metric::ProviderLatency, &[EMAIL], 120.0);
        emf.record(Metric::ProviderLatency, &[EMAIL], 80.0);
        emf.count(Metric::Deliveries, &[EMAIL, SENT], 3);
        let documents = emf.take_documents();
        assert_eq!(documents.len(), 1, "one document per invocation: {documents:?}");
        let document = &documents[0];
        let metrics = check_spec(document);
        assert_eq!(metrics["Invocations"], ["function", "outcome"]);
        assert_eq!(metrics["ProviderLatency"], ["function", "channel"]);
        assert_eq!(metrics["Deliveries"], ["function", "channel", "status"]);
        assert_eq!(document["_aws"]["CloudWatchMetrics"][0]["Namespace"], DEFAULT_NAMESPACE);
        let dimensions = ["function", "channel", "status", "outcome"].map(|name| &document[name]);
        assert_eq!(dimensions, [&json!("EmailWorker"), &json!("email"), &json!("sent"), &json!("ok")]);
        assert_eq!(document["Deliveries"], 3.0);
        assert_eq!(document["ProviderLatency"], json!([120.0, 80.0]));
    }

    #[test]
    fn counts_add_up_within_an_invocation_and_a_flush_starts_afresh() {
        let (emf, lines) = Emf::in_memory("Importer");
        emf.count(Metric::ImportRows, &[], 1000);
        emf.count(Metric::ImportRows, &[], 500);
        emf.count(Metric::ImportRejects, &[], 0);
        emf.flush();
        emf.flush();
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1, "nothing recorded, nothing written");
        let document: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(document["ImportRows"], 1500.0);
        assert!(document.get("ImportRejects").is_none(), "a zero count is not recorded");
    }

    #[test]
    fn each_line_is_one_json_document_with_its_aws_key() {
        let (emf, lines) = Emf::in_memory("Api");
        emf.record(Metric::Invocations, &[Dimension::Outcome("ok")], 1.0);
        emf.flush();
        let line = &lines.lock().unwrap()[0];
        assert!(!line.contains('\n'), "a line of its own");
        assert!(line.starts_with('{') && line.contains(r#""_aws":"#));
        check_spec(&serde_json::from_str(line).unwrap());
    }

    #[test]
    fn two_values_of_a_dimension_take_two_documents() {
        let emf = Emf::discard("SmsWorker");
        emf.count(Metric::Deliveries, &[Dimension::Channel(Channel::Sms), SENT], 5);
        emf.count(Metric::Deliveries, &[Dimension::Channel(Channel::Sms), Dimension::Status("error")], 1);
        emf.record(Metric::Invocations, &[Dimension::Outcome("ok")], 1.0);
        let documents = emf.take_documents();
        assert_eq!(documents.len(), 2);
        let statuses: Vec<(&Value, &Value)> =
            documents.iter().map(|d| (&d["status"], d.get("Deliveries").unwrap_or(&Value::Null))).collect();
        assert!(statuses.contains(&(&json!("error"), &json!(1.0))), "{statuses:?}");
        assert!(statuses.contains(&(&json!("sent"), &json!(5.0))), "{statuses:?}");
        documents.iter().for_each(|d| {
            check_spec(d);
        });
    }

    #[test]
    fn more_than_a_hundred_samples_take_more_documents() {
        let emf = Emf::discard("WebhookWorker");
        for ms in 0..250 {
            emf.record(Metric::ProviderLatency, &[Dimension::Channel(Channel::Webhook)], f64::from(ms));
        }
        let documents = emf.take_documents();
        let sizes: Vec<usize> = documents.iter().map(|d| d["ProviderLatency"].as_array().unwrap().len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        documents.iter().for_each(|d| {
            check_spec(d);
        });
    }

    #[test]
    fn a_dimension_names_a_fixed_word_never_an_id() {
        // The type says it: a dimension's value is a `&'static str` or a channel.
        let names: Vec<&str> = [EMAIL, SENT, Dimension::Outcome("ok")].iter().map(|d| d.name()).collect();
        assert_eq!(names, ["channel", "status", "outcome"]);
        let emf = Emf::discard("Dispatcher");
        emf.count(Metric::CampaignRecipientsQueued, &[], 10);
        let document = &emf.take_documents()[0];
        let keys: Vec<&String> = document.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["CampaignRecipientsQueued", "_aws", "function"]);
    }
}
