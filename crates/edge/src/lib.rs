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

/// Every function's allocator, and so that of every test and benchmark that runs their code:
/// mimalloc. glibc's malloc takes an arena's lock whenever one thread frees what another
/// allocated, as the importer's parser and writer do for every row, and the functions run
/// on multi-threaded runtimes: measured with `scripts/bench import` on 2 cores, 187,000 rows
/// per second per core under glibc, 340,000 under mimalloc (README, "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What a function's `main` returns: the Lambda runtime's error, into which a
/// [`config::ConfigError`] converts.
pub use lambda_runtime::Error;
