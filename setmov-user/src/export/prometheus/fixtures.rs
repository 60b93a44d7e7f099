//! Ticks for the exporter's tests: a host and VMs with a few figures, or a tick with every
//! figure the exporter knows ([`full_tick`]); and [`value`], one series' value in an exposition.

use crate::ebpf::BlockTotals;
use crate::host::identity::HostIdentity;
use crate::store::{HostSample, TickRecord, VmSample};
use crate::usage::PacketRates;
use crate::usage::disk::DiskRates;
use crate::usage::ebpf::{
    CpuReady, DeviceLatency, DirectionLatency, HostEbpfFigures, LatencySummary, VmEbpfFigures,
    VmNicTraffic,
};
use crate::usage::host::{CpuUsage, HostUsage, MemUsage, NetRates, NetTotals};
use crate::usage::vm::{MemSource, VmDiskRates, VmMemUsage, VmUsage};
use crate::vm::libvirt::NodeFacts;
use crate::vm::stats::DomainState;
use setmov_common::{DIR_READ, DIR_WRITE, LatHist};

fn identity() -> HostIdentity {
    HostIdentity {
        name: "hv-1".into(),
        ip: "192.0.2.2".into(),
        mac: None,
        interface: None,
    }
}

pub fn tick(seq: u64, host_sample: Option<HostSample>, vms: Vec<VmSample>) -> TickRecord {
    TickRecord {
        seq,
        time: time::macros::datetime!(2026-11-30 06:45:22 UTC)
            + time::Duration::seconds(seq as i64),
        host: identity(),
        vm_count: Some(vms.iter().filter(|v| v.usage.is_some()).count() as u32),
        node: None,
        host_sample,
        vms,
        ebpf: None,
    }
}

pub fn host_sample(usage: HostUsage) -> HostSample {
    HostSample {
        interval_secs: 2.0,
        late_ms: 0.0,
        missed_ticks: 0,
        usage,
        problems: Vec::new(),
    }
}

fn no_mem() -> VmMemUsage {
    VmMemUsage {
        allocated_bytes: None,
        max_bytes: None,
        used_bytes: None,
        used_pct: None,
        source: MemSource::AllocationOnly,
        actual_less_usable_bytes: None,
        unused_bytes: None,
        usable_bytes: None,
        available_bytes: None,
        guest_cache_bytes: None,
        rss_bytes: None,
        swap_in_bytes_per_sec: None,
        swap_out_bytes_per_sec: None,
        major_faults_per_sec: None,
        minor_faults_per_sec: None,
    }
}

pub fn vm_usage(cpu_vcpu_pct: f64) -> VmUsage {
    VmUsage {
        cpu_host_pct: Some(cpu_vcpu_pct / 2.0),
        cpu_vcpu_pct: Some(cpu_vcpu_pct),
        cpu_vcpu_threads_pct: Some(cpu_vcpu_pct),
        steal_pct: None,
        vcpu_pct: Vec::new(),
        vcpus: Some(1),
        mem: no_mem(),
        disks: Vec::new(),
        disk_total: None,
        nics: Vec::new(),
        net_total: None,
    }
}

pub fn vm(uuid: &str, name: &str, usage: Option<VmUsage>) -> VmSample {
    VmSample {
        interval_secs: usage.as_ref().map(|_| 2.0),
        usage,
        ..VmSample::without_figures(uuid, name, Some(DomainState::Running), None)
    }
}

pub fn mem(used_pct: f64) -> MemUsage {
    MemUsage {
        total_bytes: 8 << 30,
        used_bytes: ((8u64 << 30) as f64 * used_pct / 100.0) as u64,
        used_pct,
        nonfree_pct: 50.0,
        noncache_pct: None,
        unavailable_pct: None,
    }
}

/// The value of the one sample line starting with `series` (its name and labels).
pub fn value(text: &str, series: &str) -> Option<f64> {
    let mut found = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse::<f64>().expect("a number"));
    let v = found.next();
    assert!(found.next().is_none(), "{series} twice");
    v
}

/// A tick with every figure the exporter knows, for the tests of the whole exposition.
pub fn full_tick(seq: u64) -> TickRecord {
    let cpu = CpuUsage {
        busy_pct: 40.0,
        user_pct: 30.0,
        user_excl_guest_pct: 10.0,
        nice_pct: 1.0,
        system_pct: 9.0,
        idle_pct: 55.0,
        iowait_pct: 5.0,
        irq_pct: 0.0,
        softirq_pct: 0.0,
        steal_pct: 0.0,
        guest_pct: 20.0,
    };
    let rates = |bytes_per_sec: f64, pps: f64| PacketRates {
        pps,
        bytes_per_sec,
        avg_packet_bits: Some(bytes_per_sec * 8.0 / pps + 160.0),
        bps: bytes_per_sec * 8.0 + pps * 160.0,
    };
    let net = |name: &str| NetRates {
        name: name.into(),
        rx: rates(1000.0, 10.0),
        tx: rates(2000.0, 20.0),
        rx_errs: 1,
        rx_drop: 2,
        tx_errs: 0,
        tx_drop: 0,
    };
    let usage = HostUsage {
        disk_total_over: Vec::new(),
        net_total_over: Vec::new(),
        cpu: Some(cpu),
        per_cpu: vec![Some(cpu), Some(cpu)],
        mem: Some(MemUsage {
            noncache_pct: Some(20.0),
            unavailable_pct: Some(25.0),
            ..mem(25.0)
        }),
        disks: vec![
            DiskRates {
                name: "sda".into(),
                partition: false,
                read_bytes_per_sec: 4096.0,
                write_bytes_per_sec: 8192.0,
                read_iops: 1.0,
                write_iops: 2.0,
                util_pct: 10.0,
                read_await_ms: Some(1.0),
                write_await_ms: Some(3.0),
            },
            DiskRates {
                name: "sda1".into(),
                partition: true,
                read_bytes_per_sec: 4096.0,
                write_bytes_per_sec: 8192.0,
                read_iops: 1.0,
                write_iops: 2.0,
                util_pct: 10.0,
                read_await_ms: Some(1.0),
                write_await_ms: Some(3.0),
            },
        ],
        disk_total: None,
        nets: vec![net("eth0"), net("vnet0")],
        net_total: Some(NetTotals {
            rx: rates(1000.0, 10.0),
            tx: rates(2000.0, 20.0),
        }),
    };
    let mut vm_usage = vm_usage(50.0);
    vm_usage.steal_pct = Some(2.0);
    vm_usage.vcpu_pct = vec![Some(50.0)];
    vm_usage.mem = VmMemUsage {
        allocated_bytes: Some(1 << 30),
        max_bytes: Some(2 << 30),
        used_bytes: Some(256 << 20),
        used_pct: Some(25.0),
        source: MemSource::BalloonUsable,
        rss_bytes: Some(600 << 20),
        swap_in_bytes_per_sec: Some(0.0),
        swap_out_bytes_per_sec: Some(0.0),
        major_faults_per_sec: Some(1.0),
        minor_faults_per_sec: Some(100.0),
        ..no_mem()
    };
    vm_usage.disks = vec![VmDiskRates {
        name: "vda".into(),
        read_bytes_per_sec: 4096.0,
        write_bytes_per_sec: 1024.0,
        read_iops: 1.0,
        write_iops: 1.0,
        read_latency_ms: Some(1.0),
        write_latency_ms: Some(2.0),
    }];
    vm_usage.nics = vec![net("vnet0")];
    let summary = LatencySummary {
        count: 10,
        p50_us: 100.0,
        p95_us: 400.0,
        p99_us: 1000.0,
    };
    let block = BlockTotals {
        read_ops: 2,
        read_bytes: 8192,
        write_ops: 2,
        write_bytes: 2048,
    };
    let ebpf = VmEbpfFigures {
        interval_secs: 2.0,
        block,
        block_rates: None,
        latency: vec![
            DirectionLatency {
                direction: DIR_READ,
                hist: LatHist::default(),
                summary,
            },
            DirectionLatency {
                direction: DIR_WRITE,
                hist: LatHist::default(),
                summary,
            },
        ],
        cpu_ready: Some(CpuReady {
            pct: 3.0,
            p99_us: Some(50.0),
            waits: 10,
        }),
        kvm_events: vec![
            ("kvm_exit".into(), "HLT".into(), 30),
            ("kvm_exit".into(), "EPT_VIOLATION".into(), 5),
        ],
        nics: vec![VmNicTraffic {
            iface: "vnet0".into(),
            rx: Default::default(),
            tx: Default::default(),
            drops: vec![("NO_SOCKET".into(), 1)],
        }],
    };
    let mut sampled = vm("u-1", "desk-1", Some(vm_usage));
    sampled.vcpu_tids = vec![4242];
    sampled.qemu_pid = Some(4240);
    sampled.ebpf = Some(ebpf);
    let mut t = tick(seq, Some(host_sample(usage)), vec![sampled]);
    t.host.mac = Some("52:54:00:12:34:56".into());
    t.node = Some(NodeFacts {
        cpus: 2,
        memory_bytes: Some(8 << 30),
    });
    t.ebpf = Some(HostEbpfFigures {
        interval_secs: 2.0,
        block: Some(block),
        unattributed: Some(BlockTotals::default()),
        block_rates: None,
        unattributed_rates: None,
        devices: vec![DeviceLatency {
            device: "sda".into(),
            direction: DIR_WRITE,
            summary,
        }],
        pairing: setmov_common::PairingCounters {
            collided: 3 * seq,
            overflowed: 0,
            unpaired: seq,
        },
        programs: Vec::new(),
    });
    t
}
