//! One domain's counters from libvirt's bulk statistics (`virConnectGetAllDomainStats`), as
//! named typed parameters (`cpu.time`, `block.0.wr.bytes`, ...). The mapping is pure, so it is
//! tested with records copied from `virsh domstats`.

use std::borrow::Cow;

use crate::host::snapshot::NetCounters;

/// A typed parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(String),
}

/// libvirt's `virDomainState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    NoState,
    Running,
    Blocked,
    Paused,
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
}

impl DomainState {
    pub fn from_raw(state: u64) -> Option<Self> {
        Some(match state {
            0 => Self::NoState,
            1 => Self::Running,
            2 => Self::Blocked,
            3 => Self::Paused,
            4 => Self::Shutdown,
            5 => Self::Shutoff,
            6 => Self::Crashed,
            7 => Self::PmSuspended,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NoState => "nostate",
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::Shutdown => "shutdown",
            Self::Shutoff => "shutoff",
            Self::Crashed => "crashed",
            Self::PmSuspended => "pmsuspended",
        }
    }

    /// Running in the sense of T1's VM count and T3's last connect time.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Running | Self::Blocked)
    }

    /// Has a qemu process, so it gets a usage row (a paused VM too: its CPU reads 0).
    pub fn has_process(self) -> bool {
        matches!(
            self,
            Self::Running | Self::Blocked | Self::Paused | Self::Shutdown | Self::PmSuspended
        )
    }
}

/// Per-vCPU times in nanoseconds: running, and waiting on the host's run queue (steal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuCounters {
    pub time_ns: Option<u64>,
    pub delay_ns: Option<u64>,
}

/// The balloon's figures. Sizes in KiB, as libvirt gives them. Guest-reported fields are
/// absent when the guest has no balloon driver or no stats period is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalloonCounters {
    /// Memory the guest has now ("actual").
    pub current_kib: Option<u64>,
    pub maximum_kib: Option<u64>,
    /// Guest-reported: memory left completely unused (MemFree).
    pub unused_kib: Option<u64>,
    /// Guest-reported: memory the guest kernel can see (MemTotal).
    pub available_kib: Option<u64>,
    /// Guest-reported: memory usable without swapping (MemAvailable).
    pub usable_kib: Option<u64>,
    /// Guest-reported: its page cache and buffers (Buffers + Cached), what it could give back
    /// at the cost of reading from its disks again.
    pub disk_caches_kib: Option<u64>,
    /// Host side: resident set of the qemu process.
    pub rss_kib: Option<u64>,
    pub swap_in_kib: Option<u64>,
    pub swap_out_kib: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
}

/// One virtual disk's cumulative counters (times in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmDiskCounters {
    /// Target name in the guest's definition, e.g. `vda`.
    pub name: String,
    pub rd_reqs: u64,
    pub rd_bytes: u64,
    pub rd_times_ns: u64,
    pub wr_reqs: u64,
    pub wr_bytes: u64,
    pub wr_times_ns: u64,
}

/// Everything the bulk statistics said about one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainStats {
    pub state: Option<DomainState>,
    /// Whole qemu process CPU time (vCPUs and emulator threads), nanoseconds.
    pub cpu_time_ns: Option<u64>,
    pub vcpus_current: Option<u32>,
    pub vcpus: Vec<VcpuCounters>,
    pub balloon: BalloonCounters,
    pub disks: Vec<VmDiskCounters>,
    /// Per virtual NIC, named by its host-side tap device, from the guest's point of view
    /// (rx = received by the guest).
    pub nics: Vec<NetCounters>,
}

/// A parameter's value as a record holds it, strings borrowed: converting a record allocates
/// only the strings kept (disk and NIC names).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamRef<'a> {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(Cow<'a, str>),
}

impl ParamRef<'_> {
    fn as_u64(&self) -> Option<u64> {
        match self {
            ParamRef::Int(v) => u64::try_from(*v).ok(),
            ParamRef::UInt(v) => Some(*v),
            _ => None,
        }
    }
}

impl<'a> From<&'a ParamValue> for ParamRef<'a> {
    fn from(value: &'a ParamValue) -> Self {
        match value {
            ParamValue::Int(v) => ParamRef::Int(*v),
            ParamValue::UInt(v) => ParamRef::UInt(*v),
            ParamValue::Double(v) => ParamRef::Double(*v),
            ParamValue::Bool(v) => ParamRef::Bool(*v),
            ParamValue::Str(v) => ParamRef::Str(Cow::Borrowed(v)),
        }
    }
}

/// Maps one record's parameters. Unknown names are ignored; a disk or NIC whose counters are
/// incomplete is left out rather than given invented zeros.
pub fn parse_domain_stats<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a ParamValue)>,
) -> DomainStats {
    let mut builder = StatsBuilder::default();
    for (name, value) in params {
        builder.add(name, value.into());
    }
    builder.finish()
}

/// One disk's fields as they come, in any order; the last of a repeated name counts.
#[derive(Default)]
struct DiskFields<'a> {
    name: Option<Cow<'a, str>>,
    rd_reqs: Option<u64>,
    rd_bytes: Option<u64>,
    rd_times_ns: Option<u64>,
    wr_reqs: Option<u64>,
    wr_bytes: Option<u64>,
    wr_times_ns: Option<u64>,
}

impl<'a> DiskFields<'a> {
    fn set(&mut self, field: &str, value: ParamRef<'a>) {
        let slot = match field {
            "name" => {
                self.name = as_name(value);
                return;
            }
            "rd.reqs" => &mut self.rd_reqs,
            "rd.bytes" => &mut self.rd_bytes,
            "rd.times" => &mut self.rd_times_ns,
            "wr.reqs" => &mut self.wr_reqs,
            "wr.bytes" => &mut self.wr_bytes,
            "wr.times" => &mut self.wr_times_ns,
            _ => return,
        };
        *slot = value.as_u64();
    }

    fn finish(self) -> Option<VmDiskCounters> {
        Some(VmDiskCounters {
            name: self.name?.into_owned(),
            rd_reqs: self.rd_reqs?,
            rd_bytes: self.rd_bytes?,
            rd_times_ns: self.rd_times_ns?,
            wr_reqs: self.wr_reqs?,
            wr_bytes: self.wr_bytes?,
            wr_times_ns: self.wr_times_ns?,
        })
    }
}

/// One NIC's fields as they come.
#[derive(Default)]
struct NicFields<'a> {
    name: Option<Cow<'a, str>>,
    /// rx bytes, packets, errs, drop, then the same for tx.
    counters: [Option<u64>; 8],
}

impl<'a> NicFields<'a> {
    fn set(&mut self, field: &str, value: ParamRef<'a>) {
        let at = match field {
            "name" => {
                self.name = as_name(value);
                return;
            }
            "rx.bytes" => 0,
            "rx.pkts" => 1,
            "rx.errs" => 2,
            "rx.drop" => 3,
            "tx.bytes" => 4,
            "tx.pkts" => 5,
            "tx.errs" => 6,
            "tx.drop" => 7,
            _ => return,
        };
        if let Some(slot) = self.counters.get_mut(at) {
            *slot = value.as_u64();
        }
    }

    fn finish(self) -> Option<NetCounters> {
        let [
            rx_bytes,
            rx_packets,
            rx_errs,
            rx_drop,
            tx_bytes,
            tx_packets,
            tx_errs,
            tx_drop,
        ] = self.counters;
        Some(NetCounters {
            name: self.name?.into_owned(),
            rx_bytes: rx_bytes?,
            rx_packets: rx_packets?,
            rx_errs: rx_errs?,
            rx_drop: rx_drop?,
            tx_bytes: tx_bytes?,
            tx_packets: tx_packets?,
            tx_errs: tx_errs?,
            tx_drop: tx_drop?,
        })
    }
}

/// The entry of `index` in a list kept in the order indices first appear (a domain has a few
/// disks and NICs: a linear search beats a map). libvirt lists each index's fields together,
/// so the last entry is looked at first: a VM of hundreds of vCPUs costs no quadratic search.
fn entry<T: Default>(list: &mut Vec<(usize, T)>, index: usize) -> Option<&mut T> {
    let at = match list.iter().rposition(|(i, _)| *i == index) {
        Some(at) => at,
        None => {
            list.push((index, T::default()));
            list.len() - 1
        }
    };
    list.get_mut(at).map(|(_, fields)| fields)
}

/// Sorted by index, the entries' values.
fn by_index<T, U>(mut list: Vec<(usize, T)>, finish: impl FnMut(T) -> Option<U>) -> Vec<U> {
    list.sort_by_key(|(index, _)| *index);
    list.into_iter()
        .map(|(_, f)| f)
        .filter_map(finish)
        .collect()
}

/// Builds one domain's [`DomainStats`] from its parameters, one at a time, without keeping
/// them.
#[derive(Default)]
pub struct StatsBuilder<'a> {
    stats: DomainStats,
    vcpus: Vec<(usize, VcpuCounters)>,
    disks: Vec<(usize, DiskFields<'a>)>,
    nics: Vec<(usize, NicFields<'a>)>,
}

impl<'a> StatsBuilder<'a> {
    pub fn add(&mut self, name: &str, value: ParamRef<'a>) {
        let stats = &mut self.stats;
        let b = &mut stats.balloon;
        match name {
            "state.state" => stats.state = value.as_u64().and_then(DomainState::from_raw),
            "cpu.time" => stats.cpu_time_ns = value.as_u64(),
            "vcpu.current" => {
                stats.vcpus_current = value.as_u64().and_then(|v| u32::try_from(v).ok())
            }
            "balloon.current" => b.current_kib = value.as_u64(),
            "balloon.maximum" => b.maximum_kib = value.as_u64(),
            "balloon.unused" => b.unused_kib = value.as_u64(),
            "balloon.available" => b.available_kib = value.as_u64(),
            "balloon.usable" => b.usable_kib = value.as_u64(),
            "balloon.disk_caches" => b.disk_caches_kib = value.as_u64(),
            "balloon.rss" => b.rss_kib = value.as_u64(),
            "balloon.swap_in" => b.swap_in_kib = value.as_u64(),
            "balloon.swap_out" => b.swap_out_kib = value.as_u64(),
            "balloon.major_fault" => b.major_faults = value.as_u64(),
            "balloon.minor_fault" => b.minor_faults = value.as_u64(),
            _ => self.add_indexed(name, value),
        }
    }

    /// `vcpu.N.*`, `block.N.*` and `net.N.*`: any field makes the entry, the known ones fill it.
    fn add_indexed(&mut self, name: &str, value: ParamRef<'a>) {
        if let Some((index, field)) = indexed(name, "vcpu.") {
            if let Some(v) = entry(&mut self.vcpus, index) {
                match field {
                    "time" => v.time_ns = value.as_u64(),
                    "delay" => v.delay_ns = value.as_u64(),
                    _ => {}
                }
            }
        } else if let Some((index, field)) = indexed(name, "block.") {
            if let Some(disk) = entry(&mut self.disks, index) {
                disk.set(field, value);
            }
        } else if let Some((index, field)) = indexed(name, "net.")
            && let Some(nic) = entry(&mut self.nics, index)
        {
            nic.set(field, value);
        }
    }

    pub fn finish(self) -> DomainStats {
        DomainStats {
            vcpus: by_index(self.vcpus, Some),
            disks: by_index(self.disks, DiskFields::finish),
            nics: by_index(self.nics, NicFields::finish),
            ..self.stats
        }
    }
}

fn as_name(value: ParamRef<'_>) -> Option<Cow<'_, str>> {
    match value {
        ParamRef::Str(s) => Some(s),
        _ => None,
    }
}

/// `block.3.wr.bytes` with prefix `block.` → (3, `wr.bytes`). `block.count` → None.
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (index, field) = rest.split_once('.')?;
    Some((index.parse().ok()?, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as `virsh domstats` printed it for a TCG test guest (trimmed).
    fn record() -> Vec<(String, ParamValue)> {
        let u = |n: &str, v: u64| (n.to_owned(), ParamValue::UInt(v));
        let i = |n: &str, v: i64| (n.to_owned(), ParamValue::Int(v));
        let s = |n: &str, v: &str| (n.to_owned(), ParamValue::Str(v.to_owned()));
        vec![
            i("state.state", 1),
            i("state.reason", 1),
            u("cpu.time", 8_702_110_455),
            u("cpu.user", 7_850_000_000),
            u("balloon.current", 131_072),
            u("balloon.maximum", 131_072),
            u("balloon.swap_in", 0),
            u("balloon.swap_out", 0),
            u("balloon.major_fault", 120),
            u("balloon.minor_fault", 31_337),
            u("balloon.unused", 70_000),
            u("balloon.available", 110_000),
            u("balloon.usable", 80_000),
            u("balloon.rss", 190_000),
            u("balloon.disk_caches", 2_484),
            u("vcpu.current", 1),
            u("vcpu.maximum", 1),
            i("vcpu.0.state", 1),
            u("vcpu.0.time", 8_100_000_000),
            u("vcpu.0.wait", 0),
            u("vcpu.0.delay", 25_000_000),
            u("net.count", 1),
            s("net.0.name", "vnet0"),
            u("net.0.rx.bytes", 1_000),
            u("net.0.rx.pkts", 10),
            u("net.0.rx.errs", 0),
            u("net.0.rx.drop", 1),
            u("net.0.tx.bytes", 2_000),
            u("net.0.tx.pkts", 20),
            u("net.0.tx.errs", 0),
            u("net.0.tx.drop", 0),
            u("block.count", 2),
            s("block.0.name", "vda"),
            s("block.0.path", "/var/lib/setmov-guests/a.qcow2"),
            u("block.0.rd.reqs", 64),
            u("block.0.rd.bytes", 67_108_864),
            u("block.0.rd.times", 900_000_000),
            u("block.0.wr.reqs", 128),
            u("block.0.wr.bytes", 67_108_864),
            u("block.0.wr.times", 1_800_000_000),
            u("block.0.fl.reqs", 0),
            // A disk without counters (an empty CD-ROM drive) is left out.
            s("block.1.name", "sda"),
        ]
    }

    fn parse(params: &[(String, ParamValue)]) -> DomainStats {
        parse_domain_stats(params.iter().map(|(n, v)| (n.as_str(), v)))
    }

    #[test]
    fn a_full_record_maps_every_counter() {
        let s = parse(&record());
        assert_eq!(s.state, Some(DomainState::Running));
        assert_eq!(s.cpu_time_ns, Some(8_702_110_455));
        assert_eq!(s.vcpus_current, Some(1));
        assert_eq!(
            s.vcpus,
            [VcpuCounters {
                time_ns: Some(8_100_000_000),
                delay_ns: Some(25_000_000)
            }]
        );
        assert_eq!(s.balloon.current_kib, Some(131_072));
        assert_eq!(s.balloon.usable_kib, Some(80_000));
        assert_eq!(s.balloon.rss_kib, Some(190_000));
        assert_eq!(s.balloon.disk_caches_kib, Some(2_484));
        assert_eq!(s.balloon.major_faults, Some(120));
        assert_eq!(s.disks.len(), 1);
        assert_eq!(s.disks[0].name, "vda");
        assert_eq!(s.disks[0].wr_bytes, 67_108_864);
        assert_eq!(s.nics.len(), 1);
        assert_eq!(
            (s.nics[0].name.as_str(), s.nics[0].tx_packets),
            ("vnet0", 20)
        );
    }

    #[test]
    fn a_state_only_record_has_no_invented_counters() {
        // What a locked domain gives under the NOWAIT flag, or the test driver.
        let s = parse(&[("state.state".into(), ParamValue::Int(3))]);
        assert_eq!(s.state, Some(DomainState::Paused));
        assert_eq!(s.cpu_time_ns, None);
        assert!(s.disks.is_empty() && s.nics.is_empty() && s.vcpus.is_empty());
        assert_eq!(s.balloon, BalloonCounters::default());
    }

    #[test]
    fn odd_names_and_types_are_ignored() {
        let s = parse(&[
            ("block.x.rd.reqs".into(), ParamValue::UInt(1)),
            ("cpu.time".into(), ParamValue::Int(-5)),
            ("state.state".into(), ParamValue::Int(42)),
            ("net.0.name".into(), ParamValue::UInt(3)),
        ]);
        assert_eq!(s, DomainStats::default());
    }
}
