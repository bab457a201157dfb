//! A worker's configuration, from the variables the template gives it.

use herald_aws::{Clients, SecretsManagerKeyRings, senders::webhook::Destinations};
use herald_core::{
    channel::Channel,
    delivery::rate_limit::RateLimit,
    signing::{KeyRing, KeyRingStore},
};
use herald_edge::config::{ConfigError, Env};

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    pub channel: Channel,
    /// The channel's own queue, where recipients to try again are put back.
    pub queue_url: String,
    /// Campaigns: whether one was cancelled, and its counters.
    pub jobs_table: String,
    pub deliveries_table: String,
    pub preferences_table: String,
    pub suppressions_table: String,
    pub rate_limits_table: String,
    pub templates_table: String,
    pub sender_address: String,
    /// The SES configuration set whose events are Herald's email feedback (email only).
    pub configuration_set: Option<String>,
    pub apns_application: Option<String>,
    pub apns_sandbox_application: Option<String>,
    pub fcm_application: Option<String>,
    /// The secret (ARN) holding the tracking keys: email with tracking only.
    pub tracking_keys_secret: Option<String>,
    /// The secret (ARN) holding the webhook signing keys: webhooks only.
    pub webhook_keys_secret: Option<String>,
    pub rate_limit: Option<RateLimit>,
    /// An extra trusted CA for webhook receivers (local stacks and tests only).
    pub webhook_root_pem: Option<String>,
    /// Public addresses only, unless `WEBHOOK_PRIVATE_DESTINATIONS=allow` (local stacks and
    /// tests whose receivers run on loopback; the template never sets it).
    pub webhook_destinations: Destinations,
    /// The public URL of the API; email carries tracking links to it when set.
    pub tracking_base_url: Option<String>,
    /// Another region of the same provider, used while the primary keeps failing.
    pub secondary_region: Option<String>,
    /// Where push removes tokens of disabled endpoints (and announces the change).
    pub profiles_table: Option<String>,
    /// The provider's quota for the channel, in sends a second (`SENDS_PER_SECOND`; unset
    /// or empty: unpaced), shared by up to `max_concurrency` invocations at a time
    /// (`MAX_CONCURRENCY`, the queue's maximum concurrency; default 1).
    pub sends_per_second: Option<f64>,
    pub max_concurrency: u32,
}

impl WorkerConfig {
    /// What one invocation may send a second: its share of the channel's quota.
    pub fn sends_per_second_per_invocation(&self) -> Option<f64> {
        self.sends_per_second.map(|rate| rate / f64::from(self.max_concurrency.max(1)))
    }
}

pub const TRACKING_KEYS_SECRET_ARN: &str = "TRACKING_KEYS_SECRET_ARN";
pub const WEBHOOK_SIGNING_KEYS_SECRET_ARN: &str = "WEBHOOK_SIGNING_KEYS_SECRET_ARN";

/// The key ring in the secret `arn`, read once (an error names `var`, never the value).
pub(crate) async fn key_ring(clients: &Clients, var: &'static str, arn: &str) -> Result<KeyRing, ConfigError> {
    let secrets = SecretsManagerKeyRings::new(clients.secretsmanager());
    secrets.key_ring(arn).await.map_err(|e| ConfigError::invalid(var, e.to_string()))
}

pub(crate) fn parse_rate_limit(text: &str) -> Result<Option<RateLimit>, ConfigError> {
    if text.is_empty() || text == "off" {
        return Ok(None);
    }
    let bad = || ConfigError::invalid("RATE_LIMIT_PER_USER", "expected like 20/3600 (sends per seconds) or off");
    let (limit, window) = text.split_once('/').ok_or_else(bad)?;
    Ok(Some(RateLimit {
        limit: limit.trim().parse().map_err(|_| bad())?,
        window: window.trim().parse().map_err(|_| bad())?,
    }))
}

impl WorkerConfig {
    /// Reads the variables the template gives a worker through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let channel = env
            .parse("CHANNEL", "email, sms, push or webhook", |v| match v {
                "email" => Some(Channel::Email),
                "sms" => Some(Channel::Sms),
                "push" => Some(Channel::Push),
                "webhook" => Some(Channel::Webhook),
                _ => None,
            })?
            .ok_or(ConfigError::Missing("CHANNEL"))?;
        let config = Self {
            channel,
            queue_url: env.required("QUEUE_URL")?,
            jobs_table: env.required("JOBS_TABLE")?,
            deliveries_table: env.required("DELIVERIES_TABLE")?,
            preferences_table: env.required("PREFERENCES_TABLE")?,
            suppressions_table: env.required("SUPPRESSIONS_TABLE")?,
            rate_limits_table: env.required("RATE_LIMITS_TABLE")?,
            templates_table: env.required("TEMPLATES_TABLE")?,
            sender_address: env.optional("SENDER_ADDRESS").unwrap_or_default(),
            configuration_set: env.optional("SES_CONFIGURATION_SET"),
            apns_application: env.optional("APNS_PLATFORM_APPLICATION_ARN"),
            apns_sandbox_application: env.optional("APNS_SANDBOX_PLATFORM_APPLICATION_ARN"),
            fcm_application: env.optional("FCM_PLATFORM_APPLICATION_ARN"),
            tracking_keys_secret: env.optional(TRACKING_KEYS_SECRET_ARN),
            webhook_keys_secret: env.optional(WEBHOOK_SIGNING_KEYS_SECRET_ARN),
            rate_limit: parse_rate_limit(&env.optional("RATE_LIMIT_PER_USER").unwrap_or_default())?,
            webhook_root_pem: env.optional("WEBHOOK_ROOT_CA_PEM"),
            webhook_destinations: env
                .parse("WEBHOOK_PRIVATE_DESTINATIONS", "allow", |v| (v == "allow").then_some(Destinations::Any))?
                .unwrap_or(Destinations::Public),
            tracking_base_url: env.optional("TRACKING_BASE_URL"),
            secondary_region: env.optional("SECONDARY_PROVIDER_REGION"),
            profiles_table: env.optional("PROFILES_TABLE"),
            sends_per_second: env.parse("SENDS_PER_SECOND", "a positive number of sends a second", |v| {
                v.parse().ok().filter(|r: &f64| r.is_finite() && *r > 0.0)
            })?,
            max_concurrency: env
                .parse("MAX_CONCURRENCY", "a whole number from 1", |v| v.parse().ok().filter(|n| *n >= 1))?
                .unwrap_or(1),
        };
        // Each key ring only where it is used: tracked email signs links, webhooks bodies.
        if config.channel == Channel::Email
            && config.tracking_base_url.is_some()
            && config.tracking_keys_secret.is_none()
        {
            return Err(ConfigError::Missing(TRACKING_KEYS_SECRET_ARN));
        }
        if config.channel == Channel::Webhook && config.webhook_keys_secret.is_none() {
            return Err(ConfigError::Missing(WEBHOOK_SIGNING_KEYS_SECRET_ARN));
        }
        Ok(config)
    }

    /// The configuration, if it is for `channel`: each channel's binary delivers that
    /// channel only.
    pub fn for_channel(self, channel: Channel) -> Result<Self, ConfigError> {
        if self.channel != channel {
            return Err(ConfigError::invalid("CHANNEL", format!("this binary delivers {channel}")));
        }
        Ok(self)
    }
}
