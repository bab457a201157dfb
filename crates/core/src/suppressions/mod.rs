//! The suppression list: addresses Herald never sends to again on a channel, with why.
//! Provider feedback fills it (a hard bounce or a complaint at once, soft bounces once
//! they repeat within a window), operators through the API; the delivery pipeline reads
//! it before every send, and a suppressed send ends `suppressed`.

mod model;
mod ports;
mod service;

pub use model::*;
pub use ports::*;
pub use service::*;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
