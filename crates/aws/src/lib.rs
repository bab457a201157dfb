//! Adapters: Herald's ports over AWS, grouped by service. No business rules live here.

pub mod config;
pub mod dynamo;
pub mod eventbridge;
pub mod request_counter;
pub mod s3;
pub mod senders;
pub mod sqs;

pub use config::{Clients, local_sdk_config, sdk_config};
pub use dynamo::{
    activity::DynamoActivityStore,
    api_keys::DynamoApiKeyStore,
    campaigns::DynamoCampaignStore,
    deliveries::DynamoDeliveryStore,
    import_jobs::DynamoImportJobStore,
    memberships::DynamoMembershipStore,
    notifications::DynamoNotificationStore,
    profiles::DynamoProfileStore,
    segments::DynamoSegmentStore,
    templates::DynamoTemplateStore,
    user_settings::{DynamoPreferenceStore, DynamoSuppressionStore},
};
pub use eventbridge::EventBridgePublisher;
pub use request_counter::RequestCounter;
pub use s3::import_files::S3ImportFiles;
pub use sqs::{channel_queues::SqsChannelQueues, dispatch_queue::SqsDispatchQueue, import_queue::SqsImportQueue};

/// A failed call to a service, with the SDK's full account of it.
pub(crate) fn unavailable(e: impl std::error::Error + 'static) -> herald_core::store::StoreError {
    herald_core::store::StoreError::Unavailable(describe(&e))
}

/// The full text of an SDK error, its causes included (the default Display is terse).
pub fn describe(e: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}
