//! The importer Lambda: fed by its SQS queue with the bucket's notifications of files
//! dropped under `imports/` (and with its own continuation messages), it imports each file
//! through [`ImportService`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lambda_events::s3::S3Event;
use herald_aws::{
    Clients, DynamoImportJobStore, DynamoProfileStore, EventBridgePublisher, S3ImportFiles, SqsImportQueue,
};
use herald_core::imports::{
    DroppedFile, ImportOptions, ImportRunError, ImportService, RunOutcome, parsing::CsvOptions,
};
use herald_edge::{
    config::{ConfigError, Env},
    metrics::Emf,
    sqs::{self, Invocation, Retry, SqsHandler, SqsMessage},
};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImporterConfig {
    pub profiles_table: String,
    pub jobs_table: String,
    pub event_bus_name: String,
    pub queue_url: String,
    /// Splits `attr.<name>` cells into values (`MULTI_VALUE_SEPARATOR`, default `;`).
    pub multi_value_separator: char,
    /// Users per slice (`IMPORT_USERS_PER_SLICE`, default 1000): one checkpoint each.
    pub users_per_slice: usize,
    /// Slices per invocation before it continues in a new one (`IMPORT_SLICES_PER_INVOCATION`,
    /// default none: only the Lambda deadline stops an invocation).
    pub slices_per_invocation: Option<u32>,
}

impl ImporterConfig {
    /// Reads the variables through `lookup` (the process environment in Lambda, the
    /// template's resolved environment in the local stack).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup);
        let multi_value_separator = env
            .parse("MULTI_VALUE_SEPARATOR", "one character, not , or \"", |v| {
                let mut chars = v.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c != ',' && c != '"' => Some(c),
                    _ => None,
                }
            })?
            .unwrap_or(CsvOptions::default().multi_value_separator);
        let users_per_slice = env
            .parse("IMPORT_USERS_PER_SLICE", "a number from 1 to 10000", |v| {
                v.parse().ok().filter(|n| (1..=10_000).contains(n))
            })?
            .unwrap_or(ImportOptions::default().users_per_slice);
        let slices_per_invocation =
            env.parse("IMPORT_SLICES_PER_INVOCATION", "a number from 1", |v| v.parse().ok().filter(|n| *n >= 1))?;
        Ok(Self {
            profiles_table: env.required("PROFILES_TABLE")?,
            jobs_table: env.required("JOBS_TABLE")?,
            event_bus_name: env.required("EVENT_BUS_NAME")?,
            queue_url: env.required("IMPORTER_QUEUE_URL")?,
            multi_value_separator,
            users_per_slice,
            slices_per_invocation,
        })
    }

    pub fn options(&self) -> ImportOptions {
        ImportOptions {
            csv: CsvOptions { multi_value_separator: self.multi_value_separator },
            users_per_slice: self.users_per_slice,
            slices_per_invocation: self.slices_per_invocation,
            ..ImportOptions::default()
        }
    }
}

/// How long an invocation runs when no deadline is given (a test invoking it directly): the
/// function's 900 s timeout less a minute.
pub const DEFAULT_TIME_BUDGET: Duration = Duration::from_secs(840);

pub struct ImporterHandler {
    pub service: ImportService,
    /// Rows and rejects (through the service), invocations and queue age.
    pub metrics: Arc<Emf>,
}

/// What a message on the importer's queue asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Files(Vec<DroppedFile>),
    Continue(String),
    /// The `s3:TestEvent` S3 sends when a notification is configured.
    Test,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not an S3 event or continuation message: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("an S3 event record without {0}")]
    Incomplete(&'static str),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Continue {
        continue_job: String,
    },
    Test {
        #[serde(rename = "Event")]
        event: String,
    },
    S3(S3Event),
}

pub fn parse_message(body: &str) -> Result<Message, MessageError> {
    Ok(match serde_json::from_str(body)? {
        Body::Continue { continue_job } => Message::Continue(continue_job),
        Body::Test { event } if event == "s3:TestEvent" => Message::Test,
        Body::Test { .. } => return Err(MessageError::Incomplete("Records")),
        Body::S3(event) => Message::Files(
            event
                .records
                .into_iter()
                .map(|record| {
                    let object = record.s3.object;
                    let key = match (object.url_decoded_key, object.key) {
                        (Some(decoded), _) => decoded,
                        (None, Some(key)) => decode_key(&key),
                        (None, None) => return Err(MessageError::Incomplete("s3.object.key")),
                    };
                    Ok(DroppedFile {
                        bucket: record.s3.bucket.name.ok_or(MessageError::Incomplete("s3.bucket.name"))?,
                        key,
                        size: object.size.unwrap_or(0).max(0) as u64,
                        sequencer: object.sequencer.ok_or(MessageError::Incomplete("s3.object.sequencer"))?,
                    })
                })
                .collect::<Result<_, MessageError>>()?,
        ),
    })
}

/// S3 event keys are form-encoded: `+` is a space, `%XX` a byte.
fn decode_key(key: &str) -> String {
    percent_encoding::percent_decode_str(&key.replace('+', " ")).decode_utf8_lossy().into_owned()
}

impl ImporterHandler {
    /// The handler over `service`, whose rows it counts in its metrics.
    pub fn new(mut service: ImportService) -> Self {
        let metrics = Arc::new(Emf::for_function("Importer"));
        service.metrics = metrics.clone();
        Self { service, metrics }
    }

    pub fn from_aws(clients: &Clients, config: &ImporterConfig) -> Self {
        let mut service = ImportService::new(
            Arc::new(DynamoProfileStore::new(clients.dynamodb(), &config.profiles_table)),
            Arc::new(DynamoImportJobStore::new(clients.dynamodb(), &config.jobs_table)),
            Arc::new(S3ImportFiles::new(clients.s3())),
            Arc::new(SqsImportQueue::new(clients.sqs(), &config.queue_url)),
            Arc::new(EventBridgePublisher::new(clients.eventbridge(), &config.event_bus_name)),
        );
        service.options = config.options();
        Self::new(service)
    }

    /// The handler on the account's AWS clients, its table's connections warmed up.
    pub async fn connect(config: &ImporterConfig) -> Self {
        let clients = Clients::new(&herald_aws::function_sdk_config());
        clients.warm_up(&config.jobs_table, None).await;
        Self::from_aws(&clients, config)
    }

    async fn handle_message(&self, body: &str, deadline: Instant) -> Result<(), HandleError> {
        match parse_message(body)? {
            Message::Test => Ok(()),
            Message::Continue(job_id) => log(self.service.resume(&job_id, deadline).await?),
            Message::Files(files) => {
                for file in &files {
                    log(self.service.start(file, deadline).await?)?;
                }
                Ok(())
            }
        }
    }
}

/// Each message in turn, stopping work in time for the invocation's deadline (without
/// one, [`DEFAULT_TIME_BUDGET`] from now). A message whose work failed is retried: the
/// job resumes from its checkpoint; after maxReceiveCount it rests in the dead-letter
/// queue.
#[async_trait::async_trait]
impl SqsHandler for ImporterHandler {
    async fn handle_batch(&self, messages: &[SqsMessage], invocation: Invocation) -> Retry {
        let deadline = invocation.deadline.unwrap_or_else(|| Instant::now() + DEFAULT_TIME_BUDGET);
        sqs::each_in_turn(messages, async |message| match self.handle_message(sqs::body(message), deadline).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(message_id = sqs::message_id(message), error = %e, "import message failed; SQS retries it");
                false
            }
        })
        .await
    }

    fn metrics(&self) -> Option<&Emf> {
        Some(&self.metrics)
    }
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error(transparent)]
    Import(#[from] ImportRunError),
}

fn log(outcome: RunOutcome) -> Result<(), HandleError> {
    tracing::debug!(?outcome, "import message handled");
    Ok(())
}

#[cfg(test)]
mod tests {
    use herald_edge::sqs::SqsEvent;

    use super::*;

    fn config(extra: &[(&str, &str)]) -> Result<ImporterConfig, ConfigError> {
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ImporterConfig::from_lookup(move |name| {
            extra.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).or_else(|| match name {
                "PROFILES_TABLE" | "JOBS_TABLE" | "EVENT_BUS_NAME" | "IMPORTER_QUEUE_URL" => Some(name.to_lowercase()),
                _ => None,
            })
        })
    }

    #[test]
    fn a_continuation_message_names_its_job() {
        assert_eq!(parse_message(r#"{"continue_job":"imp_1"}"#).unwrap(), Message::Continue("imp_1".into()));
    }

    #[test]
    fn the_sample_continuation_event_names_its_job() {
        let event: SqsEvent = serde_json::from_str(include_str!("../../../events/importer-continue-sqs.json")).unwrap();
        let message = parse_message(event.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(message, Message::Continue("imp_0123456789abcdef01234567".into()));
    }

    #[test]
    fn the_s3_test_event_asks_for_nothing() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-24T10:00:00.000Z","Bucket":"b"}"#;
        assert_eq!(parse_message(body).unwrap(), Message::Test);
    }

    #[test]
    fn an_s3_event_names_each_file_with_its_key_decoded() {
        let body = include_str!("../../../events/importer-s3-sqs.json");
        let event: SqsEvent = serde_json::from_str(body).unwrap();
        let Message::Files(files) = parse_message(event.records[0].body.as_deref().unwrap()).unwrap() else {
            panic!("files")
        };
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].key, "imports/crm export.csv");
        assert!(files[0].size > 0 && !files[0].sequencer.is_empty());
    }

    #[test]
    fn other_bodies_are_refused() {
        assert!(parse_message(r#"{"hello":"world"}"#).is_err());
        assert!(parse_message("not json").is_err());
    }

    #[test]
    fn the_separator_and_slice_sizes_have_defaults_and_bounds() {
        let default = config(&[]).unwrap();
        assert_eq!(
            (default.multi_value_separator, default.users_per_slice, default.slices_per_invocation),
            (';', 1000, None)
        );
        assert_eq!(config(&[("MULTI_VALUE_SEPARATOR", "|")]).unwrap().multi_value_separator, '|');
        assert!(config(&[("MULTI_VALUE_SEPARATOR", ",")]).is_err());
        assert!(config(&[("IMPORT_USERS_PER_SLICE", "0")]).is_err());
        assert!(config(&[("IMPORT_SLICES_PER_INVOCATION", "x")]).is_err());
        assert!(matches!(ImporterConfig::from_lookup(|_| None), Err(ConfigError::Missing(_))));
    }
}
