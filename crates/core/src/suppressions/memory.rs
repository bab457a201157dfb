//! The suppression list in memory, keyed as the DynamoDB adapter keys it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;

use crate::{
    channel::Channel,
    store::StoreError,
    suppressions::{
        ListedSuppression, SoftBounceWindow, Suppression, SuppressionPage, SuppressionStore, address_hash,
        soft_bounce_key,
    },
};

#[derive(Default)]
pub struct MemorySuppressions {
    pub entries: Mutex<BTreeMap<String, Suppression>>,
    pub soft_bounces: Mutex<HashMap<String, BTreeSet<String>>>,
}

#[async_trait]
impl SuppressionStore for MemorySuppressions {
    async fn suppressed_among(&self, channel: Channel, addresses: &[String]) -> Result<HashSet<String>, StoreError> {
        let entries = self.entries.lock().unwrap();
        Ok(addresses.iter().filter(|a| entries.contains_key(&address_hash(channel, a))).cloned().collect())
    }

    async fn get(&self, channel: Channel, address: &str) -> Result<Option<Suppression>, StoreError> {
        Ok(self.entries.lock().unwrap().get(&address_hash(channel, address)).cloned())
    }

    async fn suppress(&self, address: &str, suppression: &Suppression) -> Result<(), StoreError> {
        self.entries.lock().unwrap().insert(address_hash(suppression.channel, address), suppression.clone());
        Ok(())
    }

    async fn remove(&self, channel: Channel, address: &str) -> Result<bool, StoreError> {
        self.soft_bounces.lock().unwrap().remove(&soft_bounce_key(channel, address));
        Ok(self.entries.lock().unwrap().remove(&address_hash(channel, address)).is_some())
    }

    async fn list(
        &self,
        channel: Option<Channel>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<SuppressionPage, StoreError> {
        let entries = self.entries.lock().unwrap();
        let mut matching = entries
            .iter()
            .filter(|(key, _)| after.is_none_or(|after| key.as_str() > after))
            .filter(|(_, s)| channel.is_none_or(|c| s.channel == c));
        let suppressions: Vec<ListedSuppression> = matching
            .by_ref()
            .take(limit.max(1) as usize)
            .map(|(key, s)| ListedSuppression { address_hash: key.clone(), suppression: s.clone() })
            .collect();
        let next = match matching.next() {
            Some(_) => suppressions.last().map(|s| s.address_hash.clone()),
            None => None,
        };
        Ok(SuppressionPage { suppressions, next })
    }

    async fn count_soft_bounce(&self, window: &SoftBounceWindow, delivery_id: &str) -> Result<u32, StoreError> {
        let mut bounces = self.soft_bounces.lock().unwrap();
        let entries = bounces.entry(window.key.clone()).or_default();
        entries.insert(window.entry(delivery_id));
        entries.retain(|e| !window.is_stale(e));
        Ok(window.count(entries.iter().map(String::as_str)))
    }
}
