use std::collections::HashSet;

use async_trait::async_trait;

use crate::{
    channel::Channel,
    store::StoreError,
    suppressions::{SoftBounceWindow, Suppression, SuppressionPage},
};

#[async_trait]
pub trait SuppressionStore: Send + Sync {
    /// Which of `addresses` are on the channel's list (adapters batch the reads); each
    /// as given.
    async fn suppressed_among(&self, channel: Channel, addresses: &[String]) -> Result<HashSet<String>, StoreError>;
    /// The address's entry, if it is on the list.
    async fn get(&self, channel: Channel, address: &str) -> Result<Option<Suppression>, StoreError>;
    /// Puts the address on its channel's list, replacing any entry it had.
    async fn suppress(&self, address: &str, suppression: &Suppression) -> Result<(), StoreError>;
    /// Takes the address off the list, and forgets its soft bounces (so the next one
    /// does not suppress it again at once); false if it was not on the list.
    async fn remove(&self, channel: Channel, address: &str) -> Result<bool, StoreError>;
    /// One page of the list (of one channel, or all), at most `limit` entries from after
    /// the key `after`, in the store's order. Eventually consistent.
    async fn list(
        &self,
        channel: Option<Channel>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<SuppressionPage, StoreError>;
    /// Records a soft bounce of `delivery_id` (`window.entry`) and returns how many
    /// distinct deliveries bounced soft in its window (`window.count`): the same report
    /// again counts once, and bounces older than the window are dropped.
    async fn count_soft_bounce(&self, window: &SoftBounceWindow, delivery_id: &str) -> Result<u32, StoreError>;
}
