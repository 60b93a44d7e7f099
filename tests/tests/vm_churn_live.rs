//! The monitor's behaviour while VMs and libvirtd misbehave, against real TCG guests under a
//! real libvirtd: a guest suspended and resumed, one destroyed, one started, libvirtd
//! restarted, and no tick lost. The guests and libvirtd are prepared by `cargo xtask guests
//! up` (or `cargo xtask test`); without them this test skips loudly (and fails under
//! SETMOV_REQUIRE_ALL=1).

use std::path::Path;
use std::time::Duration;

use setmov_tests::guests::{self, BOOT, Guest, Workload};
use setmov_tests::monitor::Monitor;
use setmov_tests::stored::{query, unix_of};
use setmov_tests::window::unix_now;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

#[test]
fn vm_churn_a_suspended_guest_and_a_libvirtd_restart_lose_no_tick() {
    let Some(a) = guests::start_or_skip("churn-a", &Workload::default()) else {
        return;
    };
    let Some(b) = guests::start_or_skip("churn-b", &Workload::default()) else {
        return;
    };
    a.wait_for("SETMOV: ready", BOOT).expect("a boots");
    b.wait_for("SETMOV: ready", BOOT).expect("b boots");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = Monitor::without_ebpf(SETMOV, &db, "500ms");
    std::thread::sleep(Duration::from_secs(2));

    a.suspend();
    std::thread::sleep(Duration::from_secs(2));
    a.resume();
    let (b_uuid, b_name) = (b.uuid().to_owned(), b.name().to_owned());
    let before_destroy = unix_now();
    drop(b);
    let destroyed = (before_destroy, unix_now());
    let Some(c) = guests::start_or_skip("churn-c", &Workload::default()) else {
        return;
    };
    c.wait_for("SETMOV: ready", BOOT).expect("c boots");
    std::thread::sleep(Duration::from_secs(1));
    guests::restart_libvirtd().expect("libvirtd restarts");
    std::thread::sleep(Duration::from_secs(4));
    let running = guests::virsh(&["list", "--state-running", "--name"]).expect("virsh list");
    let running = running.lines().filter(|l| !l.trim().is_empty()).count();
    std::thread::sleep(Duration::from_secs(1));
    let log = m.stop();

    let ticks = every_tick_was_written_on_time(&db, &log);
    a_has_a_row_on_every_tick_and_sampling_came_back(&db, ticks, &a, &c);
    b_is_gone_and_no_rate_is_absurd(&db, &b_uuid, &b_name, destroyed);
    the_vm_count_is_virshs(&db, running);
}

/// Every tick wrote its host row, whatever the VMs and libvirtd did, and none was held up.
/// Returns the number of ticks.
fn every_tick_was_written_on_time(db: &Path, log: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("db");
    let ticks: i64 = conn
        .query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0))
        .expect("ticks");
    assert!(
        log.contains(&format!(
            "stopped after {ticks} ticks: {ticks} written, 0 quarantined, 0 kept for the next start, 0 lost"
        )),
        "{log}"
    );
    let gaps: Vec<f64> = query::<f64>(
        db,
        "SELECT interval_s FROM host_usage WHERE host_ip <> ?1 ORDER BY time",
        "",
    )
    .iter()
    .filter_map(|r| r[0])
    .collect();
    assert!(
        gaps.iter().all(|g| *g < 1.0),
        "a host tick was held up: {gaps:?}"
    );
    ticks
}

/// a has a row on every tick: sampled, paused, or marked missing while libvirtd was away; and
/// sampling came back by itself for both running guests (`a` and `c`).
fn a_has_a_row_on_every_tick_and_sampling_came_back(db: &Path, ticks: i64, a: &Guest, c: &Guest) {
    let conn = rusqlite::Connection::open(db).expect("db");
    let count = |sql: &str, uuid: &str| -> i64 {
        conn.query_row(sql, [uuid], |r| r.get(0)).expect("count")
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1", a.uuid()),
        ticks
    );
    let paused = query::<f64>(
        db,
        "SELECT cpu_vcpu_pct FROM vm_usage WHERE uuid = ?1 AND state = 'paused'",
        a.uuid(),
    );
    // The first paused row's interval still holds running time; the later ones none.
    assert!(paused.len() >= 3, "suspension not seen: {paused:?}");
    assert!(
        paused[1..].iter().filter_map(|r| r[0]).all(|cpu| cpu < 5.0),
        "{paused:?}"
    );
    let missing = count(
        "SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1 AND missing IS NOT NULL",
        a.uuid(),
    );
    assert!(missing >= 1, "the libvirtd restart went unseen");
    // Sampling came back by itself for both running guests.
    for guest in [a, c] {
        let last: Vec<Vec<Option<String>>> = query(
            db,
            "SELECT missing FROM vm_usage WHERE uuid = ?1 ORDER BY time DESC LIMIT 3",
            guest.uuid(),
        );
        assert!(
            last.iter().all(|r| r[0].is_none()),
            "{}: {last:?}",
            guest.name()
        );
    }
}

/// b is gone, with the last time it was seen running: the last tick before it was destroyed
/// (between `destroyed.0` and `.1` by the test's clock), so a tick stamped at most one interval
/// (0.5 s) and the time libvirt took to answer before it; no rate anywhere is absurd.
fn b_is_gone_and_no_rate_is_absurd(db: &Path, b_uuid: &str, b_name: &str, destroyed: (f64, f64)) {
    let conn = rusqlite::Connection::open(db).expect("db");
    let (state, lct): (String, Option<String>) = conn
        .query_row(
            "SELECT state, lct FROM vms WHERE uuid = ?1",
            [b_uuid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("b's T3 row");
    assert_eq!(state, "gone", "{b_name}");
    let lct = unix_of(&lct.expect("b's last connect time"));
    eprintln!(
        "b's LCT {:.3} s before the destroy began, which took {:.3} s",
        destroyed.0 - lct,
        destroyed.1 - destroyed.0
    );
    assert!(
        (destroyed.0 - 1.0..=destroyed.1).contains(&lct),
        "LCT {lct}, destroyed between {destroyed:?}"
    );
    let (max_cpu, min_rate): (f64, f64) = conn
        .query_row(
            "SELECT MAX(cpu_vcpu_pct), MIN(MIN(COALESCE(disk_read_bytes_s, 0),
                 COALESCE(disk_write_bytes_s, 0), COALESCE(net_rx_bps, 0), COALESCE(net_tx_bps, 0)))
             FROM vm_usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("bounds");
    assert!(
        (0.0..150.0).contains(&max_cpu) && min_rate >= 0.0,
        "{max_cpu} {min_rate}"
    );
}

/// T1's VMC, as the last tick left it, against the running domains `virsh list` counted a
/// second before the monitor stopped (a and c, and any other guest on the machine).
fn the_vm_count_is_virshs(db: &Path, running: usize) {
    let conn = rusqlite::Connection::open(db).expect("db");
    let vmc: i64 = conn
        .query_row("SELECT vmc FROM hosts", [], |r| r.get(0))
        .expect("vmc");
    assert_eq!(usize::try_from(vmc).ok(), Some(running), "VMC {vmc}");
}
