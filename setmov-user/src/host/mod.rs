//! Resource collection from the host (the paper's first module, host half): procfs counters
//! and the host's identity.

pub mod devices;
pub mod identity;
pub mod read;
pub mod snapshot;
