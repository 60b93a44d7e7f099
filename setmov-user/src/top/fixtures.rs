//! Ticks for the view's tests: a host with three VMs, one busy with every figure (eBPF
//! included), one idle without balloon statistics or eBPF figures, one libvirt did not answer
//! for.

use std::sync::Arc;

use setmov_common::{DIR_READ, DIR_WRITE, LatHist};
use time::OffsetDateTime;

use super::app::{Availability, Coverage};
use crate::host::identity::HostIdentity;
use crate::store::{HostSample, TickRecord, VmSample};
use crate::usage::PacketRates;
use crate::usage::disk::DiskTotals;
use crate::usage::ebpf::{BlockRates, DirectionLatency, LatencySummary, VmEbpfFigures};
use crate::usage::host::{CpuUsage, HostUsage, MemUsage, NetTotals};
use crate::usage::vm::{MemSource, VmMemUsage, VmUsage};
use crate::vm::libvirt::NodeFacts;
use crate::vm::stats::DomainState;

const MIB: u64 = 1 << 20;

pub fn coverage_all_on() -> Coverage {
    Coverage {
        vms: Availability::On,
        ebpf: Availability::On,
        latency: Availability::On,
        kvm: Availability::On,
    }
}

pub fn coverage_without_ebpf() -> Coverage {
    let off = Availability::Off("eBPF is off: --no-ebpf given".into());
    Coverage {
        vms: Availability::On,
        ebpf: off.clone(),
        latency: off.clone(),
        kvm: off,
    }
}

fn rates(bits_per_sec: f64) -> PacketRates {
    PacketRates {
        pps: bits_per_sec / 8000.0,
        bytes_per_sec: bits_per_sec / 8.0,
        avg_packet_bits: Some(8000.0),
        bps: bits_per_sec,
    }
}

fn cpu(busy_pct: f64) -> CpuUsage {
    CpuUsage {
        busy_pct,
        user_pct: busy_pct,
        user_excl_guest_pct: busy_pct,
        nice_pct: 0.0,
        system_pct: 0.0,
        idle_pct: 100.0 - busy_pct,
        iowait_pct: 0.0,
        irq_pct: 0.0,
        softirq_pct: 0.0,
        steal_pct: 0.0,
        guest_pct: 0.0,
    }
}

fn host_sample() -> HostSample {
    HostSample {
        interval_secs: 1.0,
        late_ms: 0.0,
        missed_ticks: 0,
        usage: HostUsage {
            disk_total_over: Vec::new(),
            net_total_over: Vec::new(),
            cpu: Some(cpu(37.5)),
            per_cpu: Vec::new(),
            mem: Some(MemUsage {
                total_bytes: 4096 * MIB,
                used_bytes: 1024 * MIB,
                used_pct: 25.0,
                nonfree_pct: 60.0,
                noncache_pct: Some(20.0),
                unavailable_pct: Some(25.0),
            }),
            disks: Vec::new(),
            disk_total: Some(DiskTotals {
                read_bytes_per_sec: 1.5 * MIB as f64,
                write_bytes_per_sec: 256.0 * 1024.0,
                read_iops: 100.0,
                write_iops: 20.0,
            }),
            nets: Vec::new(),
            net_total: Some(NetTotals {
                rx: rates(2_400_000.0),
                tx: rates(300_000.0),
            }),
        },
        problems: Vec::new(),
    }
}

fn mem(used_bytes: Option<u64>, allocated_bytes: u64, source: MemSource) -> VmMemUsage {
    VmMemUsage {
        allocated_bytes: Some(allocated_bytes),
        max_bytes: Some(allocated_bytes),
        used_bytes,
        used_pct: used_bytes.map(|u| 100.0 * u as f64 / allocated_bytes as f64),
        source,
        actual_less_usable_bytes: used_bytes,
        unused_bytes: None,
        usable_bytes: None,
        available_bytes: None,
        guest_cache_bytes: None,
        rss_bytes: Some(allocated_bytes / 2),
        swap_in_bytes_per_sec: None,
        swap_out_bytes_per_sec: None,
        major_faults_per_sec: None,
        minor_faults_per_sec: None,
    }
}

fn latency(direction: u32, p99_us: f64) -> DirectionLatency {
    DirectionLatency {
        direction,
        hist: LatHist::default(),
        summary: LatencySummary {
            count: 100,
            p50_us: p99_us / 4.0,
            p95_us: p99_us / 2.0,
            p99_us,
        },
    }
}

/// The busy VM's per-vCPU CPU at tick `seq`: a ramp, so that sparklines have a shape.
pub fn busy_vcpu_pct(seq: u64) -> f64 {
    [10.0, 30.0, 50.0, 70.0, 90.0, 100.0, 80.0, 60.0][(seq as usize).saturating_sub(1) % 8]
}

fn busy(seq: u64) -> VmSample {
    let vcpu_pct = busy_vcpu_pct(seq);
    let disk = DiskTotals {
        read_bytes_per_sec: 1.5 * MIB as f64,
        write_bytes_per_sec: 256.0 * 1024.0 * seq as f64,
        read_iops: 100.0,
        write_iops: 20.0,
    };
    VmSample {
        ebpf: Some(VmEbpfFigures {
            interval_secs: 1.0,
            block: Default::default(),
            block_rates: Some(BlockRates::default()),
            latency: vec![
                latency(DIR_READ, 2300.0),
                latency(DIR_WRITE, 800.0 * seq as f64),
            ],
            cpu_ready: None,
            kvm_events: vec![
                ("kvm_exit".into(), "HLT".into(), 1000),
                ("kvm_pio".into(), "in".into(), 500),
            ],
            nics: Vec::new(),
        }),
        qemu_pid: Some(4001),
        interval_secs: Some(1.0),
        usage: Some(VmUsage {
            cpu_host_pct: Some(vcpu_pct),
            // Two vCPUs on the fixture's two cores: the same share.
            cpu_vcpu_pct: Some(vcpu_pct),
            cpu_vcpu_threads_pct: Some(vcpu_pct),
            steal_pct: Some(1.5),
            vcpu_pct: vec![Some(vcpu_pct * 1.5), Some(vcpu_pct / 2.0)],
            vcpus: Some(2),
            mem: mem(Some(700 * MIB), 1024 * MIB, MemSource::BalloonUsable),
            disks: Vec::new(),
            disk_total: Some(disk),
            nics: Vec::new(),
            net_total: Some(NetTotals {
                rx: rates(2_400_000.0 * seq as f64),
                tx: rates(300_000.0),
            }),
        }),
        ..VmSample::without_figures(
            "00000000-0000-0000-0000-00000000000a",
            "desk-busy",
            Some(DomainState::Running),
            None,
        )
    }
}

/// Running, no balloon statistics, and no eBPF figures (its qemu process is not known).
fn idle() -> VmSample {
    VmSample {
        interval_secs: Some(1.0),
        usage: Some(VmUsage {
            cpu_host_pct: Some(0.4),
            cpu_vcpu_pct: Some(0.8),
            cpu_vcpu_threads_pct: Some(0.8),
            steal_pct: Some(0.0),
            vcpu_pct: vec![Some(0.8)],
            vcpus: Some(1),
            mem: mem(None, 512 * MIB, MemSource::AllocationOnly),
            disks: Vec::new(),
            disk_total: Some(DiskTotals {
                read_bytes_per_sec: 0.0,
                write_bytes_per_sec: 4096.0,
                read_iops: 0.0,
                write_iops: 1.0,
            }),
            nics: Vec::new(),
            net_total: Some(NetTotals {
                rx: rates(1_600.0),
                tx: rates(900.0),
            }),
        }),
        ..VmSample::without_figures(
            "00000000-0000-0000-0000-00000000000b",
            "desk-idle",
            Some(DomainState::Running),
            None,
        )
    }
}

/// libvirt did not answer for it this tick.
fn away() -> VmSample {
    VmSample::without_figures(
        "00000000-0000-0000-0000-00000000000c",
        "desk-away",
        None,
        Some("libvirt did not answer within the tick"),
    )
}

/// Tick `seq`, at `seq` seconds past midnight 1970-01-01 UTC.
pub fn tick(seq: u64) -> Arc<TickRecord> {
    Arc::new(TickRecord {
        seq,
        time: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seq as i64),
        host: HostIdentity {
            name: "hv1".into(),
            ip: "192.0.2.2".into(),
            mac: None,
            interface: None,
        },
        vm_count: Some(2),
        node: Some(NodeFacts {
            cpus: 2,
            memory_bytes: Some(4096 * MIB),
        }),
        host_sample: Some(host_sample()),
        vms: vec![idle(), away(), busy(seq)],
        ebpf: None,
    })
}
