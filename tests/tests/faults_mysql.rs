//! The MySQL store while the real MariaDB server (see tests/mysql_store.rs) is killed with
//! SIGKILL and stays down 30 s (issue 14, point 12). Without the server this test skips loudly
//! (and fails under SETMOV_REQUIRE_ALL=1). It prints its figures (a `FAULT ...` line).

use std::time::{Duration, Instant};

use setmov_tests::faults::{FaultFigures, log_lines, quarantined_files};
use setmov_tests::monitor::RunSummary;
use setmov_tests::mysql_run::{
    Prepared, Setmov, count, db_args, host_rows, prepared, real_host_ip,
};
use setmov_tests::wait_until;

const SETMOV: Setmov = Setmov(env!("CARGO_BIN_EXE_setmov-cli"));

/// The ticks taken while the server is dead wait in the spool; once it is back (after InnoDB's
/// crash recovery) they are replayed: every tick is stored once, at its own time, and the spool
/// is emptied. A tick the server committed just before it died but never acknowledged is
/// replayed onto its own row, not added again.
#[test]
fn mariadb_killed_for_30_seconds_loses_and_duplicates_nothing() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "sigkill")
    else {
        return;
    };
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "500ms", "--no-libvirt", "--no-ebpf"],
    );
    let monitor = SETMOV.start_monitor(&url, &args);
    wait_until("4 stored ticks", || {
        count(&db, &name, "SELECT COUNT(*) FROM host_usage") >= 4
    });
    let killed = Instant::now();
    db.kill();
    std::thread::sleep(Duration::from_secs(30).saturating_sub(killed.elapsed()));
    db.start();
    let back = Instant::now();
    eprintln!(
        "MariaDB was dead for {:.1} s (up again, crash recovery included)",
        killed.elapsed().as_secs_f64()
    );
    // Each attempt during the outage logs "replayed 0 spooled ticks"; this is the one that
    // got through.
    let answers = monitor.wait_for_log("answers again", Duration::from_secs(60));
    wait_until("the spool emptied", || {
        std::fs::read_dir(spool.path()).expect("spool").count() == 0
    });
    let recovery = back.elapsed();
    // A tick or two written straight to the server again.
    std::thread::sleep(Duration::from_secs(1));
    let log = monitor.terminate();

    let summary = RunSummary::from_log(&log);
    let host = real_host_ip(&db, &name);
    let (rows, gap_ms) = host_rows(&db, &name, &host);
    let times = count(
        &db,
        &name,
        &format!("SELECT COUNT(DISTINCT time) FROM host_usage WHERE host_ip = '{host}'"),
    );
    FaultFigures {
        fault: "MariaDB SIGKILL, dead 30 s",
        taken: summary.ticks,
        stored: rows,
        lost: summary.lost,
        largest_gap_s: gap_ms / 1000.0,
        recovery: Some(recovery),
    }
    .print();
    eprintln!(
        "{}",
        log_lines(
            &log,
            &["spool", "replay", "unavailable", "answers", "work again"]
        )
    );
    assert!(log.contains("ticks go to the spool"), "{log}");
    assert!(answers.is_some(), "{log}");
    assert_eq!((summary.written, summary.lost), (summary.ticks, 0), "{log}");
    // Once each: none lost, none written twice at another time.
    assert_eq!((rows, times), (summary.ticks, summary.ticks), "{log}");
    assert!(gap_ms <= 1_000.0, "a tick is missing: gap of {gap_ms} ms");
}

/// Ticks the server refuses for what they hold (a trigger another client added raises SQLSTATE
/// 22003 for every tick stamped in the `.5xx` of a second: about one in ten at 10 Hz) are set
/// aside in the quarantine beside the spool with the error, counted, and never hold up the ticks
/// after them. Then the host row is deleted behind the monitor's back (foreign key checks off):
/// the next tick writes it again rather than being refused for good.
#[test]
fn ticks_the_server_refuses_are_quarantined_and_a_deleted_host_row_is_written_again() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "refusals")
    else {
        return;
    };
    let quarantine = setmov::store::quarantine::beside(spool.path());
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "100ms", "--no-libvirt", "--no-ebpf"],
    );
    let monitor = SETMOV.start_monitor(&url, &args);
    let stored = || count(&db, &name, "SELECT COUNT(*) FROM host_usage");
    wait_until("5 stored ticks", || stored() >= 5);
    db.query(
        &name,
        "DELIMITER //
         CREATE TRIGGER refuse_some BEFORE INSERT ON host_usage FOR EACH ROW
         IF MICROSECOND(NEW.time) DIV 100000 = 5 THEN
             SIGNAL SQLSTATE '22003' SET MESSAGE_TEXT = 'refused by the fault test';
         END IF //
         DELIMITER ;",
    );
    std::thread::sleep(Duration::from_secs(3));
    db.query(&name, "DROP TRIGGER refuse_some");
    let before_delete = stored();
    db.query(
        &name,
        "SET FOREIGN_KEY_CHECKS = 0; DELETE FROM hosts; SET FOREIGN_KEY_CHECKS = 1;",
    );
    wait_until("ticks stored after the host row was deleted", || {
        stored() >= before_delete + 5
    });
    let log = monitor.terminate();

    let summary = RunSummary::from_log(&log);
    let host = real_host_ip(&db, &name);
    let (rows, gap_ms) = host_rows(&db, &name, &host);
    let files: Vec<String> = quarantined_files(&quarantine);
    let _ = std::fs::remove_dir_all(&quarantine);
    FaultFigures {
        fault: "ticks refused by MariaDB for 3 s (a trigger), then the host row deleted",
        taken: summary.ticks,
        stored: rows,
        lost: summary.lost,
        largest_gap_s: gap_ms / 1000.0,
        recovery: None,
    }
    .print();
    eprintln!("{} quarantined, {} files", summary.quarantined, files.len());
    eprintln!(
        "{}",
        log_lines(&log, &["refused", "set aside", "again", "unavailable"])
    );
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
    assert_eq!(rows, summary.written, "{log}");
    assert_eq!(count(&db, &name, "SELECT COUNT(*) FROM hosts"), 1);
    assert!(
        !log.contains("ticks go to the spool"),
        "a refusal is not an outage: {log}"
    );
}
