//! What the MySQL store's tests (tests/mysql_store.rs, tests/mysql_outage.rs,
//! tests/mysql_rollups.rs) start from and read back: the test MariaDB locked for one test, a
//! fresh database with or without the schema, `setmov` run against it, the store's settings,
//! and the rows it holds.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use setmov::store::mysql::MysqlConfig;

use crate::mariadb::MariaDb;
use crate::monitor::Monitor;
use crate::skip;

/// The tests stop and start the one server: one at a time.
static SERVER: Mutex<()> = Mutex::new(());

/// The `setmov` binary under test: only a test target knows its path
/// (`env!("CARGO_BIN_EXE_setmov-cli")`).
#[derive(Clone, Copy, Debug)]
pub struct Setmov(pub &'static str);

impl Setmov {
    /// `setmov ARGS` to its end: whether it succeeded, and what it logged.
    pub fn output(self, args: &[&str]) -> (bool, String) {
        let out = crate::setmov_command(self.0)
            .args(args)
            .output()
            .expect("setmov runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `setmov migrate` of the database at `url`; panics when it fails.
    pub fn migrate(self, db: &MariaDb, url: &str) {
        let password = db.password_file().display().to_string();
        let (ok, log) = self.output(&[
            "migrate",
            "--database",
            url,
            "--database-password-file",
            &password,
        ]);
        assert!(ok, "setmov migrate failed: {log}");
    }

    /// `setmov run` into the database at `url`, in the background.
    pub fn start_monitor(self, url: &str, args: &[String]) -> Monitor {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Monitor::start(self.0, Path::new(url), &args)
    }
}

/// The test server, or `None` (the test then skips).
pub fn server() -> Option<MariaDb> {
    match MariaDb::from_manifest() {
        Ok(db) => Some(db),
        Err(reason) => {
            skip(&reason);
            None
        }
    }
}

/// The test server locked for the test (see [`SERVER`]), or `None` (the test then skips).
pub fn locked_server() -> Option<(MutexGuard<'static, ()>, MariaDb)> {
    let server_lock = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    Some((server_lock, server()?))
}

/// `--database-password-file F --spool-dir D` and `more`.
pub fn db_args(db: &MariaDb, spool: &Path, more: &[&str]) -> Vec<String> {
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
pub struct Prepared {
    pub _server: MutexGuard<'static, ()>,
    pub db: MariaDb,
    pub name: String,
    pub url: String,
    pub spool: tempfile::TempDir,
}

/// `None` when the server is not there (the test then skips).
pub fn prepared(setmov: Setmov, name: &str) -> Option<Prepared> {
    let prepared = empty_database(name)?;
    setmov.migrate(&prepared.db, &prepared.url);
    Some(prepared)
}

/// Like [`prepared`], without the schema.
pub fn empty_database(name: &str) -> Option<Prepared> {
    let (server_lock, db) = locked_server()?;
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

/// The store's settings for database `url`, spooling into `spool`.
pub fn store_config(db: &MariaDb, url: &str, spool: &Path) -> MysqlConfig {
    MysqlConfig {
        url: url.to_owned(),
        password: Some(db.password()),
        tls: false,
        ca_file: None,
        spool_dir: spool.to_owned(),
        spool_max_bytes: 1 << 20,
    }
}

/// The number `sql` selects in `database`.
pub fn count(db: &MariaDb, database: &str, sql: &str) -> u64 {
    let rows = db.query(database, sql);
    rows.first()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sql} gave {rows:?}"))
}

/// T2 rows: their count (one per tick: the key is the host and the time) and the largest gap
/// between two consecutive ticks in ms.
pub fn host_rows(db: &MariaDb, name: &str, host_ip: &str) -> (u64, f64) {
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

/// The address of the (first) host in `name`'s T1: the one a live monitor found.
pub fn real_host_ip(db: &MariaDb, name: &str) -> String {
    db.query(name, "SELECT host_ip FROM hosts LIMIT 1")
        .first()
        .cloned()
        .expect("a host row")
}
