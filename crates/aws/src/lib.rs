//! Adapters: Herald's ports over DynamoDB and EventBridge. No business rules live here.

pub mod activity;
pub mod api_keys;
pub mod batch;
pub mod campaigns;
pub mod config;
pub mod deliveries;
pub mod dispatch_queue;
pub mod events;
pub mod import_files;
pub mod import_jobs;
pub mod import_queue;
pub mod job_queues;
mod jobs;
pub mod memberships;
pub mod notification_keys;
pub mod profiles;
pub mod request_counter;
pub mod segments;
pub mod senders;
pub mod sqs_batch;
pub mod templates;
pub mod user_settings;

pub use activity::DynamoActivityStore;
pub use api_keys::DynamoApiKeyStore;
pub use campaigns::DynamoCampaignStore;
pub use config::{Clients, local_sdk_config, sdk_config};
pub use deliveries::DynamoDeliveryStore;
pub use dispatch_queue::SqsDispatchQueue;
pub use events::EventBridgePublisher;
pub use import_files::S3ImportFiles;
pub use import_jobs::DynamoImportJobStore;
pub use import_queue::SqsImportQueue;
pub use job_queues::SqsJobQueues;
pub use memberships::DynamoMembershipStore;
pub use notification_keys::DynamoNotificationStore;
pub use profiles::DynamoProfileStore;
pub use request_counter::RequestCounter;
pub use segments::DynamoSegmentStore;
pub use templates::DynamoTemplateStore;
pub use user_settings::{DynamoPreferenceStore, DynamoSuppressionStore};

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: impl ToString) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::N(value.to_string())
}

/// A failed call to the store, with the SDK's full account of it.
pub(crate) fn unavailable(e: impl std::error::Error + 'static) -> herald_core::store::StoreError {
    herald_core::store::StoreError::Unavailable(describe(&e))
}

/// The full text of an SDK error, its causes included (the default Display is terse).
pub fn describe(e: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}
