//! Exports of the sampled ticks to other systems, beside the store.
//!
//! Each exporter receives every tick from the sampler as a subscriber
//! ([`crate::sampler::Outputs`]). [`prometheus`]: the Prometheus text exposition on `/metrics`.

pub mod prometheus;

pub use prometheus::{DEFAULT_ADDRESS, ExportError, MetricsServer, PrometheusExporter};
