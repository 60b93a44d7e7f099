//! `setmov top`: a live view of the host and its VMs in the terminal.

use std::path::Path;

use super::host_identity;
use super::sources::{EbpfStatus, SourceOptions, start_sources};
use crate::cli::{DEFAULT_LIBVIRT_RUN_DIR, TopArgs};
use crate::host::devices::DEFAULT_SKIPPED_DISK_PREFIXES;
use crate::sampler::SamplerConfig;
use crate::store::rollup::Retention;
use crate::top::{Availability, Coverage};

pub async fn top(args: TopArgs, log: Option<crate::top::RecentLog>) -> anyhow::Result<()> {
    let (sources, status) = start_sources(SourceOptions {
        proc_root: &args.proc_root,
        skipped_disks: DEFAULT_SKIPPED_DISK_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        libvirt_uri: &args.libvirt_uri,
        libvirt_run_dir: Path::new(DEFAULT_LIBVIRT_RUN_DIR),
        no_libvirt: args.no_libvirt,
        no_ebpf: args.no_ebpf,
        bpf_stats: false,
    })?;
    let identity = host_identity(&args.proc_root, None, None)?;
    // Why a source is off is shown in the view rather than logged.
    let vms = match &status.vms_off {
        Some(off) => Availability::Off(off.to_string()),
        None => Availability::On,
    };
    let ebpf_off = match &status.ebpf {
        EbpfStatus::On { .. } => String::new(),
        EbpfStatus::Off(off) => off.to_string(),
    };
    // The probes are there exactly when eBPF is on.
    let coverage = Coverage::new(vms, sources.ebpf.as_ref().ok_or(ebpf_off.as_str()));
    let config = SamplerConfig {
        interval: args.interval,
        count: None,
        print_summary: false,
        net_total_excluded: Vec::new(),
        retention: Retention::default(),
    };
    let result = crate::top::run(config, identity, sources, coverage, log.clone()).await;
    // What was logged while the view had the terminal.
    for message in log.map(|l| l.all()).unwrap_or_default() {
        eprintln!("setmov top: {message}");
    }
    Ok(result?)
}
