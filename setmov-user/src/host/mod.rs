//! Resource collection from the host (the paper's first module, host half): procfs counters
//! and the host's identity.

pub mod devices;
pub mod identity;
mod meminfo;
pub mod read;
pub mod snapshot;
pub mod topology;
