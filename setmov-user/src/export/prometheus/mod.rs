//! Prometheus text exposition (format 0.0.4) of the sampled ticks, served on `/metrics`.
//!
//! [`PrometheusExporter`] is pure: [`PrometheusExporter::observe`] takes each tick,
//! [`PrometheusExporter::render`] writes the exposition. [`MetricsServer`] serves it over HTTP
//! (axum) and feeds it the ticks the sampler hands to its subscribers.
//!
//! Conventions:
//! - Every name starts with `setmov_`; units are base units (bytes, seconds) and shares are
//!   ratios from 0 to 1 (`_ratio`), never percentages.
//! - Every series carries `host` (the host's name); a VM's also carry `vm` (its name) and `uuid`.
//!   The host's address is in `setmov_host_info`, not on every series.
//! - Counters (`_total`) are accumulated here as Σ rate × interval of each tick (Σ count where
//!   the tick gives a count): they start when the exporter starts, never go back, and an
//!   interval without a rate (a reset, the first sight of a VM) adds nothing.
//! - Gauges are the newest tick's figures only. A VM that a tick lists without figures, or
//!   does not list, keeps its counters but has no gauges (but `setmov_vm_up`) until it is
//!   sampled again; a figure the tick does not have is absent, never 0. A VM libvirt no longer
//!   lists ("gone") is removed altogether.
//! - Host disks are whole disks only (partitions would count their bytes again). The host's
//!   network totals (`setmov_host_network_*`) are those stored: the interfaces not left out by
//!   `--net-total-exclude`; every interface is in `setmov_host_interface_*`.
//!
//! The parts: `families.rs` (every family's name, type and help), `observe.rs` (a tick, the
//! counter and gauge primitives, the network interfaces) with `observe_host.rs` and
//! `observe_vm.rs` (the host's and each VM's figures), `render.rs` (the exposition text and
//! its escaping), `server.rs` (the HTTP side) and `connections.rs` (its limits).

mod connections;
mod families;
#[cfg(test)]
pub(crate) mod fixtures;
mod observe;
mod observe_host;
mod observe_vm;
mod render;
mod server;

use std::collections::{BTreeMap, HashMap};

pub use families::{FAMILIES, Family, MetricKind, family};
pub use server::{CONTENT_TYPE_0_0_4, DEFAULT_ADDRESS, ExportError, MetricsServer};

use std::sync::Arc;

use crate::sampler::WriterCounts;

/// Whose series: the exporter's own, the host's, or a VM's (by UUID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Exporter,
    Host,
    Vm(String),
}

type Labels = Vec<(&'static str, String)>;
type Series = BTreeMap<(Owner, Labels), f64>;

/// Turns ticks into the Prometheus text exposition; see the module's conventions.
#[derive(Debug, Default)]
pub struct PrometheusExporter {
    /// The newest tick's host name.
    host: Option<String>,
    /// The newest name of each VM with series.
    vm_names: HashMap<String, String>,
    counters: BTreeMap<&'static str, Series>,
    gauges: BTreeMap<&'static str, Series>,
    /// The database writer's counts, when there is a database.
    writer: Option<Arc<WriterCounts>>,
}

impl PrometheusExporter {
    pub fn new() -> PrometheusExporter {
        PrometheusExporter::default()
    }

    /// An exporter that also reports what the database writer did with the ticks.
    pub fn counting_writes(counts: Arc<WriterCounts>) -> PrometheusExporter {
        PrometheusExporter {
            writer: Some(counts),
            ..PrometheusExporter::default()
        }
    }
}
