//! The test-guest infrastructure itself: a transient guest boots, writes its disk and pings
//! the bridge, and libvirt sees it do so. Needs root and `cargo xtask guests up` (or the
//! preparation `cargo xtask test` does); skips otherwise.

use std::time::{Duration, Instant};

use setmov_tests::guests::{Guest, Workload};
use setmov_tests::skip;

const MIB: u64 = 1 << 20;

#[test]
fn a_guest_writes_its_disk_and_pings_the_bridge() {
    let workload = Workload {
        write_mb: 16,
        ping_count: 20,
        ping_size: 500,
        ..Workload::default()
    };
    let started = Instant::now();
    let guest = match Guest::start("boot", &workload) {
        Ok(guest) => guest,
        Err(reason) => return skip(&reason),
    };
    let minute = Duration::from_secs(60);
    let ready = guest.wait_for("SETMOV: ready", minute).expect("boot");
    let boot = started.elapsed();
    let written = guest.wait_for("SETMOV: write-done", minute).expect("write");
    assert_eq!(written, (16 * MIB).to_string(), "bytes the guest wrote");
    let pings = guest.wait_for("SETMOV: ping-done", minute).expect("ping");
    let (received, sent) = pings
        .split_once('/')
        .and_then(|(r, s)| Some((r.parse::<u64>().ok()?, s.parse::<u64>().ok()?)))
        .unwrap_or_else(|| panic!("ping-done line {pings:?} is not RECEIVED/SENT"));
    assert_eq!(sent, 20, "pings sent");
    assert!(received > 0, "no ping answered by the bridge");

    let pid = guest.qemu_pid().expect("qemu pid file");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "qemu {pid} is not running"
    );
    let tap = guest.tap_device().expect("tap device from virsh domiflist");
    assert!(
        std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "no host interface {tap}"
    );

    let stats = guest.stats().expect("virsh domstats");
    let stat = |key: &str| {
        *stats
            .get(key)
            .unwrap_or_else(|| panic!("virsh domstats has no {key}"))
    };
    // libvirt counts from the guest's side: tx = what the guest sent.
    let (wr_bytes, tx_pkts, rx_pkts) = (
        stat("block.0.wr.bytes"),
        stat("net.0.tx.pkts"),
        stat("net.0.rx.pkts"),
    );
    assert!(wr_bytes >= 16 * MIB, "block.0.wr.bytes {wr_bytes} < 16 MiB");
    assert!(tx_pkts >= sent, "net.0.tx.pkts {tx_pkts} < {sent} pings");
    assert!(
        rx_pkts >= received,
        "net.0.rx.pkts {rx_pkts} < {received} replies"
    );
    eprintln!(
        "{} ({}) ready after {:.1} s ({ready}); qemu {pid}, tap {tap}; wrote {wr_bytes} B, \
         pings {received}/{sent}, tx {tx_pkts} rx {rx_pkts} packets",
        guest.name(),
        guest.uuid(),
        boot.as_secs_f64()
    );

    let name = guest.name().to_owned();
    drop(guest);
    let listed = std::process::Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--all", "--name"])
        .output()
        .expect("virsh list");
    assert!(
        !String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|l| l.trim() == name),
        "{name} still exists after drop"
    );
}
