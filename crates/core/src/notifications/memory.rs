//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;

use crate::{
    notifications::{NotificationStore, Reservation},
    store::StoreError,
};

#[derive(Default)]
pub struct MemoryNotifications(pub Mutex<HashMap<String, (String, bool)>>);

#[async_trait]
impl NotificationStore for MemoryNotifications {
    async fn reserve(&self, key: &str, notification_id: &str) -> Result<Reservation, StoreError> {
        let mut keys = self.0.lock().unwrap();
        if let Some((existing, complete)) = keys.get(key) {
            return Ok(Reservation::Existing { notification_id: existing.clone(), complete: *complete });
        }
        keys.insert(key.to_owned(), (notification_id.to_owned(), false));
        Ok(Reservation::New)
    }

    async fn complete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.0.lock().unwrap().get_mut(key) {
            entry.1 = true;
        }
        Ok(())
    }
}
