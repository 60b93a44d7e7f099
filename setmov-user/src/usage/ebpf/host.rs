//! The host's figures of an interval: the whole, and the part that belongs to no VM.

use std::collections::HashSet;

use setmov_common::dev_major_minor;

use crate::ebpf::{BlockTotals, add_pairing};
use setmov_common::PairingCounters;

use super::*;

/// One device's latency over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLatency {
    pub device: String,
    pub direction: u32,
    pub summary: LatencySummary,
}

/// The host's eBPF figures for one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEbpfFigures {
    pub interval_secs: f64,
    /// The block I/O of the disks the host disk total counts (those nothing sits below), so
    /// that no request is counted twice; `None` without that list of disks.
    pub block: Option<BlockTotals>,
    /// The part no VM's qemu process submitted.
    pub unattributed: Option<BlockTotals>,
    pub block_rates: Option<BlockRates>,
    pub unattributed_rates: Option<BlockRates>,
    /// Per device and direction with completed requests, by device name.
    pub devices: Vec<DeviceLatency>,
    /// How the block probe paired requests with completions over the interval (all
    /// devices): `unpaired` completions are in no latency histogram.
    pub pairing: PairingCounters,
    /// Each eBPF program's cost, when `--bpf-stats` is on.
    pub programs: Vec<ProgramCost>,
}

/// The host's figures; `vm_tgids` are the qemu processes of the VMs, whose I/O is theirs.
/// `disks` are the devices the host disk total counts this tick (the host reading's
/// `disk_total_over`): the block total sums the same ones, so that it agrees with it.
pub fn host_ebpf_figures(
    interval: &EbpfInterval,
    vm_tgids: &HashSet<u32>,
    disks: Option<&[String]>,
) -> HostEbpfFigures {
    let attributed = sum_block(
        interval
            .block_by_tgid
            .iter()
            .filter(|(tgid, _)| vm_tgids.contains(tgid))
            .map(|(_, io)| io),
    );
    let total = disks.map(|disks| {
        sum_block(
            interval
                .block_by_device
                .iter()
                .filter(|(dev, _)| disks.contains(&device_name(interval, **dev)))
                .map(|(_, io)| io),
        )
    });
    // What a VM submitted to a stacked device reaches a counted disk too, so the difference
    // is taken as a floor of 0.
    let unattributed = total.map(|total| BlockTotals {
        read_ops: total.read_ops.saturating_sub(attributed.read_ops),
        read_bytes: total.read_bytes.saturating_sub(attributed.read_bytes),
        write_ops: total.write_ops.saturating_sub(attributed.write_ops),
        write_bytes: total.write_bytes.saturating_sub(attributed.write_bytes),
    });
    let mut devices: Vec<DeviceLatency> = interval
        .latency_by_device
        .iter()
        .filter_map(|(key, hist)| {
            Some(DeviceLatency {
                device: device_name(interval, key.dev),
                direction: key.direction,
                summary: latency_summary(hist)?,
            })
        })
        .collect();
    devices.sort_by(|a, b| (&a.device, a.direction).cmp(&(&b.device, b.direction)));
    HostEbpfFigures {
        interval_secs: interval.interval_secs,
        block: total,
        unattributed,
        block_rates: total.and_then(|io| block_rates(&io, interval.interval_secs)),
        unattributed_rates: unattributed.and_then(|io| block_rates(&io, interval.interval_secs)),
        devices,
        pairing: interval
            .pairing
            .values()
            .fold(PairingCounters::default(), |sum, p| add_pairing(&sum, p)),
        programs: interval.programs.clone(),
    }
}

/// The name of device `dev`, or `major:minor` when it has none.
fn device_name(interval: &EbpfInterval, dev: u32) -> String {
    interval.device_names.get(&dev).cloned().unwrap_or_else(|| {
        let (major, minor) = dev_major_minor(dev);
        format!("{major}:{minor}")
    })
}
