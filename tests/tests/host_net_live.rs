//! The host's stored interface figures against the tool an operator checks them with, over
//! the same window (`setmov_tests::window`): `sar -n DEV,EDEV` while a fixed number of packets
//! cross a veth pair into a network namespace and a fixed number of frames are dropped on it.
//! The disks, CPUs and eBPF programs are in host_disk_live.rs.
//!
//! Needs root (namespaces, veth, packet sockets), sysstat, iproute2 and ping (`cargo xtask
//! setup` installs them); otherwise it skips loudly (and fails under SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use setmov_tests::monitor::Monitor;
use setmov_tests::reference::{self, Row, assert_close, assert_within, missing_tools, table};
use setmov_tests::skip;
use setmov_tests::window::{WINDOW_SECS, Window, sleep_until, unix_now};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// One `setmov run` beside `sar -n DEV,EDEV` while 500 pings of 1000 B cross a veth pair
/// from a namespace to the host end (received and answered), then 200 frames of an EtherType
/// nobody handles arrive at the host end (rx_dropped) and 200 frames leave it while its peer
/// is down (tx_dropped: veth drops what it cannot hand over). Over the same window:
///
/// - `host_net_usage` of the host end, every column: packets and bytes within 2 % of sar's
///   rxpck/s, txpck/s, rxkB/s, txkB/s × the window; the average packet size (PPS-weighted over
///   the window) and bits on the wire within 2 % of equations (6) and (7) applied to sar's
///   numbers; errors and drops within 1 of sar's rxerr/s, txerr/s, rxdrop/s, txdrop/s × the
///   window (sar prints rates with 2 decimals: ±0.06 per 12 s). veth counts no errors: those
///   are 0 on both sides; the drops are made to be at least 200.
/// - `host_usage` network totals against sar's rows summed over the interfaces the product
///   counts: the NICs on a bus (a `device` link in /sys/class/net), not loopback and not the
///   test's veth, whose frames a NIC would carry again; within 2 %. Every interface keeps its
///   row, and `in_host_total` marks exactly the counted ones.
#[test]
fn interface_figures_match_sar_over_the_same_interval() {
    if let Some(reason) = missing_tools(&["sar", "ip", "ping"]) {
        return skip(&reason);
    }
    let pair = VethPair::create("setmov-sar", "smvsar0", "smvsar1");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let monitor = Monitor::start(
        SETMOV,
        &db,
        &["--no-ebpf", "--no-libvirt", "--interval", "1s"],
    );
    let window = Window::after_next_tick(&db, "host_usage");
    let secs = WINDOW_SECS.to_string();
    let sar = reference::start("sar", &["-n", "DEV,EDEV", &secs, "1"]);
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    ping_the_host_end(&pair);
    drop_frames_both_ways(&pair);
    assert!(
        unix_now() < window.end() - 0.5,
        "the load took {:?}, past the window",
        started.elapsed()
    );
    let sar = reference::finish(sar, "sar");
    sleep_until(window.end() + 1.5);
    let _ = monitor.stop();

    // sar's rows (after its time column), in its own units (kB = 1024 B).
    let dev = table(&sar, "rxpck/s", "IFACE");
    let edev = table(&sar, "rxerr/s", "IFACE");
    check_host_end(&db, &window, &pair, &dev, &edev);
    check_host_total(&db, &window, &pair, &dev);
}

/// 500 pings of 1000 B from the namespace to the host end, one every 5 ms.
fn ping_the_host_end(pair: &VethPair) {
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.namespace,
            "ping",
            "-q",
            "-i",
            "0.005",
            "-s",
            "1000",
        ])
        .args(["-c", "500", "10.213.78.1"])
        .stdout(Stdio::null())
        .status()
        .expect("ping");
    assert!(ping.success(), "ping failed");
}

/// 200 frames nobody handles into the host end (rx_dropped), then 200 out of it while its
/// peer is down (tx_dropped); fails unless the kernel counted them.
fn drop_frames_both_ways(pair: &VethPair) {
    let drops = (
        pair.host_counter("rx_dropped"),
        pair.host_counter("tx_dropped"),
    );
    send_unhandled_frames(Some(&pair.namespace), &pair.inner_end, 200);
    ip(&[
        "-n",
        &pair.namespace,
        "link",
        "set",
        &pair.inner_end,
        "down",
    ]);
    send_unhandled_frames(None, &pair.host_end, 200);
    ip(&["-n", &pair.namespace, "link", "set", &pair.inner_end, "up"]);
    let made = (
        pair.host_counter("rx_dropped") - drops.0,
        pair.host_counter("tx_dropped") - drops.1,
    );
    assert!(
        made.0 >= 200 && made.1 >= 200,
        "the kernel counted {made:?} (rx, tx) drops of the 200 + 200 made"
    );
}

/// `host_net_usage` of the host end, every column, against sar's DEV and EDEV rows of it.
fn check_host_end(
    db: &Path,
    window: &Window,
    pair: &VethPair,
    dev: &BTreeMap<String, Row>,
    edev: &BTreeMap<String, Row>,
) {
    let seconds = WINDOW_SECS as f64;
    let theirs = &dev[&pair.host_end];
    let errors = &edev[&pair.host_end];
    eprintln!(
        "sar {} over {WINDOW_SECS} s: {theirs:?} {errors:?}",
        pair.host_end
    );
    let total = |rate: &str| theirs[rate] * seconds;
    assert!(
        total("rxpck/s") >= 500.0,
        "the pings did not show: {theirs:?}"
    );
    let ours = window.sums(
        db,
        "host_net_usage d JOIN host_usage u USING (host_ip, time)",
        "u",
        &format!("d.iface = '{}'", pair.host_end),
        &[
            "d.rx_pps",
            "d.tx_pps",
            "d.rx_bytes_s",
            "d.tx_bytes_s",
            // Σ avg × PPS × Δt: the window's PPS-weighted average packet size (NULL only
            // when no packet passed, which weighs nothing).
            "CASE WHEN d.rx_pps > 0 THEN d.rx_avg_pkt_bits * d.rx_pps ELSE 0 END",
            "CASE WHEN d.tx_pps > 0 THEN d.tx_avg_pkt_bits * d.tx_pps ELSE 0 END",
            "d.rx_bps",
            "d.tx_bps",
            "d.rx_errs / u.interval_s",
            "d.rx_drop / u.interval_s",
            "d.tx_errs / u.interval_s",
            "d.tx_drop / u.interval_s",
        ],
    );
    check_traffic(&pair.host_end, &ours[..8], [theirs]);
    assert_within("rx errors", ours[8], errors["rxerr/s"] * seconds, 1.0);
    assert_within("rx drops", ours[9], errors["rxdrop/s"] * seconds, 1.0);
    assert_within("tx errors", ours[10], errors["txerr/s"] * seconds, 1.0);
    assert_within("tx drops", ours[11], errors["txdrop/s"] * seconds, 1.0);
    assert!(
        ours[9] >= 200.0 && ours[11] >= 200.0,
        "the drops made did not show"
    );
}

/// host_usage: the interfaces the product counts in the host total.
fn check_host_total(db: &Path, window: &Window, pair: &VethPair, dev: &BTreeMap<String, Row>) {
    let counted: Vec<&String> = dev
        .keys()
        .filter(|name| {
            Path::new("/sys/class/net")
                .join(name)
                .join("device")
                .exists()
        })
        .collect();
    eprintln!("host network total over {counted:?}");
    assert!(!counted.contains(&&pair.host_end), "a veth is no NIC");
    // Interface-seconds: Σ Δt over the interface rows of the window's ticks.
    let joined = "host_net_usage d JOIN host_usage u USING (host_ip, time)";
    let flagged = window.sparse_sums(db, joined, "u", "d.in_host_total = 1", &["1"])[0];
    let all = window.sparse_sums(db, joined, "u", "1", &["1"])[0];
    eprintln!("interface-seconds stored: {all:.2}, in the host total: {flagged:.2}");
    let expected = WINDOW_SECS as f64 * counted.len() as f64;
    assert!(
        (flagged - expected).abs() <= 0.15 * counted.len() as f64,
        "in_host_total marks {flagged:.2} interface-seconds, {expected} expected"
    );
    assert!(all > flagged, "the uncounted interfaces keep their rows");
    let ours = window.sums(
        db,
        "host_usage u",
        "u",
        "1",
        &[
            "u.net_rx_pps",
            "u.net_tx_pps",
            "u.net_rx_bytes_s",
            "u.net_tx_bytes_s",
            "CASE WHEN u.net_rx_pps > 0 THEN u.net_rx_avg_pkt_bits * u.net_rx_pps ELSE 0 END",
            "CASE WHEN u.net_tx_pps > 0 THEN u.net_tx_avg_pkt_bits * u.net_tx_pps ELSE 0 END",
            "u.net_rx_bps",
            "u.net_tx_bps",
        ],
    );
    check_traffic("host", &ours, counted.iter().map(|name| &dev[*name]));
}

/// Packets, bytes, average packet size and bits on the wire, rx and tx, stored (Σ × Δt of
/// pps, bytes/s, avg bits × pps, bps) against sar's `rows` summed: equations (5) to (7) applied
/// to sar's packets and bytes over the window, within 2 %.
fn check_traffic<'a>(label: &str, ours: &[f64], rows: impl IntoIterator<Item = &'a Row>) {
    let seconds = WINDOW_SECS as f64;
    let mut sums: Row = Row::new();
    for row in rows {
        for (column, value) in row {
            *sums.entry(column.clone()).or_default() += value * seconds;
        }
    }
    for (at, side) in [(0, "rx"), (1, "tx")] {
        let packets = sums[&format!("{side}pck/s")];
        let bytes = sums[&format!("{side}kB/s")] * 1024.0;
        if packets == 0.0 {
            // An idle NIC (the host total here, when nothing crossed the real NIC): nothing on
            // either side, and no average packet size to compare.
            for (what, value) in [
                ("packets", ours[at]),
                ("bytes", ours[2 + at]),
                ("bits", ours[6 + at]),
            ] {
                assert_within(&format!("{label} {side} {what} (idle)"), value, 0.0, 0.0);
            }
            continue;
        }
        assert_close(&format!("{label} {side} packets"), ours[at], packets, 0.02);
        assert_close(
            &format!("{label} {side} KiB"),
            ours[2 + at] / 1024.0,
            bytes / 1024.0,
            0.02,
        );
        // Equation (6): (bytes / packets + 20 B of framing) × 8; (7): packets × that.
        let bits = (bytes / packets + 20.0) * 8.0;
        assert_close(
            &format!("{label} {side} average packet bits"),
            ours[4 + at] / ours[at],
            bits,
            0.02,
        );
        assert_close(
            &format!("{label} {side} bits on the wire"),
            ours[6 + at],
            packets * bits,
            0.02,
        );
    }
}

/// A veth pair, one end in a namespace of its own; removed on drop.
struct VethPair {
    namespace: String,
    host_end: String,
    inner_end: String,
}

impl VethPair {
    fn create(namespace: &str, host_end: &str, inner_end: &str) -> VethPair {
        let pair = VethPair {
            namespace: namespace.into(),
            host_end: host_end.into(),
            inner_end: inner_end.into(),
        };
        pair.remove();
        for args in [
            vec!["netns", "add", namespace],
            vec![
                "link", "add", host_end, "type", "veth", "peer", "name", inner_end,
            ],
            vec!["link", "set", inner_end, "netns", namespace],
            vec!["addr", "add", "10.213.78.1/30", "dev", host_end],
            vec!["link", "set", host_end, "up"],
            vec![
                "-n",
                namespace,
                "addr",
                "add",
                "10.213.78.2/30",
                "dev",
                inner_end,
            ],
            vec!["-n", namespace, "link", "set", inner_end, "up"],
            vec!["-n", namespace, "link", "set", "lo", "up"],
        ] {
            ip(&args);
        }
        pair
    }

    fn remove(&self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        quiet(&["link", "del", &self.host_end]);
        quiet(&["netns", "del", &self.namespace]);
    }

    /// The host end's counter `name` (/sys/class/net/*/statistics).
    fn host_counter(&self, name: &str) -> u64 {
        let path = format!("/sys/class/net/{}/statistics/{name}", self.host_end);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .parse()
            .expect("a counter")
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.remove();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}

/// EtherType 0x88B5 ("local experimental"): no protocol handler takes it, so a receiving
/// device counts the frame in rx_dropped.
const UNHANDLED_ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Sends `count` frames of an EtherType nobody handles out of `iface` (in `namespace`, when
/// given), from a packet socket: no address resolution, exactly these frames.
fn send_unhandled_frames(namespace: Option<&str>, iface: &str, count: usize) {
    use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType};
    let namespace = namespace.map(|n| {
        std::fs::File::open(format!("/run/netns/{n}")).unwrap_or_else(|e| panic!("netns {n}: {e}"))
    });
    let iface = iface.to_owned();
    // A thread of its own: setns changes the network namespace of the calling thread only.
    std::thread::spawn(move || {
        if let Some(namespace) = namespace {
            nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        let index = nix::net::if_::if_nametoindex(iface.as_str()).expect("interface index");
        let socket = nix::sys::socket::socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::empty(),
            None,
        )
        .expect("packet socket");
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut address: nix::libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = nix::libc::AF_PACKET as u16;
        address.sll_ifindex = i32::try_from(index).expect("index");
        // SAFETY: a sockaddr_ll of its own size, as LinkAddr wraps it.
        let address = unsafe {
            <LinkAddr as nix::sys::socket::SockaddrLike>::from_raw(
                (&raw const address).cast(),
                Some(size_of::<nix::libc::sockaddr_ll>() as u32),
            )
        }
        .expect("link address");
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &address).expect("bind");
        // Broadcast destination, zero source, the EtherType, a 100-byte payload.
        let mut frame = vec![0xffu8; 6];
        frame.extend([0u8; 6]);
        frame.extend(UNHANDLED_ETHERTYPE);
        frame.extend([0u8; 100]);
        for _ in 0..count {
            nix::sys::socket::send(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                &frame,
                MsgFlags::empty(),
            )
            .expect("send");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .expect("the sending thread");
}
