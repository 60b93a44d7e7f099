//! VM usage: equation (2) and the VM forms of (3)–(7), over two samples of one domain.

use super::{counter_delta, percent, positive_seconds};
use crate::usage::disk::DiskTotals;
use crate::usage::host::{NetRates, NetTotals, matched_nets, net_rates, net_total};
use crate::vm::stats::{BalloonCounters, DomainStats, VmDiskCounters};

/// Where a VM's memory-used figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemSource {
    /// The guest reports its MemTotal and MemAvailable through its balloon driver: used =
    /// available − usable, of available. The guest's own view: what `free` in it shows.
    BalloonAvailableUsable,
    /// The guest reports MemAvailable but not MemTotal: used = actual − usable, of actual.
    BalloonUsable,
    /// The guest reports only MemFree: used = actual − unused.
    BalloonUnused,
    /// The guest reports nothing: only the allocation is known, usage is not.
    #[default]
    AllocationOnly,
}

impl MemSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::BalloonAvailableUsable => "balloon-available-usable",
            Self::BalloonUsable => "balloon-usable",
            Self::BalloonUnused => "balloon-unused",
            Self::AllocationOnly => "allocation-only",
        }
    }
}

/// A VM's memory at the end of the interval (levels, not rates) plus its paging rates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VmMemUsage {
    /// What the guest has now (balloon "actual").
    pub allocated_bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    /// As [`Self::source`] says; the guest's own view when it reports enough.
    pub used_bytes: Option<u64>,
    /// (3) for a VM: 100 × used / the total it is taken from (available or actual).
    pub used_pct: Option<f64>,
    pub source: MemSource,
    /// actual − usable, the used figure before the guest's own view: it also counts what
    /// the guest kernel keeps out of its MemTotal (firmware, kernel image, crash kernel) as
    /// used. `None` unless the guest reports usable.
    pub actual_less_usable_bytes: Option<u64>,
    /// As the guest reports them (what `virsh dommemstat` shows as unused, usable, available).
    pub unused_bytes: Option<u64>,
    pub usable_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    /// As the guest reports it: its page cache and buffers.
    pub guest_cache_bytes: Option<u64>,
    /// Host-side resident set of the qemu process.
    pub rss_bytes: Option<u64>,
    pub swap_in_bytes_per_sec: Option<f64>,
    pub swap_out_bytes_per_sec: Option<f64>,
    pub major_faults_per_sec: Option<f64>,
    pub minor_faults_per_sec: Option<f64>,
}

/// One virtual disk over the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct VmDiskRates {
    pub name: String,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub read_iops: f64,
    pub write_iops: f64,
    /// Mean time per read completed in the interval, `None` when none completed.
    pub read_latency_ms: Option<f64>,
    pub write_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmUsage {
    /// (2) virt-top's way: 100 × ΔcpuTime / (Δt × host cores × 10⁹).
    pub cpu_host_pct: Option<f64>,
    /// The same ÷ the VM's vCPUs: 100 means every vCPU busy all the time.
    pub cpu_vcpu_pct: Option<f64>,
    /// The vCPU threads alone, ÷ the vCPUs: 100 × ΣΔvcpu.N.time / (Δt × vCPUs × 10⁹), what
    /// the guest ran. `cpu_vcpu_pct` less this is qemu's own work (its emulator and I/O
    /// threads, vhost workers) in the same unit. `None` unless every vCPU's time is known.
    pub cpu_vcpu_threads_pct: Option<f64>,
    /// Time the vCPUs waited on the host's run queue, per vCPU: 100 × ΣΔdelay / (Δt × vCPUs × 10⁹).
    pub steal_pct: Option<f64>,
    /// Each vCPU's busy share in vCPU order: 100 × Δvcpu.N.time / (Δt × 10⁹). Empty without
    /// rates or when the vCPU list changed; `None` for a vCPU whose time is unknown or reset.
    pub vcpu_pct: Vec<Option<f64>>,
    pub vcpus: Option<u32>,
    pub mem: VmMemUsage,
    pub disks: Vec<VmDiskRates>,
    pub disk_total: Option<DiskTotals>,
    pub nics: Vec<NetRates>,
    pub net_total: Option<NetTotals>,
}

/// Memory figures from one balloon reading (and paging rates against the previous one).
pub fn vm_mem_usage(
    prev: Option<&BalloonCounters>,
    now: &BalloonCounters,
    dt_secs: f64,
) -> VmMemUsage {
    let kib = |v: Option<u64>| v.map(|v| v.saturating_mul(1024));
    let actual_less_usable = now
        .current_kib
        .zip(now.usable_kib)
        .map(|(actual, usable)| actual.saturating_sub(usable));
    let (used_kib, of_kib, source) = match now {
        BalloonCounters {
            available_kib: Some(available),
            usable_kib: Some(usable),
            ..
        } => (
            Some(available.saturating_sub(*usable)),
            Some(*available),
            MemSource::BalloonAvailableUsable,
        ),
        BalloonCounters {
            current_kib: Some(actual),
            usable_kib: Some(_),
            ..
        } => (actual_less_usable, Some(*actual), MemSource::BalloonUsable),
        BalloonCounters {
            current_kib: Some(actual),
            unused_kib: Some(unused),
            ..
        } => (
            Some(actual.saturating_sub(*unused)),
            Some(*actual),
            MemSource::BalloonUnused,
        ),
        _ => (None, None, MemSource::AllocationOnly),
    };
    let rate = |p: Option<u64>, n: Option<u64>, scale: f64| {
        let dt = positive_seconds(dt_secs)?;
        Some(counter_delta(p?, n?)? as f64 * scale / dt)
    };
    let p = prev.copied().unwrap_or_default();
    VmMemUsage {
        allocated_bytes: kib(now.current_kib),
        max_bytes: kib(now.maximum_kib),
        used_bytes: kib(used_kib),
        used_pct: used_kib
            .zip(of_kib)
            .and_then(|(u, of)| percent(u as f64, of as f64)),
        source,
        actual_less_usable_bytes: kib(actual_less_usable),
        unused_bytes: kib(now.unused_kib),
        usable_bytes: kib(now.usable_kib),
        available_bytes: kib(now.available_kib),
        guest_cache_bytes: kib(now.disk_caches_kib),
        rss_bytes: kib(now.rss_kib),
        swap_in_bytes_per_sec: rate(p.swap_in_kib, now.swap_in_kib, 1024.0),
        swap_out_bytes_per_sec: rate(p.swap_out_kib, now.swap_out_kib, 1024.0),
        major_faults_per_sec: rate(p.major_faults, now.major_faults, 1.0),
        minor_faults_per_sec: rate(p.minor_faults, now.minor_faults, 1.0),
    }
}

/// One virtual disk; `None` on a reset or Δt ≤ 0.
pub fn vm_disk_rates(
    prev: &VmDiskCounters,
    now: &VmDiskCounters,
    dt_secs: f64,
) -> Option<VmDiskRates> {
    let dt = positive_seconds(dt_secs)?;
    let rd_reqs = counter_delta(prev.rd_reqs, now.rd_reqs)?;
    let wr_reqs = counter_delta(prev.wr_reqs, now.wr_reqs)?;
    let rd_ns = counter_delta(prev.rd_times_ns, now.rd_times_ns)?;
    let wr_ns = counter_delta(prev.wr_times_ns, now.wr_times_ns)?;
    let latency = |ns: u64, reqs: u64| (reqs > 0).then(|| ns as f64 / reqs as f64 / 1e6);
    Some(VmDiskRates {
        name: now.name.clone(),
        read_bytes_per_sec: counter_delta(prev.rd_bytes, now.rd_bytes)? as f64 / dt,
        write_bytes_per_sec: counter_delta(prev.wr_bytes, now.wr_bytes)? as f64 / dt,
        read_iops: rd_reqs as f64 / dt,
        write_iops: wr_reqs as f64 / dt,
        read_latency_ms: latency(rd_ns, rd_reqs),
        write_latency_ms: latency(wr_ns, wr_reqs),
    })
}

/// Every VM figure between two samples of the same domain run. Pass `prev = None` when there
/// is no earlier sample of this run (first sight, or the domain was restarted): levels such as
/// memory are still given, rates are not.
pub fn vm_usage(
    prev: Option<&DomainStats>,
    now: &DomainStats,
    dt_secs: f64,
    host_cpus: u32,
) -> VmUsage {
    let dt = positive_seconds(dt_secs);
    let vcpus = now.vcpus_current.filter(|&v| v > 0);
    let d_cpu_ns = prev
        .and_then(|p| p.cpu_time_ns)
        .zip(now.cpu_time_ns)
        .and_then(|(p, n)| counter_delta(p, n));
    let cpu_over = |units: u32| {
        let dt = dt?;
        let units = f64::from(units);
        d_cpu_ns
            .filter(|_| units > 0.0)
            .map(|ns| 100.0 * ns as f64 / (dt * units * 1e9))
    };
    let steal_pct = prev.zip(vcpus).zip(dt).and_then(|((p, v), dt)| {
        if p.vcpus.len() != now.vcpus.len() || now.vcpus.is_empty() {
            return None;
        }
        let mut waited = 0u64;
        for (pv, nv) in p.vcpus.iter().zip(&now.vcpus) {
            waited += counter_delta(pv.delay_ns?, nv.delay_ns?)?;
        }
        Some(100.0 * waited as f64 / (dt * f64::from(v) * 1e9))
    });
    let vcpu_pct = match (prev, dt) {
        (Some(p), Some(dt)) if p.vcpus.len() == now.vcpus.len() => p
            .vcpus
            .iter()
            .zip(&now.vcpus)
            .map(|(pv, nv)| {
                let ns = counter_delta(pv.time_ns?, nv.time_ns?)?;
                Some(100.0 * ns as f64 / (dt * 1e9))
            })
            .collect(),
        _ => Vec::new(),
    };
    let cpu_vcpu_threads_pct = (!vcpu_pct.is_empty())
        .then(|| vcpu_pct.iter().copied().sum::<Option<f64>>())
        .flatten()
        .map(|sum| sum / vcpu_pct.len() as f64);
    let disks: Vec<VmDiskRates> = match prev {
        Some(p) => now
            .disks
            .iter()
            .filter_map(|n| {
                let pd = p.disks.iter().find(|d| d.name == n.name)?;
                vm_disk_rates(pd, n, dt_secs)
            })
            .collect(),
        None => Vec::new(),
    };
    let disk_total = (!disks.is_empty()).then(|| DiskTotals {
        read_bytes_per_sec: disks.iter().map(|d| d.read_bytes_per_sec).sum(),
        write_bytes_per_sec: disks.iter().map(|d| d.write_bytes_per_sec).sum(),
        read_iops: disks.iter().map(|d| d.read_iops).sum(),
        write_iops: disks.iter().map(|d| d.write_iops).sum(),
    });
    let pairs = prev.map_or_else(Vec::new, |p| matched_nets(&p.nics, &now.nics));
    let nics = pairs
        .iter()
        .filter_map(|(p, n)| net_rates(p, n, dt_secs))
        .collect();
    let net_total = net_total(pairs, dt_secs);
    VmUsage {
        cpu_host_pct: cpu_over(host_cpus),
        cpu_vcpu_pct: vcpus.and_then(cpu_over),
        cpu_vcpu_threads_pct,
        steal_pct,
        vcpu_pct,
        vcpus,
        mem: vm_mem_usage(prev.map(|p| &p.balloon), &now.balloon, dt_secs),
        disks,
        disk_total,
        nics,
        net_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::snapshot::NetCounters;
    use crate::vm::stats::VcpuCounters;

    fn stats(cpu_s: f64, delay_ms: u64, wr_mib: u64, tx_pkts: u64) -> DomainStats {
        DomainStats {
            cpu_time_ns: Some((cpu_s * 1e9) as u64),
            vcpus_current: Some(1),
            vcpus: vec![VcpuCounters {
                time_ns: Some((cpu_s * 1e9) as u64),
                delay_ns: Some(delay_ms * 1_000_000),
            }],
            disks: vec![VmDiskCounters {
                name: "vda".into(),
                wr_reqs: wr_mib,
                wr_bytes: wr_mib << 20,
                wr_times_ns: wr_mib * 2_000_000,
                ..VmDiskCounters::default()
            }],
            nics: vec![NetCounters {
                name: "vnet0".into(),
                tx_packets: tx_pkts,
                tx_bytes: tx_pkts * 1042,
                ..NetCounters::default()
            }],
            ..DomainStats::default()
        }
    }

    #[test]
    fn equation_2_against_host_cores_and_per_vcpu() {
        // 1.5 s of CPU in 2 s on a 2-core host with 1 vCPU.
        let u = vm_usage(Some(&stats(10.0, 0, 0, 0)), &stats(11.5, 100, 0, 0), 2.0, 2);
        assert_eq!(u.cpu_host_pct, Some(37.5));
        assert_eq!(u.cpu_vcpu_pct, Some(75.0));
        assert_eq!(u.steal_pct, Some(5.0)); // 100 ms waited in 2 s
        assert_eq!(u.vcpu_pct, vec![Some(75.0)]);
    }

    #[test]
    fn vcpu_threads_leave_out_qemus_own_work() {
        // 2 vCPUs over 2 s: the whole process ran 3.6 s, the vCPU threads 1 s and 1.6 s.
        let vcpu = |s: f64| VcpuCounters {
            time_ns: Some((s * 1e9) as u64),
            delay_ns: Some(0),
        };
        let at = |cpu_s: f64, vcpus: [f64; 2]| DomainStats {
            cpu_time_ns: Some((cpu_s * 1e9) as u64),
            vcpus_current: Some(2),
            vcpus: vcpus.iter().map(|&s| vcpu(s)).collect(),
            ..DomainStats::default()
        };
        let u = vm_usage(Some(&at(10.0, [4.0, 4.0])), &at(13.6, [5.0, 5.6]), 2.0, 4);
        assert_eq!(u.cpu_vcpu_pct, Some(90.0));
        assert_eq!(u.cpu_vcpu_threads_pct, Some(65.0));
        // One vCPU's time unknown: no figure rather than half of one.
        let mut now = at(13.6, [5.0, 5.6]);
        now.vcpus[1].time_ns = None;
        let u = vm_usage(Some(&at(10.0, [4.0, 4.0])), &now, 2.0, 4);
        assert_eq!(u.cpu_vcpu_threads_pct, None);
    }

    #[test]
    fn disks_and_nics_use_the_host_equations() {
        let u = vm_usage(
            Some(&stats(1.0, 0, 10, 100)),
            &stats(1.0, 0, 74, 300),
            2.0,
            2,
        );
        let d = &u.disks[0];
        assert_eq!(d.write_bytes_per_sec, 32.0 * 1_048_576.0); // 64 MiB in 2 s
        assert_eq!(d.write_iops, 32.0);
        assert_eq!(d.write_latency_ms, Some(2.0));
        let n = &u.nics[0];
        assert_eq!(n.tx.pps, 100.0);
        assert_eq!(n.tx.avg_packet_bits, Some(8496.0)); // (1042 + 20) × 8
        assert_eq!(u.net_total.map(|t| t.tx.bps), Some(849_600.0));
    }

    #[test]
    fn a_restart_or_first_sight_gives_levels_but_no_rates() {
        let u = vm_usage(Some(&stats(50.0, 9, 9, 9)), &stats(1.0, 0, 1, 1), 1.0, 2);
        assert_eq!((u.cpu_host_pct, u.steal_pct), (None, None));
        assert_eq!(u.vcpu_pct, vec![None]);
        assert!(u.disks.is_empty() && u.nics.is_empty());
        let u = vm_usage(None, &stats(1.0, 0, 1, 1), 1.0, 2);
        assert_eq!(u.cpu_vcpu_pct, None);
        assert_eq!(u.vcpus, Some(1));
    }

    #[test]
    fn memory_from_the_balloon_or_only_the_allocation() {
        let mut b = BalloonCounters {
            current_kib: Some(131_072),
            maximum_kib: Some(262_144),
            unused_kib: Some(65_536),
            usable_kib: Some(98_304),
            rss_kib: Some(200_000),
            major_faults: Some(10),
            ..BalloonCounters::default()
        };
        let m = vm_mem_usage(None, &b, 1.0);
        assert_eq!(m.source, MemSource::BalloonUsable);
        assert_eq!(m.used_bytes, Some(32 << 20));
        assert_eq!(m.used_pct, Some(25.0));
        assert_eq!(m.actual_less_usable_bytes, Some(32 << 20));
        assert_eq!(m.rss_bytes, Some(200_000 * 1024));
        assert_eq!(m.major_faults_per_sec, None);
        let prev = b;
        b.major_faults = Some(30);
        assert_eq!(
            vm_mem_usage(Some(&prev), &b, 2.0).major_faults_per_sec,
            Some(10.0)
        );
        b.usable_kib = None;
        let m = vm_mem_usage(None, &b, 1.0);
        assert_eq!(
            (m.source, m.used_pct),
            (MemSource::BalloonUnused, Some(50.0))
        );
        assert_eq!(m.actual_less_usable_bytes, None);
        let alloc_only = BalloonCounters {
            current_kib: Some(131_072),
            ..BalloonCounters::default()
        };
        let m = vm_mem_usage(None, &alloc_only, 1.0);
        assert_eq!((m.source, m.used_pct), (MemSource::AllocationOnly, None));
        assert_eq!(m.allocated_bytes, Some(128 << 20));
    }

    #[test]
    fn used_memory_is_the_guests_own_view_when_it_reports_its_total() {
        // 128 MiB given; the guest's MemTotal is 120 MiB (8 MiB kept by its kernel and
        // firmware), 90 MiB of it available: the guest's `free` says 30 MiB used.
        let b = BalloonCounters {
            current_kib: Some(131_072),
            available_kib: Some(122_880),
            usable_kib: Some(92_160),
            unused_kib: Some(40_000),
            ..BalloonCounters::default()
        };
        let m = vm_mem_usage(None, &b, 1.0);
        assert_eq!(m.source, MemSource::BalloonAvailableUsable);
        assert_eq!(m.used_bytes, Some(30 << 20));
        assert_eq!(m.used_pct, Some(25.0));
        // The figure from the allocation is kept beside it: 38 MiB.
        assert_eq!(m.actual_less_usable_bytes, Some(38 << 20));
    }
}
