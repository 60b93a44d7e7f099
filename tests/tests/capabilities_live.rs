//! Least privilege after start-up (README, "Privileges"): a root monitor with a guest, its eBPF
//! probes, `--bpf-stats` and the Prometheus exporter gives up every capability once started,
//! in every thread (CapEff, CapPrm, CapInh, CapBnd and CapAmb empty, NoNewPrivs 1), and still
//! stores host, VM and eBPF figures, answers /metrics and reconnects to a restarted libvirtd;
//! one writing to MySQL still stores every tick.
//!
//! The guest and libvirtd are prepared by `cargo xtask guests up`, the server by `cargo xtask
//! mariadb up` (or `cargo xtask test`); without them, root or an eBPF build these tests skip
//! loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use setmov::privileges::{CapabilitySet, KEPT, ThreadPrivileges};
use setmov_tests::guests;
use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::mysql_run::{Prepared, Setmov, count as mysql_count, db_args, prepared};
use setmov_tests::{is_root, skip, stored, wait_until};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

#[test]
fn a_started_monitor_holds_no_capability_and_still_samples_everything() {
    if !is_root() {
        return skip("giving up capabilities needs a monitor that has them: run as root");
    }
    let Some(guest) = guests::start_burning_or_skip("caps-drop") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = Monitor::start(
        SETMOV,
        &db,
        &[
            "--interval",
            "1s",
            "--prometheus",
            "127.0.0.1:0",
            "--bpf-stats",
        ],
    );
    let dropped = m
        .wait_for_log("capabilities given up", Duration::from_secs(60))
        .expect("the monitor says it gave up its capabilities");
    let dropped_at = stored::now();
    if m.wait_for_log("eBPF is on", Duration::ZERO).is_none() {
        let _ = m.stop();
        return skip("eBPF is off in this build (SETMOV_NO_EBPF, or no bpf-linker)");
    }
    let address = m.prometheus_address();
    eprintln!("{dropped}");

    every_thread_holds_what_is_kept(m.pid());
    figures_are_stored_after(&db, guest.uuid(), &dropped_at);
    let metrics = scrape(&address);
    assert!(
        metrics.contains(&format!("uuid=\"{}\"", guest.uuid())),
        "the guest is not in /metrics:\n{metrics}"
    );

    guests::restart_libvirtd().expect("libvirtd restarts");
    let restarted_at = stored::now();
    wait_until("VM figures stored after libvirtd's restart", || {
        count(
            &db,
            "SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1 AND time > ?2 AND cpu_pct IS NOT NULL",
            guest.uuid(),
            &restarted_at,
        ) >= 2
    });
    // The threads started since (sources, the reconnection) inherited the empty sets.
    every_thread_holds_what_is_kept(m.pid());

    let log = m.stop();
    let summary = RunSummary::from_log(&log);
    assert_eq!(summary.lost, 0, "{log}");
    // The one warning: the libvirt call that met the restart.
    let unexpected = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"));
    for line in unexpected {
        assert!(line.contains("libvirt call"), "{line}\n{log}");
    }
    for refusal in ["Operation not permitted", "Permission denied"] {
        assert!(!log.contains(refusal), "{log}");
    }
}

/// The MySQL store after the drop: every tick of the run is stored. (The spool is not forced
/// here: stopping the one test server would disturb the other MySQL tests; its files are the
/// monitor's own, in a folder created at start, as the SQLite database is.)
#[test]
fn a_monitor_without_capabilities_writes_to_mysql() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(Setmov(SETMOV), "caps")
    else {
        return;
    };
    const TICKS: u64 = 10;
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "500ms", "--count", "10", "--no-libvirt"],
    );
    let m = Setmov(SETMOV).start_monitor(&url, &args);
    m.wait_for_log("capabilities given up", Duration::from_secs(60))
        .expect("the monitor says it gave up its capabilities");
    every_thread_holds_what_is_kept(m.pid());
    let log = m.wait();
    let rows = mysql_count(&db, &name, "SELECT COUNT(*) FROM host_usage");
    assert_eq!(
        (RunSummary::from_log(&log).ticks, rows),
        (TICKS, TICKS),
        "{log}"
    );
}

/// Every thread of process `pid`: nothing but [`KEPT`] (nothing) in any set, no_new_privs on.
fn every_thread_holds_what_is_kept(pid: u32) {
    let expected = ThreadPrivileges {
        inheritable: CapabilitySet::EMPTY,
        permitted: KEPT,
        effective: KEPT,
        bounding: KEPT,
        ambient: CapabilitySet::EMPTY,
        no_new_privs: true,
    };
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the monitor's threads");
    let mut threads = 0;
    for task in tasks {
        let path = task.expect("a thread").path().join("status");
        // A thread that ended since the listing has nothing left to check.
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue;
        };
        let held = ThreadPrivileges::parse(&status)
            .unwrap_or_else(|| panic!("{}: no capability lines in {status}", path.display()));
        assert_eq!(held, expected, "{}: {held}", path.display());
        threads += 1;
    }
    eprintln!("{threads} threads hold: {expected}");
    assert!(threads > 0);
}

/// Host, VM (CPU, memory, I/O from libvirt) and eBPF rows (the guest's run-queue wait, the
/// programs' costs) stamped after `after`.
fn figures_are_stored_after(db: &Path, uuid: &str, after: &str) {
    let queries = [
        (
            "host ticks",
            "SELECT COUNT(*) FROM host_usage WHERE ?1 <> '' AND time > ?2 AND cpu_pct IS NOT NULL",
        ),
        (
            "VM CPU, memory and disk figures",
            "SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1 AND time > ?2 \
             AND cpu_pct IS NOT NULL AND rss_bytes IS NOT NULL AND disk_write_bytes_s IS NOT NULL",
        ),
        (
            "the guest's eBPF run-queue wait",
            "SELECT COUNT(*) FROM vm_ebpf_usage WHERE uuid = ?1 AND time > ?2 \
             AND cpu_ready_pct IS NOT NULL",
        ),
        (
            "eBPF program costs (--bpf-stats)",
            "SELECT COUNT(*) FROM ebpf_program_stats WHERE ?1 <> '' AND time > ?2",
        ),
    ];
    for (what, sql) in queries {
        wait_until(what, || count(db, sql, uuid, after) >= 2);
    }
}

/// The one number `sql` gives with `?1` = `uuid` and `?2` = `after`.
fn count(db: &Path, sql: &str, uuid: &str, after: &str) -> i64 {
    rusqlite::Connection::open(db)
        .expect("db")
        .query_row(sql, [uuid, after], |r| r.get(0))
        .expect("count")
}

/// `GET /metrics` over plain HTTP/1.0: the body of a 200.
fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the exporter");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}
