//! Adapters: Herald's ports over DynamoDB and EventBridge. No business rules live here.

pub mod api_keys;
pub mod config;
pub mod events;
pub mod profiles;

pub use api_keys::DynamoApiKeyStore;
pub use config::{Clients, local_sdk_config, sdk_config};
pub use events::EventBridgePublisher;
pub use profiles::DynamoProfileStore;

/// The full text of an SDK error, its causes included (the default Display is terse).
pub fn describe(e: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}
