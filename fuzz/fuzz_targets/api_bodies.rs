//! A request body of the API (the first byte chooses the route): parsed as the API parses
//! it (`parse_json`: an object, fields named on error) and validated as its handler does.
#![no_main]

use herald_api::{extract::parse_json, resources::segment_upload};
use herald_core::{
    activity::{ActivityEvent, check_batch},
    campaigns::CampaignRequest,
    delivery::{preferences::Preferences, templates::TemplateInput},
    notifications::NotificationRequest,
    profiles::ProfilePatch,
    segments::SegmentInput,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The body of `POST /v1/events` (private to the API's handler).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBatch {
    events: Vec<ActivityEvent>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    match route % 8 {
        0 => {
            if let Ok(patch) = parse_json::<ProfilePatch>(body) {
                let _ = patch.validate();
            }
        }
        1 => {
            if let Ok(request) = parse_json::<NotificationRequest>(body) {
                let _ = request.validate();
            }
        }
        2 => {
            if let Ok(request) = parse_json::<CampaignRequest>(body) {
                let _ = request.validate();
            }
        }
        3 => {
            if let Ok(input) = parse_json::<SegmentInput>(body) {
                let _ = input.validate();
            }
        }
        4 => {
            if let Ok(input) = parse_json::<TemplateInput>(body) {
                let _ = input.validate("fuzz");
            }
        }
        5 => {
            if let Ok(preferences) = parse_json::<Preferences>(body) {
                let _ = preferences.validate();
            }
        }
        6 => {
            if let Ok(batch) = parse_json::<EventBatch>(body) {
                let _ = check_batch(&batch.events, chrono::Utc::now());
            }
        }
        _ => {
            // A static segment's file of user ids (`POST /v1/segments` as text/csv).
            let _ = segment_upload::user_ids(body);
        }
    }
});
