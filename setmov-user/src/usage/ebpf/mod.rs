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

mod host;
mod interval;
mod vm;

pub use host::*;
pub use interval::*;
pub use vm::*;

use setmov_common::{DIR_WRITE, LatHist};

use super::hist::{hist_count, hist_quantile};
use crate::ebpf::BlockTotals;

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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use setmov_common::net::NetDeviceValue;
    use setmov_common::{BlockKey, DeviceKey};

    use super::*;
    use crate::ebpf::{KvmCounters, NetDeviceCounters, ProgramRunStats, RunqWait};

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
