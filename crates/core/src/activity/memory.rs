//! In-memory doubles of this capability's ports, for fast tests and benchmarks that stub
//! the stores. The port contract suites run them against the same cases as the adapters.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;

use crate::store::StoreError;

/// Activity per user, with the ids of the events already counted.
#[derive(Default)]
pub struct MemoryActivity {
    pub users: Mutex<HashMap<String, (crate::activity::Activity, std::collections::HashSet<String>)>>,
}

#[async_trait]
impl crate::activity::ActivityStore for MemoryActivity {
    async fn record(&self, events: &[crate::activity::ActivityEvent]) -> Result<crate::activity::Recorded, StoreError> {
        let mut users = self.users.lock().unwrap();
        let mut recorded = crate::activity::Recorded::default();
        let mut fresh: HashMap<&str, Vec<crate::activity::ActivityEvent>> = HashMap::new();
        for event in events {
            let (_, seen) = users.entry(event.user_id.clone()).or_default();
            if seen.insert(event.event_id.clone()) {
                recorded.counted += 1;
                fresh.entry(&event.user_id).or_default().push(event.clone());
            } else {
                recorded.duplicates += 1;
            }
        }
        for (user_id, events) in fresh {
            users.get_mut(user_id).expect("entry made above").0.record(&events);
        }
        Ok(recorded)
    }

    /// As the adapter reads: only the counters `query` names over its days up to `today`,
    /// only the last-seen times it names, and the revision.
    async fn load_many(
        &self,
        user_ids: &[String],
        query: &crate::activity::ActivityQuery,
        today: chrono::NaiveDate,
    ) -> Result<HashMap<String, crate::activity::Activity>, StoreError> {
        let users = self.users.lock().unwrap();
        let days = query.days_from(today);
        let asked = |stored: &crate::activity::Activity| crate::activity::Activity {
            counts: query
                .counters
                .iter()
                .filter_map(|key| {
                    let per_day = stored.counts.get(key)?;
                    let kept: std::collections::BTreeMap<_, _> =
                        days.iter().filter_map(|day| Some((*day, *per_day.get(day)?))).collect();
                    (!kept.is_empty()).then(|| (key.clone(), kept))
                })
                .collect(),
            last_seen: query
                .last_seen
                .iter()
                .filter_map(|event| Some((event.clone(), *stored.last_seen.get(event)?)))
                .collect(),
            revision: stored.revision,
        };
        Ok(user_ids.iter().map(|id| (id.clone(), users.get(id).map(|(a, _)| asked(a)).unwrap_or_default())).collect())
    }
}
