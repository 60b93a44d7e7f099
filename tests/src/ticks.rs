//! Synthetic ticks for the store tests: known figures at chosen instants, written through the
//! stores' own `write_tick` (or their row mapping), so that what comes back can be checked
//! value by value.

use setmov::ebpf::BlockTotals;
use setmov::host::devices::DEFAULT_SKIPPED_DISK_PREFIXES;
use setmov::host::identity::HostIdentity;
use setmov::host::read::HostReader;
use setmov::host::snapshot::NetCounters;
use setmov::store::{HostSample, TickRecord, VmSample};
use setmov::usage::ebpf::{
    CpuReady, DeviceLatency, DirectionLatency, HostEbpfFigures, LatencySummary, ProgramCost,
    VmEbpfFigures, VmNicTraffic, block_rates,
};
use setmov::usage::host::{CpuUsage, HostUsage, host_usage};
use setmov::usage::vm::vm_usage;
use setmov::vm::libvirt::NodeFacts;
use setmov::vm::stats::{BalloonCounters, DomainState, DomainStats, VmDiskCounters};
use setmov_common::net::NetDeviceValue;
use setmov_common::{DIR_READ, DIR_WRITE, LatHist, Log2Hist, lat_bucket};
use time::OffsetDateTime;

/// The host of the synthetic ticks.
pub const HOST_IP: &str = "192.0.2.9";

/// `at` after the epoch.
pub fn instant(at: time::Duration) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + at
}

/// A tick of host [`HOST_IP`] at `at` after the epoch, closing an interval of `interval_secs`,
/// with the host `cpu` % busy (its only figure) and no VMs.
pub fn host_tick(seq: u64, at: time::Duration, interval_secs: f64, cpu: f64) -> TickRecord {
    let usage = CpuUsage {
        busy_pct: cpu,
        user_pct: cpu,
        user_excl_guest_pct: cpu,
        nice_pct: 0.0,
        system_pct: 0.0,
        idle_pct: 100.0 - cpu,
        iowait_pct: 0.0,
        irq_pct: 0.0,
        softirq_pct: 0.0,
        steal_pct: 0.0,
        guest_pct: 0.0,
    };
    TickRecord {
        seq,
        time: instant(at),
        host: HostIdentity {
            name: "synthetic".into(),
            ip: HOST_IP.into(),
            mac: None,
            interface: None,
        },
        vm_count: Some(0),
        node: None,
        host_sample: Some(HostSample {
            interval_secs,
            late_ms: 0.0,
            missed_ticks: 0,
            usage: HostUsage {
                cpu: Some(usage),
                ..HostUsage::default()
            },
            problems: Vec::new(),
        }),
        vms: Vec::new(),
        ebpf: None,
    }
}

/// VM `name` in `state`; one with a qemu process (running, paused) has figures, of which
/// `cpu` % of the host is the one that varies.
pub fn vm_sample(
    uuid: &str,
    name: &str,
    state: DomainState,
    interval_secs: f64,
    cpu: f64,
) -> VmSample {
    let mut vm = VmSample::without_figures(uuid, name, Some(state), None);
    if state.has_process() {
        let mut usage = vm_usage(None, &DomainStats::default(), interval_secs, 2);
        usage.cpu_host_pct = Some(cpu);
        vm.qemu_pid = Some(4300);
        vm.interval_secs = Some(interval_secs);
        vm.usage = Some(usage);
    }
    vm
}

/// The UUID of the VM of [`full_tick`].
pub const FULL_TICK_VM: &str = "3f9a7c1e-0000-4000-8000-0000000000f1";

/// A tick with a figure in every table a tick writes: the host from the golden proc trees
/// (per CPU, disks, NICs), one running VM with a disk and a NIC, and the eBPF figures of both
/// (latency, program cost, KVM events, tap traffic and drops).
pub fn full_tick(seq: u64, at: time::Duration) -> TickRecord {
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let read = |tree: &str| {
        HostReader::new(crate::fixture(tree), strings(DEFAULT_SKIPPED_DISK_PREFIXES))
            .expect("golden proc tree")
            .read()
    };
    let host = host_usage(&read("golden/t0"), &read("golden/t1"), 2.0, &[]);
    let mut tick = host_tick(seq, at, 2.0, 0.0);
    if let Some(sample) = &mut tick.host_sample {
        sample.usage = host;
    }
    tick.vm_count = Some(1);
    tick.node = Some(NodeFacts {
        cpus: 2,
        memory_bytes: Some(8 << 30),
    });
    let mut vm = vm_sample(FULL_TICK_VM, "desk-full", DomainState::Running, 2.0, 0.0);
    vm.vcpu_tids = vec![4301, 4302];
    vm.usage = Some(vm_usage(Some(&domain_stats(0)), &domain_stats(1), 2.0, 2));
    vm.ebpf = Some(vm_ebpf());
    tick.vms = vec![vm];
    tick.ebpf = Some(host_ebpf());
    tick
}

/// A running guest's counters after `step` intervals of steady load.
fn domain_stats(step: u64) -> DomainStats {
    DomainStats {
        state: Some(DomainState::Running),
        cpu_time_ns: Some(1_000_000_000 + step * 1_500_000_000),
        vcpus_current: Some(2),
        vcpus: Vec::new(),
        balloon: BalloonCounters {
            current_kib: Some(4 << 20),
            usable_kib: Some(3 << 20),
            rss_kib: Some(3 << 20),
            major_faults: Some(step * 10),
            ..BalloonCounters::default()
        },
        disks: vec![VmDiskCounters {
            name: "vda".into(),
            rd_reqs: step * 100,
            rd_bytes: step * 409_600,
            rd_times_ns: step * 50_000_000,
            wr_reqs: step * 40,
            wr_bytes: step * 163_840,
            wr_times_ns: step * 80_000_000,
        }],
        nics: vec![NetCounters {
            name: "vnet0".into(),
            rx_bytes: step * 150_000,
            rx_packets: step * 100,
            rx_drop: step,
            tx_bytes: step * 60_000,
            tx_packets: step * 50,
            ..NetCounters::default()
        }],
    }
}

/// A latency histogram with `counts` (requests, ns) pairs.
fn latency_hist(counts: &[(u64, u64)]) -> LatHist {
    let mut hist = LatHist::default();
    for &(requests, ns) in counts {
        hist.buckets[lat_bucket(ns)] += requests;
    }
    hist
}

/// A log2 histogram with `counts` in buckets `first`, `first + 1`, ...
fn hist(first: usize, counts: &[u64]) -> Log2Hist {
    let mut hist = Log2Hist::default();
    for (bucket, count) in hist.buckets.iter_mut().skip(first).zip(counts) {
        *bucket = *count;
    }
    hist
}

fn latency(count: u64) -> LatencySummary {
    LatencySummary {
        count,
        p50_us: 70.0,
        p95_us: 130.0,
        p99_us: 260.0,
    }
}

/// Block I/O of `reads` and `writes` requests of 4 KiB each.
fn pages(reads: u64, writes: u64) -> BlockTotals {
    BlockTotals {
        read_ops: reads,
        read_bytes: reads * 4096,
        write_ops: writes,
        write_bytes: writes * 4096,
    }
}

fn host_ebpf() -> HostEbpfFigures {
    let block = pages(120, 50);
    let unattributed = pages(20, 10);
    HostEbpfFigures {
        interval_secs: 2.0,
        block_rates: block_rates(&block, 2.0),
        unattributed_rates: block_rates(&unattributed, 2.0),
        block: Some(block),
        unattributed: Some(unattributed),
        devices: vec![DeviceLatency {
            device: "sda".into(),
            direction: DIR_READ,
            summary: latency(120),
        }],
        pairing: setmov_common::PairingCounters {
            collided: 12,
            overflowed: 1,
            unpaired: 2,
        },
        programs: vec![ProgramCost {
            program: "block_io_done".into(),
            events_per_sec: 85.0,
            mean_ns: Some(310.0),
        }],
    }
}

fn vm_ebpf() -> VmEbpfFigures {
    let block = pages(100, 40);
    VmEbpfFigures {
        interval_secs: 2.0,
        block_rates: block_rates(&block, 2.0),
        block,
        latency: vec![DirectionLatency {
            direction: DIR_WRITE,
            // In distinct log2 buckets too (tests/tests/sqlite_store.rs writes them to the
            // schemas before 9).
            hist: latency_hist(&[(30, 70_000), (8, 140_000), (2, 300_000)]),
            summary: latency(40),
        }],
        cpu_ready: Some(CpuReady {
            pct: 1.5,
            p99_us: Some(900.0),
            waits: 42,
        }),
        kvm_events: vec![("kvm_exit".into(), "EPT_VIOLATION".into(), 640)],
        nics: vec![VmNicTraffic {
            iface: "vnet0".into(),
            rx: NetDeviceValue {
                packets: 100,
                bytes: 148_600,
                sizes: hist(10, &[100]),
            },
            tx: NetDeviceValue {
                packets: 50,
                bytes: 60_000,
                sizes: hist(10, &[50]),
            },
            drops: vec![("NO_SOCKET".into(), 1)],
        }],
    }
}
