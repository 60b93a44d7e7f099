//! The SQLite store through faults (issue 14, point 12): the monitor killed with SIGKILL five
//! times while it writes 20 ticks a second, and the database's file system filled up and
//! freed while it runs. Each test prints its figures (a `FAULT ...` line).

use std::time::{Duration, Instant, SystemTime};

use setmov_tests::faults::{
    FaultFigures, SmallFs, integrity_check, largest_gap_s, log_lines, quarantined_files,
    stored_ticks,
};
use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::{skip, wait_until};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// Host ticks only: the store is what is under test.
fn host_only(interval: &str) -> [&str; 4] {
    ["--no-libvirt", "--no-ebpf", "--interval", interval]
}

/// Somewhere in 0.1-1 s, from the clock: each kill lands at another point of a write.
fn kill_delay() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(100 + u64::from(nanos % 900))
}

/// Five lives ended by SIGKILL at random-ish moments, then a sixth stopped by SIGINT. After
/// each kill the database is intact, holds every tick seen committed before the kill (the
/// WAL's transactions survive the crash), and the next monitor stores new ticks into it.
#[test]
fn five_sigkills_during_20_hz_writes_leave_an_intact_database_that_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let began = Instant::now();
    let mut before = 0;
    let mut per_life = Vec::new();
    for life in 1..=5 {
        let monitor = Monitor::start(SETMOV, &db, &host_only("50ms"));
        wait_until("new ticks stored after the restart", || {
            stored_ticks(&db) >= before + 3
        });
        std::thread::sleep(kill_delay());
        let seen = stored_ticks(&db);
        monitor.kill();
        let wal = std::fs::metadata(dir.path().join("setmov.db-wal")).map_or(0, |m| m.len());
        assert_eq!(integrity_check(&db), "ok", "after kill {life}");
        let after = stored_ticks(&db);
        assert!(
            after >= seen,
            "kill {life}: {seen} ticks were stored before the kill, {after} after it"
        );
        eprintln!(
            "life {life}: {} ticks stored, WAL {wal} bytes at the kill",
            after - before
        );
        per_life.push(after - before);
        before = after;
    }
    let monitor = Monitor::start(SETMOV, &db, &host_only("50ms"));
    wait_until("new ticks stored after the last restart", || {
        stored_ticks(&db) >= before + 3
    });
    let log = monitor.stop();
    let summary = RunSummary::from_log(&log);
    assert_eq!(integrity_check(&db), "ok", "after the last run");
    let total = stored_ticks(&db);
    FaultFigures {
        fault: "5 x SIGKILL of the monitor at 20 Hz (last life stopped by SIGINT)",
        taken: summary.ticks,
        stored: total - before,
        lost: summary.lost,
        largest_gap_s: largest_gap_s(&db),
        recovery: None,
    }
    .print();
    eprintln!(
        "ticks stored per killed life: {per_life:?}; {total} in all; {:.1} s",
        began.elapsed().as_secs_f64()
    );
    assert_eq!((summary.written, summary.lost), (summary.ticks, 0), "{log}");
    assert_eq!(
        total - before,
        summary.ticks,
        "the last life's ticks: {log}"
    );
}

/// The database's file system fills up (another file takes the last block) for 5 s, then is
/// freed: the writes fail meanwhile, the ticks wait in the writer's backlog, and once there is
/// room again every tick the run took is stored, at its own time.
#[test]
fn a_full_file_system_for_5_seconds_loses_no_tick() {
    let fs = match SmallFs::mount(16) {
        Ok(fs) => fs,
        Err(reason) => return skip(&reason),
    };
    let db = fs.path().join("setmov.db");
    let monitor = Monitor::start(SETMOV, &db, &host_only("100ms"));
    wait_until("5 stored ticks", || stored_ticks(&db) >= 5);
    let filled = Instant::now();
    let (filler, bytes) = fs.fill("filler");
    let failed = monitor.wait_for_log("cannot write tick", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(5).saturating_sub(filled.elapsed()));
    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    let again = monitor.wait_for_log("database writes work again", Duration::from_secs(10));
    let recovery = freed.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let log = monitor.terminate();
    let summary = RunSummary::from_log(&log);
    let stored = stored_ticks(&db);
    FaultFigures {
        fault: "database file system full for 5 s",
        taken: summary.ticks,
        stored,
        lost: summary.lost,
        largest_gap_s: largest_gap_s(&db),
        recovery: Some(recovery),
    }
    .print();
    eprintln!(
        "the filler took {bytes} bytes; the monitor's log:\n{}",
        log_lines(
            &log,
            &[
                "cannot write",
                "work again",
                "could not be written",
                "backlog"
            ]
        )
    );
    assert!(
        failed.is_some(),
        "no write failed while the disk was full: {log}"
    );
    assert!(again.is_some(), "writes did not work again: {log}");
    assert_eq!(integrity_check(&db), "ok");
    assert_eq!((summary.written, summary.lost), (summary.ticks, 0), "{log}");
    assert_eq!(stored, summary.ticks, "{log}");
    assert!(
        largest_gap_s(&db) < 0.5,
        "a tick is missing between the stored ones"
    );
}

/// Ticks the database refuses for what they hold (a trigger another process added refuses
/// every tick stamped in the `.5xx` of a second, about one in ten at 10 Hz) are set aside in
/// the quarantine folder with the error, counted, and never hold up the ticks after them.
#[test]
fn ticks_the_database_refuses_are_quarantined_and_the_next_ones_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let monitor = Monitor::start(SETMOV, &db, &host_only("100ms"));
    wait_until("5 stored ticks", || stored_ticks(&db) >= 5);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("timeout");
    conn.execute_batch(
        "CREATE TRIGGER refuse_some BEFORE INSERT ON host_usage WHEN NEW.time LIKE '%.5__Z'
         BEGIN SELECT RAISE(ABORT, 'refused by the fault test'); END;",
    )
    .expect("trigger");
    std::thread::sleep(Duration::from_secs(3));
    conn.execute_batch("DROP TRIGGER refuse_some")
        .expect("drop");
    let after_drop = stored_ticks(&db);
    wait_until("ticks stored after the trigger is gone", || {
        stored_ticks(&db) >= after_drop + 5
    });
    let log = monitor.stop();

    let summary = RunSummary::from_log(&log);
    let stored = stored_ticks(&db);
    let quarantine = dir.path().join("setmov.db.quarantine");
    let files: Vec<String> = quarantined_files(&quarantine);
    FaultFigures {
        fault: "ticks refused by the database for 3 s (a trigger)",
        taken: summary.ticks,
        stored,
        lost: summary.lost,
        largest_gap_s: largest_gap_s(&db),
        recovery: None,
    }
    .print();
    eprintln!(
        "{} quarantined, {} files in {}",
        summary.quarantined,
        files.len(),
        quarantine.display()
    );
    eprintln!("{}", log_lines(&log, &["refused", "quarantine"]));
    assert!(summary.quarantined >= 1, "{log}");
    assert_eq!(summary.quarantined, files.len() as u64, "{log}");
    assert!(
        files
            .iter()
            .all(|f| f.contains("refused by the fault test")),
        "{files:?}"
    );
    assert_eq!(
        (summary.written + summary.quarantined, summary.lost),
        (summary.ticks, 0),
        "{log}"
    );
    assert_eq!(stored, summary.written, "{log}");
    assert_eq!(integrity_check(&db), "ok");
}
