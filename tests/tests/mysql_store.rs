//! The MySQL store against a real MariaDB server, started by `cargo xtask mariadb up` (or
//! `cargo xtask test`): the schema and a schema 1 database migrated with its rows, exact row
//! counts, outages with the server stopped by its PID (with and without a monitor restart, and
//! ended by SIGTERM), a spool replayed after newer ticks of another host, two hosts in one
//! database, rollup values, and bad input.
//! Without the server these tests skip loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use setmov::store::Store;
use setmov::store::mysql::{MysqlConfig, MysqlStore};
use setmov::store::rollup::Retention;
use setmov::store::rows::{TickRows, tick_rows};
use setmov::vm::stats::DomainState;
use setmov_tests::guests::{Guest, Workload};
use setmov_tests::mariadb::MariaDb;
use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::rollups::check_rollup_values;
use setmov_tests::ticks::{HOST_IP, full_tick, host_tick, instant, vm_sample};
use setmov_tests::{fixture, skip, wait_until};
use time::OffsetDateTime;

/// The tests stop and start the one server: one at a time.
static SERVER: Mutex<()> = Mutex::new(());

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

fn server() -> Option<MariaDb> {
    match MariaDb::from_manifest() {
        Ok(db) => Some(db),
        Err(reason) => {
            skip(&reason);
            None
        }
    }
}

/// `--database-password-file F --spool-dir D` and `more`.
fn db_args(db: &MariaDb, spool: &Path, more: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--database-password-file".to_owned(),
        db.password_file().display().to_string(),
        "--spool-dir".to_owned(),
        spool.display().to_string(),
    ];
    args.extend(more.iter().map(|s| (*s).to_owned()));
    args
}

/// What most tests start from: the server locked for the test, a fresh database `name` with
/// the schema, its URL, and a spool folder.
struct Prepared {
    _server: std::sync::MutexGuard<'static, ()>,
    db: MariaDb,
    name: String,
    url: String,
    spool: tempfile::TempDir,
}

/// `None` when the server is not there (the test then skips).
fn prepared(name: &str) -> Option<Prepared> {
    let prepared = empty_database(name)?;
    migrate(&prepared.db, &prepared.url);
    Some(prepared)
}

/// Like [`prepared`], without the schema.
fn empty_database(name: &str) -> Option<Prepared> {
    let server_lock = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let db = server()?;
    let name = db.fresh_database(name);
    let url = db.url(&name);
    Some(Prepared {
        _server: server_lock,
        db,
        name,
        url,
        spool: tempfile::tempdir().expect("tempdir"),
    })
}

fn setmov(args: &[&str]) -> (bool, String) {
    let out = setmov_tests::setmov_command(SETMOV)
        .args(args)
        .output()
        .expect("setmov runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn migrate(db: &MariaDb, url: &str) {
    let password = db.password_file().display().to_string();
    let (ok, log) = setmov(&[
        "migrate",
        "--database",
        url,
        "--database-password-file",
        &password,
    ]);
    assert!(ok, "setmov migrate failed: {log}");
}

fn count(db: &MariaDb, database: &str, sql: &str) -> u64 {
    let rows = db.query(database, sql);
    rows.first()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sql} gave {rows:?}"))
}

fn start_monitor(url: &str, args: &[String]) -> Monitor {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Monitor::start(SETMOV, Path::new(url), &args)
}

#[test]
fn the_schema_has_the_papers_four_tables_and_their_relations() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(db) = server() else { return };
    let name = db.fresh_database("schema");
    migrate(&db, &db.url(&name));
    // Applying it again changes nothing.
    migrate(&db, &db.url(&name));

    let tables = db.query(
        &name,
        "SELECT table_name, engine, table_collation FROM information_schema.tables
         WHERE table_schema = DATABASE() ORDER BY table_name",
    );
    for table in [
        "hosts",
        "host_usage",
        "vms",
        "vm_usage",
        "vm_disk_usage",
        "vm_ebpf_usage",
    ] {
        let row = tables
            .iter()
            .find(|r| r.split('\t').next() == Some(table))
            .unwrap_or_else(|| panic!("no table {table}: {tables:?}"));
        assert!(row.contains("InnoDB") && row.contains("utf8mb4"), "{row}");
    }
    let relations = db.query(
        &name,
        "SELECT table_name, referenced_table_name FROM information_schema.referential_constraints
         WHERE constraint_schema = DATABASE() ORDER BY table_name, referenced_table_name",
    );
    for relation in ["host_usage\thosts", "vms\thosts", "vm_usage\tvms"] {
        assert!(
            relations.iter().any(|r| r == relation),
            "no foreign key {relation}: {relations:?}"
        );
    }
    let mut keys = db.query(
        &name,
        "SELECT table_name, GROUP_CONCAT(column_name ORDER BY ordinal_position)
         FROM information_schema.key_column_usage
         WHERE table_schema = DATABASE() AND constraint_name = 'PRIMARY'
           AND table_name IN ('hosts', 'host_usage', 'vms', 'vm_usage')
         GROUP BY table_name",
    );
    keys.sort();
    assert_eq!(
        keys,
        [
            "host_usage\thost_ip,time",
            "hosts\thost_ip",
            "vm_usage\tuuid,time",
            "vms\tuuid"
        ]
    );
}

#[test]
fn a_30_tick_run_writes_30_host_rows_and_30_per_vm() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(db) = server() else { return };
    let Some(guest) = Guest::start("mysql", &Workload::default())
        .map_err(|reason| skip(&reason))
        .ok()
    else {
        return;
    };
    guest
        .wait_for("SETMOV: ready", Duration::from_secs(90))
        .expect("guest boots");
    let name = db.fresh_database("thirty");
    let url = db.url(&name);
    migrate(&db, &url);
    let spool = tempfile::tempdir().expect("tempdir");
    let args = db_args(&db, spool.path(), &["--interval", "200ms", "--count", "30"]);
    start_monitor(&url, &args).wait();

    assert_eq!(count(&db, &name, "SELECT COUNT(*) FROM host_usage"), 30);
    let per_vm = db.query(
        &name,
        "SELECT v.name, COUNT(u.time) FROM vms v LEFT JOIN vm_usage u USING (uuid)
         WHERE v.state = 'running' GROUP BY v.uuid, v.name",
    );
    assert!(
        per_vm.iter().any(|r| r.starts_with(guest.name())),
        "{per_vm:?}"
    );
    for row in &per_vm {
        assert!(
            row.ends_with("\t30"),
            "a running VM without 30 rows: {per_vm:?}"
        );
    }
    assert_eq!(
        count(
            &db,
            &name,
            "SELECT COUNT(*) FROM vm_usage u JOIN vms v USING (uuid) JOIN hosts h USING (host_ip)"
        ),
        30 * per_vm.len() as u64,
        "every VM row is attached to its host"
    );
}

/// T2 rows: their count (one per tick: the key is the host and the time) and the largest gap
/// between two consecutive ticks in ms.
fn host_rows(db: &MariaDb, name: &str, host_ip: &str) -> (u64, f64) {
    let rows = count(
        db,
        name,
        &format!("SELECT COUNT(*) FROM host_usage WHERE host_ip = '{host_ip}'"),
    );
    let gap = db.query(
        name,
        &format!(
            "SELECT COALESCE(MAX(g), 0) FROM (SELECT TIMESTAMPDIFF(MICROSECOND,
                LAG(time) OVER (ORDER BY time), time) / 1000 AS g
             FROM host_usage WHERE host_ip = '{host_ip}') t"
        ),
    );
    let gap = gap
        .first()
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or(f64::MAX);
    (rows, gap)
}

fn real_host_ip(db: &MariaDb, name: &str) -> String {
    db.query(name, "SELECT host_ip FROM hosts LIMIT 1")
        .first()
        .cloned()
        .expect("a host row")
}

#[test]
fn a_20_second_outage_loses_and_duplicates_nothing() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared("outage")
    else {
        return;
    };
    const TICKS: u64 = 70;
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "500ms", "--count", "70", "--no-libvirt"],
    );
    let m = start_monitor(&url, &args);
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
    }) = prepared("restart")
    else {
        return;
    };
    let args = db_args(
        &db,
        spool.path(),
        &["--interval", "500ms", "--count", "20", "--no-libvirt"],
    );
    // The first monitor ends while the server is down: its last ticks stay in the spool.
    let first = start_monitor(&url, &args);
    std::thread::sleep(Duration::from_secs(3));
    db.stop();
    let first_log = first.wait();
    let waiting = std::fs::read_dir(spool.path()).expect("spool").count();
    assert!(waiting > 0, "nothing was spooled");
    // A second one starts during the outage, then the server comes back.
    let second = start_monitor(&url, &args);
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
    let Some(set_up) = prepared("sigterm") else {
        return;
    };
    let run = |more: &[&str]| {
        let mut args = vec!["--interval", "200ms", "--no-libvirt", "--no-ebpf"];
        args.extend(more);
        db_args(&set_up.db, set_up.spool.path(), &args)
    };
    let monitor = start_monitor(&set_up.url, &run(&[]));
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

    let log = start_monitor(&set_up.url, &run(&["--count", "2"])).wait();
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
    let Some(set_up) = prepared("late_replay") else {
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

#[test]
fn two_hosts_write_into_one_database_at_once() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(db) = server() else { return };
    let name = db.fresh_database("fleet");
    let url = db.url(&name);
    migrate(&db, &url);
    let (spool_a, spool_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let live = db_args(
        &db,
        spool_a.path(),
        &["--interval", "200ms", "--count", "25"],
    );
    let replayed = fixture("golden/t0");
    let replayed = replayed.display().to_string();
    let captured = db_args(
        &db,
        spool_b.path(),
        &[
            "--interval",
            "200ms",
            "--count",
            "25",
            "--no-libvirt",
            "--no-ebpf",
            "--proc-root",
            &replayed,
            "--host-ip",
            "198.51.100.7",
            "--host-name",
            "captured",
        ],
    );
    let a = start_monitor(&url, &live);
    let b = start_monitor(&url, &captured);
    let taken = RunSummary::from_log(&a.wait()).ticks + RunSummary::from_log(&b.wait()).ticks;
    assert_eq!(taken, 50, "each monitor took its 25 ticks");

    let hosts = db.query(
        &name,
        "SELECT host_ip, host_name FROM hosts ORDER BY host_ip",
    );
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    assert!(hosts.iter().any(|h| h == "198.51.100.7\tcaptured"));
    for host in &hosts {
        let ip = host.split('\t').next().expect("ip");
        let (rows, _) = host_rows(&db, &name, ip);
        assert_eq!(rows, 25, "host {ip}: each tick it took, once");
    }
    // The captured host has no VMs; every VM row belongs to the live host.
    assert_eq!(
        count(
            &db,
            &name,
            "SELECT COUNT(*) FROM vms WHERE host_ip = '198.51.100.7'"
        ),
        0
    );
}

mod embedded {
    refinery::embed_migrations!("../migrations/mysql");
}

/// Applies the migrations up to schema `version` to the database at `url`, through refinery
/// as `setmov migrate` applies them.
async fn migrate_to(db: &MariaDb, url: &str, version: i32) {
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url).expect("URL"))
        .pass(Some(db.password()));
    let mut pool = mysql_async::Pool::new(opts);
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut pool)
        .await
        .unwrap_or_else(|e| panic!("schema {version}: {e}"));
    pool.disconnect().await.expect("disconnect");
}

/// `CHECKSUM TABLE` of every table of `database` but refinery's: what they hold, in one line
/// each.
fn table_checksums(db: &MariaDb, database: &str) -> Vec<String> {
    let tables = db.query(
        database,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()
         AND table_name <> 'refinery_schema_history' ORDER BY table_name",
    );
    db.query(database, &format!("CHECKSUM TABLE {}", tables.join(", ")))
}

/// A database of schema 1 with the rows the setmov of that schema wrote (the writer's rows of
/// full ticks: schema 2 only added the rollup tables), then `setmov migrate`: every table
/// holds the same rows, the schema is the newest, and the old rows roll up.
#[test]
fn a_schema_1_database_keeps_its_rows_through_setmov_migrate() {
    let Some(set_up) = empty_database("schema_1") else {
        return;
    };
    let ticks: Vec<_> = (1..=3)
        .map(|n| full_tick(n, time::Duration::seconds(30 * n as i64)))
        .collect();
    runtime().block_on(async {
        migrate_to(&set_up.db, &set_up.url, 1).await;
        let mut store =
            MysqlStore::open(store_config(&set_up.db, &set_up.url, set_up.spool.path()))
                .await
                .expect("a schema 1 database is open to the writer");
        for tick in &ticks {
            store.write_tick(tick).await.expect("write");
        }
        store.close().await;
    });
    for table in &tick_rows(&ticks[0], "").tables {
        assert_eq!(
            count(
                &set_up.db,
                &set_up.name,
                &format!("SELECT COUNT(*) FROM {}", table.table)
            ),
            3 * table.rows.len() as u64,
            "{}",
            table.table
        );
    }
    let before = table_checksums(&set_up.db, &set_up.name);

    migrate(&set_up.db, &set_up.url);
    let latest = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(refinery::Migration::version)
        .max()
        .expect("migrations");
    assert_eq!(
        count(
            &set_up.db,
            &set_up.name,
            "SELECT MAX(version) FROM refinery_schema_history"
        ),
        latest as u64
    );
    let after = table_checksums(&set_up.db, &set_up.name);
    assert!(
        before.iter().all(|table| after.contains(table)),
        "a table changed: before {before:?}, after {after:?}"
    );

    runtime().block_on(async {
        let mut store =
            MysqlStore::open(store_config(&set_up.db, &set_up.url, set_up.spool.path()))
                .await
                .expect("open");
        store
            .maintain(
                HOST_IP,
                instant(time::Duration::minutes(3)),
                &Retention::default(),
            )
            .await
            .expect("roll up");
        store.close().await;
    });
    let minutes = set_up.db.query(
        &set_up.name,
        "SELECT DATE_FORMAT(time, '%H:%i'), samples, cpu_pct_avg FROM host_usage_1m ORDER BY time",
    );
    assert_eq!(minutes, ["00:00\t1\t45", "00:01\t2\t45"]);
}

#[test]
fn bad_settings_give_clear_errors_and_a_newer_schema_is_refused() {
    let Some(set_up) = empty_database("bad") else {
        return;
    };
    let Prepared { db, name, url, .. } = &set_up;
    let spool = set_up.spool.path().display().to_string();
    let password = db.password_file().display().to_string();
    let run = |url: &str, password_file: &str| {
        setmov(&[
            "run",
            "--count",
            "1",
            "--no-libvirt",
            "--no-ebpf",
            "--quiet",
            "--database",
            url,
            "--database-password-file",
            password_file,
            "--spool-dir",
            &spool,
        ])
    };

    // No schema yet.
    let (ok, log) = run(url, &password);
    assert!(
        !ok && log.contains("has no SETMOV schema") && log.contains("setmov migrate"),
        "{log}"
    );

    let wrong = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(wrong.path(), "not-the-password\n").expect("write");
    let (ok, log) = run(url, &wrong.path().display().to_string());
    assert!(!ok && log.contains("Access denied"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password was shown: {log}"
    );

    let (ok, log) = run(&url.replace("127.0.0.1", "no-such-host.invalid"), &password);
    assert!(!ok && log.contains("no-such-host.invalid"), "{log}");

    // A password in the URL is used but never shown.
    let secret = db.password();
    let inline = url.replace("setmov@", &format!("setmov:{secret}@"));
    let (ok, log) = setmov(&["migrate", "--database", &inline]);
    assert!(ok, "{log}");
    assert!(!log.contains(&secret), "the password was shown: {log}");

    db.query(
        name,
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
    );
    let (ok, log) = run(url, &password);
    assert!(!ok && log.contains("newer than this setmov knows"), "{log}");
    let (ok, log) = setmov(&[
        "migrate",
        "--database",
        url,
        "--database-password-file",
        &password,
    ]);
    assert!(!ok && log.contains("newer than this setmov knows"), "{log}");
}

/// The store's settings for database `url`, spooling into `spool`.
fn store_config(db: &MariaDb, url: &str, spool: &Path) -> MysqlConfig {
    MysqlConfig {
        url: url.to_owned(),
        password: Some(db.password()),
        tls: false,
        ca_file: None,
        spool_dir: spool.to_owned(),
        spool_max_bytes: 1 << 20,
    }
}

/// For the store's calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn complete_minutes_are_rolled_up_and_old_ticks_purged_on_the_server() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared("rollup")
    else {
        return;
    };
    let config = store_config(&db, &url, spool.path());
    let runtime = runtime();
    runtime.block_on(async {
        let mut store = MysqlStore::open(config).await.expect("open");
        // Every 20 s from 00:00:00 to 00:02:40: minutes 0 and 1 are complete.
        for n in 0..9u64 {
            let tick = host_tick(
                n + 1,
                time::Duration::seconds(20 * n as i64),
                20.0,
                (n * 10) as f64,
            );
            store.write_tick(&tick).await.expect("write");
        }
        let keep = Retention {
            raw: None,
            minute: None,
            hour: None,
        };
        let now = instant(time::Duration::seconds(160));
        store.maintain(HOST_IP, now, &keep).await.expect("roll up");
        let purge = Retention {
            raw: Some(Duration::from_secs(3600)),
            ..keep
        };
        let later = now + time::Duration::days(1);
        store.maintain(HOST_IP, later, &purge).await.expect("purge");
        store.close().await;
    });
    let minutes = db.query(
        &name,
        "SELECT DATE_FORMAT(time, '%H:%i'), samples, cpu_pct_avg, cpu_pct_max, cpu_pct_p95
         FROM host_usage_1m ORDER BY time",
    );
    assert_eq!(
        minutes,
        [
            "00:00\t3\t10\t20\t20",
            "00:01\t3\t40\t50\t50",
            "00:02\t3\t70\t80\t80"
        ]
    );
    assert_eq!(
        count(&db, &name, "SELECT COUNT(*) FROM host_usage"),
        0,
        "raw rows purged"
    );
    assert_eq!(count(&db, &name, "SELECT COUNT(*) FROM host_usage_1h"), 1);
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
    }) = prepared("replay")
    else {
        return;
    };
    let config = MysqlConfig {
        url,
        password: Some(db.password()),
        tls: false,
        ca_file: None,
        spool_dir: spool.path().to_owned(),
        spool_max_bytes: 1 << 20,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
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

/// MySQL rounds a DATETIME(3) cast to whole seconds; SQLite's `strftime('%s')` floors. A tick
/// at 00:00:59.600 must stay in minute 00:00 (its bucket rolled up, its report time 59), as in
/// the embedded store.
#[test]
fn a_tick_in_a_minutes_last_half_second_stays_in_that_minute() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared("half_second")
    else {
        return;
    };
    let config = store_config(&db, &url, spool.path());
    let runtime = runtime();
    let times = runtime.block_on(async {
        let mut store = MysqlStore::open(config).await.expect("open");
        for (seq, millis, cpu) in [(1, 59_600, 10.0), (2, 61_000, 20.0), (3, 121_000, 30.0)] {
            let tick = host_tick(seq, time::Duration::milliseconds(millis), 20.0, cpu);
            store.write_tick(&tick).await.expect("write");
        }
        let now = instant(time::Duration::seconds(180));
        store
            .maintain(HOST_IP, now, &Retention::default())
            .await
            .expect("roll up");
        let query = setmov::analysis::ReportQuery {
            level: None,
            vms: false,
            host_ip: None,
            vm: None,
            since: OffsetDateTime::UNIX_EPOCH,
            until: now,
        };
        let samples = store.report_samples(&query).await.expect("report");
        store.close().await;
        samples.iter().map(|s| s.time).collect::<Vec<_>>()
    });
    assert_eq!(times, [59, 61, 121]);
    let minutes = db.query(
        &name,
        "SELECT DATE_FORMAT(time, '%H:%i'), samples, cpu_pct_avg FROM host_usage_1m ORDER BY time",
    );
    assert_eq!(minutes, ["00:00\t1\t10", "00:01\t1\t20", "00:02\t1\t30"]);
}

#[test]
fn minute_and_hour_rollups_of_uneven_ticks_hold_the_values_computed_by_hand() {
    let Some(Prepared {
        _server,
        db,
        url,
        spool,
        ..
    }) = prepared("uneven")
    else {
        return;
    };
    runtime().block_on(async {
        let config = store_config(&db, &url, spool.path());
        let mut store = MysqlStore::open(config).await.expect("open");
        check_rollup_values(&mut store).await;
        store.close().await;
    });
}

#[test]
fn tls_is_used_when_asked_and_the_server_is_verified() {
    let _server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(db) = server() else { return };
    let name = db.fresh_database("tls");
    // The TLS account: the server refuses it over a plain connection.
    let url = db.tls_url(&name);
    let password = db.password_file().display().to_string();
    let ca = db.ca_file().display().to_string();
    let (ok, log) = setmov(&[
        "migrate",
        "--database",
        &url,
        "--database-password-file",
        &password,
    ]);
    assert!(
        !ok && log.contains("Access denied"),
        "plain connection: {log}"
    );
    // TLS verified against the system's roots: the test CA is not among them.
    let (ok, log) = setmov(&[
        "migrate",
        "--database",
        &url,
        "--database-password-file",
        &password,
        "--database-tls",
    ]);
    // Refused for its certificate, not for any other reason.
    assert!(
        !ok && log.contains("invalid peer certificate: UnknownIssuer"),
        "a certificate of an unknown CA was accepted, or refused for another reason: {log}"
    );
    // Against the test CA: accepted, and the schema is there.
    let (ok, log) = setmov(&[
        "migrate",
        "--database",
        &url,
        "--database-password-file",
        &password,
        "--database-ca",
        &ca,
    ]);
    assert!(ok, "TLS with the test CA: {log}");
    assert!(count(&db, &name, "SELECT COUNT(*) FROM refinery_schema_history") >= 1);
}
