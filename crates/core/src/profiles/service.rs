//! The profile service: validation, merge, optimistic concurrency and change events (each
//! written with its change, in the profile's outbox).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use herald_wire::backoff::Backoff;

use crate::{
    events::{DomainEvent, ProfileChanged},
    profiles::{Changes, Profile, ProfilePatch, ProfileStore, StoredProfile},
    store::StoreError,
    validation,
    validation::ValidationErrors,
};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("no profile for this user")]
    NotFound,
    /// Too many concurrent writers kept winning the race for this profile.
    #[error("the profile kept changing under concurrent writes; try again")]
    Contention,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ProfileError {
    fn from(e: StoreError) -> Self {
        ProfileError::Store(e)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upserted {
    Created(Profile),
    Updated(Profile),
    /// The write changed nothing: nothing was stored or published.
    Unchanged(Profile),
}

impl Upserted {
    pub fn profile(&self) -> &Profile {
        match self {
            Upserted::Created(p) | Upserted::Updated(p) | Upserted::Unchanged(p) => p,
        }
    }
}

#[derive(Clone)]
pub struct ProfileService {
    store: Arc<dyn ProfileStore>,
    /// Waits between attempts when a concurrent writer got there first.
    conflicts: Backoff,
}

impl ProfileService {
    pub fn new(store: Arc<dyn ProfileStore>) -> Self {
        // Generous: losing a race costs one read and one conditional write, and a busy
        // profile with several writers must still converge, never drop an update.
        let conflicts = Backoff::new(Duration::from_millis(5), Duration::from_millis(250), 30);
        Self { store, conflicts }
    }

    /// Replaces how long writers wait after losing a race (tests use no wait at all).
    pub fn with_conflict_backoff(self, conflicts: Backoff) -> Self {
        Self { conflicts, ..self }
    }

    pub async fn get(&self, user_id: &str) -> Result<Profile, ProfileError> {
        validation::check_user_id(user_id)?;
        self.store.load(user_id).await?.and_then(|s| s.profile).ok_or(ProfileError::NotFound)
    }

    /// Merges `patch` into the user's profile (creating it if needed). Concurrent writers
    /// to one profile are serialised by the store's version check: a loser re-reads and
    /// merges again, so no update is lost.
    pub async fn upsert(&self, user_id: &str, patch: ProfilePatch) -> Result<Upserted, ProfileError> {
        validation::check_user_id(user_id)?;
        let patch = patch.validate()?;
        self.modify(user_id, true, |profile| patch.merge_into(profile)).await
    }

    /// Drops a device token that its push service reports as gone (SNS disabled the
    /// endpoint: the app was uninstalled or the token expired). The app registers a new
    /// token, if it ever comes back, through the API.
    pub async fn remove_device_token(&self, user_id: &str, token: &str) -> Result<Upserted, ProfileError> {
        self.modify(user_id, false, |profile| {
            let before = profile.device_tokens.len();
            profile.device_tokens.retain(|t| t.token != token);
            let fields = if profile.device_tokens.len() == before { vec![] } else { vec!["device_tokens".to_owned()] };
            Ok(Changes { attributes: vec![], fields })
        })
        .await
    }

    /// Applies `change` to the stored profile under optimistic concurrency: a writer that
    /// loses the race re-reads and applies its change again, so no update is lost. One
    /// `profile.changed` event per effective change.
    async fn modify(
        &self,
        user_id: &str,
        create: bool,
        change: impl Fn(&mut Profile) -> Result<Changes, ValidationErrors>,
    ) -> Result<Upserted, ProfileError> {
        let mut retry = 0;
        loop {
            let stored = self.store.load(user_id).await?;
            let expected = stored.as_ref().map_or(0, |s| s.version);
            let existing = stored.and_then(|s| s.profile);
            let created = existing.is_none();
            if created && !create {
                return Err(ProfileError::NotFound);
            }
            let mut profile = existing.unwrap_or_else(|| Profile::new(user_id));
            let changes = change(&mut profile)?;
            if !created && changes.is_empty() {
                return Ok(Upserted::Unchanged(profile));
            }
            profile.version = expected + 1;
            profile.updated_at = Utc::now();
            let change = DomainEvent::ProfileChanged(ProfileChanged {
                user_id: user_id.to_owned(),
                version: profile.version,
                changed_attributes: changes.attributes,
                changed_fields: changes.fields,
                created,
                erased: false,
            });
            match self.store.save(&profile, expected, std::slice::from_ref(&change)).await {
                Ok(()) => return Ok(if created { Upserted::Created(profile) } else { Upserted::Updated(profile) }),
                Err(StoreError::Conflict) => {
                    if !self.conflicts.wait(retry).await {
                        return Err(ProfileError::Contention);
                    }
                    retry += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Erases the profile's data, keeping a tombstone of its id and version.
    pub async fn erase(&self, user_id: &str) -> Result<(), ProfileError> {
        validation::check_user_id(user_id)?;
        let mut retry = 0;
        loop {
            let Some(StoredProfile { version, profile: Some(_) }) = self.store.load(user_id).await? else {
                return Err(ProfileError::NotFound);
            };
            // The event names no attribute or field the profile held: it rides on the
            // tombstone, which must keep nothing of the erased data.
            let change = DomainEvent::ProfileChanged(ProfileChanged {
                user_id: user_id.to_owned(),
                version: version + 1,
                changed_attributes: vec![],
                changed_fields: vec![],
                created: false,
                erased: true,
            });
            match self.store.erase(user_id, version + 1, version, &[change]).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict) => {
                    if !self.conflicts.wait(retry).await {
                        return Err(ProfileError::Contention);
                    }
                    retry += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::profiles::memory::MemoryProfiles;

    fn service(store: Arc<MemoryProfiles>) -> ProfileService {
        ProfileService::new(store).with_conflict_backoff(Backoff::new(Duration::ZERO, Duration::ZERO, 30))
    }

    fn patch(value: serde_json::Value) -> ProfilePatch {
        serde_json::from_value(value).unwrap()
    }

    /// What the profiles' outboxes published.
    fn changed(store: &MemoryProfiles) -> Vec<ProfileChanged> {
        store.profile_changes()
    }

    #[tokio::test]
    async fn creating_a_profile_stores_version_1_and_publishes_created() {
        let store = Arc::new(MemoryProfiles::default());
        let result = service(store.clone()).upsert("u1", patch(json!({"email": "a@example.com"}))).await.unwrap();
        assert!(matches!(&result, Upserted::Created(p) if p.version == 1));
        let events = changed(&store);
        assert_eq!(events.len(), 1);
        assert!(events[0].created && events[0].changed_fields == ["email"]);
    }

    #[tokio::test]
    async fn a_no_op_neither_stores_nor_publishes() {
        let store = Arc::new(MemoryProfiles::default());
        let service = service(store.clone());
        service.upsert("u1", patch(json!({"email": "a@example.com"}))).await.unwrap();
        let again = service.upsert("u1", patch(json!({"email": "a@example.com"}))).await.unwrap();
        assert!(matches!(again, Upserted::Unchanged(p) if p.version == 1));
        assert_eq!(changed(&store).len(), 1);
    }

    #[tokio::test]
    async fn a_lost_race_is_merged_again_on_the_fresh_profile() {
        let store = Arc::new(MemoryProfiles::default());
        let service = service(store.clone());
        service.upsert("u1", patch(json!({"attributes": {"a": ["1"]}}))).await.unwrap();
        store.conflicts_to_inject.store(3, Ordering::SeqCst);
        let result = service.upsert("u1", patch(json!({"attributes": {"b": ["2"]}}))).await.unwrap();
        assert_eq!(result.profile().attributes.len(), 2);
        assert_eq!(result.profile().version, 2);
        assert_eq!(changed(&store).len(), 2, "one event per effective change, not per attempt");
    }

    #[tokio::test]
    async fn endless_conflicts_end_in_contention_not_a_lost_write() {
        let store = Arc::new(MemoryProfiles::default());
        store.conflicts_to_inject.store(usize::MAX / 2, Ordering::SeqCst);
        let result = service(store.clone()).upsert("u1", patch(json!({}))).await;
        assert!(matches!(result, Err(ProfileError::Contention)), "{result:?}");
        assert!(changed(&store).is_empty());
    }

    #[tokio::test]
    async fn an_invalid_patch_touches_nothing() {
        let store = Arc::new(MemoryProfiles::default());
        let result = service(store.clone()).upsert("u1", patch(json!({"email": "nope"}))).await;
        assert!(matches!(result, Err(ProfileError::Invalid(_))));
        assert!(store.records.lock().unwrap().is_empty());
        assert!(changed(&store).is_empty());
    }

    #[tokio::test]
    async fn a_write_that_is_not_made_publishes_nothing() {
        let store = Arc::new(MemoryProfiles::default());
        store.conflicts_to_inject.store(1_000, Ordering::SeqCst);
        let result = service(store.clone()).upsert("u1", patch(json!({"email": "a@example.com"}))).await;
        assert!(matches!(result, Err(ProfileError::Contention)));
        assert!(changed(&store).is_empty());
    }

    #[tokio::test]
    async fn erasing_leaves_a_tombstone_and_publishes_that_it_was_erased_naming_nothing_it_held() {
        let store = Arc::new(MemoryProfiles::default());
        let service = service(store.clone());
        service.upsert("u1", patch(json!({"attributes": {"vip": ["y"]}, "email": "a@example.com"}))).await.unwrap();
        service.erase("u1").await.unwrap();
        assert_eq!(store.records.lock().unwrap()["u1"], StoredProfile { version: 2, profile: None });
        assert!(matches!(service.get("u1").await, Err(ProfileError::NotFound)));
        assert!(matches!(service.erase("u1").await, Err(ProfileError::NotFound)));
        let erased = changed(&store).pop().unwrap();
        assert!(erased.erased && erased.changed_attributes.is_empty() && erased.changed_fields.is_empty());
    }

    #[tokio::test]
    async fn a_bad_user_id_is_refused_before_any_read() {
        let store = Arc::new(MemoryProfiles::default());
        let result = service(store).upsert("a/b", patch(json!({}))).await;
        assert!(matches!(result, Err(ProfileError::Invalid(e)) if e.0[0].field == "user_id"));
    }
}
