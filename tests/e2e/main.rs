//! End-to-end suites against the local stack on the moto endpoint `scripts/test` starts.

mod api_edge;
mod api_errors;
mod campaign_delivery;
mod campaign_stores;
mod campaigns;
mod campaigns_api;
mod contracts;
mod delivery_faults;
mod feedback;
mod import_stores;
mod importer;
mod imports_api;
mod limit_scenarios;
mod local_esm;
mod notifications;
mod paced_campaign;
mod producer_sdk;
mod profile_events;
mod profiles_api;
mod real_binaries;
mod sample_events;
mod segment_stores;
mod segmenter;
mod segments_api;
mod stores;
mod strict_limits;
