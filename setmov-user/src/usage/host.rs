//! Host usage: equations (1), (3), (4), (5)–(7) over two procfs snapshots.

use super::{
    DISKSTATS_SECTOR_BYTES, PacketRates, counter_delta, packet_rates, percent, positive_seconds,
};
use crate::host::devices::has_prefix;
use crate::host::snapshot::{
    CpuTimes, DeviceKind, Disk, DiskCounters, HostSnapshot, MemInfo, NetCounters,
};

/// Equation (1), top's way, with the breakdown. Every figure is a percentage of the interval's
/// total CPU time (all CPUs of the line together, so 100 % = every CPU busy).
///
/// `busy_pct` counts everything but `idle` and `iowait`: a CPU in iowait is idle (it waits for
/// nothing; a task does), so iowait is reported beside it, not inside it. `guest_pct` is part of
/// `user_pct`/`nice_pct` already (the kernel accounts guest time there too) and is never added
/// to the total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    pub busy_pct: f64,
    pub user_pct: f64,
    pub nice_pct: f64,
    pub system_pct: f64,
    pub idle_pct: f64,
    pub iowait_pct: f64,
    pub irq_pct: f64,
    pub softirq_pct: f64,
    pub steal_pct: f64,
    pub guest_pct: f64,
}

/// Equation (1). `None` when the total went backwards (CPU hot-plug, a new boot) or did not
/// move. A single field that went backwards while the total grew (the kernel documents this for
/// iowait and idle on tickless CPUs) counts as 0 for the interval, as top does.
pub fn cpu_usage(prev: &CpuTimes, now: &CpuTimes) -> Option<CpuUsage> {
    let total = counter_delta(prev.total(), now.total())? as f64;
    if total == 0.0 {
        return None;
    }
    let d = |p: u64, n: u64| n.saturating_sub(p) as f64;
    let idle = d(prev.idle, now.idle);
    let iowait = d(prev.iowait, now.iowait);
    let pct = |x: f64| 100.0 * x / total;
    Some(CpuUsage {
        busy_pct: pct((total - idle - iowait).max(0.0)),
        user_pct: pct(d(prev.user, now.user)),
        nice_pct: pct(d(prev.nice, now.nice)),
        system_pct: pct(d(prev.system, now.system)),
        idle_pct: pct(idle),
        iowait_pct: pct(iowait),
        irq_pct: pct(d(prev.irq, now.irq)),
        softirq_pct: pct(d(prev.softirq, now.softirq)),
        steal_pct: pct(d(prev.steal, now.steal)),
        guest_pct: pct(d(prev.guest + prev.guest_nice, now.guest + now.guest_nice)),
    })
}

/// Equation (3) and its companions, each named for what it counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemUsage {
    pub total_bytes: u64,
    /// (3) as top's "used": 100 × (total − free − buffers − cached) / total.
    pub used_pct: f64,
    /// The paper's figure: 100 × (total − free) / total; page cache counts as used.
    pub nonfree_pct: f64,
    /// 100 × (total − MemAvailable) / total: what the kernel could not hand out without
    /// swapping. `None` on kernels without MemAvailable.
    pub unavailable_pct: Option<f64>,
}

/// Equation (3). `None` when MemTotal is 0.
pub fn mem_usage(m: &MemInfo) -> Option<MemUsage> {
    let total = m.total as f64;
    let used = m
        .total
        .saturating_sub(m.free)
        .saturating_sub(m.buffers)
        .saturating_sub(m.cached);
    Some(MemUsage {
        total_bytes: m.total,
        used_pct: percent(used as f64, total)?,
        nonfree_pct: percent(m.total.saturating_sub(m.free) as f64, total)?,
        unavailable_pct: m
            .available
            .and_then(|a| percent(m.total.saturating_sub(a) as f64, total)),
    })
}

/// Equation (4) for one block device, split by direction, with IOPS.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskRates {
    pub name: String,
    pub partition: bool,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub read_iops: f64,
    pub write_iops: f64,
    /// Share of the interval the device had I/O in flight (iostat's %util).
    pub util_pct: f64,
    /// Mean time per completed read, `None` when none completed.
    pub read_await_ms: Option<f64>,
    /// Mean time per completed write, `None` when none completed.
    pub write_await_ms: Option<f64>,
}

impl DiskRates {
    /// (4) Δ(sectors read + sectors written) × 512 / Δt.
    pub fn bytes_per_sec(&self) -> f64 {
        self.read_bytes_per_sec + self.write_bytes_per_sec
    }
}

/// Equation (4) for one device. `None` on a reset of any counter or Δt ≤ 0.
pub fn disk_rates(
    prev: &DiskCounters,
    now: &DiskCounters,
    kind: DeviceKind,
    dt_secs: f64,
) -> Option<DiskRates> {
    let dt = positive_seconds(dt_secs)?;
    let reads = counter_delta(prev.reads, now.reads)?;
    let writes = counter_delta(prev.writes, now.writes)?;
    let sectors_read = counter_delta(prev.sectors_read, now.sectors_read)?;
    let sectors_written = counter_delta(prev.sectors_written, now.sectors_written)?;
    let ms_reading = counter_delta(prev.ms_reading, now.ms_reading)?;
    let ms_writing = counter_delta(prev.ms_writing, now.ms_writing)?;
    let ms_doing_io = counter_delta(prev.ms_doing_io, now.ms_doing_io)?;
    let mean = |ms: u64, ops: u64| (ops > 0).then(|| ms as f64 / ops as f64);
    Some(DiskRates {
        name: now.name.clone(),
        partition: kind == DeviceKind::Partition,
        read_bytes_per_sec: (sectors_read * DISKSTATS_SECTOR_BYTES) as f64 / dt,
        write_bytes_per_sec: (sectors_written * DISKSTATS_SECTOR_BYTES) as f64 / dt,
        read_iops: reads as f64 / dt,
        write_iops: writes as f64 / dt,
        util_pct: (100.0 * ms_doing_io as f64 / (dt * 1000.0)).min(100.0),
        read_await_ms: mean(ms_reading, reads),
        write_await_ms: mean(ms_writing, writes),
    })
}

/// Disk figures over several devices together: a host's whole disks (partitions would count
/// bytes twice), a VM's virtual disks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskTotals {
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub read_iops: f64,
    pub write_iops: f64,
}

impl DiskTotals {
    /// (4) for the host.
    pub fn bytes_per_sec(&self) -> f64 {
        self.read_bytes_per_sec + self.write_bytes_per_sec
    }
}

/// Equations (5)–(7) for one interface, plus error and drop counts of the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct NetRates {
    pub name: String,
    pub rx: PacketRates,
    pub tx: PacketRates,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

/// Equations (5)–(7) for one interface. `None` on a reset or Δt ≤ 0.
pub fn net_rates(prev: &NetCounters, now: &NetCounters, dt_secs: f64) -> Option<NetRates> {
    let d = NetDeltas::between(prev, now)?;
    Some(NetRates {
        name: now.name.clone(),
        rx: packet_rates(d.rx_packets, d.rx_bytes, dt_secs)?,
        tx: packet_rates(d.tx_packets, d.tx_bytes, dt_secs)?,
        rx_errs: d.rx_errs,
        rx_drop: d.rx_drop,
        tx_errs: d.tx_errs,
        tx_drop: d.tx_drop,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct NetDeltas {
    rx_bytes: u64,
    rx_packets: u64,
    rx_errs: u64,
    rx_drop: u64,
    tx_bytes: u64,
    tx_packets: u64,
    tx_errs: u64,
    tx_drop: u64,
}

impl NetDeltas {
    fn between(prev: &NetCounters, now: &NetCounters) -> Option<NetDeltas> {
        Some(NetDeltas {
            rx_bytes: counter_delta(prev.rx_bytes, now.rx_bytes)?,
            rx_packets: counter_delta(prev.rx_packets, now.rx_packets)?,
            rx_errs: counter_delta(prev.rx_errs, now.rx_errs)?,
            rx_drop: counter_delta(prev.rx_drop, now.rx_drop)?,
            tx_bytes: counter_delta(prev.tx_bytes, now.tx_bytes)?,
            tx_packets: counter_delta(prev.tx_packets, now.tx_packets)?,
            tx_errs: counter_delta(prev.tx_errs, now.tx_errs)?,
            tx_drop: counter_delta(prev.tx_drop, now.tx_drop)?,
        })
    }
}

/// Network figures over several interfaces together (a host's physical NICs, a VM's NICs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetTotals {
    pub rx: PacketRates,
    pub tx: PacketRates,
}

/// Everything computed for the host over one interval. A figure that cannot be computed
/// (reset, Δt = 0, unreadable file) is absent, never made up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostUsage {
    pub cpu: Option<CpuUsage>,
    /// Per CPU line, in `/proc/stat` order; empty when the CPU count changed.
    pub per_cpu: Vec<Option<CpuUsage>>,
    pub mem: Option<MemUsage>,
    pub disks: Vec<DiskRates>,
    /// `None` when no whole disk had a rate.
    pub disk_total: Option<DiskTotals>,
    pub nets: Vec<NetRates>,
    /// `None` when no counted interface had a rate.
    pub net_total: Option<NetTotals>,
}

/// All host equations between two snapshots taken `dt_secs` apart. Interfaces whose name
/// starts with one of `net_total_excluded` are kept per interface but left out of the total.
pub fn host_usage(
    prev: &HostSnapshot,
    now: &HostSnapshot,
    dt_secs: f64,
    net_total_excluded: &[String],
) -> HostUsage {
    let dt_ok = positive_seconds(dt_secs).is_some();
    let cpu = match (&prev.cpu, &now.cpu) {
        (Some(p), Some(n)) if dt_ok => cpu_usage(p, n),
        _ => None,
    };
    let per_cpu = if dt_ok && prev.cpus.len() == now.cpus.len() {
        prev.cpus
            .iter()
            .zip(&now.cpus)
            .map(|(p, n)| cpu_usage(p, n))
            .collect()
    } else {
        Vec::new()
    };
    let disks: Vec<DiskRates> = now
        .disks
        .iter()
        .filter_map(|n| {
            let p = find_disk(&prev.disks, &n.counters.name)?;
            disk_rates(&p.counters, &n.counters, n.kind, dt_secs)
        })
        .collect();
    let whole: Vec<&DiskRates> = disks.iter().filter(|d| !d.partition).collect();
    let disk_total = (!whole.is_empty()).then(|| DiskTotals {
        read_bytes_per_sec: whole.iter().map(|d| d.read_bytes_per_sec).sum(),
        write_bytes_per_sec: whole.iter().map(|d| d.write_bytes_per_sec).sum(),
        read_iops: whole.iter().map(|d| d.read_iops).sum(),
        write_iops: whole.iter().map(|d| d.write_iops).sum(),
    });
    let pairs = matched_nets(&prev.nets, &now.nets);
    let nets = pairs
        .iter()
        .filter_map(|(p, n)| net_rates(p, n, dt_secs))
        .collect();
    let net_total = net_total(
        pairs
            .into_iter()
            .filter(|(_, n)| !has_prefix(&n.name, net_total_excluded)),
        dt_secs,
    );
    HostUsage {
        cpu,
        per_cpu,
        mem: now.mem.as_ref().and_then(mem_usage),
        disks,
        disk_total,
        nets,
        net_total,
    }
}

/// Each interface of `now` with its reading in `prev` (interfaces new since then are left out).
pub fn matched_nets<'a>(
    prev: &'a [NetCounters],
    now: &'a [NetCounters],
) -> Vec<(&'a NetCounters, &'a NetCounters)> {
    now.iter()
        .filter_map(|n| Some((prev.iter().find(|p| p.name == n.name)?, n)))
        .collect()
}

/// Equations (5)–(7) over interfaces together: their deltas summed, then the equations.
/// Interfaces whose counters were reset are left out; `None` when none is left or Δt ≤ 0.
pub fn net_total<'a>(
    pairs: impl IntoIterator<Item = (&'a NetCounters, &'a NetCounters)>,
    dt_secs: f64,
) -> Option<NetTotals> {
    let deltas: Vec<NetDeltas> = pairs
        .into_iter()
        .filter_map(|(p, n)| NetDeltas::between(p, n))
        .collect();
    if deltas.is_empty() {
        return None;
    }
    let sum = |f: fn(&NetDeltas) -> u64| deltas.iter().map(f).sum::<u64>();
    Some(NetTotals {
        rx: packet_rates(sum(|d| d.rx_packets), sum(|d| d.rx_bytes), dt_secs)?,
        tx: packet_rates(sum(|d| d.tx_packets), sum(|d| d.tx_bytes), dt_secs)?,
    })
}

fn find_disk<'a>(disks: &'a [Disk], name: &str) -> Option<&'a Disk> {
    disks.iter().find(|d| d.counters.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(user: u64, system: u64, idle: u64, iowait: u64, guest: u64) -> CpuTimes {
        CpuTimes {
            user,
            system,
            idle,
            iowait,
            guest,
            ..CpuTimes::default()
        }
    }

    #[test]
    fn cpu_busy_leaves_out_idle_and_iowait_and_never_counts_guest_twice() {
        let prev = cpu(100, 50, 800, 50, 40);
        // Δuser 60 (of which guest 30), Δsystem 20, Δidle 100, Δiowait 20: Δtotal 200.
        let now = cpu(160, 70, 900, 70, 70);
        let u = cpu_usage(&prev, &now).expect("usage");
        assert_eq!(u.busy_pct, 40.0);
        assert_eq!(u.user_pct, 30.0);
        assert_eq!(u.guest_pct, 15.0);
        assert_eq!(u.iowait_pct, 10.0);
        assert_eq!(u.idle_pct, 50.0);
    }

    #[test]
    fn cpu_total_going_back_or_standing_still_gives_no_rate() {
        let prev = cpu(100, 50, 800, 50, 0);
        assert_eq!(cpu_usage(&prev, &cpu(10, 5, 80, 5, 0)), None);
        assert_eq!(cpu_usage(&prev, &prev), None);
    }

    #[test]
    fn an_iowait_dip_counts_as_zero_not_negative() {
        let prev = cpu(100, 0, 800, 50, 0);
        let now = cpu(150, 0, 900, 45, 0); // Δtotal = 50 + 100 − 5 = 145
        let u = cpu_usage(&prev, &now).expect("usage");
        assert_eq!(u.iowait_pct, 0.0);
        assert!(u.busy_pct >= 0.0 && u.busy_pct <= 100.0);
    }

    #[test]
    fn memory_figures_are_each_named_for_what_they_count() {
        let m = MemInfo {
            total: 1000,
            free: 200,
            buffers: 50,
            cached: 250,
            available: Some(600),
        };
        let u = mem_usage(&m).expect("usage");
        assert_eq!(
            (u.used_pct, u.nonfree_pct, u.unavailable_pct),
            (50.0, 80.0, Some(40.0))
        );
        assert_eq!(mem_usage(&MemInfo { total: 0, ..m }), None);
    }

    fn disk(sr: u64, sw: u64, r: u64, w: u64) -> DiskCounters {
        DiskCounters {
            name: "vda".into(),
            reads: r,
            writes: w,
            sectors_read: sr,
            sectors_written: sw,
            ms_reading: r * 2,
            ms_writing: w * 3,
            ms_doing_io: r + w,
            ..DiskCounters::default()
        }
    }

    #[test]
    fn disk_bytes_use_512_byte_sectors() {
        let r = disk_rates(
            &disk(0, 0, 0, 0),
            &disk(2048, 4096, 10, 20),
            DeviceKind::Disk,
            2.0,
        )
        .expect("rates");
        assert_eq!(r.read_bytes_per_sec, 524_288.0);
        assert_eq!(r.write_bytes_per_sec, 1_048_576.0);
        assert_eq!(r.bytes_per_sec(), 1_572_864.0);
        assert_eq!((r.read_iops, r.write_iops), (5.0, 10.0));
        assert_eq!((r.read_await_ms, r.write_await_ms), (Some(2.0), Some(3.0)));
        assert_eq!(r.util_pct, 1.5);
    }

    #[test]
    fn disk_reset_or_zero_interval_gives_no_rate() {
        let a = disk(100, 100, 10, 10);
        let b = disk(50, 200, 12, 12);
        assert_eq!(disk_rates(&a, &b, DeviceKind::Disk, 1.0), None);
        assert_eq!(disk_rates(&a, &a, DeviceKind::Disk, 0.0), None);
    }
}
