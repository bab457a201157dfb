//! What a bus event gives the segmenter to do: by its detail type, the work (a user's
//! change, each user of an import's slice, a job, work handed on), the behaviour event to
//! record first for an engagement, and when the change happened.

use chrono::{DateTime, Utc};

use crate::{
    activity::ActivityEvent,
    delivery::{self, events::DeliveryStatusChanged},
    events::{ActivityRecorded, ProfileChanged, ProfilesImported, detail_type},
    segments::{Change, HandedOn, Work},
};

/// The segmenter's share of one bus event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventWork {
    /// One item, or one per user of an import's slice (none for a delivery status change
    /// that is not engagement).
    pub work: Vec<Work>,
    /// For a `delivery.status_changed` that is engagement (an open, a click, …), the
    /// behaviour event to record for its user before the work, so it sees the event.
    pub engagement: Option<ActivityEvent>,
    /// When the change happened, from the event's `time` (a second's precision): for
    /// changes only, not handed-on work or jobs, whose time is not a change's.
    pub changed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventWorkError {
    /// Where parsing stopped, never serde's message, which quotes the value it refused.
    #[error("not an event of the bus (line {}, column {})", .0.line(), .0.column())]
    Unreadable(#[from] serde_json::Error),
    #[error("no segmenter work for detail-type {0:?}")]
    UnknownType(String),
}

/// The detail types that are changes (of a profile, of a user's behaviour).
const CHANGES: [&str; 4] = [
    detail_type::PROFILE_CHANGED,
    detail_type::ACTIVITY_RECORDED,
    detail_type::PROFILES_IMPORTED,
    detail_type::DELIVERY_STATUS_CHANGED,
];

impl EventWork {
    /// The work of the event of `detail_type` with `detail`, sent at `time` (RFC 3339).
    pub fn of(detail_type: &str, time: Option<&str>, detail: serde_json::Value) -> Result<Self, EventWorkError> {
        let changed_at = CHANGES
            .contains(&detail_type)
            .then(|| DateTime::parse_from_rfc3339(time?).ok().map(|t| t.to_utc()))
            .flatten();
        let (work, engagement) = match detail_type {
            detail_type::PROFILE_CHANGED => {
                let changed: ProfileChanged = serde_json::from_value(detail)?;
                let change = Change {
                    attributes: changed.changed_attributes.into_iter().collect(),
                    fields: changed.changed_fields.into_iter().collect(),
                    events: Default::default(),
                    everything: changed.created || changed.erased,
                };
                (vec![Work::Change { user_id: changed.user_id, change }], None)
            }
            detail_type::ACTIVITY_RECORDED => {
                let recorded: ActivityRecorded = serde_json::from_value(detail)?;
                let change = Change { events: recorded.events, ..Default::default() };
                (vec![Work::Change { user_id: recorded.user_id, change }], None)
            }
            detail_type::PROFILES_IMPORTED => {
                let imported: ProfilesImported = serde_json::from_value(detail)?;
                let change = Change {
                    attributes: imported.changed_attributes.into_iter().collect(),
                    fields: imported.changed_fields.into_iter().collect(),
                    events: Default::default(),
                    everything: imported.everything,
                };
                let users = imported.user_ids.into_iter();
                (users.map(|user_id| Work::Change { user_id, change: change.clone() }).collect(), None)
            }
            detail_type::DELIVERY_STATUS_CHANGED => {
                let change: DeliveryStatusChanged = serde_json::from_value(detail)?;
                match delivery::events::engagement(&change) {
                    Some(event) => {
                        let work = Work::Change {
                            user_id: event.user_id.clone(),
                            change: Change { events: [event.name.clone()].into(), ..Default::default() },
                        };
                        (vec![work], Some(event))
                    }
                    None => (Vec::new(), None),
                }
            }
            detail_type::SEGMENT_JOB => (vec![Work::Task(serde_json::from_value(detail)?)], None),
            detail_type::SEGMENT_WORK => (serde_json::from_value::<HandedOn>(detail)?.work, None),
            other => return Err(EventWorkError::UnknownType(other.to_owned())),
        };
        Ok(Self { work, engagement, changed_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_event_is_told_by_where_parsing_stopped_never_by_the_value_refused() {
        let detail = serde_json::json!({"user_id": "ana@example.com", "version": "ana@example.com"});
        let error = EventWork::of(detail_type::PROFILE_CHANGED, None, detail).unwrap_err();
        assert!(matches!(error, EventWorkError::Unreadable(_)));
        assert!(!error.to_string().contains("ana@"), "{error}");
    }
}
