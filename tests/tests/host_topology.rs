//! Stacked block devices and upper network devices this kernel cannot make (device mapper, md,
//! bonding, VLANs), as fixture trees in the kernel's formats: a captured `proc` with the `sys`
//! beside it, sysfs links as the kernel lays them out. Two instants 2 s apart; over them the
//! host totals must count each byte once, at the devices nothing sits below, and every device
//! must keep its own row (issue 15 points 1 and 2).
//!
//! Disks: `dm-0` (LVM) over the partition `sda2`; `md0` (RAID1) over `sdb` and `sdc`; `loop0`
//! over a file on `vda`; `nbd0`, `zram0` and `sr0`. Interfaces: `bond0` over `eth0` and `eth1`,
//! the VLAN `bond0.100` over `bond0`, `macvtap0` over `eth2`, the bridge `br0` with the tap
//! `vnet0`, and `lo`.

use std::os::unix::fs::symlink;
use std::path::Path;

use setmov::host::read::HostReader;
use setmov::host::snapshot::HostSnapshot;
use setmov::store::rows::{Value, tick_rows};
use setmov::usage::host::{HostUsage, host_usage};
use setmov_tests::ticks::host_tick;

/// Builds `entries` under `root`: a symlink when the content starts with `-> `, an empty
/// folder when the path ends in `/`, else a file.
fn tree(root: &Path, entries: &[(String, String)]) {
    for (path, content) in entries {
        let path_buf = root.join(path);
        if path.ends_with('/') {
            std::fs::create_dir_all(&path_buf).expect("mkdir");
            continue;
        }
        std::fs::create_dir_all(path_buf.parent().expect("parent")).expect("mkdir");
        match content.strip_prefix("-> ") {
            Some(target) => symlink(target, &path_buf).expect("symlink"),
            None => std::fs::write(&path_buf, content).expect("write"),
        }
    }
}

fn e(path: &str, content: &str) -> (String, String) {
    (path.to_owned(), content.to_owned())
}

/// A whole disk on a bus, with its partitions' folders.
fn disk(name: &str, bus: &str, partitions: &[&str]) -> Vec<(String, String)> {
    let dir = format!("devices/{bus}/block/{name}");
    let mut out = vec![
        e(&format!("{dir}/slaves/"), ""),
        e(&format!("{dir}/holders/"), ""),
        e(&format!("block/{name}"), &format!("-> ../{dir}")),
    ];
    for p in partitions {
        out.push(e(&format!("{dir}/{p}/partition"), "2\n"));
    }
    out
}

/// A virtual block device over `slaves` (each `(name, path from /sys/devices)`).
fn virtual_disk(name: &str, slaves: &[(&str, &str)]) -> Vec<(String, String)> {
    let dir = format!("devices/virtual/block/{name}");
    let mut out = vec![
        e(&format!("{dir}/slaves/"), ""),
        e(&format!("block/{name}"), &format!("-> ../{dir}")),
    ];
    for (slave, path) in slaves {
        out.push(e(
            &format!("{dir}/slaves/{slave}"),
            &format!("-> ../../../../{path}"),
        ));
    }
    out
}

fn nic(name: &str, pci: &str, upper: Option<&str>) -> Vec<(String, String)> {
    let dir = format!("devices/pci0000:00/{pci}/net/{name}");
    let mut out = vec![
        e(&format!("{dir}/type"), "1\n"),
        e(&format!("{dir}/device"), &format!("-> ../../../{pci}")),
        e(&format!("class/net/{name}"), &format!("-> ../../{dir}")),
    ];
    if let Some(upper) = upper {
        let target = format!("-> ../../../../virtual/net/{upper}");
        out.push(e(&format!("{dir}/upper_{upper}"), &target));
        out.push(e(&format!("{dir}/master"), &target));
    }
    out
}

fn virtual_nic(name: &str, arp_type: u32, lowers: &[&str]) -> Vec<(String, String)> {
    let dir = format!("devices/virtual/net/{name}");
    let mut out = vec![
        e(&format!("{dir}/type"), &format!("{arp_type}\n")),
        e(&format!("class/net/{name}"), &format!("-> ../../{dir}")),
    ];
    for lower in lowers {
        out.push(e(
            &format!("{dir}/lower_{lower}"),
            &format!("-> ../../../../class/net/{lower}"),
        ));
    }
    out
}

fn sys_entries() -> Vec<(String, String)> {
    let sda = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0";
    let mut all = Vec::new();
    all.extend(disk("sda", sda, &["sda1", "sda2"]));
    all.extend(disk("sdb", "pci0000:00/0000:00:1f.2/ata2", &[]));
    all.extend(disk("sdc", "pci0000:00/0000:00:1f.2/ata3", &[]));
    all.extend(disk("vda", "pci0000:00/0000:00:02.0/virtio1", &[]));
    all.extend(disk("sr0", "pci0000:00/0000:00:1f.2/ata4", &[]));
    all.extend(virtual_disk(
        "dm-0",
        &[("sda2", &format!("{sda}/block/sda/sda2"))],
    ));
    all.extend(virtual_disk(
        "md0",
        &[
            ("sdb", "pci0000:00/0000:00:1f.2/ata2/block/sdb"),
            ("sdc", "pci0000:00/0000:00:1f.2/ata3/block/sdc"),
        ],
    ));
    all.extend(virtual_disk("loop0", &[]));
    all.push(e(
        "devices/virtual/block/loop0/loop/backing_file",
        "/var/lib/images/disk.raw\n",
    ));
    all.extend(virtual_disk("nbd0", &[]));
    all.extend(virtual_disk("zram0", &[]));
    all.extend(nic("eth0", "0000:00:03.0", Some("bond0")));
    all.extend(nic("eth1", "0000:00:04.0", Some("bond0")));
    all.extend(nic("eth2", "0000:00:05.0", None));
    all.extend(virtual_nic("bond0", 1, &["eth0", "eth1"]));
    all.extend(virtual_nic("bond0.100", 1, &["bond0"]));
    all.extend(virtual_nic("macvtap0", 1, &["eth2"]));
    all.extend(virtual_nic("br0", 1, &[]));
    all.extend(virtual_nic("vnet0", 1, &[]));
    all.extend(virtual_nic("lo", 772, &[]));
    all
}

/// One `/proc/diskstats` line: reads, sectors read, writes, sectors written (4.18+ layout).
fn diskstats_line(major: u32, minor: u32, name: &str, io: [u64; 4]) -> String {
    let [r, sr, w, sw] = io;
    format!(
        "{major:4} {minor:7} {name} {r} 0 {sr} {r} {w} 0 {sw} {w} 0 {} {} 0 0 0 0\n",
        r + w,
        r + w
    )
}

/// Each device's counters at `step` (0 or 1): the I/O of the interval, as the kernel shows it
/// on every layer it passes.
fn diskstats(step: u64) -> String {
    let s = |io: [u64; 4]| io.map(|x| x * step + 1000);
    [
        // LVM: 100 reads of 8 sectors through dm-0, which the kernel shows on sda2 and sda.
        diskstats_line(8, 0, "sda", s([100, 800, 0, 0])),
        diskstats_line(8, 1, "sda1", s([0, 0, 0, 0])),
        diskstats_line(8, 2, "sda2", s([100, 800, 0, 0])),
        diskstats_line(253, 0, "dm-0", s([100, 800, 0, 0])),
        // RAID1: 50 writes to md0, each on both mirrors.
        diskstats_line(8, 16, "sdb", s([0, 0, 50, 400])),
        diskstats_line(8, 32, "sdc", s([0, 0, 50, 400])),
        diskstats_line(9, 0, "md0", s([0, 0, 50, 400])),
        // A loop device over a file on vda: 10 writes seen on both.
        diskstats_line(254, 0, "vda", s([0, 0, 10, 80])),
        diskstats_line(7, 0, "loop0", s([0, 0, 10, 80])),
        // Devices that are no disk of this host: a network disk, compressed RAM, a CD.
        diskstats_line(43, 0, "nbd0", s([7, 56, 0, 0])),
        diskstats_line(251, 0, "zram0", s([0, 0, 9, 72])),
        diskstats_line(11, 0, "sr0", s([3, 24, 0, 0])),
    ]
    .concat()
}

/// Each interface's received packets over the interval (100 bytes each), every layer a frame
/// crosses counting it.
const RX_PACKETS: &[(&str, u64)] = &[
    ("eth0", 120),
    ("eth1", 80),
    ("bond0", 200),
    ("bond0.100", 50),
    ("eth2", 30),
    ("macvtap0", 30),
    ("br0", 10),
    ("vnet0", 10),
    ("lo", 5),
];

fn net_dev(step: u64) -> String {
    let mut text = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        .to_owned();
    for (name, packets) in RX_PACKETS {
        let p = packets * step + 1000;
        text.push_str(&format!(
            "{name:>9}: {} {p} 0 0 0 0 0 0 {} {p} 0 0 0 0 0 0\n",
            p * 100,
            p * 100
        ));
    }
    text
}

fn instant(root: &Path, step: u64) -> HostSnapshot {
    let proc_files = [
        e(
            "proc/stat",
            "cpu  1 0 1 8 0 0 0 0 0 0\ncpu0 1 0 1 8 0 0 0 0 0 0\n",
        ),
        e("proc/diskstats", &diskstats(step)),
        e("proc/net/dev", &net_dev(step)),
    ];
    tree(root, &proc_files);
    tree(&root.join("sys"), &sys_entries());
    HostReader::new(root.join("proc"), Vec::new())
        .expect("proc tree")
        .read()
}

fn usage() -> HostUsage {
    let (t0, t1) = (
        tempfile::tempdir().expect("t0"),
        tempfile::tempdir().expect("t1"),
    );
    host_usage(&instant(t0.path(), 0), &instant(t1.path(), 1), 2.0, &[])
}

#[test]
fn the_disk_total_counts_each_io_once_at_the_disks_below() {
    let u = usage();
    assert_eq!(u.disk_total_over, ["sda", "sdb", "sdc", "vda"]);
    let total = u.disk_total.expect("total");
    // sda's 100 reads (not again on dm-0), both mirrors' 50 writes (md0's not again), vda's 10
    // (not again on loop0); nbd0, zram0 and sr0 are no disks of this host.
    assert_eq!(total.read_iops, 50.0);
    assert_eq!(total.read_bytes_per_sec, 800.0 * 512.0 / 2.0);
    assert_eq!(total.write_iops, 55.0);
    assert_eq!(total.write_bytes_per_sec, 880.0 * 512.0 / 2.0);
    let mut rows: Vec<&str> = u.disks.iter().map(|d| d.name.as_str()).collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "dm-0", "loop0", "md0", "nbd0", "sda", "sda1", "sda2", "sdb", "sdc", "sr0", "vda",
            "zram0"
        ],
        "every device keeps its row"
    );
}

#[test]
fn the_network_total_counts_each_frame_once_at_the_nics() {
    let u = usage();
    assert_eq!(u.net_total_over, ["eth0", "eth1", "eth2"]);
    let total = u.net_total.expect("total");
    // 120 + 80 at the bond's slaves (not again on bond0 or its VLAN), 30 at eth2 (not again
    // on its macvtap); the bridge, its tap and loopback carry no frame of a NIC.
    assert_eq!(total.rx.pps, 115.0);
    assert_eq!(total.rx.bytes_per_sec, 11_500.0);
    assert_eq!(
        u.nets.len(),
        RX_PACKETS.len(),
        "every interface keeps its row"
    );
    // An operator's exclusion still applies on top of the topology.
    let (t0, t1) = (
        tempfile::tempdir().expect("t0"),
        tempfile::tempdir().expect("t1"),
    );
    let excluded = host_usage(
        &instant(t0.path(), 0),
        &instant(t1.path(), 1),
        2.0,
        &["eth2".to_owned()],
    );
    assert_eq!(excluded.net_total_over, ["eth0", "eth1"]);
    assert_eq!(excluded.net_total.expect("total").rx.pps, 100.0);
}

/// The stored rows say which devices the totals cover, and summing the flagged rows gives the
/// stored total.
#[test]
fn the_rows_say_which_devices_the_totals_cover() {
    let mut tick = host_tick(1, time::Duration::seconds(60), 2.0, 0.0);
    let u = usage();
    if let Some(sample) = &mut tick.host_sample {
        sample.usage = u;
    }
    let rows = tick_rows(&tick, "2026-12-07 12:00:00.000");
    let table = |name: &str| {
        rows.tables
            .iter()
            .find(|t| t.table == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let flagged = |name: &str, figure: &str| -> (Vec<String>, f64) {
        let t = table(name);
        let col = |c: &str| t.columns.iter().position(|x| x == c).expect(c);
        let (key, flag, value) = (2, col("in_host_total"), col(figure));
        let mut names = Vec::new();
        let mut sum = 0.0;
        for row in &t.rows {
            if row[flag] == Value::Int(1) {
                if let (Value::Text(n), Value::Real(v)) = (&row[key], &row[value]) {
                    names.push(n.clone());
                    sum += v;
                }
            } else {
                assert_eq!(row[flag], Value::Int(0));
            }
        }
        names.sort();
        (names, sum)
    };
    let (disks, write_iops) = flagged("host_disk_usage", "write_iops");
    assert_eq!(disks, ["sda", "sdb", "sdc", "vda"]);
    assert_eq!(write_iops, 55.0);
    let (nets, rx_pps) = flagged("host_net_usage", "rx_pps");
    assert_eq!(nets, ["eth0", "eth1", "eth2"]);
    assert_eq!(rx_pps, 115.0);
}
