//! The profile service: validation, merge, optimistic concurrency and change events.

use std::sync::Arc;

use chrono::Utc;

use crate::{
    DomainEvent, Profile, ProfileChanged, ProfilePatch, ValidationErrors,
    backoff::Backoff,
    ports::{EventPublisher, ProfileStore, PublishError, StoreError, StoredProfile},
    validation,
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
    #[error(transparent)]
    Publish(#[from] PublishError),
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
    events: Arc<dyn EventPublisher>,
    /// Waits between attempts when a concurrent writer got there first.
    conflicts: Backoff,
}

impl ProfileService {
    pub fn new(store: Arc<dyn ProfileStore>, events: Arc<dyn EventPublisher>) -> Self {
        Self { store, events, conflicts: Backoff::new(std::time::Duration::from_millis(5), std::time::Duration::from_millis(200), 10) }
    }

    pub async fn get(&self, user_id: &str) -> Result<Profile, ProfileError> {
        check_user_id(user_id)?;
        self.store.load(user_id).await?.and_then(|s| s.profile).ok_or(ProfileError::NotFound)
    }

    /// Merges `patch` into the user's profile (creating it if needed). Concurrent writers
    /// to one profile are serialised by the store's version check: a loser re-reads and
    /// merges again, so no update is lost.
    pub async fn upsert(&self, user_id: &str, patch: ProfilePatch) -> Result<Upserted, ProfileError> {
        check_user_id(user_id)?;
        let patch = patch.validate()?;
        let mut retry = 0;
        loop {
            let stored = self.store.load(user_id).await?;
            let expected = stored.as_ref().map_or(0, |s| s.version);
            let existing = stored.and_then(|s| s.profile);
            let created = existing.is_none();
            let mut profile = existing.unwrap_or_else(|| Profile::new(user_id));
            let changes = patch.merge_into(&mut profile)?;
            if !created && changes.is_empty() {
                return Ok(Upserted::Unchanged(profile));
            }
            profile.version = expected + 1;
            profile.updated_at = Utc::now();
            match self.store.save(&profile, expected).await {
                Ok(()) => {
                    self.events
                        .publish(&[DomainEvent::ProfileChanged(ProfileChanged {
                            user_id: user_id.to_owned(),
                            version: profile.version,
                            changed_attributes: changes.attributes,
                            changed_fields: changes.fields,
                            created,
                            erased: false,
                        })])
                        .await?;
                    return Ok(if created { Upserted::Created(profile) } else { Upserted::Updated(profile) });
                }
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
        check_user_id(user_id)?;
        let mut retry = 0;
        loop {
            let Some(StoredProfile { version, profile: Some(profile) }) = self.store.load(user_id).await? else {
                return Err(ProfileError::NotFound);
            };
            match self.store.erase(user_id, version + 1, version).await {
                Ok(()) => {
                    let changed_fields = [
                        ("email", profile.email.is_some()),
                        ("phone", profile.phone.is_some()),
                        ("timezone", profile.timezone.is_some()),
                        ("device_tokens", !profile.device_tokens.is_empty()),
                        ("external_channels", !profile.external_channels.is_empty()),
                    ];
                    self.events
                        .publish(&[DomainEvent::ProfileChanged(ProfileChanged {
                            user_id: user_id.to_owned(),
                            version: version + 1,
                            changed_attributes: profile.attributes.into_keys().collect(),
                            changed_fields: changed_fields.into_iter().filter(|(_, had)| *had).map(|(f, _)| f.to_owned()).collect(),
                            created: false,
                            erased: true,
                        })])
                        .await?;
                    return Ok(());
                }
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


fn check_user_id(user_id: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    errors.check("user_id", validation::user_id(user_id));
    errors.into_result()
}
