//! DynamoDB: the item helpers, batch reads and writes and transactions every table adapter
//! shares, then one adapter per table.

pub mod activity;
pub mod api_keys;
pub mod batch;
pub mod campaigns;
pub mod deliveries;
pub mod import_jobs;
mod item;
mod jobs;
pub mod memberships;
pub mod notifications;
pub mod outbox;
pub mod profiles;
pub mod segments;
pub mod suppressions;
pub mod templates;
pub(crate) mod transaction;
pub mod user_settings;

pub use item::{Item, item_size};
pub(crate) use item::{n, number_of, s, scan_consistent};
