//! Snapshots of the probes' cumulative maps, the interval between two of them (counter and
//! histogram deltas), and the programs' costs.

use std::collections::{HashMap, HashSet};

use setmov_common::{BlockKey, DeviceKey, LatHist};

use crate::ebpf::{BlockTotals, KvmCounters, NetDeviceCounters, ProgramRunStats, RunqWait};
use crate::usage::counter_delta;
use crate::usage::hist::hist_delta;
use setmov_common::PairingCounters;
use setmov_common::net::NetDeviceValue;

/// Every probe's cumulative counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EbpfSnapshot {
    /// All block I/O since load by device (kernel `dev_t`), forgotten processes included.
    pub block_by_device: HashMap<u32, BlockTotals>,
    pub block_by_tgid: HashMap<u32, BlockTotals>,
    /// Issue-to-completion nanoseconds.
    pub latency_by_device: HashMap<DeviceKey, LatHist>,
    pub latency_by_tgid: HashMap<BlockKey, LatHist>,
    /// How the block probe paired requests and completions, per device and direction.
    pub pairing: HashMap<DeviceKey, PairingCounters>,
    /// Per program, when `--bpf-stats` turned the kernel's statistics on.
    pub programs: Vec<ProgramRunStats>,
    /// Per network device, from the host's point of view (rx = received by the host).
    pub net_devices: HashMap<String, NetDeviceCounters>,
    /// Dropped packets by device name and reason (device "" when unknown).
    pub net_drops: HashMap<(String, String), u64>,
    pub kvm_by_tgid: HashMap<u32, KvmCounters>,
    /// Run-queue wait of the watched threads (the VMs' vCPUs).
    pub runq_by_tid: HashMap<u32, RunqWait>,
    /// Whether the scheduler probe runs (so that no wait means 0 %, not unknown).
    pub sched_on: bool,
}

/// What the probes saw during one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EbpfInterval {
    pub interval_secs: f64,
    /// All block I/O, every device together (stacked ones and the disks below them).
    pub block_total: BlockTotals,
    /// All block I/O by device (kernel `dev_t`).
    pub block_by_device: HashMap<u32, BlockTotals>,
    pub block_by_tgid: HashMap<u32, BlockTotals>,
    pub latency_by_device: HashMap<DeviceKey, LatHist>,
    pub latency_by_tgid: HashMap<BlockKey, LatHist>,
    /// How requests and completions were paired over the interval, per device and direction:
    /// requests displaced from the in-flight map, and the completions whose latency is in no
    /// histogram.
    pub pairing: HashMap<DeviceKey, PairingCounters>,
    /// Names of the devices in `latency_by_device` and `block_by_device`, by kernel `dev_t`
    /// (`vda`, `nvme0n1`); a partition goes by its disk's name.
    pub device_names: HashMap<u32, String>,
    /// Each program's cost, when the kernel's statistics are on.
    pub programs: Vec<ProgramCost>,
    pub net_devices: HashMap<String, NetDeviceCounters>,
    pub net_drops: HashMap<(String, String), u64>,
    pub kvm_by_tgid: HashMap<u32, KvmCounters>,
    pub runq_by_tid: HashMap<u32, RunqWait>,
    /// The threads watched through the whole interval (in both snapshots, their counters
    /// not restarted): only their run-queue wait is complete. A thread watched from part-way
    /// through has an unknown CPU ready for this interval, not 0.
    pub runq_watched_throughout: HashSet<u32>,
    pub sched_on: bool,
}

/// The interval between two snapshots. `None` when the grand totals went backwards (the
/// programs were loaded again). A key new in `now` counts from zero; a key whose counters went
/// backwards was removed and made again (a process id reused) and counts from zero too.
pub fn ebpf_interval(
    prev: &EbpfSnapshot,
    now: &EbpfSnapshot,
    interval_secs: f64,
) -> Option<EbpfInterval> {
    Some(EbpfInterval {
        interval_secs,
        block_total: block_delta(&all_devices(prev), &all_devices(now))?,
        block_by_device: deltas(&prev.block_by_device, &now.block_by_device, block_delta),
        block_by_tgid: deltas(&prev.block_by_tgid, &now.block_by_tgid, block_delta),
        latency_by_device: deltas(&prev.latency_by_device, &now.latency_by_device, hist_delta),
        latency_by_tgid: deltas(&prev.latency_by_tgid, &now.latency_by_tgid, hist_delta),
        pairing: deltas(&prev.pairing, &now.pairing, pairing_delta),
        device_names: HashMap::new(),
        programs: program_costs(&prev.programs, &now.programs, interval_secs),
        net_devices: deltas(&prev.net_devices, &now.net_devices, net_delta),
        net_drops: deltas(&prev.net_drops, &now.net_drops, |p, n| {
            counter_delta(*p, *n)
        }),
        kvm_by_tgid: deltas(&prev.kvm_by_tgid, &now.kvm_by_tgid, kvm_delta),
        runq_by_tid: deltas(&prev.runq_by_tid, &now.runq_by_tid, runq_delta),
        runq_watched_throughout: now
            .runq_by_tid
            .iter()
            .filter(|(tid, wait)| {
                prev.runq_by_tid
                    .get(tid)
                    .is_some_and(|before| runq_delta(before, wait).is_some())
            })
            .map(|(tid, _)| *tid)
            .collect(),
        sched_on: now.sched_on,
    })
}

fn pairing_delta(prev: &PairingCounters, now: &PairingCounters) -> Option<PairingCounters> {
    Some(PairingCounters {
        collided: counter_delta(prev.collided, now.collided)?,
        overflowed: counter_delta(prev.overflowed, now.overflowed)?,
        unpaired: counter_delta(prev.unpaired, now.unpaired)?,
    })
}

fn net_value_delta(prev: &NetDeviceValue, now: &NetDeviceValue) -> Option<NetDeviceValue> {
    Some(NetDeviceValue {
        packets: counter_delta(prev.packets, now.packets)?,
        bytes: counter_delta(prev.bytes, now.bytes)?,
        sizes: hist_delta(&prev.sizes, &now.sizes)?,
    })
}

fn net_delta(prev: &NetDeviceCounters, now: &NetDeviceCounters) -> Option<NetDeviceCounters> {
    Some(NetDeviceCounters {
        rx: net_value_delta(&prev.rx, &now.rx)?,
        tx: net_value_delta(&prev.tx, &now.tx)?,
    })
}

fn kvm_delta(prev: &KvmCounters, now: &KvmCounters) -> Option<KvmCounters> {
    let mut delta = KvmCounters::default();
    for (kind, reasons) in &now.by_kind {
        for (reason, &count) in reasons {
            let before = prev.count(*kind, reason);
            let d = counter_delta(before, count)?;
            if d > 0 {
                delta
                    .by_kind
                    .entry(*kind)
                    .or_default()
                    .insert(reason.clone(), d);
            }
        }
    }
    Some(delta)
}

fn runq_delta(prev: &RunqWait, now: &RunqWait) -> Option<RunqWait> {
    Some(RunqWait {
        wait_ns: counter_delta(prev.wait_ns, now.wait_ns)?,
        waits: counter_delta(prev.waits, now.waits)?,
        hist: hist_delta(&prev.hist, &now.hist)?,
    })
}

/// One eBPF program's cost over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramCost {
    pub program: String,
    pub events_per_sec: f64,
    /// Mean run time per event; `None` when it did not run.
    pub mean_ns: Option<f64>,
}

/// Costs between two readings of the programs' statistics, for the programs in both.
pub fn program_costs(
    prev: &[ProgramRunStats],
    now: &[ProgramRunStats],
    interval_secs: f64,
) -> Vec<ProgramCost> {
    let Some(dt) = crate::usage::positive_seconds(interval_secs) else {
        return Vec::new();
    };
    now.iter()
        .filter_map(|n| {
            let p = prev.iter().find(|p| p.program == n.program)?;
            let events = counter_delta(p.run_count, n.run_count)?;
            let ns = n.run_time.checked_sub(p.run_time)?.as_nanos() as f64;
            Some(ProgramCost {
                program: n.program.clone(),
                events_per_sec: events as f64 / dt,
                mean_ns: (events > 0).then(|| ns / events as f64),
            })
        })
        .collect()
}

/// The I/O of every device of `snapshot` together.
fn all_devices(snapshot: &EbpfSnapshot) -> BlockTotals {
    sum_block(snapshot.block_by_device.values())
}

pub(super) fn sum_block<'a>(io: impl IntoIterator<Item = &'a BlockTotals>) -> BlockTotals {
    io.into_iter()
        .fold(BlockTotals::default(), |sum, io| BlockTotals {
            read_ops: sum.read_ops.wrapping_add(io.read_ops),
            read_bytes: sum.read_bytes.wrapping_add(io.read_bytes),
            write_ops: sum.write_ops.wrapping_add(io.write_ops),
            write_bytes: sum.write_bytes.wrapping_add(io.write_bytes),
        })
}

fn block_delta(prev: &BlockTotals, now: &BlockTotals) -> Option<BlockTotals> {
    Some(BlockTotals {
        read_ops: counter_delta(prev.read_ops, now.read_ops)?,
        read_bytes: counter_delta(prev.read_bytes, now.read_bytes)?,
        write_ops: counter_delta(prev.write_ops, now.write_ops)?,
        write_bytes: counter_delta(prev.write_bytes, now.write_bytes)?,
    })
}

/// Per-key deltas of the keys in `now` that changed; see [`ebpf_interval`] for new and reset
/// keys.
fn deltas<K, V>(
    prev: &HashMap<K, V>,
    now: &HashMap<K, V>,
    delta: impl Fn(&V, &V) -> Option<V>,
) -> HashMap<K, V>
where
    K: Clone + Eq + std::hash::Hash,
    V: Clone + Default + PartialEq,
{
    now.iter()
        .filter_map(|(key, value)| {
            let d = match prev.get(key) {
                Some(before) => delta(before, value).unwrap_or_else(|| value.clone()),
                None => value.clone(),
            };
            (d != V::default()).then(|| (key.clone(), d))
        })
        .collect()
}
