//! The embedded store locked by another process (`BEGIN IMMEDIATE` held), as a backup tool or
//! an operator's `sqlite3` session can: sampling goes on with bounded memory, every tick is
//! stored once the lock goes (or counted), and a stop asked for during the lock ends within
//! systemd's patience, keeping what is unwritten for the next start.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::wait_until;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// Holds a write lock on `db` from another connection until `release` is sent (or dropped).
fn hold_lock(db: &Path) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let (release, released) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _ = released.recv();
        conn.execute_batch("COMMIT").expect("unlock");
    });
    (release, holder)
}

fn stored_ticks(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| conn.query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0)))
        .unwrap_or(0)
}

fn start(db: &Path) -> Monitor {
    let m = Monitor::start(
        SETMOV,
        db,
        &["--interval", "100ms", "--no-ebpf", "--no-libvirt"],
    );
    wait_until("10 stored ticks", || stored_ticks(db) >= 10);
    m
}

#[test]
fn a_minute_of_lock_at_10_hz_costs_little_memory_and_every_tick_is_stored_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = start(&db);
    let before = m.rss_bytes();
    let (release, holder) = hold_lock(&db);
    std::thread::sleep(Duration::from_secs(60));
    let during = m.rss_bytes();
    release.send(()).expect("release");
    holder.join().expect("unlocked");
    let growth = during.saturating_sub(before);
    eprintln!(
        "RSS {:.1} MiB before the lock, {:.1} MiB after 60 s of it: {:.2} MiB more",
        before as f64 / 1048576.0,
        during as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );
    assert!(growth < 10 << 20, "RSS grew by {growth} bytes");
    std::thread::sleep(Duration::from_secs(3));
    let log = m.terminate();
    let summary = RunSummary::from_log(&log);
    let stored = stored_ticks(&db);
    eprintln!("{summary:?}, {stored} stored");
    assert!(
        log.contains("database is locked; keeping it to retry"),
        "{log}"
    );
    assert!(log.contains("database writes work again"), "{log}");
    // Every tick taken is stored, or counted lost (the log says so when any is).
    assert_eq!(summary.written, stored, "{log}");
    assert_eq!(summary.ticks, summary.written + summary.lost, "{log}");
    assert!(summary.ticks >= 600, "{summary:?}");
}

#[test]
fn sigterm_during_a_lock_ends_within_10_s_and_the_next_start_writes_what_was_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = start(&db);
    let (release, holder) = hold_lock(&db);
    std::thread::sleep(Duration::from_secs(8));
    let asked = Instant::now();
    let log = m.terminate();
    let took = asked.elapsed();
    let summary = RunSummary::from_log(&log);
    eprintln!(
        "stopped {:.2} s after SIGTERM: {summary:?}",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "{took:?}: {log}");
    assert!(summary.kept >= 70, "8 s of ticks at 10 Hz are kept: {log}");
    assert_eq!(summary.written + summary.kept, summary.ticks, "{log}");
    release.send(()).expect("release");
    holder.join().expect("unlocked");

    let next = Monitor::start(
        SETMOV,
        &db,
        &[
            "--interval",
            "100ms",
            "--no-ebpf",
            "--no-libvirt",
            "--count",
            "3",
        ],
    )
    .wait();
    assert!(
        next.contains(&format!(
            "wrote {} ticks kept by an earlier run",
            summary.kept
        )),
        "{next}"
    );
    assert_eq!(stored_ticks(&db), summary.ticks + 3);
}

#[test]
fn a_second_sigterm_during_a_lock_stops_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = start(&db);
    let (release, holder) = hold_lock(&db);
    std::thread::sleep(Duration::from_secs(2));
    m.send("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let log = m.terminate();
    let took = asked.elapsed();
    release.send(()).expect("release");
    holder.join().expect("unlocked");
    let summary = RunSummary::from_log(&log);
    eprintln!(
        "stopped {:.2} s after the second SIGTERM: {summary:?}",
        took.as_secs_f64()
    );
    assert!(log.contains("SIGTERM again: stopping at once"), "{log}");
    assert!(took < Duration::from_secs(2), "{took:?}: {log}");
    assert_eq!(summary.written + summary.kept, summary.ticks, "{log}");
    assert_eq!(stored_ticks(&db), summary.written);
}
