//! Interval figures from the eBPF probes' cumulative maps, and their merge onto VMs.
//!
//! The eBPF source reads every map once per tick into an [`EbpfSnapshot`]; two snapshots give
//! an [`EbpfInterval`] (counter and histogram deltas). The interval is then split by owner:
//! each VM gets what its qemu process did ([`vm_ebpf_figures`]), and the host keeps the whole
//! and the part that belongs to no VM ([`host_ebpf_figures`]): host processes, writeback
//! kworkers, I/O whose submitter is unknown. Nothing is dropped.
//!
//! What belongs to a VM: the block I/O and KVM events of its qemu process (tgid), the
//! run-queue wait of its vCPU threads, and the traffic and drops of its tap devices.

use std::collections::{HashMap, HashSet};

use setmov_common::{BlockKey, DIR_READ, DIR_WRITE, DeviceKey, LatHist, dev_major_minor};

use super::counter_delta;
use super::hist::{hist_add, hist_count, hist_delta, hist_quantile};
use crate::ebpf::{
    BlockTotals, KvmCounters, NetDeviceCounters, ProgramRunStats, RunqWait, add_pairing,
};
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
    /// collisions kept, and the completions whose latency is in no histogram.
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
    let Some(dt) = super::positive_seconds(interval_secs) else {
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

fn sum_block<'a>(io: impl IntoIterator<Item = &'a BlockTotals>) -> BlockTotals {
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

/// `read` or `write`, as stored.
pub fn direction_name(direction: u32) -> &'static str {
    if direction == DIR_WRITE {
        "write"
    } else {
        "read"
    }
}

/// Block I/O rates over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlockRates {
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub read_iops: f64,
    pub write_iops: f64,
}

/// Rates of `io` over `interval_secs`; `None` unless the interval is positive.
pub fn block_rates(io: &BlockTotals, interval_secs: f64) -> Option<BlockRates> {
    let dt = super::positive_seconds(interval_secs)?;
    Some(BlockRates {
        read_bytes_per_sec: io.read_bytes as f64 / dt,
        write_bytes_per_sec: io.write_bytes as f64 / dt,
        read_iops: io.read_ops as f64 / dt,
        write_iops: io.write_ops as f64 / dt,
    })
}

/// Percentiles of the latencies of an interval, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Requests completed.
    pub count: u64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
}

/// `None` when no request completed.
pub fn latency_summary(hist: &LatHist) -> Option<LatencySummary> {
    let us = |q| hist_quantile(hist, q).map(|ns| ns / 1e3);
    Some(LatencySummary {
        count: hist_count(hist),
        p50_us: us(0.5)?,
        p95_us: us(0.95)?,
        p99_us: us(0.99)?,
    })
}

/// One direction's latency: the interval's histogram and its percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionLatency {
    pub direction: u32,
    pub hist: LatHist,
    pub summary: LatencySummary,
}

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
        let dt = super::positive_seconds(self.interval_secs)?;
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
    let dt = super::positive_seconds(interval.interval_secs)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn io(read_ops: u64, read_bytes: u64, write_ops: u64, write_bytes: u64) -> BlockTotals {
        BlockTotals {
            read_ops,
            read_bytes,
            write_ops,
            write_bytes,
        }
    }

    /// A latency histogram of `count` values of `ns` each.
    fn hist(entries: &[(u64, u64)]) -> LatHist {
        let mut h = LatHist::default();
        for &(ns, count) in entries {
            h.buckets[setmov_common::lat_bucket(ns)] += count;
        }
        h
    }

    const QEMU: u32 = 4300;

    fn qemu_only(qemu_pid: u32) -> VmOwnership<'static> {
        VmOwnership {
            qemu_pid,
            vcpu_tids: &[],
            taps: &[],
        }
    }
    /// The kernel's `dev_t` of 254:0 (`vda`).
    const VDA: u32 = 254 << 20;
    /// 7:0 (`loop0`).
    const LOOP0: u32 = 7 << 20;
    const KWORKER: u32 = 77;

    fn snapshots() -> (EbpfSnapshot, EbpfSnapshot) {
        let write = |tgid| BlockKey {
            tgid,
            direction: DIR_WRITE,
        };
        let vda = DeviceKey {
            dev: VDA,
            direction: DIR_WRITE,
        };
        let prev = EbpfSnapshot {
            block_by_device: HashMap::from([(VDA, io(0, 0, 10, 40_960))]),
            block_by_tgid: HashMap::from([(QEMU, io(0, 0, 10, 40_960))]),
            latency_by_device: HashMap::from([(vda, hist(&[(150_000, 10)]))]),
            latency_by_tgid: HashMap::from([(write(QEMU), hist(&[(150_000, 10)]))]),
            ..EbpfSnapshot::default()
        };
        let now = EbpfSnapshot {
            // qemu wrote 30 more requests, a kworker 5 (new this interval); loop0 over a
            // file on vda passed on 3 of them (counted on vda again).
            block_by_device: HashMap::from([
                (VDA, io(0, 0, 45, 204_800)),
                (LOOP0, io(0, 0, 3, 12_288)),
            ]),
            block_by_tgid: HashMap::from([
                (QEMU, io(0, 0, 40, 163_840)),
                (KWORKER, io(0, 0, 5, 40_960)),
            ]),
            latency_by_device: HashMap::from([(vda, hist(&[(150_000, 38), (1_500_000, 7)]))]),
            latency_by_tgid: HashMap::from([
                (write(QEMU), hist(&[(150_000, 38), (1_500_000, 2)])),
                (write(KWORKER), hist(&[(1_500_000, 5)])),
            ]),
            programs: Vec::new(),
            ..EbpfSnapshot::default()
        };
        (prev, now)
    }

    #[test]
    fn the_vm_gets_its_qemu_process_and_the_host_keeps_the_rest() {
        let (prev, now) = snapshots();
        let mut interval = ebpf_interval(&prev, &now, 2.0).expect("interval");
        interval.device_names.insert(VDA, "vda".into());
        let vm = vm_ebpf_figures(&interval, qemu_only(QEMU));
        assert_eq!(vm.block, io(0, 0, 30, 122_880));
        let rates = vm.block_rates.expect("rates");
        assert_eq!(
            (rates.write_iops, rates.write_bytes_per_sec),
            (15.0, 61_440.0)
        );
        assert_eq!(vm.latency.len(), 1);
        assert_eq!(vm.latency[0].summary.count, 30, "one latency per request");
        // 28 of 30 requests took 150 µs, 2 took 1.5 ms: each read within 12.5 %.
        let summary = vm.latency[0].summary;
        assert!(
            (150.0..=150.0 * 1.125).contains(&summary.p50_us),
            "{summary:?}"
        );
        assert!(
            (1_500.0..=1_500.0 * 1.125).contains(&summary.p99_us),
            "{summary:?}"
        );

        interval.device_names.insert(LOOP0, "loop0".into());
        assert_eq!(interval.block_total, io(0, 0, 38, 176_128), "every device");
        let disks = ["vda".to_owned()];
        let host = host_ebpf_figures(&interval, &HashSet::from([QEMU]), Some(&disks));
        assert_eq!(host.block, Some(io(0, 0, 35, 163_840)), "vda's alone");
        assert_eq!(
            host.unattributed,
            Some(io(0, 0, 5, 40_960)),
            "the kworker's writes"
        );
        let unknown = host_ebpf_figures(&interval, &HashSet::from([QEMU]), None);
        assert_eq!((unknown.block, unknown.block_rates), (None, None));
        assert_eq!(host.devices.len(), 1);
        assert_eq!(host.devices[0].device, "vda");
        assert_eq!(host.devices[0].summary.count, 35);
    }

    #[test]
    fn a_reload_gives_no_interval_and_a_reused_pid_counts_from_zero() {
        let (prev, now) = snapshots();
        assert_eq!(ebpf_interval(&now, &prev, 1.0), None);
        let mut reused = now.clone();
        reused.block_by_tgid.insert(QEMU, io(0, 0, 1, 4096));
        reused.block_by_device.insert(VDA, io(0, 0, 50, 250_000));
        let interval = ebpf_interval(&now, &reused, 1.0).expect("interval");
        assert_eq!(interval.block_by_tgid.get(&QEMU), Some(&io(0, 0, 1, 4096)));
        // Unchanged keys are left out.
        assert!(!interval.block_by_tgid.contains_key(&KWORKER));
    }

    #[test]
    fn taps_vcpus_and_kvm_events_are_the_vms() {
        use crate::ebpf::KvmEventKind;
        let value = |packets, bytes, bucket: usize| {
            let mut sizes = setmov_common::Log2Hist::default();
            sizes.buckets[bucket] = packets;
            NetDeviceValue {
                packets,
                bytes,
                sizes,
            }
        };
        let wait = |wait_ns, waits, bucket: usize| {
            let mut hist = LatHist::default();
            hist.buckets[bucket] = waits;
            RunqWait {
                wait_ns,
                waits,
                hist,
            }
        };
        let mut kvm = KvmCounters::default();
        kvm.by_kind
            .entry(KvmEventKind::Pio)
            .or_default()
            .insert("out".into(), 300);
        // The watched vCPU threads are in every snapshot, waits or not (the probe creates their
        // entries when it starts watching them).
        let prev = EbpfSnapshot {
            runq_by_tid: HashMap::from([
                (101, RunqWait::default()),
                (102, RunqWait::default()),
                (555, RunqWait::default()),
            ]),
            sched_on: true,
            ..EbpfSnapshot::default()
        };
        let now = EbpfSnapshot {
            // 10 pings of 1000 B from the guest (host rx, header pulled) and 10 replies.
            net_devices: HashMap::from([(
                "vnet0".to_owned(),
                NetDeviceCounters {
                    rx: value(10, 10 * 1028, 10),
                    tx: value(10, 10 * 1042, 10),
                },
            )]),
            net_drops: HashMap::from([(("vnet0".to_owned(), "NO_SOCKET".to_owned()), 2)]),
            kvm_by_tgid: HashMap::from([(QEMU, kvm)]),
            // vCPU 0 waited 50 ms in 10 waits; vCPU 1 never; thread 999 is another VM's, watched
            // from part-way through the interval.
            runq_by_tid: HashMap::from([
                (
                    101,
                    wait(50_000_000, 10, setmov_common::lat_bucket(5_000_000)),
                ),
                (102, RunqWait::default()),
                (555, RunqWait::default()),
                (999, wait(7, 1, 2)),
            ]),
            sched_on: true,
            ..EbpfSnapshot::default()
        };
        let interval = ebpf_interval(&prev, &now, 1.0).expect("interval");
        let vm = vm_ebpf_figures(
            &interval,
            VmOwnership {
                qemu_pid: QEMU,
                vcpu_tids: &[101, 102],
                taps: &["vnet0"],
            },
        );
        let nic = &vm.nics[0];
        assert_eq!(
            (nic.tx.packets, nic.tx.bytes),
            (10, 10 * 1042),
            "guest tx, header back"
        );
        assert_eq!((nic.rx.packets, nic.rx.bytes), (10, 10 * 1042));
        assert_eq!(nic.drops, [("NO_SOCKET".to_owned(), 2)]);
        assert_eq!(vm.kvm_events, [("kvm_pio".into(), "out".into(), 300)]);
        assert_eq!(vm.kvm_events_per_sec(), Some(300.0));
        let ready = vm.cpu_ready.expect("cpu ready");
        // 50 ms of 2 vCPUs × 1 s.
        assert!((ready.pct - 2.5).abs() < 1e-9, "{}", ready.pct);
        assert_eq!(ready.waits, 10);
        // A VM whose vCPUs did not wait at all reads 0 %, not unknown.
        let idle = vm_ebpf_figures(
            &interval,
            VmOwnership {
                qemu_pid: 1,
                vcpu_tids: &[555],
                taps: &[],
            },
        );
        assert_eq!(idle.cpu_ready.map(|r| r.pct), Some(0.0));
        // A VM whose vCPU thread was watched from part-way through: unknown, not 0 % or its
        // partial wait.
        let just_seen = vm_ebpf_figures(
            &interval,
            VmOwnership {
                qemu_pid: 2,
                vcpu_tids: &[999],
                taps: &[],
            },
        );
        assert_eq!(just_seen.cpu_ready, None);
    }

    #[test]
    fn program_costs_are_mean_ns_and_events_per_second() {
        let stats = |program: &str, count, ns| ProgramRunStats {
            program: program.into(),
            run_count: count,
            run_time: std::time::Duration::from_nanos(ns),
        };
        let prev = [stats("block_io_start", 100, 30_000), stats("gone", 1, 1)];
        let now = [
            stats("block_io_start", 300, 90_000),
            stats("block_rq_complete", 5, 500),
        ];
        let costs = program_costs(&prev, &now, 2.0);
        assert_eq!(
            costs,
            [ProgramCost {
                program: "block_io_start".into(),
                events_per_sec: 100.0,
                mean_ns: Some(300.0),
            }]
        );
        let idle = program_costs(&now, &now, 1.0);
        assert_eq!(idle[0].mean_ns, None);
        assert!(program_costs(&prev, &now, 0.0).is_empty());
    }

    #[test]
    fn a_vm_without_io_has_zero_figures_and_no_latency() {
        let (prev, now) = snapshots();
        let interval = ebpf_interval(&prev, &now, 1.0).expect("interval");
        let idle = vm_ebpf_figures(&interval, qemu_only(9999));
        assert_eq!(idle.block, BlockTotals::default());
        assert!(idle.latency.is_empty());
        let host = host_ebpf_figures(&interval, &HashSet::new(), Some(&["254:0".to_owned()]));
        assert_eq!(host.unattributed, host.block);
        assert!(host.block.is_some());
        assert_eq!(
            host.devices[0].device, "254:0",
            "unnamed devices show major:minor"
        );
    }
}
