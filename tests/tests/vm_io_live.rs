//! A guest's disk and NIC figures against real TCG guests under a real libvirtd running a known
//! workload, over the whole run: 32 MiB of direct writes are its disk write bytes, and pings
//! of known count and size its NIC figures. The guests and libvirtd are prepared by `cargo
//! xtask guests up` (or `cargo xtask test`); without them these tests skip loudly (and fail
//! under SETMOV_REQUIRE_ALL=1).

use std::sync::Mutex;
use std::time::Duration;

use setmov_tests::guests::{self, BOOT, Workload};
use setmov_tests::monitor::Monitor;
use setmov_tests::stored::integral;

/// The guests compete for the same two cores: one test at a time.
static MACHINE: Mutex<()> = Mutex::new(());

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
const MIB: f64 = 1_048_576.0;

#[test]
fn direct_writes_of_a_guest_are_its_disk_write_bytes() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    // The monitor sees the guest before it writes: delay, then 32 MiB direct.
    let m = Monitor::without_ebpf(SETMOV, &db, "500ms");
    let Some(guest) = guests::start_or_skip(
        "disk",
        &Workload {
            delay_secs: 4,
            write_mb: 32,
            ..Workload::default()
        },
    ) else {
        let _ = m.stop();
        return;
    };
    let done = guest.wait_for("SETMOV: write-done", BOOT).expect("write");
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = m.stop();

    let libvirt_bytes = guest.stats().expect("domstats")["block.0.wr.bytes"] as f64;
    let written = integral(&db, "disk_write_bytes_s", guest.uuid());
    eprintln!(
        "guest wrote {done}; the VM's disk write figure accounts for {:.2} MiB, libvirt counts {:.2} MiB",
        written / MIB,
        libvirt_bytes / MIB
    );
    assert!(
        (written / (32.0 * MIB) - 1.0).abs() <= 0.05,
        "{:.2} MiB",
        written / MIB
    );
    let iops = integral(&db, "disk_write_iops", guest.uuid());
    // At least one request per 1 MiB block (Σ rate × Δt carries float rounding).
    assert!(iops.round() >= 32.0, "write requests {iops}");
}

#[test]
fn pings_of_known_count_and_size_are_the_nic_figures() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = Monitor::without_ebpf(SETMOV, &db, "500ms");
    const PINGS: f64 = 60.0;
    const DATA: u32 = 1000;
    let Some(guest) = guests::start_or_skip(
        "ping",
        &Workload {
            delay_secs: 4,
            ping_count: PINGS as u32,
            ping_size: DATA,
            ..Workload::default()
        },
    ) else {
        let _ = m.stop();
        return;
    };
    guest.wait_for("SETMOV: ping-done", BOOT).expect("pings");
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = m.stop();

    // An echo request on the wire: data + 8 ICMP + 20 IPv4 + 14 Ethernet header bytes.
    let frame = f64::from(DATA + 8 + 20 + 14);
    let packets = integral(&db, "net_tx_pps", guest.uuid());
    let bytes = integral(&db, "net_tx_bytes_s", guest.uuid());
    let rx_packets = integral(&db, "net_rx_pps", guest.uuid());
    eprintln!(
        "{PINGS} pings of {DATA} B: tx {packets:.1} packets {bytes:.0} B, rx {rx_packets:.1} packets"
    );
    // ARP adds a packet or two of 42 bytes each way.
    assert!(
        (packets / PINGS - 1.0).abs() <= 0.05,
        "tx packets {packets}"
    );
    assert!(
        (bytes / (PINGS * frame) - 1.0).abs() <= 0.05,
        "tx bytes {bytes}"
    );
    // Every echo came back; the guest also receives ARP, broadcasts from other guests too.
    assert!(rx_packets >= PINGS, "rx packets {rx_packets}");
    // Equation (6) over the run: the frame plus 20 B of Ethernet framing (the ARP frames
    // pull it down a little).
    let bits = (bytes / packets + 20.0) * 8.0;
    assert!(
        (bits / ((frame + 20.0) * 8.0) - 1.0).abs() <= 0.05,
        "{bits} bits"
    );
}
