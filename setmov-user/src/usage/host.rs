//! Host usage over two procfs snapshots: equations (5)–(7) here, (1) in `host_cpu`, (3) in
//! `host_mem` and (4) in `disk`, all of them together in [`host_usage`].

use super::disk::{DiskRates, DiskTotals, disk_rates, host_disk_total};
pub use super::host_cpu::{CpuUsage, cpu_usage};
pub use super::host_mem::{MemUsage, mem_usage};
use super::{PacketRates, counter_delta, packet_rates, positive_seconds};
use crate::host::devices::has_prefix;
use crate::host::snapshot::{Disk, HostSnapshot, NetCounters};

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
    /// `None` when a device the total counts has no rate, or it counts none.
    pub disk_total: Option<DiskTotals>,
    /// The devices `disk_total` counts, sorted: the whole disks nothing sits below in either
    /// snapshot (see [`crate::host::topology`]).
    pub disk_total_over: Vec<String>,
    pub nets: Vec<NetRates>,
    /// `None` when no counted interface had a rate.
    pub net_total: Option<NetTotals>,
    /// The interfaces `net_total` sums, sorted: the NICs on a bus that had a rate, less those
    /// the operator left out.
    pub net_total_over: Vec<String>,
}

/// All host equations between two snapshots taken `dt_secs` apart. The totals count the
/// devices the snapshots' topology names (`disk_total_over`, `net_total_over`); interfaces whose
/// name starts with one of `net_total_excluded` are left out of the network total too. Every
/// device keeps its own rates.
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
    let mut disk_total_over: Vec<String> = prev
        .disk_total_over
        .iter()
        .chain(&now.disk_total_over)
        .cloned()
        .collect();
    disk_total_over.sort();
    disk_total_over.dedup();
    let disk_total = host_disk_total(&disk_total_over, &disks);
    let pairs = matched_nets(&prev.nets, &now.nets);
    let nets: Vec<NetRates> = pairs
        .iter()
        .filter_map(|(p, n)| net_rates(p, n, dt_secs))
        .collect();
    let counted: Vec<_> = pairs
        .into_iter()
        .filter(|(_, n)| {
            now.net_total_over.contains(&n.name) && !has_prefix(&n.name, net_total_excluded)
        })
        .filter(|(_, n)| nets.iter().any(|r| r.name == n.name))
        .collect();
    let mut net_total_over: Vec<String> = counted.iter().map(|(_, n)| n.name.clone()).collect();
    net_total_over.sort();
    let net_total = net_total(counted, dt_secs);
    HostUsage {
        cpu,
        per_cpu,
        mem: now.mem.as_ref().and_then(mem_usage),
        disks,
        disk_total,
        disk_total_over,
        nets,
        net_total,
        net_total_over,
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
    use crate::host::snapshot::{DeviceKind, DiskCounters};
    use crate::usage::disk::tests::disk;

    fn listed(name: &str, kind: DeviceKind, c: DiskCounters) -> Disk {
        Disk {
            kind,
            size_bytes: None,
            counters: DiskCounters {
                name: name.into(),
                ..c
            },
        }
    }

    /// A snapshot whose topology counts its whole disks but `dm-*` (stacked in these tests).
    fn snap(disks: &[Disk]) -> HostSnapshot {
        HostSnapshot {
            disks: disks.to_vec(),
            disk_total_over: disks
                .iter()
                .filter(|d| d.kind == DeviceKind::Disk && !d.counters.name.starts_with("dm-"))
                .map(|d| d.counters.name.clone())
                .collect(),
            ..HostSnapshot::default()
        }
    }

    fn total_of(prev: &[Disk], now: &[Disk]) -> Option<DiskTotals> {
        host_usage(&snap(prev), &snap(now), 1.0, &[]).disk_total
    }

    #[test]
    fn host_total_counts_a_stacked_device_once_at_the_disk_below() {
        let a = disk(0, 0, 0, 0);
        let b = disk(2048, 4096, 10, 20);
        // dm-0 over vda: the same I/O shows on both; the total counts vda's only.
        let prev = [
            listed("vda", DeviceKind::Disk, a.clone()),
            listed("dm-0", DeviceKind::Disk, a),
        ];
        let now = [
            listed("vda", DeviceKind::Disk, b.clone()),
            listed("dm-0", DeviceKind::Disk, b),
        ];
        let u = host_usage(&snap(&prev), &snap(&now), 1.0, &[]);
        let t = u.disk_total.expect("total");
        assert_eq!((t.read_iops, t.write_iops), (10.0, 20.0));
        assert_eq!(u.disk_total_over, ["vda"]);
        assert_eq!(u.disks.len(), 2, "every device keeps its row");
    }

    fn nic(name: &str, packets: u64) -> NetCounters {
        NetCounters {
            name: name.into(),
            rx_packets: packets,
            rx_bytes: packets * 100,
            tx_packets: packets,
            tx_bytes: packets * 100,
            ..NetCounters::default()
        }
    }

    #[test]
    fn net_total_counts_the_nics_the_topology_names_less_the_excluded() {
        let names = ["bond0", "eth0", "eth1", "eth0.100"];
        let at = |packets: u64| HostSnapshot {
            nets: names.iter().map(|n| nic(n, packets)).collect(),
            net_total_over: vec!["eth0".into(), "eth1".into()],
            ..HostSnapshot::default()
        };
        let u = host_usage(&at(0), &at(10), 1.0, &[]);
        assert_eq!(u.net_total.expect("total").rx.pps, 20.0);
        assert_eq!(u.net_total_over, ["eth0", "eth1"]);
        assert_eq!(u.nets.len(), 4, "every interface keeps its row");
        let u = host_usage(&at(0), &at(10), 1.0, &["eth1".into()]);
        assert_eq!(u.net_total.expect("total").rx.pps, 10.0);
        assert_eq!(u.net_total_over, ["eth0"]);
    }

    #[test]
    fn host_total_sums_whole_disks_only() {
        let a = disk(0, 0, 0, 0);
        let b = disk(2048, 0, 10, 0);
        let prev = [
            listed("vda", DeviceKind::Disk, a.clone()),
            listed("vda1", DeviceKind::Partition, a.clone()),
            listed("vdb", DeviceKind::Disk, a),
        ];
        let now = [
            listed("vda", DeviceKind::Disk, b.clone()),
            listed("vda1", DeviceKind::Partition, b.clone()),
            listed("vdb", DeviceKind::Disk, b),
        ];
        let t = total_of(&prev, &now).expect("total");
        assert_eq!((t.read_bytes_per_sec, t.read_iops), (2_097_152.0, 20.0));
    }

    #[test]
    fn host_total_is_null_for_the_interval_a_whole_disk_has_no_rate() {
        let (a, b, c) = (
            disk(100, 100, 10, 10),
            disk(200, 200, 20, 20),
            disk(300, 300, 30, 30),
        );
        let vda = |c: &DiskCounters| listed("vda", DeviceKind::Disk, c.clone());
        let sdb = |c: &DiskCounters| listed("sdb", DeviceKind::Disk, c.clone());
        let sdb1 = |c: &DiskCounters| listed("sdb1", DeviceKind::Partition, c.clone());
        // sdb reset: no rate for it, so no total rather than vda's alone.
        assert_eq!(total_of(&[vda(&a), sdb(&b)], &[vda(&b), sdb(&a)]), None);
        // sdb disappeared: its last interval's I/O is unknown.
        assert_eq!(total_of(&[vda(&a), sdb(&a)], &[vda(&b)]), None);
        // sdb appeared: no earlier reading, so no rate for this one interval ...
        assert_eq!(total_of(&[vda(&a)], &[vda(&b), sdb(&a)]), None);
        // ... and the next interval has both again.
        let t = total_of(&[vda(&b), sdb(&a)], &[vda(&c), sdb(&b)]).expect("total");
        assert_eq!(t.read_iops, 20.0);
        // A partition without a rate does not blank the total of whole disks.
        let t = total_of(&[vda(&a), sdb1(&b)], &[vda(&b), sdb1(&a)]).expect("total");
        assert_eq!(t.read_iops, 10.0);
    }
}
