//! Network devices: packets, bytes and packet sizes per device and direction, and drops per
//! device and reason, counted in the kernel.
//!
//! Directions are the **host device's**: rx is what the host received on the device
//! (`net:netif_receive_skb`), tx what it transmitted on it (`net:net_dev_xmit`, rc 0). On a VM's
//! tap device (`vnet3`) the host's rx is what the guest sent, and its tx what the guest got.
//!
//! Packets are socket buffers (a GSO/GRO buffer counts once with all its bytes, as in
//! /proc/net/dev for virtual devices). Bytes are the tracepoint's `len`: on rx the link-layer
//! header has already been pulled (14 bytes less per packet than /proc/net/dev on Ethernet);
//! on tx it is included.
//!
//! Drops come from `skb:kfree_skb` (dropped packets only, with the kernel's reason; the device
//! is `skb->dev->ifindex` at offsets read from the kernel's BTF, ifindex 0 (unknown device)
//! without BTF) and from `net_dev_xmit` with an rc that says the driver refused the packet
//! (reason `XMIT_FAILED`, under the tracepoint's own device name; not `NETDEV_TX_BUSY`, which
//! the kernel hands over again). A refused packet the driver freed itself (a tap whose ring is
//! full) is counted once, by `kfree_skb`, with the kernel's reason.
//!
//! Device names and ifindexes are those of the packet's network namespace: a device of the
//! same name in another namespace adds to the same counters.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use setmov_common::{
    Log2Hist,
    net::{
        KfreeSkbTpLayout, NET_DEVICE_MAP, NET_DROP_MAP, NET_LOST_DEVICE, NET_LOST_DROP,
        NET_LOST_MAP, NET_RX, NET_TX, NET_XMIT_FAILED_MAP, NetDevTpLayout, NetDeviceKey,
        NetDropKey, SkbDevLayout, device_name,
    },
};

pub use setmov_common::net::NetDeviceValue;

use super::btf::{Btf, BtfError, KERNEL_BTF, KernelBtfBytes};
use super::format::{FormatError, TracepointField, find_field, format_path, parse_format};
use super::{EbpfError, ProbeError, attach_tracepoint, map_error, take_map};

/// Reason given to packets a driver refused (`net_dev_xmit` with a failing rc).
pub const XMIT_FAILED: &str = "XMIT_FAILED";

/// The net programs: tracepoint category, program (= tracepoint) name, layout global.
const RECEIVE: (&str, &str, &str) = ("net", "netif_receive_skb", "NETIF_RECEIVE_SKB_LAYOUT");
const XMIT: (&str, &str, &str) = ("net", "net_dev_xmit", "NET_DEV_XMIT_LAYOUT");
const KFREE_SKB: (&str, &str, &str) = ("skb", "kfree_skb", "KFREE_SKB_LAYOUT");
/// Global with the `sk_buff` and `net_device` offsets from BTF.
const SKB_DEV_GLOBAL: &str = "SKB_DEV_LAYOUT";

/// Counters of one device, cumulative since load, from the host device's point of view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDeviceCounters {
    /// Received by the host on the device.
    pub rx: NetDeviceValue,
    /// Transmitted by the host on the device (accepted by its driver).
    pub tx: NetDeviceValue,
}

/// The device a drop was counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DropDevice {
    /// `skb->dev->ifindex` (in its network namespace) at `kfree_skb`; 0 when unknown.
    Ifindex(u32),
    /// The name `net_dev_xmit` gave, for a packet its driver refused.
    Name(String),
}

/// Where and why packets were dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropCause {
    pub device: DropDevice,
    /// The kernel's drop reason (`NO_SOCKET`, `NETFILTER_DROP`, ...), [`XMIT_FAILED`], or
    /// `UNKNOWN_<n>` for a number the kernel's table does not name.
    pub reason: String,
}

/// A program's record layout, read from its tracepoint's format file.
enum ProgramLayout {
    NetDev(NetDevTpLayout),
    KfreeSkb(KfreeSkbTpLayout),
}

/// One net program this kernel has, with its layout.
struct Program {
    category: &'static str,
    name: &'static str,
    global: &'static str,
    layout: ProgramLayout,
}

/// The record layouts of the net programs this kernel can run, the BTF offsets for drops, and
/// the names of the kernel's drop reasons.
pub struct NetLayouts {
    programs: Vec<Program>,
    /// One sentence per program that is off.
    off: Vec<String>,
    skb_dev: SkbDevLayout,
    drop_reasons: HashMap<u32, String>,
}

impl NetLayouts {
    /// Reads the layouts of the net tracepoints this kernel has, and (when drops or transmit
    /// failures are traced) the `sk_buff`/`net_device` offsets from the kernel's BTF. A program
    /// whose tracepoint is missing or unreadable is off; fails only when all are.
    pub fn read(tracefs: &Path) -> Result<Self, ProbeError> {
        let mut layouts = NetLayouts {
            programs: Vec::new(),
            off: Vec::new(),
            skb_dev: SkbDevLayout::default(),
            drop_reasons: HashMap::new(),
        };
        let mut first_error = None;
        for (category, name, global) in [RECEIVE, XMIT, KFREE_SKB] {
            let path = format_path(tracefs, category, name);
            if !path.is_file() {
                layouts.off.push(format!(
                    "net program {name} is off: this kernel has no tracepoint {category}:{name}"
                ));
                continue;
            }
            let read = fs::read_to_string(&path)
                .map_err(|error| FormatError::Read(error.to_string()))
                .and_then(|text| {
                    let fields = parse_format(&text)?;
                    Ok(match name {
                        "netif_receive_skb" => ProgramLayout::NetDev(receive_layout(&fields)?),
                        "net_dev_xmit" => ProgramLayout::NetDev(xmit_layout(&fields)?),
                        _ => {
                            layouts.drop_reasons = parse_drop_reasons(&text)?;
                            ProgramLayout::KfreeSkb(kfree_skb_layout(&fields)?)
                        }
                    })
                });
            match read {
                Ok(layout) => layouts.programs.push(Program {
                    category,
                    name,
                    global,
                    layout,
                }),
                Err(error) => {
                    let error = ProbeError::Format { path, error };
                    layouts
                        .off
                        .push(format!("net program {name} is off: {error}"));
                    first_error.get_or_insert(error);
                }
            }
        }
        if layouts.programs.is_empty() {
            return Err(first_error.unwrap_or_else(|| {
                ProbeError::NoTracepoint(
                    "net:netif_receive_skb, net:net_dev_xmit, skb:kfree_skb".into(),
                )
            }));
        }
        if layouts.programs.iter().any(|p| p.name == KFREE_SKB.1) {
            match KernelBtfBytes::load().and_then(|btf| skb_dev_layout(btf.bytes())) {
                Ok(skb_dev) => layouts.skb_dev = skb_dev,
                Err(error) => tracing::warn!(
                    "net probe: drops are counted under ifindex 0 (unknown device) because the \
                     kernel's structure offsets are not known: {KERNEL_BTF}: {error}"
                ),
            }
        }
        Ok(layouts)
    }

    /// The programs this kernel gets, in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        self.programs.iter().map(|program| program.name).collect()
    }

    /// Writes the layouts into the programs' globals.
    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for program in &self.programs {
            match &program.layout {
                ProgramLayout::NetDev(layout) => {
                    loader.override_global(program.global, layout, true)
                }
                ProgramLayout::KfreeSkb(layout) => {
                    loader.override_global(program.global, layout, true)
                }
            };
        }
        loader.override_global(SKB_DEV_GLOBAL, &self.skb_dev, true);
    }
}

/// The net programs' maps; the programs stay attached while the loaded object lives.
pub struct NetProbe {
    devices: PerCpuHashMap<MapData, NetDeviceKey, NetDeviceValue>,
    drops: PerCpuHashMap<MapData, NetDropKey, u64>,
    xmit_failed: PerCpuHashMap<MapData, NetDeviceKey, u64>,
    lost: PerCpuArray<MapData, u64>,
    drop_reasons: HashMap<u32, String>,
    attached: Vec<String>,
    off: Vec<String>,
}

impl NetProbe {
    /// Attaches the programs `layouts` found and takes their maps. A program the kernel
    /// refuses is off (see `programs_off`); fails only when none could be attached.
    pub fn attach(ebpf: &mut aya::Ebpf, layouts: &NetLayouts) -> Result<Self, ProbeError> {
        let mut attached = Vec::new();
        let mut off = layouts.off.clone();
        let mut first_error = None;
        for program in &layouts.programs {
            match attach_tracepoint(ebpf, program.category, program.name) {
                Ok(()) => attached.push(program.name.to_owned()),
                Err(error) => {
                    off.push(format!("net program {} is off: {error}", program.name));
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error
            && attached.is_empty()
        {
            return Err(error);
        }
        Ok(Self {
            devices: take_map(ebpf, NET_DEVICE_MAP)?,
            drops: take_map(ebpf, NET_DROP_MAP)?,
            xmit_failed: take_map(ebpf, NET_XMIT_FAILED_MAP)?,
            lost: take_map(ebpf, NET_LOST_MAP)?,
            drop_reasons: layouts.drop_reasons.clone(),
            attached,
            off,
        })
    }

    /// Names of the attached programs, e.g. `["netif_receive_skb", ...]`.
    pub fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// One sentence per net program that is off while others run.
    pub fn programs_off(&self) -> &[String] {
        &self.off
    }

    /// Cumulative counters per device name since load, for the devices still in the map.
    pub fn devices(&self) -> Result<HashMap<String, NetDeviceCounters>, EbpfError> {
        let mut out = HashMap::<String, NetDeviceCounters>::new();
        for entry in self.devices.iter() {
            let (key, values) = entry.map_err(map_error(NET_DEVICE_MAP))?;
            let name = String::from_utf8_lossy(device_name(&key.name)).into_owned();
            let counters = out.entry(name).or_default();
            let direction = match key.direction {
                NET_RX => &mut counters.rx,
                NET_TX => &mut counters.tx,
                _ => continue,
            };
            for value in values.iter() {
                add_value(direction, value);
            }
        }
        Ok(out)
    }

    /// Cumulative dropped packets per device and reason since load, for the devices still in
    /// the map.
    pub fn drops(&self) -> Result<HashMap<DropCause, u64>, EbpfError> {
        let mut out = HashMap::new();
        for entry in self.drops.iter() {
            let (key, values) = entry.map_err(map_error(NET_DROP_MAP))?;
            let cause = DropCause {
                device: DropDevice::Ifindex(key.ifindex),
                reason: drop_reason_name(&self.drop_reasons, key.reason),
            };
            let count: &mut u64 = out.entry(cause).or_default();
            *count = values.iter().fold(*count, |sum, v| sum.wrapping_add(*v));
        }
        for entry in self.xmit_failed.iter() {
            let (key, values) = entry.map_err(map_error(NET_XMIT_FAILED_MAP))?;
            let cause = DropCause {
                device: DropDevice::Name(
                    String::from_utf8_lossy(device_name(&key.name)).into_owned(),
                ),
                reason: XMIT_FAILED.to_owned(),
            };
            let count: &mut u64 = out.entry(cause).or_default();
            *count = values.iter().fold(*count, |sum, v| sum.wrapping_add(*v));
        }
        Ok(out)
    }

    /// Packets and drops not counted because a map was full: non-zero means the figures are
    /// incomplete (call `forget_vanished_devices` more often).
    pub fn lost_events(&self) -> Result<u64, EbpfError> {
        let mut lost = 0u64;
        for slot in [NET_LOST_DEVICE, NET_LOST_DROP] {
            let values = self.lost.get(&slot, 0).map_err(map_error(NET_LOST_MAP))?;
            lost = values.iter().fold(lost, |sum, v| sum.wrapping_add(*v));
        }
        Ok(lost)
    }

    /// Removes the counters of devices that no longer exist in `sys_class_net` (normally
    /// `/sys/class/net`: this process's namespace) and the drops of ifindexes none of them
    /// has. Drops are kept when the directory cannot be listed. Returns how many map entries
    /// were removed.
    pub fn forget_vanished_devices(&mut self, sys_class_net: &Path) -> Result<usize, EbpfError> {
        let mut removed = forget_vanished_names(&mut self.devices, NET_DEVICE_MAP, sys_class_net)?;
        removed +=
            forget_vanished_names(&mut self.xmit_failed, NET_XMIT_FAILED_MAP, sys_class_net)?;

        let Some(live) = live_ifindexes(sys_class_net) else {
            return Ok(removed);
        };
        let keys = self
            .drops
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(NET_DROP_MAP))?;
        for key in keys {
            if key.ifindex == 0 || live.contains(&key.ifindex) {
                continue;
            }
            removed += remove(&mut self.drops, &key, NET_DROP_MAP)?;
        }
        Ok(removed)
    }
}

/// Removes the entries of `map` (keyed by device name) whose device is not in
/// `sys_class_net`; returns how many.
fn forget_vanished_names<V: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, NetDeviceKey, V>,
    name: &'static str,
    sys_class_net: &Path,
) -> Result<usize, EbpfError> {
    let keys = map
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_error(name))?;
    let mut removed = 0;
    for key in keys {
        let device = String::from_utf8_lossy(device_name(&key.name)).into_owned();
        if device.is_empty() || sys_class_net.join(&device).exists() {
            continue;
        }
        removed += remove(map, &key, name)?;
    }
    Ok(removed)
}

/// Removes `key`; 1 when it was there, 0 when another reader removed it first.
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<usize, EbpfError> {
    match map.remove(key) {
        Ok(()) => Ok(1),
        Err(MapError::KeyNotFound) => Ok(0),
        Err(error) => Err(map_error(name)(error)),
    }
}

/// The ifindex of every device in `sys_class_net`, or None when it cannot be listed.
fn live_ifindexes(sys_class_net: &Path) -> Option<HashSet<u32>> {
    let entries = fs::read_dir(sys_class_net).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| fs::read_to_string(entry.path().join("ifindex")).ok())
            .filter_map(|text| text.trim().parse().ok())
            .collect(),
    )
}

fn add_value(sum: &mut NetDeviceValue, value: &NetDeviceValue) {
    // Wrapping: counters are modulo 2^64 and a monitor must not panic on them.
    sum.packets = sum.packets.wrapping_add(value.packets);
    sum.bytes = sum.bytes.wrapping_add(value.bytes);
    add_hist(&mut sum.sizes, &value.sizes);
}

fn add_hist(sum: &mut Log2Hist, hist: &Log2Hist) {
    for (total, count) in sum.buckets.iter_mut().zip(hist.buckets) {
        *total = total.wrapping_add(count);
    }
}

/// The name of drop reason `reason`.
fn drop_reason_name(names: &HashMap<u32, String>, reason: u32) -> String {
    names
        .get(&reason)
        .cloned()
        .unwrap_or_else(|| format!("UNKNOWN_{reason}"))
}

/// `netif_receive_skb`: `len` and the `__data_loc` device name.
fn receive_layout(fields: &[TracepointField]) -> Result<NetDevTpLayout, FormatError> {
    Ok(NetDevTpLayout {
        len_offset: find_field(fields, "len", 4..=4, "4")?.offset,
        name_offset: find_field(fields, "name", 4..=4, "4 (a __data_loc)")?.offset,
        rc_offset: 0,
        skbaddr_offset: 0,
    })
}

/// `net_dev_xmit`: as on receive, plus `rc` and `skbaddr` (the device of a failed send).
fn xmit_layout(fields: &[TracepointField]) -> Result<NetDevTpLayout, FormatError> {
    Ok(NetDevTpLayout {
        rc_offset: find_field(fields, "rc", 4..=4, "4")?.offset,
        skbaddr_offset: find_field(fields, "skbaddr", 8..=8, "8 (a 64-bit kernel)")?.offset,
        ..receive_layout(fields)?
    })
}

/// `kfree_skb`: `skbaddr` and `reason`.
fn kfree_skb_layout(fields: &[TracepointField]) -> Result<KfreeSkbTpLayout, FormatError> {
    Ok(KfreeSkbTpLayout {
        skbaddr_offset: find_field(fields, "skbaddr", 8..=8, "8 (a 64-bit kernel)")?.offset,
        reason_offset: find_field(fields, "reason", 4..=4, "4")?.offset,
    })
}

/// The names of the kernel's drop reasons, from the
/// `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)` table in the `print fmt` line of
/// `kfree_skb`'s format file.
pub fn parse_drop_reasons(format: &str) -> Result<HashMap<u32, String>, FormatError> {
    const TABLE: &str = "__print_symbolic(REC->reason,";
    let (index, line) = format
        .lines()
        .enumerate()
        .find(|(_, line)| line.starts_with("print fmt:"))
        .ok_or(FormatError::MissingField("print fmt"))?;
    let malformed = |problem| FormatError::Malformed {
        line: index + 1,
        problem,
    };
    let mut rest = line
        .split_once(TABLE)
        .ok_or_else(|| malformed("no __print_symbolic table of REC->reason"))?
        .1;
    let mut names = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.starts_with(')') {
            break;
        }
        let entry;
        (entry, rest) = rest
            .strip_prefix('{')
            .and_then(|after| after.split_once('}'))
            .ok_or_else(|| malformed("drop reason table: expected `{ <number>, \"<name>\" }`"))?;
        let (number, name) = entry
            .split_once(',')
            .ok_or_else(|| malformed("drop reason table: entry without a comma"))?;
        let number = number
            .trim()
            .parse()
            .map_err(|_| malformed("drop reason table: bad number"))?;
        let name = name
            .trim()
            .strip_prefix('"')
            .and_then(|name| name.strip_suffix('"'))
            .filter(|name| !name.is_empty())
            .ok_or_else(|| malformed("drop reason table: name not in quotes"))?;
        names.insert(number, name.to_owned());
    }
    if names.is_empty() {
        return Err(malformed("drop reason table is empty"));
    }
    Ok(names)
}

/// `sk_buff.dev` and `net_device.ifindex` offsets from the kernel's BTF (raw `.BTF` data, as in
/// `/sys/kernel/btf/vmlinux`).
pub fn skb_dev_layout(raw: &[u8]) -> Result<SkbDevLayout, BtfError> {
    let btf = Btf::parse(raw)?;
    Ok(SkbDevLayout {
        known: 1,
        skb_dev_offset: btf.member_offset("sk_buff", "dev", "sk_buff.dev")?,
        dev_ifindex_offset: btf.member_offset("net_device", "ifindex", "net_device.ifindex")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::btf::tiny_btf;

    /// /sys/kernel/tracing/events/<category>/<name>/format on Linux 6.18 (x86_64).
    const NETIF_RECEIVE_SKB: &str = include_str!("testdata/netif_receive_skb.format");
    const NET_DEV_XMIT: &str = include_str!("testdata/net_dev_xmit.format");
    const KFREE_SKB: &str = include_str!("testdata/kfree_skb.format");

    fn fields(text: &str) -> Vec<TracepointField> {
        parse_format(text).expect("parses")
    }

    #[test]
    fn net_layouts_of_this_kernel() {
        assert_eq!(
            receive_layout(&fields(NETIF_RECEIVE_SKB)),
            Ok(NetDevTpLayout {
                len_offset: 16,
                name_offset: 20,
                rc_offset: 0,
                skbaddr_offset: 0,
            })
        );
        assert_eq!(
            xmit_layout(&fields(NET_DEV_XMIT)),
            Ok(NetDevTpLayout {
                len_offset: 16,
                name_offset: 24,
                rc_offset: 20,
                skbaddr_offset: 8,
            })
        );
        assert_eq!(
            kfree_skb_layout(&fields(KFREE_SKB)),
            Ok(KfreeSkbTpLayout {
                skbaddr_offset: 8,
                reason_offset: 36,
            })
        );
    }

    #[test]
    fn layouts_check_fields() {
        // netif_receive_skb has no rc.
        assert_eq!(
            xmit_layout(&fields(NETIF_RECEIVE_SKB)),
            Err(FormatError::MissingField("rc"))
        );
        assert_eq!(
            kfree_skb_layout(&fields(NETIF_RECEIVE_SKB)),
            Err(FormatError::MissingField("reason"))
        );
        // A 32-bit kernel's 4-byte pointer.
        let narrow = NET_DEV_XMIT.replace("offset:8;\tsize:8;", "offset:8;\tsize:4;");
        assert_eq!(
            xmit_layout(&fields(&narrow)),
            Err(FormatError::FieldSize {
                name: "skbaddr",
                size: 4,
                expected: "8 (a 64-bit kernel)"
            })
        );
    }

    #[test]
    fn drop_reasons_of_this_kernel() {
        let reasons = parse_drop_reasons(KFREE_SKB).expect("parses");
        // 2 NOT_SPECIFIED ... 128 MAX, every number once.
        assert_eq!(reasons.len(), 127);
        assert_eq!(reasons[&2], "NOT_SPECIFIED");
        assert_eq!(reasons[&3], "NO_SOCKET");
        assert_eq!(reasons[&12], "NETFILTER_DROP");
        assert_eq!(reasons[&128], "MAX");
        assert!(!reasons.contains_key(&1));
        assert_eq!(drop_reason_name(&reasons, 3), "NO_SOCKET");
        assert_eq!(drop_reason_name(&reasons, 0x3_0001), "UNKNOWN_196609");
    }

    #[test]
    fn bad_drop_reason_tables_are_errors() {
        // The print fmt line is the last one of both files.
        let malformed = |problem| {
            Err(FormatError::Malformed {
                line: KFREE_SKB.lines().count(),
                problem,
            })
        };
        assert_eq!(
            parse_drop_reasons(NETIF_RECEIVE_SKB),
            Err(FormatError::Malformed {
                line: NETIF_RECEIVE_SKB.lines().count(),
                problem: "no __print_symbolic table of REC->reason"
            })
        );
        assert_eq!(
            parse_drop_reasons(&KFREE_SKB.replace("{ 3, \"NO_SOCKET\" }", "{ x, \"NO_SOCKET\" }")),
            malformed("drop reason table: bad number")
        );
        assert_eq!(
            parse_drop_reasons(&KFREE_SKB.replace("{ 3, \"NO_SOCKET\" }", "{ 3, NO_SOCKET }")),
            malformed("drop reason table: name not in quotes")
        );
        // Cut short: no closing brace and parenthesis.
        let cut = &KFREE_SKB[..KFREE_SKB.find("{ 5, ").expect("has reason 5") + 4];
        assert_eq!(
            parse_drop_reasons(cut),
            malformed("drop reason table: expected `{ <number>, \"<name>\" }`")
        );
        assert_eq!(
            parse_drop_reasons("name: x\nformat:\n"),
            Err(FormatError::MissingField("print fmt"))
        );
    }

    #[test]
    fn skb_dev_offsets_from_btf() {
        assert_eq!(
            skb_dev_layout(&tiny_btf("ifindex")),
            Ok(SkbDevLayout {
                known: 1,
                skb_dev_offset: 16,
                dev_ifindex_offset: 224,
            })
        );
        let Err(BtfError::Member { member, .. }) = skb_dev_layout(&tiny_btf("ifidx")) else {
            panic!("a net_device without ifindex must be refused");
        };
        assert_eq!(member, "net_device.ifindex");
        assert_eq!(
            skb_dev_layout(b"not BTF at all, far too short"),
            Err(BtfError::Malformed("no BTF magic number"))
        );
    }

    #[test]
    fn device_values_add_up() {
        let mut one = NetDeviceValue {
            packets: 2,
            bytes: 2056,
            ..NetDeviceValue::default()
        };
        one.sizes.buckets[10] = 2;
        let mut sum = NetDeviceValue::default();
        add_value(&mut sum, &one);
        add_value(&mut sum, &one);
        assert_eq!(sum.packets, 4);
        assert_eq!(sum.bytes, 4112);
        assert_eq!(sum.sizes.buckets[10], 4);
        assert_eq!(sum.sizes.buckets.iter().sum::<u64>(), 4);
    }
}
