//! `setmov top`: a live view of the host and its VMs in the terminal.

use super::host_identity;
use crate::cli::{DEFAULT_LIBVIRT_RUN_DIR, TopArgs};
use crate::ebpf::Probes;
use crate::host::devices::{DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES, DEFAULT_SKIPPED_DISK_PREFIXES};
use crate::host::read::HostReader;
use crate::sampler::{SamplerConfig, Sources};
use crate::store::rollup::Retention;
use crate::vm::libvirt::LibvirtCollector;

pub async fn top(args: TopArgs, log: Option<crate::top::RecentLog>) -> anyhow::Result<()> {
    use crate::top::Availability;
    let skipped_disks = DEFAULT_SKIPPED_DISK_PREFIXES.iter().map(|s| s.to_string());
    let reader = HostReader::new(&args.proc_root, skipped_disks.collect())?;
    let identity = host_identity(&args.proc_root, None, None)?;
    // Why a source is off is shown in the view rather than logged.
    let probes = if args.no_ebpf {
        Err("--no-ebpf given".to_owned())
    } else {
        Probes::load().map_err(|e| e.to_string())
    };
    let (libvirt, vms) = if args.no_libvirt {
        (None, Availability::Off("--no-libvirt given".into()))
    } else {
        let collector = LibvirtCollector::new(&args.libvirt_uri, DEFAULT_LIBVIRT_RUN_DIR);
        (Some(collector), Availability::On)
    };
    let coverage = crate::top::Coverage::new(vms, probes.as_ref().map_err(String::as_str));
    let config = SamplerConfig {
        interval: args.interval,
        count: None,
        print_summary: false,
        net_total_excluded: DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        retention: Retention::default(),
    };
    let sources = Sources {
        host: reader,
        libvirt,
        ebpf: probes.ok(),
    };
    let result = crate::top::run(config, identity, sources, coverage, log.clone()).await;
    // What was logged while the view had the terminal.
    for message in log.map(|l| l.all()).unwrap_or_default() {
        eprintln!("setmov top: {message}");
    }
    Ok(result?)
}
