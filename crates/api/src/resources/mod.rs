//! One module per resource, each with its routes: path, method, access and handler.

pub mod campaigns;
pub mod events;
pub mod imports;
pub mod notifications;
pub mod openapi;
pub mod preferences;
pub mod segment_upload;
pub mod segments;
pub mod suppressions;
pub mod templates;
pub mod tracking;
pub mod users;
pub mod webhook_keys;

use crate::Routes;

/// Every route of the API.
pub fn routes() -> Routes {
    Routes::new()
        .merge(openapi::routes())
        .merge(users::routes())
        .merge(preferences::routes())
        .merge(suppressions::routes())
        .merge(notifications::routes())
        .merge(templates::routes())
        .merge(events::routes())
        .merge(segments::routes())
        .merge(imports::routes())
        .merge(campaigns::routes())
        .merge(tracking::routes())
        .merge(webhook_keys::routes())
}
