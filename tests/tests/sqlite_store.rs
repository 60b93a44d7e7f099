//! The embedded SQLite store over the life of an operator's file: a database of every earlier
//! schema, with the rows the setmov of that schema wrote, brought up to date by `setmov show`
//! with every value kept; and the values of its minute and hour rollups over ticks of uneven
//! Δt.

use std::path::Path;
use std::process::Command;

use rusqlite::Connection;
use rusqlite::types::Value as SqliteValue;
use setmov::store::format_time;
use setmov::store::rows::{Rows, TickRows, Value, tick_rows};
use setmov::store::sqlite::SqliteStore;
use setmov_tests::minute_reports::check_minute_reports;
use setmov_tests::rollups::{check_rollup_values, write_uneven_ticks};
use setmov_tests::runtime;
use setmov_tests::ticks::{FULL_TICK_VM, full_tick};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

mod embedded {
    refinery::embed_migrations!("../migrations/sqlite");
}

/// The newest schema this build knows.
fn latest_version() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(refinery::Migration::version)
        .max()
        .expect("migrations")
}

fn has_table(conn: &Connection, table: &str) -> bool {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .expect("sqlite_master")
        > 0
}

/// A database of schema `version` at `path` as the setmov of that schema left it: its
/// migrations applied by refinery, as the store applies them, then the rows of a full tick in
/// every table the schema has, in the columns it has. Returns the data rows written.
fn database_of_schema(path: &Path, version: i32) -> (TickRows, Vec<Rows>) {
    let mut conn = Connection::open(path).expect("open");
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run(&mut conn)
        .unwrap_or_else(|e| panic!("schema {version}: {e}"));
    let tick = full_tick(1, time::Duration::seconds(90));
    let rows = tick_rows(&tick, &format_time(tick.time));
    // T1 as schema 1 has it (schema 2 added the capacity); T3 came with schema 2.
    conn.execute(
        "INSERT INTO hosts (host_ip, host_name, vmc, mac) VALUES (?1, ?2, ?3, ?4)",
        (
            &rows.host.host_ip,
            &rows.host.host_name,
            rows.host.vmc,
            &rows.host.mac,
        ),
    )
    .expect("T1 row");
    if has_table(&conn, "vms") {
        for vm in &rows.vms {
            conn.execute(
                "INSERT INTO vms (uuid, host_ip, name, state, lct) VALUES (?1, ?2, ?3, ?4, ?5)",
                (&vm.uuid, &vm.host_ip, &vm.name, &vm.state, &rows.time),
            )
            .expect("T3 row");
        }
    }
    let written: Vec<Rows> = rows
        .tables
        .iter()
        .filter(|t| has_table(&conn, &t.table))
        .map(|t| in_columns_of_the_schema(&conn, &as_log2_before_schema_9(&conn, t)))
        .collect();
    for table in &written {
        insert_rows(&conn, table, &format!("schema {version}"));
    }
    // What schema 9 made of log2 latency rows: their bounds.
    let written = written.into_iter().map(log2_bounds).collect();
    (rows, written)
}

/// The log2 bucket of a latency bucket's lower bound, as schemas before 9 stored it.
fn log2_of_low(low_ns: &Value) -> i64 {
    match low_ns {
        Value::Int(low) => i64::from((*low).max(1).ilog2()),
        other => panic!("low_ns {other:?}"),
    }
}

/// `vm_latency_hist` rows as a schema before 9 has them, if this one does: the log2 bucket of
/// each row's lower bound instead of its bounds (the fixture's buckets are in distinct log2
/// buckets).
fn as_log2_before_schema_9(conn: &Connection, table: &Rows) -> Rows {
    let has_bucket = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('vm_latency_hist') WHERE name = 'bucket'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("pragma");
    if table.table != "vm_latency_hist" || has_bucket == 0 {
        return table.clone();
    }
    let low = table
        .columns
        .iter()
        .position(|c| c == "low_ns")
        .expect("low_ns");
    let mut old = table.clone();
    old.columns[low] = "bucket".into();
    for row in &mut old.rows {
        row[low] = Value::Int(log2_of_low(&row[low]));
    }
    old
}

/// A table written with log2 buckets as schema 9 reads it back: bounds [2^b, 2^(b+1)), 0 for
/// bucket 0.
fn log2_bounds(table: Rows) -> Rows {
    let at = table.columns.iter().position(|c| c == "bucket");
    let Some(at) = at.filter(|_| table.table == "vm_latency_hist") else {
        return table;
    };
    let mut new = table.clone();
    new.columns
        .splice(at..=at, ["low_ns".to_owned(), "high_ns".to_owned()]);
    for row in &mut new.rows {
        let b = match row[at] {
            Value::Int(b) => b,
            ref other => panic!("bucket {other:?}"),
        };
        let low = if b == 0 { 0 } else { 1i64 << b };
        row.splice(at..=at, [Value::Int(low), Value::Int(1i64 << (b + 1))]);
    }
    new
}

/// Inserts `table`'s rows with plain INSERTs, as an earlier setmov wrote them.
fn insert_rows(conn: &Connection, table: &Rows, what: &str) {
    let placeholders = vec!["?"; table.columns.len()].join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        table.table,
        table.columns.join(", ")
    );
    for row in &table.rows {
        conn.execute(
            &sql,
            rusqlite::params_from_iter(row.iter().map(sqlite_value)),
        )
        .unwrap_or_else(|e| panic!("{what}, {}: {e}", table.table));
    }
}

/// `table` without the columns its table does not have at this schema (those a later
/// migration added).
fn in_columns_of_the_schema(conn: &Connection, table: &Rows) -> Rows {
    let existing: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM pragma_table_info('{}')",
            table.table
        ))
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("columns");
    let kept: Vec<usize> = (0..table.columns.len())
        .filter(|i| existing.contains(&table.columns[*i]))
        .collect();
    Rows {
        table: table.table.clone(),
        columns: kept.iter().map(|i| table.columns[*i].clone()).collect(),
        rows: table
            .rows
            .iter()
            .map(|row| kept.iter().map(|i| row[*i].clone()).collect())
            .collect(),
    }
}

fn sqlite_value(value: &Value) -> SqliteValue {
    match value {
        Value::Null => SqliteValue::Null,
        Value::Int(v) => SqliteValue::Integer(*v),
        Value::Real(v) => SqliteValue::Real(*v),
        Value::Text(v) => SqliteValue::Text(v.clone()),
        Value::Blob(v) => SqliteValue::Blob(v.clone()),
    }
}

/// Whether a value read back is the one written (a whole number in a REAL column reads back
/// as a real).
fn same_value(written: &Value, read: &SqliteValue) -> bool {
    match (written, read) {
        (Value::Null, SqliteValue::Null) => true,
        (Value::Text(a), SqliteValue::Text(b)) => a == b,
        (Value::Int(a), SqliteValue::Integer(b)) => a == b,
        (Value::Int(a), SqliteValue::Real(b)) => *a as f64 == *b,
        (Value::Real(a), SqliteValue::Real(b)) => a == b,
        (Value::Real(a), SqliteValue::Integer(b)) => *a == *b as f64,
        _ => false,
    }
}

/// `setmov ARGS --database DB --format json`, parsed.
fn show_json(db: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(SETMOV)
        .arg("show")
        .args(args)
        .args(["--format", "json", "--database"])
        .arg(db)
        .output()
        .expect("setmov runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "setmov show {args:?}: {log}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    rows.as_array().expect("an array").clone()
}

/// Every field of a `setmov show` row that is a column of `table` holds the value written
/// there; returns how many fields were compared.
fn shown_as_written(shown: &serde_json::Value, table: &Rows) -> usize {
    let [row] = table.rows.as_slice() else {
        panic!("{}: one row written, not {}", table.table, table.rows.len());
    };
    let fields = shown.as_object().expect("a JSON object");
    let mut compared = 0;
    for (column, written) in table.columns.iter().zip(row) {
        let Some(field) = fields.get(column) else {
            continue;
        };
        let read = match field {
            serde_json::Value::Null => SqliteValue::Null,
            serde_json::Value::String(s) => SqliteValue::Text(s.clone()),
            number => SqliteValue::Real(number.as_f64().expect("a number")),
        };
        assert!(
            same_value(written, &read),
            "{}.{column}: written {written:?}, shown {field}",
            table.table
        );
        compared += 1;
    }
    compared
}

/// The schema of the file: every table and index as SQLite keeps its definition.
fn schema(conn: &Connection) -> Vec<(String, Option<String>)> {
    conn.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index')
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .expect("sql")
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// A database of schema `version` with its rows, opened by `setmov show`: the operator sees
/// the rows, every value written is still there, the schema is the one a new file gets and
/// the old rows roll up.
fn an_earlier_schema_is_brought_up_to_date_with_its_rows(version: i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let (rows, written) = database_of_schema(&db, version);
    assert!(!written.is_empty());
    let table = |name: &str| written.iter().find(|t| t.table == name);

    let host_rows = show_json(&db, &[]);
    let [host_row] = host_rows.as_slice() else {
        panic!("one host row, not {host_rows:?}");
    };
    let host_usage = table("host_usage").expect("host_usage at every schema");
    assert!(shown_as_written(host_row, host_usage) >= 8, "{host_row}");
    let vm_rows = show_json(&db, &["--vms"]);
    match table("vm_usage") {
        Some(vm_usage) => {
            let [vm_row] = vm_rows.as_slice() else {
                panic!("one VM row, not {vm_rows:?}");
            };
            assert!(shown_as_written(vm_row, vm_usage) >= 10, "{vm_row}");
            assert_eq!(vm_row["name"], "desk-full");
        }
        None => assert!(vm_rows.is_empty(), "{vm_rows:?}"),
    }

    let conn = Connection::open(&db).expect("open");
    for table in &written {
        let sql = format!("SELECT {} FROM {}", table.columns.join(", "), table.table);
        let read: Vec<Vec<SqliteValue>> = conn
            .prepare(&sql)
            .expect("sql")
            .query_map([], |r| {
                (0..table.columns.len())
                    .map(|i| r.get(i))
                    .collect::<Result<_, _>>()
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(read.len(), table.rows.len(), "rows of {}", table.table);
        for (written, read) in table.rows.iter().zip(&read) {
            for ((column, w), r) in table.columns.iter().zip(written).zip(read) {
                assert!(
                    same_value(w, r),
                    "schema {version}: {}.{column} was {w:?}, reads {r:?}",
                    table.table
                );
            }
        }
    }
    let host: (String, String, u32) = conn
        .query_row("SELECT host_ip, host_name, vmc FROM hosts", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("T1 row");
    assert_eq!(
        host,
        (rows.host.host_ip.clone(), rows.host.host_name.clone(), 1)
    );
    let vms: Vec<(String, String, String)> = conn
        .prepare("SELECT uuid, state, lct FROM vms")
        .expect("sql")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("T3 rows");
    if version >= 2 {
        assert_eq!(
            vms,
            [(
                FULL_TICK_VM.to_owned(),
                "running".to_owned(),
                rows.time.clone()
            )]
        );
    }
    let broken: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .expect("foreign key check");
    assert_eq!(broken, 0, "every foreign key holds");
    let applied: i32 = conn
        .query_row(
            "SELECT MAX(version) FROM refinery_schema_history",
            [],
            |r| r.get(0),
        )
        .expect("history");
    assert_eq!(applied, latest_version());
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = fresh_dir.path().join("fresh.db");
    drop(SqliteStore::open(&fresh).expect("a new file"));
    assert_eq!(
        schema(&conn),
        schema(&Connection::open(&fresh).expect("open")),
        "schema {version} migrated differs from a new file's"
    );
    drop(conn);

    // The rollups, which came last, take the old rows.
    let now = setmov_tests::ticks::instant(time::Duration::minutes(3));
    SqliteStore::open(&db)
        .expect("open")
        .maintain_blocking(&rows.host.host_ip, now, &Default::default())
        .expect("roll up");
    let minutes: Vec<(String, u32)> = Connection::open(&db)
        .expect("open")
        .prepare("SELECT time, samples FROM host_usage_1m")
        .expect("sql")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(minutes, [("1970-01-01T00:01:00.000Z".to_owned(), 1)]);
}

#[test]
fn a_schema_1_database_keeps_its_host_rows_through_every_migration() {
    an_earlier_schema_is_brought_up_to_date_with_its_rows(1);
}

#[test]
fn a_schema_2_database_keeps_its_host_and_vm_rows_through_every_migration() {
    an_earlier_schema_is_brought_up_to_date_with_its_rows(2);
}

#[test]
fn a_schema_3_database_keeps_its_time_ordered_vm_rows_through_every_migration() {
    an_earlier_schema_is_brought_up_to_date_with_its_rows(3);
}

#[test]
fn a_schema_4_database_keeps_its_ebpf_rows_through_every_migration() {
    an_earlier_schema_is_brought_up_to_date_with_its_rows(4);
}

#[test]
fn a_schema_5_database_keeps_its_rollup_ready_rows_through_every_migration() {
    an_earlier_schema_is_brought_up_to_date_with_its_rows(5);
}

/// Schema 6 rewrites the stored memory figures to their new meanings: the host's used memory
/// becomes total − MemAvailable (it was total − free − buffers − cached), and a VM's the
/// guest's own view, available − usable, when the guest reported available (it was actual −
/// usable, which moves to its own column).
#[test]
fn schema_6_gives_stored_memory_used_its_new_meaning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    drop(database_of_schema(&db, 5));
    const GIB: i64 = 1 << 30;
    let conn = Connection::open(&db).expect("open");
    // As schema 5's setmov stored a 16 GiB host with 8 GiB free, 0.5 buffers, 2 cached and
    // 12 available, and a 4 GiB guest that reported 3.75 GiB of total and 3 usable.
    conn.execute_batch(&format!(
        "UPDATE host_usage SET mem_total_bytes = {}, mem_used_pct = 34.375,
             mem_nonfree_pct = 50.0, mem_unavailable_pct = 25.0;
         UPDATE vm_usage SET mem_alloc_bytes = {}, mem_available_bytes = {},
             mem_usable_bytes = {}, mem_used_bytes = {}, mem_used_pct = 25.0,
             mem_source = 'balloon-usable';",
        16 * GIB,
        4 * GIB,
        15 * GIB / 4,
        3 * GIB,
        GIB
    ))
    .expect("schema 5 rows");
    drop(conn);
    drop(SqliteStore::open(&db).expect("migrate"));
    let conn = Connection::open(&db).expect("open");
    let host: (f64, i64, f64, Option<f64>) = conn
        .query_row(
            "SELECT mem_used_pct, mem_used_bytes, mem_nonfree_pct, mem_noncache_pct
             FROM host_usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("host row");
    assert_eq!(host, (25.0, 4 * GIB, 50.0, None));
    let vm: (i64, f64, String, i64) = conn
        .query_row(
            "SELECT mem_used_bytes, mem_used_pct, mem_source, mem_actual_less_usable_bytes
             FROM vm_usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("VM row");
    assert_eq!(
        vm,
        (
            3 * GIB / 4,
            20.0,
            "balloon-available-usable".to_owned(),
            GIB
        )
    );
}

#[test]
fn minute_and_hour_rollups_of_uneven_ticks_hold_the_values_computed_by_hand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("setmov.db")).expect("open");
    runtime().block_on(check_rollup_values(&mut store));
}

#[test]
fn a_minute_report_gives_what_every_minute_gives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("setmov.db")).expect("open");
    runtime().block_on(check_minute_reports(&mut store));
}

/// The minute report reads a whole hour from its hour rows: a maximum written into the host's
/// or the VM's row shows. Without the row's distribution it reads the minutes again.
#[test]
fn a_minute_report_reads_whole_hours_from_the_hour_rows() {
    use setmov::analysis::ReportQuery;
    use setmov::store::Store;
    use setmov::store::rollup::Level;
    use setmov_tests::ticks::{HOST_IP, instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("setmov.db");
    let mut store = SqliteStore::open(&path).expect("open");
    runtime().block_on(write_uneven_ticks(&mut store));
    let conn = Connection::open(&path).expect("connection");
    // The VM first: without the host's distribution its VMs' hour is read from minutes too.
    for (vms, table) in [(true, "vm_usage_1h"), (false, "host_usage_1h")] {
        let query = ReportQuery {
            level: Some(Level::Minute),
            vms,
            host_ip: Some(HOST_IP.into()),
            vm: None,
            since: instant(time::Duration::ZERO),
            until: instant(time::Duration::hours(2)),
        };
        let mut cpu_max = || {
            let owners = runtime().block_on(store.report(&query)).expect("report");
            owners[0].figures["cpu_pct"].max
        };
        let before = cpu_max();
        let hour_1 = |set: &str| {
            let sql = format!("UPDATE {table} SET {set} WHERE time = '1970-01-01T01:00:00.000Z'");
            assert_eq!(conn.execute(&sql, []).expect("update"), 1, "{sql}");
        };
        hour_1("cpu_pct_max = 1000");
        assert_eq!(cpu_max(), 1000.0, "{table}");
        hour_1("cpu_pct_sketch = NULL");
        assert_eq!(cpu_max(), before, "{table}");
    }
}

/// Schema 10 adds per-figure counts, seconds and distributions to the rollups. A schema 9
/// file keeps its rollups whose raw ticks are gone (the report reads them as before and marks
/// their percentiles as estimates) and loses those whose raw ticks are still kept: the monitor
/// rolls those up again, with the new columns.
#[test]
fn schema_10_rolls_up_again_what_raw_ticks_still_cover() {
    use setmov::analysis::ReportQuery;
    use setmov::analysis::report::report;
    use setmov::store::Store;
    use setmov::store::rollup::{Level, Retention};
    use setmov_tests::rollups::uneven_ticks;
    use setmov_tests::ticks::{HOST_IP, instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let mut conn = Connection::open(&db).expect("open");
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(9))
        .run(&mut conn)
        .expect("schema 9");
    let ticks = uneven_ticks();
    for tick in &ticks {
        let rows = tick_rows(tick, &format_time(tick.time));
        conn.execute(
            "INSERT OR IGNORE INTO hosts (host_ip, host_name, vmc, mac) VALUES (?1, ?2, ?3, ?4)",
            (
                &rows.host.host_ip,
                &rows.host.host_name,
                rows.host.vmc,
                &rows.host.mac,
            ),
        )
        .expect("T1 row");
        for vm in &rows.vms {
            conn.execute(
                "INSERT OR IGNORE INTO vms (uuid, host_ip, name, state, lct)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (&vm.uuid, &vm.host_ip, &vm.name, &vm.state, &rows.time),
            )
            .expect("T3 row");
        }
        for table in &rows.tables {
            insert_rows(&conn, table, "schema 9");
        }
    }
    // As schema 9 rolled up: a minute ten minutes before the raw ticks (purged since) and the
    // first minute they cover.
    let old_minute = format_time(instant(time::Duration::minutes(-10)));
    let first_minute = format_time(instant(time::Duration::ZERO));
    for time in [&old_minute, &first_minute] {
        conn.execute(
            "INSERT INTO host_usage_1m (host_ip, time, samples, cpu_pct_avg, cpu_pct_max,
                cpu_pct_p95) VALUES (?1, ?2, 60, 30.0, 90.0, 80.0)",
            (HOST_IP, time),
        )
        .expect("schema 9 rollup");
    }
    drop(conn);

    let mut store = SqliteStore::open(&db).expect("migrate");
    let conn = Connection::open(&db).expect("open");
    let minutes = || -> Vec<(String, Option<i64>, bool)> {
        conn.prepare(
            "SELECT time, cpu_pct_n, cpu_pct_sketch IS NOT NULL FROM host_usage_1m ORDER BY time",
        )
        .expect("sql")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    };
    assert_eq!(minutes(), [(old_minute.clone(), None, false)]);
    let keep = Retention {
        raw: None,
        minute: None,
        hour: None,
    };
    let end = instant(time::Duration::hours(2));
    runtime().block_on(async {
        for _ in 0..4 {
            store.maintain(HOST_IP, end, &keep).await.expect("roll up");
        }
    });
    let rolled = minutes();
    assert_eq!(rolled.len(), 5, "{rolled:?}");
    assert_eq!(rolled[0], (old_minute, None, false));
    assert_eq!(rolled[1].0, first_minute);
    assert!(
        rolled[1..]
            .iter()
            .all(|(_, n, sketch)| n.is_some() && *sketch),
        "{rolled:?}"
    );

    let cpu = |since: time::Duration| {
        let query = ReportQuery {
            level: Some(Level::Minute),
            vms: false,
            host_ip: Some(HOST_IP.into()),
            vm: None,
            since: instant(since),
            until: end,
        };
        let samples = store.report_samples_blocking(&query).expect("report rows");
        report(false, samples).remove(0).figures["cpu_pct"]
    };
    let with_old = cpu(time::Duration::hours(-1));
    let without = cpu(time::Duration::ZERO);
    assert!(with_old.approximate && !without.approximate);
    assert_eq!(with_old.n, without.n + 60);
    assert_eq!((with_old.max, without.max), (100.0, 100.0));
}
