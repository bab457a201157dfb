//! What Herald's producers (herald-client) and its server (herald-core, the API) must agree
//! on, in a crate of its own so that a producer builds none of Herald's domain: the limits of
//! one `POST /v1/events` batch and the retry backoff both sides use.

pub mod activity;
pub mod backoff;
