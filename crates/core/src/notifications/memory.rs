//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;

use crate::{
    notifications::{KeyClaim, NotificationStore, Reservation},
    store::StoreError,
};

/// Each key's claim and whether it completed.
#[derive(Default)]
pub struct MemoryNotifications(pub Mutex<HashMap<String, (KeyClaim, bool)>>);

#[async_trait]
impl NotificationStore for MemoryNotifications {
    async fn reserve(&self, key: &str, claim: &KeyClaim) -> Result<Reservation, StoreError> {
        let mut keys = self.0.lock().unwrap();
        // To the second, as DynamoDB's TTL attribute holds it.
        if let Some((existing, complete)) = keys.get(key)
            && existing.expires_at.timestamp() > claim.now.timestamp()
        {
            return Ok(Reservation::Existing {
                notification_id: existing.notification_id.clone(),
                request_hash: existing.request_hash.clone(),
                complete: *complete,
            });
        }
        keys.insert(key.to_owned(), (claim.clone(), false));
        Ok(Reservation::New)
    }

    async fn complete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.0.lock().unwrap().get_mut(key) {
            entry.1 = true;
        }
        Ok(())
    }
}
