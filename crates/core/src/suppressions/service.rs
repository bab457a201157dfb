use std::sync::Arc;

use chrono::Utc;

use crate::{
    channel::Channel,
    store::StoreError,
    suppressions::{SUPPRESSIBLE, Suppression, SuppressionPage, SuppressionReason, SuppressionStore},
    validation::{self, ValidationErrors},
};

/// What the suppression routes refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    /// A channel without a suppression list, or an address not of its channel's form
    /// (never quoted: it is personal data).
    #[error("invalid request: {0}")]
    Invalid(ValidationErrors),
    #[error("the address is not on the suppression list")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SuppressionError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SuppressionError::Store(e) if e.is_retryable())
    }
}

/// The operator's view of the list, behind `/v1/suppressions`.
pub struct SuppressionService {
    store: Arc<dyn SuppressionStore>,
}

/// The channel a path names, if it has a suppression list.
pub fn suppressible(channel: &str) -> Result<Channel, SuppressionError> {
    SUPPRESSIBLE
        .into_iter()
        .find(|c| c.as_str() == channel)
        .ok_or_else(|| SuppressionError::Invalid(ValidationErrors::single("channel", "must be email or sms")))
}

/// The address in the form its channel's sends use it; refused when it is not one.
fn checked(channel: Channel, address: &str) -> Result<String, SuppressionError> {
    let invalid = |message: String| SuppressionError::Invalid(ValidationErrors::single("address", message));
    match channel {
        Channel::Email => validation::email(address).map(|()| address.to_owned()).map_err(invalid),
        _ => validation::phone_e164(address).map_err(invalid),
    }
}

impl SuppressionService {
    pub fn new(store: Arc<dyn SuppressionStore>) -> Self {
        Self { store }
    }

    pub async fn get(&self, channel: Channel, address: &str) -> Result<Suppression, SuppressionError> {
        let address = checked(channel, address)?;
        self.store.get(channel, &address).await?.ok_or(SuppressionError::NotFound)
    }

    /// Puts the address on the list by hand (reason `manual`), unless it is there already
    /// for a reason of the provider's, which is kept. Returns the entry and whether it is new.
    pub async fn suppress(&self, channel: Channel, address: &str) -> Result<(Suppression, bool), SuppressionError> {
        let address = checked(channel, address)?;
        if let Some(existing) = self.store.get(channel, &address).await? {
            return Ok((existing, false));
        }
        let entry =
            Suppression { channel, reason: SuppressionReason::Manual, suppressed_at: Utc::now(), delivery_id: None };
        self.store.suppress(&address, &entry).await?;
        Ok((entry, true))
    }

    pub async fn remove(&self, channel: Channel, address: &str) -> Result<(), SuppressionError> {
        let address = checked(channel, address)?;
        match self.store.remove(channel, &address).await? {
            true => Ok(()),
            false => Err(SuppressionError::NotFound),
        }
    }

    pub async fn list(
        &self,
        channel: Option<Channel>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<SuppressionPage, SuppressionError> {
        Ok(self.store.list(channel, after, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suppressions::memory::MemorySuppressions;

    fn service() -> (SuppressionService, Arc<MemorySuppressions>) {
        let store = Arc::new(MemorySuppressions::default());
        (SuppressionService::new(store.clone()), store)
    }

    #[tokio::test]
    async fn an_address_put_by_hand_is_suppressed_as_manual() {
        let (service, store) = service();
        let (entry, new) = service.suppress(Channel::Email, "a@example.com").await.unwrap();
        assert!(new && entry.reason == SuppressionReason::Manual);
        assert_eq!(store.suppressed_among(Channel::Email, &["a@example.com".into()]).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn putting_a_bounced_address_by_hand_keeps_its_reason() {
        let (service, store) = service();
        let bounced = Suppression {
            channel: Channel::Email,
            reason: SuppressionReason::HardBounce,
            suppressed_at: Utc::now(),
            delivery_id: Some("d_1".into()),
        };
        store.suppress("a@example.com", &bounced).await.unwrap();
        assert_eq!(service.suppress(Channel::Email, "a@example.com").await.unwrap(), (bounced, false));
    }

    #[tokio::test]
    async fn a_removed_address_is_no_longer_suppressed_and_removing_it_again_is_not_found() {
        let (service, _) = service();
        service.suppress(Channel::Sms, "+33612345678").await.unwrap();
        service.remove(Channel::Sms, "+33612345678").await.unwrap();
        assert!(matches!(service.get(Channel::Sms, "+33612345678").await, Err(SuppressionError::NotFound)));
        assert!(matches!(service.remove(Channel::Sms, "+33612345678").await, Err(SuppressionError::NotFound)));
    }

    #[tokio::test]
    async fn an_address_not_of_its_channels_form_is_refused_without_being_quoted() {
        let (service, _) = service();
        let Err(SuppressionError::Invalid(errors)) = service.suppress(Channel::Sms, "bob@example.com").await else {
            panic!("accepted")
        };
        let text = format!("{errors:?}");
        assert!(text.contains("address") && !text.contains("bob"), "{text}");
    }

    #[test]
    fn only_email_and_sms_have_a_list() {
        assert_eq!(suppressible("sms").unwrap(), Channel::Sms);
        assert!(suppressible("push").is_err() && suppressible("webhook").is_err() && suppressible("x").is_err());
    }
}
