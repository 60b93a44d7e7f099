//! A suspended guest flooded with UDP from the host: its tap's ring fills and the tap drops
//! the rest (tun frees each with `kfree_skb` reason FULL_RING, then returns NET_XMIT_DROP to
//! `net_dev_xmit`). Each dropped datagram must be stored once in `vm_nic_drops`, as many as
//! libvirt's own counter says: `virsh domifstat`'s `rx_drop` (the guest's receive side is the
//! tap's transmit side) over the same run.
//!
//! The guests and libvirtd are prepared by `cargo xtask guests up` (or `cargo xtask test`);
//! without them, root or eBPF this test skips loudly (and fails under SETMOV_REQUIRE_ALL=1).
//! Nothing leaves the machine: the datagrams go from the test bridge's address to the guest.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use setmov_tests::guests::{self, BOOT, Workload, virsh};
use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::stored::{Cell, num, query};
use setmov_tests::{is_root, skip};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// Datagrams sent while the guest is suspended: well past the tap's ring (its txqueuelen).
const FLOOD: u32 = 4_000;
const PAYLOAD: usize = 200;
/// Nobody needs to listen: the datagrams never reach the guest's stack while it is suspended.
const PORT: u16 = 9;

/// `virsh domifstat NAME TAP`'s `rx_drop`.
fn rx_drop(guest: &str, tap: &str) -> u64 {
    let text = virsh(&["domifstat", guest, tap]).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{tap} rx_drop ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rx_drop in domifstat's output: {text}"))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first IPv4 address of `device`.
fn ipv4_of(device: &str) -> Ipv4Addr {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", device])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address on {device}: {text}"))
}

/// The guest's MAC address on `tap` (`virsh domiflist`'s fifth column).
fn mac_of(guest: &str, tap: &str) -> String {
    let table = virsh(&["domiflist", guest]).unwrap_or_else(|e| panic!("{e}"));
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tap))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no MAC for {tap}: {table}"))
}

/// The guest's rows in `vm_ebpf_usage` so far (0 while the database is being made).
fn ebpf_rows(db: &Path, uuid: &str) -> usize {
    let count = || -> rusqlite::Result<i64> {
        rusqlite::Connection::open(db)?.query_row(
            "SELECT COUNT(*) FROM vm_ebpf_usage WHERE uuid = ?1",
            [uuid],
            |r| r.get(0),
        )
    };
    count().map_or(0, |n| n as usize)
}

/// Waits (at most a minute: the eBPF load is slow on a busy machine) until the guest has
/// `count` rows in `vm_ebpf_usage`.
fn wait_for_ebpf_rows(db: &Path, uuid: &str, count: usize) {
    let until = Instant::now() + Duration::from_secs(60);
    while ebpf_rows(db, uuid) < count {
        assert!(
            Instant::now() < until,
            "the guest has {} eBPF rows after a minute, {count} expected: are the probes on?",
            ebpf_rows(db, uuid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the static neighbour entry when dropped, even on failure.
struct StaticNeighbour {
    address: String,
    bridge: String,
}

impl Drop for StaticNeighbour {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["neigh", "del", &self.address, "dev", &self.bridge])
            .status();
    }
}

#[test]
fn a_suspended_guests_flooded_tap_counts_each_drop_once_as_domifstat() {
    if !is_root() {
        return skip("vm_nic_drops_live: needs root (eBPF, libvirt)");
    }
    let Some(guest) = guests::start_or_skip("drops", &Workload::default()) else {
        return;
    };
    let ready = guest.wait_for("SETMOV: ready", BOOT).expect("guest boots");
    let guest_ip = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ip="))
        .and_then(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .unwrap_or_else(|| panic!("no ip= in the ready line: {ready}"));
    let tap = guest.tap_device().expect("a tap device");
    let bridge = std::fs::read_link(format!("/sys/class/net/{tap}/master"))
        .ok()
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .expect("the tap is on a bridge");
    let host_ip = ipv4_of(&bridge);
    // The suspended guest cannot answer ARP: tell the host where it is.
    let mac = mac_of(guest.name(), &tap);
    ip(&[
        "neigh",
        "replace",
        &guest_ip.to_string(),
        "lladdr",
        &mac,
        "dev",
        &bridge,
        "nud",
        "permanent",
    ]);
    let _neighbour = StaticNeighbour {
        address: guest_ip.to_string(),
        bridge: bridge.clone(),
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let before = rx_drop(guest.name(), &tap);
    let monitor = Monitor::start(SETMOV, &db, &["--interval", "500ms"]);
    // The probes are attached once the guest has two eBPF rows (its rates need two readings).
    wait_for_ebpf_rows(&db, guest.uuid(), 2);

    guest.suspend();
    std::thread::sleep(Duration::from_millis(500));
    let socket = UdpSocket::bind(SocketAddrV4::new(host_ip, 0)).expect("bind");
    let to = SocketAddrV4::new(guest_ip, PORT);
    let datagram = [b'a'; PAYLOAD];
    let mut sent = 0u32;
    for _ in 0..FLOOD {
        // A full socket buffer or qdisc refuses some: only what left counts, and only
        // domifstat's count is compared.
        if socket.send_to(&datagram, to).is_ok() {
            sent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let while_suspended = rx_drop(guest.name(), &tap);
    guest.resume();
    // Two ticks after the flood: the probes were read after the last drop.
    let flooded = ebpf_rows(&db, guest.uuid());
    wait_for_ebpf_rows(&db, guest.uuid(), flooded + 2);
    let log = monitor.stop();
    let after = rx_drop(guest.name(), &tap);
    let summary = RunSummary::from_log(&log);
    eprintln!("{summary:?}");

    let dropped = after - before;
    eprintln!(
        "{sent} of {FLOOD} datagrams sent to {guest_ip} over {bridge} → {tap}; domifstat rx_drop \
         {before} → {while_suspended} (suspended) → {after}: {dropped} dropped"
    );
    assert!(
        dropped >= u64::from(sent) / 2,
        "the flood of {sent} datagrams dropped only {dropped} at the tap: the test did not \
         fill the ring"
    );
    let stored = query::<Cell>(
        &db,
        "SELECT iface, reason, SUM(packets) FROM vm_nic_drops WHERE uuid = ?1 GROUP BY 1, 2",
        guest.uuid(),
    );
    eprintln!("stored drops of the guest by interface and reason: {stored:?}");
    let stored_total: u64 = stored
        .iter()
        .filter(|r| r[0].as_deref() == Some(tap.as_str()))
        .map(|r| num(&r[2]) as u64)
        .sum();
    assert_eq!(
        stored_total, dropped,
        "drops stored for {tap} against domifstat's rx_drop over the run"
    );
}
