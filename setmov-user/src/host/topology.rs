//! Which block devices and interfaces the host totals count, from the device topology in sysfs.
//!
//! Stacked devices carry I/O that a device below them carries again: LVM's `dm-0` over `sda`,
//! an md mirror over two disks (each write twice), a loop device over a file on `vda`. A host
//! total that added every whole disk would count those bytes two or three times. So the disk
//! total counts the devices nothing sits below: a whole disk with no `slaves`, not a virtual
//! device (`/sys/block/X` links into `devices/virtual`: dm, md, loop, zram, nbd, ram) and not
//! an optical drive (`sr`). Likewise a frame crosses a bond and its slave, a VLAN and its
//! parent, a macvtap and its NIC: the network total counts the interfaces with a `device` link
//! (a NIC on a bus), never loopback or a virtual interface (bond, VLAN, bridge, veth, tap,
//! macvtap, tunnels). Every device keeps its own row either way.
//!
//! The reads are at the edge ([`disk_facts`], [`net_facts`]); what they mean is decided by the
//! pure [`disk_role`] and [`net_role`]. A captured proc tree without a sysfs beside it is judged
//! by name alone ([`disk_role_by_name`], [`net_role_by_name`]).

use std::path::Path;

/// What a whole block device is, as far as the host disk total is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskRole {
    /// Nothing sits below it: its I/O is counted in the host total.
    Physical,
    /// Device mapper or md over the devices listed in its `slaves` (names as in /proc/diskstats,
    /// partitions included).
    Stacked { over: Vec<String> },
    /// A loop device, with the file it reads when one is attached: that I/O reaches the disk
    /// the file is on.
    Loop { backing_file: Option<String> },
    /// zram, nbd, a RAM disk, an optical drive or another virtual device without slaves.
    Virtual,
}

impl DiskRole {
    /// Whether the host total counts this device.
    pub fn counted(&self) -> bool {
        *self == DiskRole::Physical
    }
}

/// What sysfs says of one whole block device (`/sys/block/<name>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskFacts {
    /// Where `/sys/block/<name>` points (`../devices/pci0000:00/.../block/vda`).
    pub link: String,
    /// Entries of `slaves/`.
    pub slaves: Vec<String>,
    /// `loop/backing_file`, when there is one.
    pub backing_file: Option<String>,
}

/// Name prefixes of kernel drivers whose devices are never physical disks: `sr` is an optical
/// drive, the others are virtual. Used beside the sysfs link, and alone without sysfs.
const NON_DISK_PREFIXES: &[&str] = &["loop", "zram", "nbd", "ram", "sr", "dm-", "md"];

fn non_disk_name(name: &str) -> bool {
    NON_DISK_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The role of whole disk `name` from its sysfs facts.
pub fn disk_role(name: &str, facts: &DiskFacts) -> DiskRole {
    if name.starts_with("loop") || facts.backing_file.is_some() {
        return DiskRole::Loop {
            backing_file: facts.backing_file.clone(),
        };
    }
    if !facts.slaves.is_empty() {
        return DiskRole::Stacked {
            over: facts.slaves.clone(),
        };
    }
    if facts.link.contains("/devices/virtual/") || non_disk_name(name) {
        return DiskRole::Virtual;
    }
    DiskRole::Physical
}

/// The role of whole disk `name` when no sysfs can be read: by the kernel's device names.
pub fn disk_role_by_name(name: &str) -> DiskRole {
    if name.starts_with("loop") {
        DiskRole::Loop { backing_file: None }
    } else if non_disk_name(name) {
        DiskRole::Virtual
    } else {
        DiskRole::Physical
    }
}

/// Reads `<sys_root>/block/<name>`. `None` when the device is not there (gone since
/// /proc/diskstats was read, or not a whole disk).
pub fn disk_facts(sys_root: &Path, name: &str) -> Option<DiskFacts> {
    let dir = sys_root.join("block").join(name);
    let link = std::fs::read_link(&dir).ok()?;
    let backing_file = std::fs::read_to_string(dir.join("loop/backing_file"))
        .ok()
        .map(|s| s.trim_end().to_owned())
        .filter(|s| !s.is_empty());
    Some(DiskFacts {
        link: link.to_string_lossy().into_owned(),
        slaves: entries(&dir.join("slaves")),
        backing_file,
    })
}

/// What a network interface is, as far as the host network total is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRole {
    /// A NIC on a bus (it has a `device` link): each frame the host sends or receives through
    /// it is counted here, also when it is a bond's slave or a bridge's port.
    Physical,
    /// The loopback interface: traffic that never leaves the host.
    Loopback,
    /// A software interface (bond, VLAN, bridge, veth, tap, macvtap, tunnel), over the
    /// interfaces listed in its `lower_*` links when it has any.
    Virtual { over: Vec<String> },
}

impl NetRole {
    /// Whether the host total counts this interface.
    pub fn counted(&self) -> bool {
        *self == NetRole::Physical
    }
}

/// What sysfs says of one interface (`/sys/class/net/<name>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetFacts {
    /// Whether it has a `device` link (a bus device behind it).
    pub has_device: bool,
    /// `type`: the ARPHRD number (1 Ethernet, 772 loopback); `None` when unreadable.
    pub arp_type: Option<u32>,
    /// Names of its `lower_*` links (a bond's slaves, a VLAN's or macvtap's parent).
    pub lowers: Vec<String>,
}

/// ARPHRD_LOOPBACK.
const ARPHRD_LOOPBACK: u32 = 772;

/// The role of interface `name` from its sysfs facts.
pub fn net_role(facts: &NetFacts) -> NetRole {
    if facts.arp_type == Some(ARPHRD_LOOPBACK) {
        NetRole::Loopback
    } else if facts.has_device {
        NetRole::Physical
    } else {
        NetRole::Virtual {
            over: facts.lowers.clone(),
        }
    }
}

/// Interface name prefixes of software interfaces, for a proc tree without sysfs only.
const VIRTUAL_NET_PREFIXES: &[&str] = &[
    "vnet", "tap", "virbr", "br", "veth", "docker", "ifb", "bond", "macvtap", "dummy", "tun", "wg",
    "vxlan",
];

/// The role of interface `name` when no sysfs can be read: by common names; a VLAN
/// sub-interface (`eth0.100`) is virtual.
pub fn net_role_by_name(name: &str) -> NetRole {
    if name == "lo" {
        NetRole::Loopback
    } else if name.contains('.') || VIRTUAL_NET_PREFIXES.iter().any(|p| name.starts_with(p)) {
        NetRole::Virtual { over: Vec::new() }
    } else {
        NetRole::Physical
    }
}

/// Reads `<sys_root>/class/net/<name>`. `None` when the interface is not there.
pub fn net_facts(sys_root: &Path, name: &str) -> Option<NetFacts> {
    let dir = sys_root.join("class/net").join(name);
    std::fs::symlink_metadata(&dir).ok()?;
    let lowers = entries(&dir)
        .into_iter()
        .filter_map(|e| e.strip_prefix("lower_").map(str::to_owned))
        .collect();
    Some(NetFacts {
        has_device: std::fs::symlink_metadata(dir.join("device")).is_ok(),
        arp_type: std::fs::read_to_string(dir.join("type"))
            .ok()
            .and_then(|t| t.trim().parse().ok()),
        lowers,
    })
}

/// The entry names of `dir`, sorted; empty when it cannot be read.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Builds sysfs entries in `root` the way the kernel lays them out: `(path, target)` is a
    /// symlink when `target` starts with `-> `, an empty folder when `path` ends in `/`, else a
    /// file with that text.
    pub(crate) fn sys_tree(root: &Path, entries: &[(&str, &str)]) {
        for (path, content) in entries {
            if path.ends_with('/') {
                std::fs::create_dir_all(root.join(path)).expect("mkdir");
                continue;
            }
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            match content.strip_prefix("-> ") {
                Some(target) => symlink(target, &path).expect("symlink"),
                None => std::fs::write(&path, content).expect("write"),
            }
        }
    }

    #[test]
    fn stacked_loop_and_virtual_disks_are_not_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path();
        sys_tree(
            sys,
            &[
                ("devices/pci0000:00/0000:00:1f.2/ata1/block/sda/slaves/", ""),
                (
                    "block/sda",
                    "-> ../devices/pci0000:00/0000:00:1f.2/ata1/block/sda",
                ),
                (
                    "devices/virtual/block/dm-0/slaves/sda2",
                    "-> ../../sda/sda2",
                ),
                ("block/dm-0", "-> ../devices/virtual/block/dm-0"),
                (
                    "devices/virtual/block/loop0/loop/backing_file",
                    "/var/lib/img.raw\n",
                ),
                ("block/loop0", "-> ../devices/virtual/block/loop0"),
                ("devices/virtual/block/zram0/slaves/", ""),
                ("block/zram0", "-> ../devices/virtual/block/zram0"),
                ("devices/pci0000:00/ata2/block/sr0/slaves/", ""),
                ("block/sr0", "-> ../devices/pci0000:00/ata2/block/sr0"),
            ],
        );
        let role = |name: &str| disk_role(name, &disk_facts(sys, name).expect(name));
        assert_eq!(role("sda"), DiskRole::Physical);
        assert_eq!(
            role("dm-0"),
            DiskRole::Stacked {
                over: vec!["sda2".into()]
            }
        );
        assert_eq!(
            role("loop0"),
            DiskRole::Loop {
                backing_file: Some("/var/lib/img.raw".into())
            }
        );
        assert_eq!(role("zram0"), DiskRole::Virtual);
        assert_eq!(role("sr0"), DiskRole::Virtual);
        assert_eq!(disk_facts(sys, "sdz"), None);
    }

    #[test]
    fn without_sysfs_disks_are_judged_by_name() {
        let counted: Vec<&str> = [
            "sda", "vda", "nvme0n1", "dm-1", "md127", "loop3", "nbd0", "sr0",
        ]
        .into_iter()
        .filter(|n| disk_role_by_name(n).counted())
        .collect();
        assert_eq!(counted, ["sda", "vda", "nvme0n1"]);
    }

    #[test]
    fn only_nics_on_a_bus_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path();
        let pci = "devices/pci0000:00/0000:00:03.0";
        sys_tree(
            sys,
            &[
                (&format!("{pci}/net/eth0/type"), "1\n"),
                (
                    &format!("{pci}/net/eth0/device"),
                    "-> ../../../0000:00:03.0",
                ),
                (
                    &format!("{pci}/net/eth0/upper_bond0"),
                    "-> ../../../virtual/net/bond0",
                ),
                (
                    &format!("{pci}/net/eth0/master"),
                    "-> ../../../virtual/net/bond0",
                ),
                ("class/net/eth0", &format!("-> ../../{pci}/net/eth0")),
                ("devices/virtual/net/bond0/type", "1\n"),
                (
                    "devices/virtual/net/bond0/lower_eth0",
                    &format!("-> ../../../{pci}/net/eth0"),
                ),
                ("class/net/bond0", "-> ../../devices/virtual/net/bond0"),
                ("devices/virtual/net/lo/type", "772\n"),
                ("class/net/lo", "-> ../../devices/virtual/net/lo"),
            ],
        );
        let role = |name: &str| net_role(&net_facts(sys, name).expect(name));
        assert_eq!(role("eth0"), NetRole::Physical);
        assert_eq!(
            role("bond0"),
            NetRole::Virtual {
                over: vec!["eth0".into()]
            }
        );
        assert_eq!(role("lo"), NetRole::Loopback);
        assert_eq!(net_facts(sys, "eth9"), None);
    }

    #[test]
    fn without_sysfs_interfaces_are_judged_by_name() {
        let counted: Vec<&str> = [
            "lo", "eth0", "eno1", "eth0.100", "bond0", "vnet3", "macvtap0", "virbr0", "veth1",
        ]
        .into_iter()
        .filter(|n| net_role_by_name(n).counted())
        .collect();
        assert_eq!(counted, ["eth0", "eno1"]);
    }
}
