//! Bulk profile import from files dropped in S3: the import job, parsing by format, and the
//! service that streams a file into profile upserts with checkpoints.

mod job;
pub mod parsing;
pub mod patches;
mod ports;
mod service;

pub use job::*;
pub use ports::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
