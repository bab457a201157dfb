//! What Herald measures, and the port that records it.
//!
//! Metric names and units are fixed here; a dimension's value is always one of a fixed
//! few (a channel, a status), a `&'static str`, so no id can ever become a dimension:
//! CloudWatch bills each metric per combination of dimension values. The functions record
//! into herald-edge's EMF writer, which prints one CloudWatch Embedded Metric Format
//! document per invocation (no API calls); services that count what only they see (the
//! importer's rows) record through [`Metrics`].

use crate::channel::Channel;

/// A metric: its name in CloudWatch and its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// One per invocation, by outcome `ok`, `partial` (some messages retried) or `failed`.
    Invocations,
    /// A message's time in its queue: from its `SentTimestamp` to its receipt.
    QueueAge,
    /// A recipient's send, by channel and the status it ended in.
    Deliveries,
    /// One provider call (SES, SNS, a webhook receiver), by channel.
    ProviderLatency,
    /// Users (or segment jobs) evaluated by the segmenter.
    SegmentEvaluations,
    /// From a change's bus event time to the end of the segmenter run that wrote its
    /// memberships (the event's time has a second's precision).
    ChangeToMembershipLatency,
    /// Import rows applied to a profile (changed or not).
    ImportRows,
    /// Import rows rejected (listed in the job's errors file).
    ImportRejects,
    /// Campaign recipients put on a channel queue by the dispatcher (fan-out).
    CampaignRecipientsQueued,
    /// Campaign recipients settled by a worker (progress), by channel and status.
    CampaignRecipientsSettled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    /// The unit's name in CloudWatch.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::Invocations,
        Metric::QueueAge,
        Metric::Deliveries,
        Metric::ProviderLatency,
        Metric::SegmentEvaluations,
        Metric::ChangeToMembershipLatency,
        Metric::ImportRows,
        Metric::ImportRejects,
        Metric::CampaignRecipientsQueued,
        Metric::CampaignRecipientsSettled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Invocations => "Invocations",
            Metric::QueueAge => "QueueAge",
            Metric::Deliveries => "Deliveries",
            Metric::ProviderLatency => "ProviderLatency",
            Metric::SegmentEvaluations => "SegmentEvaluations",
            Metric::ChangeToMembershipLatency => "ChangeToMembershipLatency",
            Metric::ImportRows => "ImportRows",
            Metric::ImportRejects => "ImportRejects",
            Metric::CampaignRecipientsQueued => "CampaignRecipientsQueued",
            Metric::CampaignRecipientsSettled => "CampaignRecipientsSettled",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::QueueAge | Metric::ProviderLatency | Metric::ChangeToMembershipLatency => Unit::Milliseconds,
            _ => Unit::Count,
        }
    }
}

/// A dimension besides the function's name (which the writer adds): a channel, a
/// delivery's status or an invocation's outcome, each a fixed word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Channel(Channel),
    Status(&'static str),
    Outcome(&'static str),
}

impl Dimension {
    /// The dimension's name in CloudWatch.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Channel(_) => "channel",
            Dimension::Status(_) => "status",
            Dimension::Outcome(_) => "outcome",
        }
    }

    pub fn value(self) -> &'static str {
        match self {
            Dimension::Channel(channel) => channel.as_str(),
            Dimension::Status(status) | Dimension::Outcome(status) => status,
        }
    }
}

/// Where measurements go. Counts add up; a time is one sample (milliseconds).
pub trait Metrics: Send + Sync {
    fn record(&self, metric: Metric, dimensions: &[Dimension], value: f64);

    /// Adds `n` to a count.
    fn count(&self, metric: Metric, dimensions: &[Dimension], n: u64) {
        if n > 0 {
            self.record(metric, dimensions, n as f64);
        }
    }
}

/// Records nothing: the default of a service no one measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _: Metric, _: &[Dimension], _: f64) {}
}

#[cfg(feature = "memory")]
pub mod memory {
    use std::sync::Mutex;

    use super::*;

    /// Keeps every measurement, for tests.
    #[derive(Debug, Default)]
    pub struct MemoryMetrics {
        pub recorded: Mutex<Vec<(Metric, Vec<Dimension>, f64)>>,
    }

    impl MemoryMetrics {
        /// The sum of what was recorded for `metric` with exactly `dimensions`.
        pub fn total(&self, metric: Metric, dimensions: &[Dimension]) -> f64 {
            let recorded = self.recorded.lock().expect("metrics lock");
            recorded.iter().filter(|(m, d, _)| *m == metric && d == dimensions).map(|(_, _, v)| v).sum()
        }
    }

    impl Metrics for MemoryMetrics {
        fn record(&self, metric: Metric, dimensions: &[Dimension], value: f64) {
            self.recorded.lock().expect("metrics lock").push((metric, dimensions.to_vec(), value));
        }
    }
}
