//! Adapters: Herald's ports over AWS, grouped by service. No business rules live here.

pub mod config;
pub mod dynamo;
pub mod errors;
pub mod eventbridge;
pub mod feedback;
pub mod request_counter;
pub mod s3;
pub mod secretsmanager;
pub mod senders;
pub mod sqs;

pub use config::{Clients, function_sdk_config, local_sdk_config, sdk_config};
pub use dynamo::{
    activity::DynamoActivityStore, api_keys::DynamoApiKeyStore, campaigns::DynamoCampaignStore,
    deliveries::DynamoDeliveryStore, import_jobs::DynamoImportJobStore, memberships::DynamoMembershipStore,
    notifications::DynamoNotificationStore, profiles::DynamoProfileStore, segments::DynamoSegmentStore,
    suppressions::DynamoSuppressionStore, templates::DynamoTemplateStore, user_settings::DynamoPreferenceStore,
};
pub use errors::describe;
pub use eventbridge::EventBridgePublisher;
pub use request_counter::RequestCounter;
pub use s3::import_files::S3ImportFiles;
pub use secretsmanager::SecretsManagerKeyRings;
pub use sqs::{
    channel_queues::SqsChannelQueues, dispatch_queue::SqsDispatchQueue, import_queue::SqsImportQueue,
    segmenter_queue::SqsSegmenterQueue,
};
