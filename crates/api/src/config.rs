//! The API function's configuration, from the environment the template sets.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub profiles_table: String,
    pub api_keys_table: String,
    pub event_bus_name: String,
    pub deliveries_table: String,
    pub notifications_table: String,
    pub templates_table: String,
    pub preferences_table: String,
    /// The suppression list, per channel.
    pub suppressions_table: String,
    /// Per-user daily event counters.
    pub activity_table: String,
    pub segments_table: String,
    /// Segment memberships (write-sharded rows) and each user's dynamic memberships.
    pub members_table: String,
    /// Jobs of bulk profile imports, and campaigns.
    pub jobs_table: String,
    /// The dispatcher's queue, which a new campaign's first pages are sent to.
    pub dispatch_queue_url: String,
    /// The secret holding the tracking keys (HMAC of tracking links), by ARN.
    pub tracking_keys_secret: String,
    /// The secret holding the webhook signing keys, whose public halves the API publishes.
    pub webhook_keys_secret: String,
    /// How long an idempotency key holds (`IDEMPOTENCY_TTL_SECONDS`, default 24 h).
    pub idempotency_ttl: chrono::Duration,
}

pub use herald_edge::config::ConfigError;

pub const TRACKING_KEYS_SECRET_ARN: &str = "TRACKING_KEYS_SECRET_ARN";
pub const WEBHOOK_SIGNING_KEYS_SECRET_ARN: &str = "WEBHOOK_SIGNING_KEYS_SECRET_ARN";
use herald_edge::config::{Env, process_env};

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(process_env)
    }

    /// Reads the variables through `lookup`, so the local stack can pass the values it
    /// resolved from the template without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let get = |name: &'static str| env.required(name);
        Ok(Self {
            profiles_table: get("PROFILES_TABLE")?,
            api_keys_table: get("API_KEYS_TABLE")?,
            event_bus_name: get("EVENT_BUS_NAME")?,
            deliveries_table: get("DELIVERIES_TABLE")?,
            notifications_table: get("NOTIFICATIONS_TABLE")?,
            templates_table: get("TEMPLATES_TABLE")?,
            preferences_table: get("PREFERENCES_TABLE")?,
            suppressions_table: get("SUPPRESSIONS_TABLE")?,
            activity_table: get("ACTIVITY_TABLE")?,
            segments_table: get("SEGMENTS_TABLE")?,
            members_table: get("MEMBERS_TABLE")?,
            jobs_table: get("JOBS_TABLE")?,
            dispatch_queue_url: get("DISPATCH_QUEUE_URL")?,
            tracking_keys_secret: get(TRACKING_KEYS_SECRET_ARN)?,
            webhook_keys_secret: get(WEBHOOK_SIGNING_KEYS_SECRET_ARN)?,
            idempotency_ttl: env
                .parse("IDEMPOTENCY_TTL_SECONDS", "a positive number of seconds", |v| {
                    v.parse::<i64>().ok().filter(|s| *s > 0).map(chrono::Duration::seconds)
                })?
                .unwrap_or(herald_core::notifications::DEFAULT_IDEMPOTENCY_TTL),
        })
    }
}
