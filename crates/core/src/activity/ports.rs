//! What activity needs from the outside world: implemented over AWS in herald-aws and in
//! memory (`memory`) for tests.

use async_trait::async_trait;

use std::collections::HashMap;

use crate::store::StoreError;

/// What recording a batch of events did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events counted now.
    pub counted: usize,
    /// Events whose id was seen before: not counted again.
    pub duplicates: usize,
}

#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Counts each event whose `event_id` (per user) was not recorded before, atomically
    /// with remembering its id; bumps the revision of every user it counted events for.
    async fn record(&self, events: &[crate::activity::ActivityEvent]) -> Result<Recorded, StoreError>;

    /// The counters and last-seen times `query` names for each of `user_ids`, over the
    /// days up to `today` (users with no activity get an empty one, revision 0). Reads
    /// are strongly consistent: the segmenter evaluates right after a record.
    async fn load_many(
        &self,
        user_ids: &[String],
        query: &crate::activity::ActivityQuery,
        today: chrono::NaiveDate,
    ) -> Result<HashMap<String, crate::activity::Activity>, StoreError>;
}
