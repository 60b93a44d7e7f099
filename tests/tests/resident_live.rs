//! A running monitor gives back the start-up pages of its code and read-only data a few
//! seconds into sampling (`setmov-user/src/resident.rs`): the file-backed part of its resident
//! set (the kernel's `RssFile`) falls, and the ticks go on, mapping back what they run.

use std::path::Path;
use std::time::Duration;

use setmov_tests::monitor::Monitor;
use setmov_tests::wait_until;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

fn stored_ticks(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| conn.query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// `RssFile` of process `pid`, KiB.
fn rss_file_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssFile in {status}"))
}

#[test]
fn start_up_pages_are_given_back_and_the_ticks_go_on() {
    let work = tempfile::tempdir().expect("tempdir");
    let db = work.path().join("setmov.db");
    let monitor = Monitor::start(
        SETMOV,
        &db,
        &["--interval", "200ms", "--no-ebpf", "--no-libvirt"],
    );
    // The pages are given back 3 s after sampling starts.
    wait_until("2 stored ticks", || stored_ticks(&db) >= 2);
    let during_start_up = rss_file_kib(monitor.pid());
    std::thread::sleep(Duration::from_secs(5));
    let ticks = stored_ticks(&db);
    let after = rss_file_kib(monitor.pid());
    wait_until("10 more stored ticks", || stored_ticks(&db) >= ticks + 10);
    let log = monitor.stop();
    eprintln!("RssFile {during_start_up} KiB during start-up, {after} KiB 5 s later");
    assert!(
        after * 4 < during_start_up * 3,
        "RssFile {during_start_up} KiB during start-up, {after} KiB 5 s later: not given back \
         ({log})"
    );
}
