//! The edge every Herald Lambda shares, so that a function crate is its handler and its
//! wiring only: logging that follows Lambda's log settings ([`logging`]), environment
//! configuration with one error type ([`config`]), metrics as EMF lines on stdout
//! ([`metrics`]), SQS batches answered with partial
//! batch failures ([`sqs`]), and the EventBridge envelope of bus events on a queue
//! ([`eventbridge`]).

pub mod config;
pub mod eventbridge;
pub mod logging;
pub mod metrics;
pub mod sqs;

/// What a function's `main` returns: the Lambda runtime's error, into which a
/// [`config::ConfigError`] converts.
pub use lambda_runtime::Error;
