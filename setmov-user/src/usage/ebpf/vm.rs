//! A VM's share of an interval: what its qemu process, vCPU threads and taps did.

use setmov_common::{BlockKey, DIR_READ, DIR_WRITE, LatHist};

use crate::ebpf::{BlockTotals, NetDeviceCounters};
use crate::usage::hist::{hist_add, hist_quantile};
use setmov_common::net::NetDeviceValue;

use super::*;

/// One tap's traffic over an interval, from the guest's point of view (rx = received by the
/// guest), in the units of libvirt's interface statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct VmNicTraffic {
    /// The host-side tap device.
    pub iface: String,
    pub rx: NetDeviceValue,
    pub tx: NetDeviceValue,
    /// Dropped packets by the kernel's reason.
    pub drops: Vec<(String, u64)>,
}

/// Bytes of the Ethernet header that the host's receive tracepoint has already pulled off.
const ETHERNET_HEADER_BYTES: u64 = 14;

/// What the guest behind a tap sent and received: the tap's transmit is the guest's
/// receive, and the tap's receive (with its Ethernet header added back) the guest's transmit.
pub fn guest_view_of_tap(host: &NetDeviceCounters) -> (NetDeviceValue, NetDeviceValue) {
    let mut guest_tx = host.rx;
    guest_tx.bytes = guest_tx
        .bytes
        .wrapping_add(guest_tx.packets.wrapping_mul(ETHERNET_HEADER_BYTES));
    (host.tx, guest_tx)
}

/// Run-queue wait of a VM's vCPUs over an interval: the eBPF "CPU ready".
#[derive(Debug, Clone, PartialEq)]
pub struct CpuReady {
    /// Σ wait ÷ (vCPUs × interval), in percent: 100 % would be every vCPU runnable and
    /// waiting for a host CPU the whole interval.
    pub pct: f64,
    /// Of the single waits, in microseconds; `None` when no vCPU waited.
    pub p99_us: Option<f64>,
    pub waits: u64,
}

/// A VM's eBPF figures for one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct VmEbpfFigures {
    pub interval_secs: f64,
    pub block: BlockTotals,
    pub block_rates: Option<BlockRates>,
    /// Issue-to-completion latency of the requests qemu submitted, per direction with any.
    pub latency: Vec<DirectionLatency>,
    /// Run-queue wait of its vCPU threads; `None` without the scheduler probe or vCPU ids.
    pub cpu_ready: Option<CpuReady>,
    /// KVM events of its qemu process: (event, reason, count), all with a count.
    pub kvm_events: Vec<(String, String, u64)>,
    /// Per tap device the probe saw.
    pub nics: Vec<VmNicTraffic>,
}

impl VmEbpfFigures {
    /// All KVM events per second.
    pub fn kvm_events_per_sec(&self) -> Option<f64> {
        let dt = crate::usage::positive_seconds(self.interval_secs)?;
        Some(self.kvm_events.iter().map(|e| e.2 as f64).sum::<f64>() / dt)
    }
}

/// Which of the interval's records belong to one VM.
#[derive(Debug, Clone, Copy)]
pub struct VmOwnership<'a> {
    pub qemu_pid: u32,
    pub vcpu_tids: &'a [u32],
    /// Its host-side tap devices.
    pub taps: &'a [&'a str],
}

/// The figures of one VM.
pub fn vm_ebpf_figures(interval: &EbpfInterval, vm: VmOwnership<'_>) -> VmEbpfFigures {
    let qemu_pid = vm.qemu_pid;
    let block = interval
        .block_by_tgid
        .get(&qemu_pid)
        .copied()
        .unwrap_or_default();
    let cpu_ready = (interval.sched_on && !vm.vcpu_tids.is_empty())
        .then(|| cpu_ready(interval, vm.vcpu_tids))
        .flatten();
    let kvm_events = interval
        .kvm_by_tgid
        .get(&qemu_pid)
        .map(|counters| {
            counters
                .by_kind
                .iter()
                .flat_map(|(kind, reasons)| {
                    reasons
                        .iter()
                        .map(move |(reason, &count)| (kind.to_string(), reason.clone(), count))
                })
                .collect()
        })
        .unwrap_or_default();
    let nics = vm
        .taps
        .iter()
        .map(|&tap| {
            let (rx, tx) = interval
                .net_devices
                .get(tap)
                .map(guest_view_of_tap)
                .unwrap_or_default();
            let mut drops: Vec<(String, u64)> = interval
                .net_drops
                .iter()
                .filter(|((device, _), _)| device == tap)
                .map(|((_, reason), &count)| (reason.clone(), count))
                .collect();
            drops.sort();
            VmNicTraffic {
                iface: tap.to_owned(),
                rx,
                tx,
                drops,
            }
        })
        .collect();
    VmEbpfFigures {
        interval_secs: interval.interval_secs,
        cpu_ready,
        kvm_events,
        nics,
        block,
        block_rates: block_rates(&block, interval.interval_secs),
        latency: [DIR_READ, DIR_WRITE]
            .into_iter()
            .filter_map(|direction| {
                let hist = interval.latency_by_tgid.get(&BlockKey {
                    tgid: qemu_pid,
                    direction,
                })?;
                Some(DirectionLatency {
                    direction,
                    hist: *hist,
                    summary: latency_summary(hist)?,
                })
            })
            .collect(),
    }
}

/// The run-queue wait of `vcpu_tids` over the interval. A watched thread that did not wait is
/// absent from the deltas and adds nothing; `None` unless every vCPU thread was watched
/// through the whole interval (a VM just seen, a vCPU thread restarted).
fn cpu_ready(interval: &EbpfInterval, vcpu_tids: &[u32]) -> Option<CpuReady> {
    if !vcpu_tids
        .iter()
        .all(|tid| interval.runq_watched_throughout.contains(tid))
    {
        return None;
    }
    let dt = crate::usage::positive_seconds(interval.interval_secs)?;
    let mut wait_ns = 0u64;
    let mut waits = 0u64;
    let mut hist = LatHist::default();
    for tid in vcpu_tids {
        if let Some(w) = interval.runq_by_tid.get(tid) {
            wait_ns = wait_ns.wrapping_add(w.wait_ns);
            waits = waits.wrapping_add(w.waits);
            hist_add(&mut hist, &w.hist);
        }
    }
    Some(CpuReady {
        pct: 100.0 * wait_ns as f64 / (dt * 1e9 * vcpu_tids.len() as f64),
        p99_us: hist_quantile(&hist, 0.99).map(|ns| ns / 1e3),
        waits,
    })
}
