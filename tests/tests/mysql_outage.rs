//! The MySQL store through outages of the real MariaDB server (see tests/mysql_store.rs),
//! stopped by its PID: with and without a monitor restart, and ended by SIGTERM; a spool
//! replayed after newer ticks of another host; a tick replayed over its stored row.
//! Without the server these tests skip loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use setmov::store::Store;
use setmov::store::mysql::MysqlStore;
use setmov::store::rows::TickRows;
use setmov::vm::stats::DomainState;
use setmov_tests::mariadb::MariaDb;
use setmov_tests::monitor::RunSummary;
use setmov_tests::mysql_run::{
    Prepared, Setmov, count, db_args, host_rows, prepared, real_host_ip, store_config,
};
use setmov_tests::ticks::{HOST_IP, host_tick, vm_sample};
use setmov_tests::{runtime, wait_until};

const SETMOV: Setmov = Setmov(env!("CARGO_BIN_EXE_setmov-cli"));

#[test]
fn a_20_second_outage_loses_and_duplicates_nothing() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "outage")
    else {
        return;
    };
    const TICKS: u64 = 70;
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "500ms", "--count", "70", "--no-libvirt"],
    );
    let m = SETMOV.start_monitor(&url, &args);
    std::thread::sleep(Duration::from_secs(4));
    let stopped = Instant::now();
    db.stop();
    std::thread::sleep(Duration::from_secs(20));
    db.start();
    eprintln!(
        "MariaDB was down for {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    let log = m.wait();
    assert!(log.contains("ticks go to the spool"), "{log}");
    assert!(log.contains("replayed"), "{log}");

    let (rows, gap_ms) = host_rows(&db, &name, &real_host_ip(&db, &name));
    eprintln!("{rows} ticks stored, largest gap {gap_ms} ms");
    // Every tick the monitor took is stored once: none lost, none written twice at another
    // time (a replay must land on the row it was first meant for).
    assert_eq!(
        (RunSummary::from_log(&log).ticks, rows),
        (TICKS, TICKS),
        "{log}"
    );
    assert!(gap_ms <= 1_000.0, "a tick is missing: gap of {gap_ms} ms");
    assert!(
        std::fs::read_dir(spool.path()).expect("spool").count() == 0,
        "the spool was not emptied"
    );
}

#[test]
fn a_monitor_restarted_during_an_outage_replays_its_spool() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "restart")
    else {
        return;
    };
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "500ms", "--count", "20", "--no-libvirt"],
    );
    // The first monitor ends while the server is down: its last ticks stay in the spool.
    let first = SETMOV.start_monitor(&url, &args);
    std::thread::sleep(Duration::from_secs(3));
    db.stop();
    let first_log = first.wait();
    let waiting = std::fs::read_dir(spool.path()).expect("spool").count();
    assert!(waiting > 0, "nothing was spooled");
    // A second one starts during the outage, then the server comes back.
    let second = SETMOV.start_monitor(&url, &args);
    std::thread::sleep(Duration::from_secs(4));
    db.start();
    let log = second.wait();
    assert!(log.contains("wait in the spool"), "{log}");

    let (rows, _) = host_rows(&db, &name, &real_host_ip(&db, &name));
    eprintln!("{waiting} ticks were spooled at the restart; {rows} stored");
    let taken = RunSummary::from_log(&first_log).ticks + RunSummary::from_log(&log).ticks;
    assert_eq!((taken, rows), (40, 40), "{first_log}\n{log}");
    assert_eq!(std::fs::read_dir(spool.path()).expect("spool").count(), 0);
}

/// The times of the ticks in `database`'s T2, as the spool names them (`YYYY-MM-DD hh:mm:ss.mmm`).
fn stored_tick_times(db: &MariaDb, database: &str) -> BTreeSet<String> {
    db.query(
        database,
        "SELECT LEFT(DATE_FORMAT(time, '%Y-%m-%d %H:%i:%s.%f'), 23) FROM host_usage",
    )
    .into_iter()
    .collect()
}

/// The times of the ticks waiting in `spool`.
fn spooled_tick_times(spool: &Path) -> BTreeSet<String> {
    std::fs::read_dir(spool)
        .expect("spool")
        .map(|entry| entry.expect("spool entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read(&path).expect("spooled tick");
            let rows: TickRows =
                serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            rows.time
        })
        .collect()
}

/// What `systemctl stop` does to a monitor whose server is down: every tick it took is in the
/// database or in the spool, and the next run replays the spool.
#[test]
fn sigterm_during_an_outage_keeps_every_tick_in_the_database_or_the_spool() {
    let Some(set_up) = prepared(SETMOV, "sigterm") else {
        return;
    };
    let run = |more: &[&str]| {
        let mut args = vec!["--interval", "200ms", "--no-libvirt", "--no-ebpf"];
        args.extend(more);
        db_args(&set_up.db, set_up.spool.path(), &args)
    };
    let monitor = SETMOV.start_monitor(&set_up.url, &run(&[]));
    wait_until("3 stored ticks", || {
        count(&set_up.db, &set_up.name, "SELECT COUNT(*) FROM host_usage") >= 3
    });
    set_up.db.stop();
    wait_until("3 spooled ticks", || {
        spooled_tick_times(set_up.spool.path()).len() >= 3
    });
    let log = monitor.terminate();
    set_up.db.start();
    let summary = RunSummary::from_log(&log);
    assert_eq!((summary.written, summary.lost), (summary.ticks, 0), "{log}");
    let (stored, spooled) = (
        stored_tick_times(&set_up.db, &set_up.name),
        spooled_tick_times(set_up.spool.path()),
    );
    eprintln!(
        "{} ticks: {} stored, {} spooled",
        summary.ticks,
        stored.len(),
        spooled.len()
    );
    assert!(
        log.contains(&format!("{} ticks wait in the spool", spooled.len())),
        "{log}"
    );
    let kept = stored.union(&spooled).count() as u64;
    assert_eq!(
        kept, summary.ticks,
        "stored {stored:?}, spooled {spooled:?}"
    );

    let log = SETMOV
        .start_monitor(&set_up.url, &run(&["--count", "2"]))
        .wait();
    assert!(log.contains("wait in the spool"), "{log}");
    let (rows, _) = host_rows(
        &set_up.db,
        &set_up.name,
        &real_host_ip(&set_up.db, &set_up.name),
    );
    assert_eq!(
        rows,
        summary.ticks + 2,
        "each tick once, the replayed ones included"
    );
    assert!(spooled_tick_times(set_up.spool.path()).is_empty());
}

/// Host A's monitor spools two ticks during an outage and stops; meanwhile its VM moves to host
/// B, whose monitor writes newer ticks of it once the server is back. A's monitor, started
/// again, replays its spool before its own first tick (libvirt not answering yet): every row
/// lands in order, A's VM count is that of its last replayed tick, and the VM's T3 row keeps
/// what B wrote last: on B, paused, last seen running at B's first tick. When the VM comes back
/// to A, A's next tick says so.
#[test]
fn a_spool_replayed_late_does_not_move_hosts_and_vms_back() {
    let Some(set_up) = prepared(SETMOV, "late_replay") else {
        return;
    };
    let spool_b = tempfile::tempdir().expect("tempdir");
    const B: &str = "192.0.2.10";
    const VM: &str = "3f9a7c1e-0000-4000-8000-0000000000d1";
    // Host `host`'s tick at `secs` s with `vm_count` VMs running, the moving VM in `state` (or
    // not on the host); both figures read `secs`.
    let tick = |host: &str, seq: u64, secs: u32, vm_count: Option<u32>, state| {
        let mut tick = host_tick(seq, time::Duration::seconds(secs.into()), 1.0, secs.into());
        tick.host.ip = host.into();
        tick.vm_count = vm_count;
        tick.vms = Option::into_iter(state)
            .map(|state| vm_sample(VM, "desk-moving", state, 1.0, secs.into()))
            .collect();
        tick
    };
    let (running, paused) = (Some(DomainState::Running), Some(DomainState::Paused));
    let query = |sql: &str| set_up.db.query(&set_up.name, sql);
    let vm_row = || query("SELECT host_ip, state, DATE_FORMAT(lct, '%i:%s') FROM vms");
    let a = store_config(&set_up.db, &set_up.url, set_up.spool.path());
    let b = store_config(&set_up.db, &set_up.url, spool_b.path());
    runtime().block_on(async {
        let mut first = MysqlStore::open(a.clone()).await.expect("open");
        first
            .write_tick(&tick(HOST_IP, 1, 10, Some(1), running))
            .await
            .expect("write");
        set_up.db.stop();
        for (seq, secs, vm_count) in [(2, 11, 2), (3, 12, 3)] {
            first
                .write_tick(&tick(HOST_IP, seq, secs, Some(vm_count), running))
                .await
                .expect("spool");
        }
        drop(first);
        assert_eq!(spooled_tick_times(set_up.spool.path()).len(), 2);
        set_up.db.start();
        let mut second = MysqlStore::open(b).await.expect("open");
        second
            .write_tick(&tick(B, 1, 13, Some(2), running))
            .await
            .expect("write");
        second
            .write_tick(&tick(B, 2, 14, Some(1), paused))
            .await
            .expect("write");
        second.close().await;
        let mut again = MysqlStore::open(a).await.expect("open");
        again
            .write_tick(&tick(HOST_IP, 4, 15, None, None))
            .await
            .expect("replay and write");
        assert!(spooled_tick_times(set_up.spool.path()).is_empty());
        assert_eq!(
            query("SELECT host_ip, vmc FROM hosts ORDER BY host_ip"),
            [format!("{B}\t1"), format!("{HOST_IP}\t3")]
        );
        assert_eq!(vm_row(), [format!("{B}\tpaused\t00:13")]);
        // The VM comes back to A: A's next tick moves it, although A wrote the same row
        // before (in the replay, where it was late).
        again
            .write_tick(&tick(HOST_IP, 5, 16, Some(1), running))
            .await
            .expect("write");
        again.close().await;
    });
    assert_eq!(vm_row(), [format!("{HOST_IP}\trunning\t00:16")]);
    let host_ticks =
        query("SELECT host_ip, DATE_FORMAT(time, '%i:%s'), cpu_pct FROM host_usage ORDER BY time");
    let expected: Vec<String> = [
        (HOST_IP, 10),
        (HOST_IP, 11),
        (HOST_IP, 12),
        (B, 13),
        (B, 14),
        (HOST_IP, 15),
        (HOST_IP, 16),
    ]
    .into_iter()
    .map(|(host, secs)| format!("{host}\t00:{secs}\t{secs}"))
    .collect();
    assert_eq!(host_ticks, expected);
    assert_eq!(
        query("SELECT DATE_FORMAT(time, '%i:%s'), state, cpu_pct FROM vm_usage ORDER BY time"),
        [
            "00:10\trunning\t10",
            "00:11\trunning\t11",
            "00:12\trunning\t12",
            "00:13\trunning\t13",
            "00:14\tpaused\t14",
            "00:16\trunning\t16"
        ]
    );
}

/// A tick written again (a replay after an outage, a restarted monitor's spool) never changes
/// the row first written for it, even when what it carries differs.
#[test]
fn a_replayed_tick_never_changes_a_stored_row() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "replay")
    else {
        return;
    };
    let config = store_config(&db, &url, spool.path());
    let runtime = runtime();
    runtime.block_on(async {
        let mut store = MysqlStore::open(config.clone()).await.expect("open");
        store
            .write_tick(&host_tick(1, time::Duration::seconds(20), 20.0, 10.0))
            .await
            .expect("first write");
        store
            .write_tick(&host_tick(2, time::Duration::seconds(40), 20.0, 20.0))
            .await
            .expect("write");
        store.close().await;
        // Another monitor (a restart) replays tick 1 with other figures.
        let mut store = MysqlStore::open(config).await.expect("open");
        store
            .write_tick(&host_tick(1, time::Duration::seconds(20), 20.0, 90.0))
            .await
            .expect("replay");
        store.close().await;
    });
    let rows = db.query(
        &name,
        "SELECT DATE_FORMAT(time, '%H:%i:%s'), cpu_pct FROM host_usage ORDER BY time",
    );
    assert_eq!(rows, ["00:00:20\t10", "00:00:40\t20"]);
}
