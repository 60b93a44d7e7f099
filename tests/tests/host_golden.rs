//! Golden test: a proc tree captured at two instants 2 s apart (tests/fixtures/golden) gives
//! exactly the hand-computed figures of every host equation, including resets and Δt = 0.

use setmov::host::devices::{DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES, DEFAULT_SKIPPED_DISK_PREFIXES};
use setmov::host::identity;
use setmov::host::read::HostReader;
use setmov::host::snapshot::HostSnapshot;
use setmov::usage::host::{HostUsage, host_usage};
use setmov_tests::fixture;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn read(instant: &str) -> HostSnapshot {
    let reader = HostReader::new(fixture(instant), strings(DEFAULT_SKIPPED_DISK_PREFIXES))
        .expect("fixture tree");
    let snap = reader.read();
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    snap
}

fn usage(dt: f64) -> HostUsage {
    host_usage(
        &read("golden/t0"),
        &read("golden/t1"),
        dt,
        &strings(DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES),
    )
}

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "expected {expected}, got {actual}"
    );
}

#[test]
fn equation_1_host_cpu() {
    let u = usage(2.0);
    let cpu = u.cpu.expect("cpu");
    // Δ over the cpu line: user 250 (guest 100 inside it), system 100, idle 500, iowait 50,
    // irq 20, softirq 30, steal 50 → Δtotal 1000; busy = 1000 − 500 − 50.
    close(cpu.busy_pct, 45.0);
    close(cpu.user_pct, 25.0);
    close(cpu.nice_pct, 0.0);
    close(cpu.system_pct, 10.0);
    close(cpu.idle_pct, 50.0);
    close(cpu.iowait_pct, 5.0);
    close(cpu.irq_pct, 2.0);
    close(cpu.softirq_pct, 3.0);
    close(cpu.steal_pct, 5.0);
    close(cpu.guest_pct, 10.0);
    let per_cpu: Vec<f64> = u.per_cpu.iter().map(|c| c.expect("cpu").busy_pct).collect();
    assert_eq!(per_cpu.len(), 2);
    close(per_cpu[0], 55.0); // 500 − 200 idle − 25 iowait of 500
    close(per_cpu[1], 35.0); // 500 − 300 − 25 of 500
}

#[test]
fn equation_3_memory_figures() {
    let mem = usage(2.0).mem.expect("mem");
    assert_eq!(mem.total_bytes, 16 << 30);
    close(mem.used_pct, 50.0); // 16 − 4 free − 1 buffers − 3 cached GiB
    close(mem.nonfree_pct, 75.0); // 16 − 4
    close(mem.unavailable_pct.expect("MemAvailable"), 50.0); // 16 − 8
}

#[test]
fn equation_4_disks_with_partitions_apart_and_a_reset_device() {
    let u = usage(2.0);
    let names: Vec<(&str, bool)> = u
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.partition))
        .collect();
    // loop0 is skipped by default; sdb's counters went back (reset): no rate at all.
    assert_eq!(names, [("vda", false), ("vda1", true)]);
    let vda = &u.disks[0];
    close(vda.read_bytes_per_sec, 1_048_576.0); // 4096 sectors × 512 / 2 s
    close(vda.write_bytes_per_sec, 4_194_304.0); // 16384 sectors × 512 / 2 s
    close(vda.bytes_per_sec(), 5_242_880.0);
    close(vda.read_iops, 50.0);
    close(vda.write_iops, 200.0);
    close(vda.util_pct, 50.0); // 1000 ms busy in 2000 ms
    close(vda.read_await_ms.expect("reads"), 1.5);
    close(vda.write_await_ms.expect("writes"), 2.0);
    // The host total counts whole disks only, so vda1's bytes are not added twice.
    let total = u.disk_total.expect("total");
    close(total.read_bytes_per_sec, 1_048_576.0);
    close(total.write_bytes_per_sec, 4_194_304.0);
    close(total.bytes_per_sec(), 5_242_880.0);
    close(total.read_iops, 50.0);
    close(total.write_iops, 200.0);
}

#[test]
fn equations_5_to_7_network() {
    let u = usage(2.0);
    let names: Vec<&str> = u.nets.iter().map(|n| n.name.as_str()).collect();
    // vnet0's tx counters went back (reset): no rate for it.
    assert_eq!(names, ["eth0", "lo"]);
    let eth0 = &u.nets[0];
    close(eth0.rx.pps, 50.0); // 100 packets / 2 s
    close(eth0.rx.bytes_per_sec, 74_000.0);
    close(eth0.rx.avg_packet_bits.expect("packets"), 12_000.0); // 1480 B + 20 B framing
    close(eth0.rx.bps, 600_000.0);
    close(eth0.tx.pps, 500.0);
    close(eth0.tx.avg_packet_bits.expect("packets"), 672.0); // 64 B + 20 B framing
    close(eth0.tx.bps, 336_000.0);
    assert_eq!((eth0.rx_errs, eth0.rx_drop, eth0.tx_errs), (1, 2, 0));
    let lo = &u.nets[1];
    close(lo.rx.avg_packet_bits.expect("packets"), 960.0); // 100 B + 20 B
    // The total leaves out loopback and VM taps (counted again on the physical NIC).
    let total = u.net_total.expect("total");
    close(total.rx.pps, 50.0);
    close(total.rx.bps, 600_000.0);
    close(total.tx.bps, 336_000.0);
}

#[test]
fn zero_interval_gives_no_rate_but_keeps_memory() {
    let u = usage(0.0);
    assert!(u.cpu.is_none());
    assert!(u.per_cpu.is_empty());
    assert!(u.disks.is_empty() && u.disk_total.is_none());
    assert!(u.nets.is_empty() && u.net_total.is_none());
    assert!(u.mem.is_some(), "memory is a level, not a rate");
}

#[test]
fn the_captured_tree_carries_its_identity() {
    let root = fixture("golden/t1");
    assert_eq!(identity::hostname(&root), "hv-golden");
    assert_eq!(
        identity::default_route_interface(&root).as_deref(),
        Some("eth0")
    );
}
