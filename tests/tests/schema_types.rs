//! Every column on both stores, and the Rust type each is read into.
//!
//! For each table this lists each column's type on SQLite and on MySQL/MariaDB (printed as a
//! table) and fails when the two stores do not have the same columns, when a column's two
//! types are not of one kind (whole number, real, text, bytes), or when a column that SETMOV reads
//! back cannot be read into the Rust type its reader uses: first by kind, then for real, by
//! reading a value written into each store through that store's own conversion (rusqlite's
//! `FromSql`, the MySQL store's decoder). The integer figures the rollups read as numbers
//! (`vcpus`, `mem_alloc_bytes`) were the MySQL store's panic; they are checked here with the
//! rest.
//!
//! Needs the test MariaDB (`cargo xtask test` or `cargo xtask mariadb up`); without it this
//! skips loudly (and fails under SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use setmov::store::mysql::decode;
use setmov::store::rollup::{
    HOST_FIGURES, SHOWN_STATS, VM_FIGURES, figure_columns, vm_figure_source,
};
use setmov::store::sqlite::SqliteStore;
use setmov_tests::mariadb::MariaDb;
use setmov_tests::skip;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// The Rust types values are read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Read {
    F64,
    U64,
    U32,
    Text,
    Bytes,
}

/// What a column holds, whatever the store calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whole,
    Real,
    Text,
    Bytes,
    /// A time: TEXT in SQLite (ISO 8601), DATETIME in MySQL; read through each store's time
    /// expression, never as a raw value.
    Time,
}

fn sqlite_kind(declared: &str) -> Option<Kind> {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" => Some(Kind::Whole),
        "REAL" => Some(Kind::Real),
        "TEXT" => Some(Kind::Text),
        "BLOB" => Some(Kind::Bytes),
        _ => None,
    }
}

fn mysql_kind(column_type: &str) -> Option<Kind> {
    let t = column_type.to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => Some(Kind::Whole),
        "double" | "float" => Some(Kind::Real),
        "char" | "varchar" | "text" | "mediumtext" | "longtext" => Some(Kind::Text),
        "datetime" => Some(Kind::Time),
        "blob" | "mediumblob" | "longblob" => Some(Kind::Bytes),
        _ => None,
    }
}

/// Whether a value of `kind` converts into `read` without loss of meaning.
fn converts(kind: Kind, read: Read) -> bool {
    matches!(
        (kind, read),
        (Kind::Whole | Kind::Real, Read::F64)
            | (Kind::Whole, Read::U64 | Read::U32)
            | (Kind::Text, Read::Text)
            | (Kind::Bytes, Read::Bytes)
    )
}

/// What SETMOV reads back, by table and column: `show` and `hosts` by name, the rollups, the
/// reports, the plots and the plans by the figure lists the store code itself uses.
fn reads() -> BTreeMap<(String, String), Vec<Read>> {
    let mut reads: BTreeMap<(String, String), Vec<Read>> = BTreeMap::new();
    let mut add = |table: &str, column: &str, read: Read| {
        let entry = reads
            .entry((table.to_owned(), column.to_owned()))
            .or_default();
        if !entry.contains(&read) {
            entry.push(read);
        }
    };
    for (column, read) in [
        ("host_ip", Read::Text),
        ("host_name", Read::Text),
        ("mac", Read::Text),
        ("vmc", Read::U32),
        ("cpus", Read::U32),
        ("memory_bytes", Read::U64),
    ] {
        add("hosts", column, read);
    }
    for column in ["uuid", "name", "host_ip"] {
        add("vms", column, Read::Text);
    }
    // `setmov show`.
    for (column, read) in [
        ("host_ip", Read::Text),
        ("interval_s", Read::F64),
        ("late_ms", Read::F64),
        ("cpu_pct", Read::F64),
        ("mem_used_pct", Read::F64),
        ("disk_read_bytes_s", Read::F64),
        ("disk_write_bytes_s", Read::F64),
        ("net_rx_bps", Read::F64),
        ("net_tx_bps", Read::F64),
    ] {
        add("host_usage", column, read);
    }
    for (column, read) in [
        ("uuid", Read::Text),
        ("state", Read::Text),
        ("missing", Read::Text),
        ("vcpus", Read::U32),
        ("cpu_pct", Read::F64),
        ("cpu_vcpu_pct", Read::F64),
        ("steal_pct", Read::F64),
        ("mem_alloc_bytes", Read::U64),
        ("mem_used_pct", Read::F64),
        ("mem_source", Read::Text),
        ("rss_bytes", Read::U64),
        ("disk_read_bytes_s", Read::F64),
        ("disk_write_bytes_s", Read::F64),
        ("net_rx_bps", Read::F64),
        ("net_tx_bps", Read::F64),
    ] {
        add("vm_usage", column, read);
    }
    // The rollups' raw reads and the raw reports: every figure as a number.
    for figure in HOST_FIGURES {
        add("host_usage", figure, Read::F64);
    }
    for figure in VM_FIGURES {
        let source = vm_figure_source(figure);
        let table = if source.starts_with("e.") {
            "vm_ebpf_usage"
        } else {
            "vm_usage"
        };
        add(table, figure, Read::F64);
    }
    // `show --level`, reports over rollups, plots and plans.
    for (table, owner, figures) in [
        ("host_usage", "host_ip", HOST_FIGURES),
        ("vm_usage", "uuid", VM_FIGURES),
    ] {
        for level in ["_1m", "_1h"] {
            let table = format!("{table}{level}");
            for column in figure_columns(figures, &SHOWN_STATS) {
                add(&table, &column, Read::F64);
            }
            // The report's reads.
            for figure in figures {
                add(&table, &format!("{figure}_n"), Read::U64);
                add(&table, &format!("{figure}_sketch"), Read::Bytes);
            }
            add(&table, owner, Read::Text);
            add(&table, "samples", Read::U64);
        }
    }
    // The mem-knee experiment's disk reads (SQLite only, the same columns).
    add("vm_usage", "interval_s", Read::F64);
    reads
}

/// (table, column) → declared type, of every SETMOV table.
type Columns = BTreeMap<(String, String), String>;

fn sqlite_columns(path: &std::path::Path) -> Columns {
    let conn = rusqlite::Connection::open(path).expect("SQLite file");
    let mut statement = conn
        .prepare(
            "SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'
               AND m.name <> 'refinery_schema_history'",
        )
        .expect("table list");
    statement
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .expect("columns")
        .collect::<Result<_, _>>()
        .expect("columns")
}

fn mysql_columns(db: &MariaDb, database: &str) -> Columns {
    db.query(
        database,
        "SELECT table_name, column_name, column_type FROM information_schema.columns
         WHERE table_schema = DATABASE() AND table_name <> 'refinery_schema_history'",
    )
    .iter()
    .map(|line| {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "{line}");
        ((fields[0].into(), fields[1].into()), fields[2].into())
    })
    .collect()
}

/// A value for each column, the same on both stores, so that every foreign key (host IP, UUID,
/// time) finds its row: one row per table.
fn sample_values(columns: &Columns, table: &str, mysql: bool) -> (Vec<String>, Vec<String>) {
    columns
        .iter()
        .filter(|((t, _), _)| t == table)
        .map(|((_, column), declared)| {
            let kind = if mysql {
                mysql_kind(declared)
            } else {
                sqlite_kind(declared)
            };
            let time = if mysql {
                "'2026-12-06 10:00:00.000'"
            } else {
                "'2026-12-06T10:00:00.000Z'"
            };
            let value = match (kind, column.as_str()) {
                (_, "time" | "lct") => time.to_owned(),
                (Some(Kind::Whole), _) => "3".to_owned(),
                (Some(Kind::Real), _) => "2.5".to_owned(),
                (Some(Kind::Bytes), _) => "X'07'".to_owned(),
                _ => "'7'".to_owned(),
            };
            (column.clone(), value)
        })
        .unzip()
}

/// One INSERT per table, of one row of [`sample_values`].
fn inserts(columns: &Columns, mysql: bool) -> Vec<String> {
    let mut tables: Vec<&String> = columns.keys().map(|(t, _)| t).collect();
    tables.dedup();
    tables
        .into_iter()
        .map(|table| {
            let (names, values) = sample_values(columns, table, mysql);
            format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                values.join(", ")
            )
        })
        .collect()
}

#[test]
fn every_column_converts_between_the_stores_and_into_what_reads_it() {
    let db = match MariaDb::from_manifest() {
        Ok(db) => db,
        Err(reason) => return skip(&reason),
    };
    let name = db.fresh_database("types");
    let url = db.url(&name);
    let migrated = setmov_tests::setmov_command(SETMOV)
        .args(["migrate", "--database", &url, "--database-password-file"])
        .arg(db.password_file())
        .output()
        .expect("setmov migrate");
    assert!(migrated.status.success(), "{migrated:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_path = dir.path().join("types.db");
    drop(SqliteStore::open(&sqlite_path).expect("SQLite store"));

    let (sqlite, mysql) = (sqlite_columns(&sqlite_path), mysql_columns(&db, &name));
    let sqlite_names: Vec<_> = sqlite.keys().collect();
    let mysql_names: Vec<_> = mysql.keys().collect();
    assert_eq!(sqlite_names, mysql_names, "the stores' columns differ");
    let reads = reads();
    let mut problems = Vec::new();
    println!(
        "{:<22} {:<26} {:<8} {:<18} read into",
        "table", "column", "SQLite", "MySQL"
    );
    for (key, sqlite_type) in &sqlite {
        let mysql_type = &mysql[key];
        let read = match reads.get(key) {
            Some(r) => format!("{r:?}").to_lowercase(),
            None if mysql_kind(mysql_type) == Some(Kind::Time) => {
                "(through the store's time expression)".to_owned()
            }
            None => "(not read)".to_owned(),
        };
        println!(
            "{:<22} {:<26} {:<8} {:<18} {read}",
            key.0, key.1, sqlite_type, mysql_type
        );
        let (s, m) = (sqlite_kind(sqlite_type), mysql_kind(mysql_type));
        let same = match (s, m) {
            (Some(s), Some(m)) => s == m || (s == Kind::Text && m == Kind::Time),
            _ => false,
        };
        if !same {
            problems.push(format!(
                "{}.{}: SQLite {sqlite_type} and MySQL {mysql_type} are not one kind",
                key.0, key.1
            ));
        }
        for r in reads.get(key).into_iter().flatten() {
            if !m.is_some_and(|m| converts(m, *r)) || !s.is_some_and(|s| converts(s, *r)) {
                problems.push(format!(
                    "{}.{}: {sqlite_type}/{mysql_type} cannot be read into {r:?}",
                    key.0, key.1
                ));
            }
        }
    }
    for key in reads.keys() {
        if !sqlite.contains_key(key) {
            problems.push(format!("{}.{} is read but is in no table", key.0, key.1));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // For real: one row in every table of each store, each read column read back.
    let conn = rusqlite::Connection::open(&sqlite_path).expect("SQLite file");
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .expect("foreign keys");
    // Parents first: a child whose foreign key finds no row yet waits for the next pass.
    let mut left = inserts(&sqlite, false);
    while !left.is_empty() {
        let before = left.len();
        left.retain(|sql| conn.execute(sql, []).is_err());
        assert!(left.len() < before, "cannot insert {left:#?}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).expect("URL"))
        .pass(Some(db.password()));
    runtime.block_on(async {
        let mut server = mysql_async::Conn::new(opts).await.expect("connect");
        let mut left = inserts(&mysql, true);
        while !left.is_empty() {
            let before = left.len();
            let mut failed = Vec::new();
            for sql in left {
                if server.query_drop(&sql).await.is_err() {
                    failed.push(sql);
                }
            }
            assert!(failed.len() < before, "cannot insert {failed:#?}");
            left = failed;
        }
        for ((table, column), wanted) in &reads {
            let sql = format!("SELECT {column} FROM {table}");
            let row: mysql_async::Row = server
                .exec_first(&sql, ())
                .await
                .expect(&sql)
                .unwrap_or_else(|| panic!("{sql}: no row"));
            for read in wanted {
                let mysql_read = match read {
                    Read::F64 => decode::value::<f64>(&row, 0).map(|_| ()),
                    Read::U64 => decode::value::<u64>(&row, 0).map(|_| ()),
                    Read::U32 => decode::value::<u32>(&row, 0).map(|_| ()),
                    Read::Text => decode::value::<String>(&row, 0).map(|_| ()),
                    Read::Bytes => decode::value::<Vec<u8>>(&row, 0).map(|_| ()),
                };
                let sqlite_read = conn.query_row(&sql, [], |r| match read {
                    Read::F64 => r.get::<_, f64>(0).map(|_| ()),
                    Read::U64 => r.get::<_, u64>(0).map(|_| ()),
                    Read::U32 => r.get::<_, u32>(0).map(|_| ()),
                    Read::Text => r.get::<_, String>(0).map(|_| ()),
                    Read::Bytes => r.get::<_, Vec<u8>>(0).map(|_| ()),
                });
                if let Err(e) = mysql_read {
                    problems.push(format!("MySQL {table}.{column} into {read:?}: {e}"));
                }
                if let Err(e) = sqlite_read {
                    problems.push(format!("SQLite {table}.{column} into {read:?}: {e}"));
                }
            }
        }
        let _ = server.disconnect().await;
    });
    assert!(problems.is_empty(), "{problems:#?}");
}
