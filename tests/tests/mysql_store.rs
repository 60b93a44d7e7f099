//! The MySQL store against a real MariaDB server, started by `cargo xtask mariadb up` (or
//! `cargo xtask test`): the schema and a schema 1 database migrated with its rows, exact row
//! counts, two hosts in one database, and bad input (settings, a newer schema, TLS). Its
//! outages are in tests/mysql_outage.rs, its rollups in tests/mysql_rollups.rs; what they all
//! start from is in src/mysql_run.rs.
//! Without the server these tests skip loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::time::Duration;

use setmov::store::Store;
use setmov::store::TickRecord;
use setmov::store::mysql::MysqlStore;
use setmov::store::mysql::mysql_time;
use setmov::store::rollup::Retention;
use setmov::store::rows::{Rows, Value, tick_rows};
use setmov_tests::guests::{Guest, Workload};
use setmov_tests::mariadb::MariaDb;
use setmov_tests::monitor::RunSummary;
use setmov_tests::mysql_run::{
    Prepared, Setmov, count, db_args, empty_database, host_rows, locked_server, store_config,
};
use setmov_tests::ticks::{HOST_IP, full_tick, instant};
use setmov_tests::{fixture, runtime, skip};

const SETMOV: Setmov = Setmov(env!("CARGO_BIN_EXE_setmov-cli"));

/// The columns migrations/mysql/V3 to V6 added to T2, T4, the host's device tables and its
/// eBPF figures.
const ADDED_AFTER_SCHEMA_1: [&str; 10] = [
    "cpu_user_excl_guest_pct",
    "mem_used_bytes",
    "mem_noncache_pct",
    "mem_actual_less_usable_bytes",
    "cpu_vcpu_threads_pct",
    "mem_guest_cache_bytes",
    "in_host_total",
    "latency_collided",
    "latency_overflowed",
    "latency_unpaired",
];
/// The tables those migrations gave columns.
const ALTERED_AFTER_SCHEMA_1: [&str; 5] = [
    "host_usage",
    "vm_usage",
    "host_disk_usage",
    "host_net_usage",
    "host_ebpf_usage",
];

#[test]
fn the_schema_has_the_papers_four_tables_and_their_relations() {
    let Some((_server, db)) = locked_server() else {
        return;
    };
    let name = db.fresh_database("schema");
    SETMOV.migrate(&db, &db.url(&name));
    // Applying it again changes nothing.
    SETMOV.migrate(&db, &db.url(&name));

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
    let Some((_server, db)) = locked_server() else {
        return;
    };
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
    SETMOV.migrate(&db, &url);
    let spool = tempfile::tempdir().expect("tempdir");
    let args = db_args(&db, spool.path(), &["--interval", "200ms", "--count", "30"]);
    SETMOV.start_monitor(&url, &args).wait();

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

#[test]
fn two_hosts_write_into_one_database_at_once() {
    let Some((_server, db)) = locked_server() else {
        return;
    };
    let name = db.fresh_database("fleet");
    let url = db.url(&name);
    SETMOV.migrate(&db, &url);
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
    let a = SETMOV.start_monitor(&url, &live);
    let b = SETMOV.start_monitor(&url, &captured);
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

/// The rows of `ticks` as the setmov of schema 1 wrote them: T1, T3 and each data table in
/// the columns schema 1 has (schemas 3 and 4 added some), through plain INSERTs.
async fn write_as_schema_1(db: &MariaDb, url: &str, ticks: &[TickRecord]) {
    use mysql_async::prelude::Queryable as _;
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url).expect("URL"))
        .pass(Some(db.password()));
    let mut conn = mysql_async::Conn::new(opts).await.expect("connect");
    let value = |v: &Value| match v {
        Value::Null => mysql_async::Value::NULL,
        Value::Int(v) => mysql_async::Value::Int(*v),
        Value::Real(v) => mysql_async::Value::Double(*v),
        Value::Text(v) => mysql_async::Value::Bytes(v.as_bytes().to_vec()),
        Value::Blob(v) => mysql_async::Value::Bytes(v.clone()),
    };
    for tick in ticks {
        let rows = tick_rows(tick, &mysql_time(tick.time));
        let h = &rows.host;
        conn.exec_drop(
            "INSERT INTO hosts (host_ip, host_name, vmc, mac, cpus, memory_bytes)
             VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE vmc = VALUES(vmc)",
            (
                &h.host_ip,
                &h.host_name,
                h.vmc.unwrap_or(0),
                &h.mac,
                h.cpus,
                h.memory_bytes,
            ),
        )
        .await
        .expect("T1 row");
        for vm in &rows.vms {
            conn.exec_drop(
                "INSERT INTO vms (uuid, host_ip, name, state, lct) VALUES (?, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE state = VALUES(state), lct = VALUES(lct)",
                (&vm.uuid, &vm.host_ip, &vm.name, &vm.state, &rows.time),
            )
            .await
            .expect("T3 row");
        }
        for table in &rows.tables {
            let existing: Vec<String> = conn
                .exec(
                    "SELECT column_name FROM information_schema.columns
                     WHERE table_schema = DATABASE() AND table_name = ?",
                    (&table.table,),
                )
                .await
                .expect("columns");
            let table = &as_log2_buckets(table, &existing);
            let kept: Vec<usize> = (0..table.columns.len())
                .filter(|i| existing.contains(&table.columns[*i]))
                .collect();
            let columns: Vec<&str> = kept.iter().map(|i| table.columns[*i].as_str()).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.table,
                columns.join(", "),
                vec!["?"; kept.len()].join(", ")
            );
            for row in &table.rows {
                let params: Vec<mysql_async::Value> =
                    kept.iter().map(|i| value(&row[*i])).collect();
                conn.exec_drop(&sql, params)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", table.table));
            }
        }
    }
    conn.disconnect().await.expect("disconnect");
}

/// `vm_latency_hist` rows as a schema before 6 has them, if its columns say so: the log2
/// bucket of each row's lower bound instead of its bounds (the fixture's buckets lie in
/// distinct log2 buckets).
fn as_log2_buckets(table: &Rows, existing: &[String]) -> Rows {
    let low = table.columns.iter().position(|c| c == "low_ns");
    let Some(low) = low.filter(|_| existing.iter().any(|c| c == "bucket")) else {
        return table.clone();
    };
    let mut old = table.clone();
    old.columns[low] = "bucket".into();
    for row in &mut old.rows {
        row[low] = match row[low] {
            Value::Int(low_ns) => Value::Int(i64::from(low_ns.max(1).ilog2())),
            ref other => panic!("low_ns {other:?}"),
        };
    }
    old
}

/// A database of schema 1 with the rows the setmov of that schema wrote, then `setmov
/// migrate`: every table holds the same rows (those schema 3 gave new columns: the same values
/// in their old columns, the new ones filled from them), the schema is the newest, and the
/// old rows roll up. The writer refuses the database until it is migrated.
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
        write_as_schema_1(&set_up.db, &set_up.url, &ticks).await;
        let refused = MysqlStore::open(store_config(&set_up.db, &set_up.url, set_up.spool.path()))
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("older than this setmov writes")),
            "{refused:?}"
        );
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
    let old_columns = |table: &str| {
        let columns = setmov::store::tick_schema::table(table)
            .expect("a known table")
            .columns
            .iter()
            .filter(|c| !ADDED_AFTER_SCHEMA_1.contains(c))
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        set_up.db.query(
            &set_up.name,
            &format!("SELECT {columns} FROM {table} ORDER BY {columns}"),
        )
    };
    let old_values = ALTERED_AFTER_SCHEMA_1.map(old_columns);

    SETMOV.migrate(&set_up.db, &set_up.url);
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
    // Schema 6 replaced vm_latency_hist's log2 bucket by the bucket's bounds: checked below.
    let altered = |line: &&String| {
        ALTERED_AFTER_SCHEMA_1
            .iter()
            .chain(&["vm_latency_hist"])
            .any(|t| line.contains(&format!(".{t}\t")))
    };
    assert!(
        before
            .iter()
            .filter(|t| !altered(t))
            .all(|table| after.contains(table)),
        "a table changed: before {before:?}, after {after:?}"
    );
    assert_eq!(
        ALTERED_AFTER_SCHEMA_1.map(old_columns),
        old_values,
        "T2, T4 and the device tables keep their values"
    );
    // The full ticks' figures already have the new meanings (the host has MemAvailable, the
    // guest reports no available): schema 3 fills the new columns from them.
    let filled = set_up.db.query(
        &set_up.name,
        "SELECT COUNT(*) FROM host_usage h JOIN vm_usage v ON v.time = h.time
         WHERE h.mem_used_bytes = ROUND(h.mem_total_bytes * h.mem_used_pct / 100e0)
         AND h.cpu_user_excl_guest_pct IS NULL
         AND v.mem_actual_less_usable_bytes = v.mem_alloc_bytes - v.mem_usable_bytes",
    );
    assert_eq!(filled, ["3"]);
    let bounds = set_up.db.query(
        &set_up.name,
        "SELECT DISTINCT low_ns, high_ns FROM vm_latency_hist ORDER BY low_ns",
    );
    let expected: Vec<String> = tick_rows(&ticks[0], "")
        .tables
        .iter()
        .filter(|t| t.table == "vm_latency_hist")
        .flat_map(|t| {
            let low = t
                .columns
                .iter()
                .position(|c| c == "low_ns")
                .expect("low_ns");
            t.rows.iter().map(move |row| match row[low] {
                Value::Int(low_ns) => {
                    let b = low_ns.max(1).ilog2();
                    let low = if b == 0 { 0 } else { 1i64 << b };
                    (low, 1i64 << (b + 1))
                }
                ref other => panic!("low_ns {other:?}"),
            })
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|(low, high)| format!("{low}\t{high}"))
        .collect();
    assert_eq!(bounds, expected, "the log2 rows as schema 6 converts them");

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
        SETMOV.output(&[
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
    let (ok, log) = SETMOV.output(&["migrate", "--database", &inline]);
    assert!(ok, "{log}");
    assert!(!log.contains(&secret), "the password was shown: {log}");

    db.query(
        name,
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
    );
    let (ok, log) = run(url, &password);
    assert!(!ok && log.contains("newer than this setmov knows"), "{log}");
    let (ok, log) = SETMOV.output(&[
        "migrate",
        "--database",
        url,
        "--database-password-file",
        &password,
    ]);
    assert!(!ok && log.contains("newer than this setmov knows"), "{log}");
}

#[test]
fn tls_is_used_when_asked_and_the_server_is_verified() {
    let Some((_server, db)) = locked_server() else {
        return;
    };
    let name = db.fresh_database("tls");
    // The TLS account: the server refuses it over a plain connection.
    let url = db.tls_url(&name);
    let password = db.password_file().display().to_string();
    let ca = db.ca_file().display().to_string();
    let (ok, log) = SETMOV.output(&[
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
    let (ok, log) = SETMOV.output(&[
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
    let (ok, log) = SETMOV.output(&[
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
