//! SDK configuration and clients, built once per Lambda execution environment.

use std::{collections::BTreeMap, sync::OnceLock};

use aws_config::{BehaviorVersion, SdkConfig, environment::EnvironmentVariableCredentialsProvider, retry::RetryConfig};
use aws_sdk_dynamodb::config::{Credentials, IdentityCache, Region, SharedCredentialsProvider};
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

use crate::request_counter::RequestCounter;

/// The configuration of the admin CLI: the SDK's whole default chain (profiles, SSO,
/// web identity, instance roles), and adaptive retries, which back off the whole client
/// when a service throttles.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::adaptive()).load().await
}

/// The configuration a deployed function uses, from what Lambda sets in its environment
/// and nothing else: `AWS_REGION`, the execution role's credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), `AWS_ENDPOINT_URL` when set, and adaptive
/// retries. The default chain's loader (profile files, SSO, STS, IMDS) is never linked:
/// a Lambda has no use for it, and it is half a megabyte of each bootstrap.
pub fn function_sdk_config() -> SdkConfig {
    function_sdk_config_from(|name| std::env::var(name).ok())
}

fn function_sdk_config_from(env: impl Fn(&str) -> Option<String>) -> SdkConfig {
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).map(Region::new))
        .credentials_provider(SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new()))
        .identity_cache(IdentityCache::lazy().build())
        .retry_config(RetryConfig::adaptive());
    builder.set_endpoint_url(env("AWS_ENDPOINT_URL"));
    let endpoints: BTreeMap<String, String> = SERVICES
        .iter()
        .filter_map(|service| env(&format!("AWS_ENDPOINT_URL_{service}")).map(|url| (service.to_string(), url)))
        .collect();
    builder.service_config(ServiceEndpoints(endpoints)).build()
}

/// The services whose `AWS_ENDPOINT_URL_<SERVICE>` a function honours (the SDK's service
/// ids, upper-cased), as the SDK's loader does: the local stack sends the providers' calls
/// (SES, SNS) to an endpoint of their own.
const SERVICES: [&str; 7] = ["DYNAMODB", "EVENTBRIDGE", "SQS", "SESV2", "SNS", "S3", "SECRETS_MANAGER"];

/// Service-specific endpoint URLs, read once: a client asks for its service's at build
/// time and falls back to the shared `AWS_ENDPOINT_URL`.
#[derive(Debug)]
struct ServiceEndpoints(BTreeMap<String, String>);

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.env() != "AWS_ENDPOINT_URL" {
            return None;
        }
        self.0.get(&key.service_id().to_uppercase().replace(' ', "_")).cloned()
    }
}

/// The configuration for an AWS-compatible endpoint on this machine (moto), with static
/// test credentials so that nothing reaches for a real account.
pub async fn local_sdk_config(endpoint_url: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::adaptive())
        .endpoint_url(endpoint_url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "herald-local"))
        .load()
        .await
}

/// The SDK clients a function holds for its lifetime, each built on first use and then
/// shared (one connection pool per service). Built lazily so that a function links only
/// the SDK crates it calls: a client that is never asked for is dead code to the linker,
/// endpoint rules and all (the relay, which asks for EventBridge alone, shrank by 1.7 MiB).
/// A clone made before a client's first use builds that client anew.
#[derive(Clone, Debug)]
pub struct Clients {
    /// What the clients are built from, to derive clients for another region.
    pub sdk_config: SdkConfig,
    counter: Option<RequestCounter>,
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    eventbridge: OnceLock<aws_sdk_eventbridge::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
    sesv2: OnceLock<aws_sdk_sesv2::Client>,
    sns: OnceLock<aws_sdk_sns::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    secretsmanager: OnceLock<aws_sdk_secretsmanager::Client>,
}

/// A client built from the shared configuration, with the benchmark's counter if any.
macro_rules! client {
    ($self:ident . $field:ident, $sdk:ident $(, $configure:expr)?) => {{
        $self
            .$field
            .get_or_init(|| {
                let mut builder = $sdk::config::Builder::from(&$self.sdk_config);
                $(builder = $configure(builder);)?
                if let Some(counter) = &$self.counter {
                    builder = builder.interceptor(counter.clone());
                }
                $sdk::Client::from_conf(builder.build())
            })
            .clone()
    }};
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Self::build(config.clone(), None)
    }

    /// Clients whose every request is counted by `counter` (benchmarks).
    pub fn counted(config: &SdkConfig, counter: &RequestCounter) -> Self {
        Self::build(config.clone(), Some(counter.clone()))
    }

    fn build(sdk_config: SdkConfig, counter: Option<RequestCounter>) -> Self {
        Self {
            sdk_config,
            counter,
            dynamodb: OnceLock::new(),
            eventbridge: OnceLock::new(),
            sqs: OnceLock::new(),
            sesv2: OnceLock::new(),
            sns: OnceLock::new(),
            s3: OnceLock::new(),
            secretsmanager: OnceLock::new(),
        }
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        client!(self.dynamodb, aws_sdk_dynamodb)
    }

    pub fn eventbridge(&self) -> aws_sdk_eventbridge::Client {
        client!(self.eventbridge, aws_sdk_eventbridge)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        client!(self.sqs, aws_sdk_sqs)
    }

    /// Provider calls make one attempt each: the delivery pipeline's retries (with
    /// backoff and full jitter, and failover) are the only layer, so a send is never
    /// repeated by the SDK behind the pipeline's back, and a throttled message waits out
    /// one backoff, not the SDK's three attempts inside each of the pipeline's.
    pub fn sesv2(&self) -> aws_sdk_sesv2::Client {
        client!(self.sesv2, aws_sdk_sesv2, |b: aws_sdk_sesv2::config::Builder| b.retry_config(RetryConfig::disabled()))
    }

    /// One attempt per call, as for [`Clients::sesv2`].
    pub fn sns(&self) -> aws_sdk_sns::Client {
        client!(self.sns, aws_sdk_sns, |b: aws_sdk_sns::config::Builder| b.retry_config(RetryConfig::disabled()))
    }

    /// An endpoint on loopback has no per-bucket host names: buckets are addressed by path.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let path_style = self.sdk_config.endpoint_url().is_some();
        client!(self.s3, aws_sdk_s3, |b: aws_sdk_s3::config::Builder| b.force_path_style(path_style))
    }

    pub fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        client!(self.secretsmanager, aws_sdk_secretsmanager)
    }

    /// The same clients in another region (a secondary provider), counted alike.
    pub fn in_region(&self, region: &str) -> Self {
        let config = self.sdk_config.to_builder().region(Region::new(region.to_owned())).build();
        Self::build(config, self.counter.clone())
    }

    /// These clients (the providers': SES and SNS, here and in other regions) with the
    /// tables', queues' and secrets' clients of `stores`: a local stack whose providers are
    /// emulated at an endpoint of their own.
    pub fn with_stores_of(&self, stores: &Clients) -> Self {
        let mixed = Self::build(self.sdk_config.clone(), self.counter.clone());
        let _ = mixed.dynamodb.set(stores.dynamodb());
        let _ = mixed.sqs.set(stores.sqs());
        let _ = mixed.secretsmanager.set(stores.secretsmanager());
        mixed
    }

    /// Opens the connections during init, so that the first request after a cold start
    /// does not pay for DNS and the TLS handshake (most of a second at 128 MB). Failures
    /// are only logged: the real call will report them.
    pub async fn warm_up(&self, table: &str, bus: Option<&str>) {
        let bus_call = async {
            match bus {
                Some(bus) => self
                    .eventbridge()
                    .describe_event_bus()
                    .name(bus)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::errors::describe(&e)),
                None => Ok(()),
            }
        };
        let (table_result, bus_result) =
            tokio::join!(self.dynamodb().describe_table().table_name(table).send(), bus_call);
        if let Err(e) = table_result {
            tracing::warn!(error = %crate::errors::describe(&e), "warm-up of DynamoDB failed");
        }
        if let Err(e) = bus_result {
            tracing::warn!(error = %e, "warm-up of EventBridge failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_reads_its_region_and_endpoint_from_the_lambda_environment() {
        let env = |name: &str| match name {
            "AWS_REGION" => Some("eu-west-1".to_owned()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:5000".to_owned()),
            _ => None,
        };
        let config = function_sdk_config_from(env);
        assert_eq!(config.region().map(Region::as_ref), Some("eu-west-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert!(config.credentials_provider().is_some());
    }

    #[test]
    fn a_service_endpoint_url_overrides_the_shared_one_for_that_service_only() {
        let env = |name: &str| match name {
            "AWS_REGION" => Some("us-east-1".to_owned()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:5000".to_owned()),
            "AWS_ENDPOINT_URL_SESV2" => Some("http://127.0.0.1:6000".to_owned()),
            _ => None,
        };
        let config = function_sdk_config_from(env);
        let endpoint = |service_id| {
            let key =
                ServiceConfigKey::builder().service_id(service_id).env("AWS_ENDPOINT_URL").profile("endpoint_url");
            config.service_config().and_then(|c| c.load_config(key.build().expect("a whole key")))
        };
        assert_eq!(endpoint("SESv2").as_deref(), Some("http://127.0.0.1:6000"));
        assert_eq!(endpoint("SNS"), None, "the shared AWS_ENDPOINT_URL, which the client falls back to");
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn a_function_without_an_endpoint_url_uses_the_service_endpoints() {
        let config = function_sdk_config_from(|name| (name == "AWS_REGION").then(|| "us-east-1".to_owned()));
        assert_eq!(config.endpoint_url(), None);
    }

    #[tokio::test]
    async fn provider_clients_make_one_attempt_per_call() {
        let clients = Clients::new(&local_sdk_config("http://127.0.0.1:9").await);
        let attempts = |retry: Option<&RetryConfig>| retry.map(RetryConfig::max_attempts);
        assert_eq!(attempts(clients.sesv2().config().retry_config()), Some(1));
        assert_eq!(attempts(clients.sns().config().retry_config()), Some(1));
        assert!(attempts(clients.dynamodb().config().retry_config()) > Some(1), "stores keep the SDK's retries");
    }
}
