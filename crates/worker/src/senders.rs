//! The providers a worker sends through, one factory a channel.

use std::sync::Arc;

use herald_aws::{
    Clients, DynamoProfileStore,
    senders::{PlatformApplications, SesEmailSender, SnsPushSender, SnsSmsSender},
};
use herald_core::{channel::Channel, delivery::Sender, profiles::ProfileService, signing::webhook::WebhookSigner};
use herald_edge::config::ConfigError;

use crate::{WEBHOOK_SIGNING_KEYS_SECRET_ARN, WorkerConfig};

/// Builds a channel's provider over the clients. Each worker binary names its own
/// channel's, so that it links that provider's SDK only (an SES worker has no SNS
/// client, no webhook HTTP client): [`for_channel`] links them all.
pub type SenderFactory = fn(&Clients, &WorkerConfig, Option<WebhookSigner>) -> Result<Arc<dyn Sender>, ConfigError>;

/// Every channel's factory, chosen at run time (the local stack, which runs them all).
pub fn for_channel(channel: Channel) -> SenderFactory {
    match channel {
        Channel::Email => email,
        Channel::Sms => sms,
        Channel::Push => push,
        Channel::Webhook => webhook,
    }
}

pub fn email(
    clients: &Clients,
    config: &WorkerConfig,
    _: Option<WebhookSigner>,
) -> Result<Arc<dyn Sender>, ConfigError> {
    Ok(Arc::new(
        SesEmailSender::new(clients.sesv2(), &config.sender_address)
            .with_configuration_set(config.configuration_set.clone()),
    ))
}

pub fn sms(clients: &Clients, _: &WorkerConfig, _: Option<WebhookSigner>) -> Result<Arc<dyn Sender>, ConfigError> {
    Ok(Arc::new(SnsSmsSender::new(clients.sns())))
}

/// A push sender that marks a device the platform reports disabled on its profile
/// (when the worker knows the profiles table).
pub fn push(
    clients: &Clients,
    config: &WorkerConfig,
    _: Option<WebhookSigner>,
) -> Result<Arc<dyn Sender>, ConfigError> {
    let sender = SnsPushSender::new(
        clients.sns(),
        PlatformApplications {
            apns: config.apns_application.clone(),
            apns_sandbox: config.apns_sandbox_application.clone(),
            fcm: config.fcm_application.clone(),
        },
    );
    Ok(match &config.profiles_table {
        Some(table) => {
            let profiles = ProfileService::new(Arc::new(DynamoProfileStore::new(clients.dynamodb(), table)));
            Arc::new(sender.on_disabled(Arc::new(profiles)))
        }
        None => Arc::new(sender),
    })
}

pub fn webhook(
    _: &Clients,
    config: &WorkerConfig,
    webhook_signer: Option<WebhookSigner>,
) -> Result<Arc<dyn Sender>, ConfigError> {
    Ok(Arc::new(
        herald_aws::senders::webhook::WebhookSender::new(
            webhook_signer.ok_or(ConfigError::Missing(WEBHOOK_SIGNING_KEYS_SECRET_ARN))?,
            config.webhook_root_pem.as_deref(),
            config.webhook_destinations,
        )
        .map_err(|e| ConfigError::invalid("WEBHOOK_ROOT_CA_PEM", format!("the webhook client refuses it: {e}")))?,
    ))
}
