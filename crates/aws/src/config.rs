//! SDK configuration and clients, built once per Lambda execution environment.

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig};
use aws_sdk_dynamodb::config::{Credentials, Region};

use crate::request_counter::RequestCounter;

/// The configuration a deployed function uses: region and credentials from the Lambda
/// environment, `AWS_ENDPOINT_URL` honoured, and adaptive retries, which back off the
/// whole client when a service throttles.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::adaptive()).load().await
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

/// The SDK clients a function holds for its lifetime.
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub sns: aws_sdk_sns::Client,
    pub s3: aws_sdk_s3::Client,
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    /// What the clients were built from, to derive clients for another region.
    pub sdk_config: SdkConfig,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Self::build(config, None)
    }

    /// Clients whose every request is counted by `counter` (benchmarks).
    pub fn counted(config: &SdkConfig, counter: &RequestCounter) -> Self {
        Self::build(config, Some(counter))
    }

    fn build(config: &SdkConfig, counter: Option<&RequestCounter>) -> Self {
        // Provider calls make one attempt each: the delivery pipeline's retries (with
        // backoff and full jitter, and failover) are the only layer, so a send is never
        // repeated by the SDK behind the pipeline's back, and a throttled message waits
        // out one backoff, not the SDK's three attempts inside each of the pipeline's.
        let provider = RetryConfig::disabled();
        macro_rules! client {
            ($sdk:ident $(, $retry:expr)?) => {{
                let mut builder = $sdk::config::Builder::from(config);
                $(builder = builder.retry_config($retry);)?
                if let Some(counter) = counter {
                    builder = builder.interceptor(counter.clone());
                }
                $sdk::Client::from_conf(builder.build())
            }};
        }
        Self {
            dynamodb: client!(aws_sdk_dynamodb),
            eventbridge: client!(aws_sdk_eventbridge),
            sqs: client!(aws_sdk_sqs),
            sesv2: client!(aws_sdk_sesv2, provider.clone()),
            sns: client!(aws_sdk_sns, provider),
            s3: {
                // An endpoint on loopback has no per-bucket host names: address buckets by path.
                let mut builder =
                    aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some());
                if let Some(counter) = counter {
                    builder = builder.interceptor(counter.clone());
                }
                aws_sdk_s3::Client::from_conf(builder.build())
            },
            secretsmanager: client!(aws_sdk_secretsmanager),
            sdk_config: config.clone(),
        }
    }

    /// The same clients in another region (a secondary provider).
    pub fn in_region(&self, region: &str) -> Self {
        let config = self.sdk_config.to_builder().region(Region::new(region.to_owned())).build();
        Self::new(&config)
    }

    /// Opens the connections during init, so that the first request after a cold start
    /// does not pay for DNS and the TLS handshake (most of a second at 128 MB). Failures
    /// are only logged: the real call will report them.
    pub async fn warm_up(&self, table: &str, bus: Option<&str>) {
        let bus_call = async {
            match bus {
                Some(bus) => self
                    .eventbridge
                    .describe_event_bus()
                    .name(bus)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::describe(&e)),
                None => Ok(()),
            }
        };
        let (table_result, bus_result) =
            tokio::join!(self.dynamodb.describe_table().table_name(table).send(), bus_call);
        if let Err(e) = table_result {
            tracing::warn!(error = %crate::describe(&e), "warm-up of DynamoDB failed");
        }
        if let Err(e) = bus_result {
            tracing::warn!(error = %e, "warm-up of EventBridge failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn provider_clients_make_one_attempt_per_call() {
        let clients = Clients::new(&local_sdk_config("http://127.0.0.1:9").await);
        let attempts = |retry: Option<&RetryConfig>| retry.map(RetryConfig::max_attempts);
        assert_eq!(attempts(clients.sesv2.config().retry_config()), Some(1));
        assert_eq!(attempts(clients.sns.config().retry_config()), Some(1));
        assert!(attempts(clients.dynamodb.config().retry_config()) > Some(1), "stores keep the SDK's retries");
    }
}
