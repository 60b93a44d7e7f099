//! The MySQL/MariaDB store, for many hypervisors writing into one database.
//!
//! Each tick is one transaction of multi-row inserts through a connection pool. Every data row
//! is keyed by its owner (host or VM) and time, and written with `ON DUPLICATE KEY UPDATE` as
//! a no-op, so a tick written twice (replayed after an outage) changes nothing.
//!
//! When the server cannot be reached, or a write takes longer than [`WRITE_TIMEOUT`], the tick
//! goes to the durable local [`Spool`] and the call returns: the monitor never waits for the
//! database. The spool is replayed in order, oldest first, as soon as the server answers again
//! (retried with backoff), and also by a monitor started while ticks are spooled.
//!
//! The schema comes from `migrations/mysql` and is applied only by `setmov migrate`: `run`
//! refuses a database without it, or with migrations this build does not know.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, SslOpts, TxOpts};
use time::OffsetDateTime;

use crate::analysis::report::{self, ReportSample};
use crate::analysis::{ReportQuery, report_params, report_sql};

use super::rollup::{
    HOST_FIGURES, Level, Retention, RollupQuery, RollupRow, VM_FIGURES, raw_host_sql, raw_vm_sql,
    rollup_query_params, rollup_query_sql, rollup_rows,
};
use super::rows::{HostRow, Rows, TickRows, Value, VmRow, tick_rows};
use super::spool::Spool;
use super::{
    HostUsageQuery, HostUsageRow, Store, StoreError, TickRecord, Upkeep, VmUsageQuery, VmUsageRow,
    purge_statements,
};
use crate::progress::Progress;

mod embedded {
    refinery::embed_migrations!("../migrations/mysql");
}

/// Longest a tick's write may take before it goes to the spool instead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(10);
/// Longest the rollups and purges after a tick may take.
const MAINTAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 500;
/// MariaDB/MySQL server error codes that no retry can fix.
const ER_ACCESS_DENIED: u16 = 1045;
const ER_BAD_DB: u16 = 1049;
const ER_DBACCESS_DENIED: u16 = 1044;

/// Where and how to reach the server.
#[derive(Clone)]
pub struct MysqlConfig {
    /// `mysql://user@host[:port]/database`. A password written in it is used, but the URL is
    /// never shown with it.
    pub url: String,
    /// From `--database-password-file` or `SETMOV_DATABASE_PASSWORD`; wins over the URL's.
    pub password: Option<String>,
    /// Require TLS (verified against the system roots, or `ca_file`).
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
}

impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .finish()
    }
}

/// `url` without the password it may carry: `mysql://user:secret@h/db` → `mysql://user@h/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl MysqlConfig {
    fn opts(&self) -> Result<Opts, StoreError> {
        let target = redact(&self.url);
        // The parser's own message would repeat the URL, password included.
        let parsed = Opts::from_url(&self.url).map_err(|_| {
            StoreError::Config(format!(
                "{target} is not a MySQL URL (expected mysql://user@host[:port]/database)"
            ))
        })?;
        if parsed.db_name().is_none_or(str::is_empty) {
            return Err(StoreError::Config(format!(
                "{target} names no database (mysql://user@host[:port]/database)"
            )));
        }
        // DATETIME columns hold UTC; UNIX_TIMESTAMP() must read them as UTC too.
        let mut builder = OptsBuilder::from_opts(parsed)
            .prefer_socket(false)
            .init(vec!["SET time_zone = '+00:00'"]);
        if let Some(password) = &self.password {
            builder = builder.pass(Some(password.clone()));
        }
        if self.tls {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &self.ca_file {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            builder = builder.ssl_opts(ssl);
        }
        Ok(builder.into())
    }
}

/// The MySQL store: a pool, the spool, and the T1/T3 rows last written.
pub struct MysqlStore {
    opts: Opts,
    pool: Pool,
    spool: Spool,
    target: String,
    written_host: Option<HostRow>,
    written_vms: HashMap<String, VmRow>,
    /// No attempt before this instant after a failure (backoff).
    retry_at: Option<Instant>,
    retry_after: Duration,
    /// The failure last logged, so an outage is logged once.
    failing: Option<String>,
    /// Rollup and purge bookkeeping, by host.
    upkeep: HashMap<String, Upkeep>,
}

/// How a connection attempt ended.
enum Reach {
    Ready,
    NoSchema,
    /// The server is down or slow: an outage, not a configuration error.
    Unreachable(String),
}

impl MysqlStore {
    /// Opens the store for `setmov run`. A wrong password, an unknown host or database, a
    /// database without the schema, or one with a newer schema is an error. A server that does
    /// not answer is not: the monitor starts and spools until it does.
    pub async fn open(config: MysqlConfig) -> Result<Self, StoreError> {
        let opts = config.opts()?;
        let target = redact(&config.url);
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        let pool = Pool::new(opts.clone());
        let mut store = MysqlStore {
            opts,
            pool,
            spool,
            target,
            written_host: None,
            written_vms: HashMap::new(),
            retry_at: None,
            retry_after: FIRST_RETRY,
            failing: None,
            upkeep: HashMap::new(),
        };
        match store.reach().await? {
            Reach::Ready => {}
            Reach::NoSchema => {
                return Err(StoreError::NoSchema {
                    target: store.target.clone(),
                });
            }
            Reach::Unreachable(reason) => {
                store.failed(reason);
            }
        }
        if !store.spool.is_empty() {
            tracing::info!(
                "{} ticks wait in the spool {}; they go to {} first",
                store.spool.len(),
                store.spool.dir().display(),
                store.target
            );
        }
        Ok(store)
    }

    /// Applies the migrations this build knows (`setmov migrate`); returns how many were new.
    /// Every failure is an error here, an unreachable server included.
    pub async fn migrate(config: &MysqlConfig) -> Result<usize, StoreError> {
        let opts = config.opts()?;
        let target = redact(&config.url);
        let mut pool = Pool::new(opts);
        // Refuse a newer schema before refinery sees it.
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, pool.get_conn())
            .await
            .map_err(|_| StoreError::Mysql {
                target: target.clone(),
                message: format!(
                    "no answer within {}",
                    humantime::format_duration(CONNECT_TIMEOUT)
                ),
            })?
            .map_err(|e| mysql_error(&target, &e))?;
        let current = schema_version(conn, &target).await?;
        let failed = |e: refinery::Error| StoreError::Migrate {
            path: PathBuf::from(&target),
            message: e.to_string(),
        };
        let runner = || {
            embedded::migrations::runner()
                .set_abort_divergent(true)
                .set_abort_missing(true)
        };
        let pending = super::pending_versions(
            runner().get_migrations(),
            current.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
        );
        if pending.is_empty() {
            // Still run: it refuses a divergent or unknown history.
            runner().run_async(&mut pool).await.map_err(failed)?;
        } else {
            let mut progress =
                Progress::steps(&format!("migrating {target}"), pending.len() as u64);
            for version in &pending {
                runner()
                    .set_target(refinery::Target::Version(*version))
                    .run_async(&mut pool)
                    .await
                    .map_err(failed)?;
                progress.advance(1);
            }
            progress.finish(&format!("{target}: {} migrations applied", pending.len()));
        }
        let _ = pool.disconnect().await;
        Ok(pending.len())
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connects and reads the schema version; a configuration error is an error, an outage
    /// is [`Reach::Unreachable`].
    async fn reach(&mut self) -> Result<Reach, StoreError> {
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get_conn()).await {
            Err(_) => {
                return Ok(Reach::Unreachable(format!(
                    "no answer within {}",
                    humantime::format_duration(CONNECT_TIMEOUT)
                )));
            }
            Ok(Err(e)) if is_outage(&e) => return Ok(Reach::Unreachable(e.to_string())),
            Ok(Err(e)) => return Err(mysql_error(&self.target, &e)),
            Ok(Ok(conn)) => conn,
        };
        Ok(match schema_version(conn, &self.target).await? {
            Some(_) => Reach::Ready,
            None => Reach::NoSchema,
        })
    }

    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn failed(&mut self, reason: String) {
        if self.failing.as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                "database {} unavailable ({reason}); ticks go to the spool {} until it answers",
                self.target,
                self.spool.dir().display()
            );
            self.failing = Some(reason);
        }
        self.retry_at = Some(Instant::now() + self.retry_after);
        self.retry_after = (self.retry_after * 2).min(LAST_RETRY);
        // Connections of the old pool may be half-dead (a restarted server): start afresh.
        let old = std::mem::replace(&mut self.pool, Pool::new(self.opts.clone()));
        tokio::spawn(async move {
            let _ = old.disconnect().await;
        });
    }

    fn recovered(&mut self) {
        if self.failing.take().is_some() {
            tracing::info!("database {} answers again", self.target);
        }
        self.retry_at = None;
        self.retry_after = FIRST_RETRY;
    }

    /// Writes one tick's rows, or says why not.
    async fn try_write(&mut self, rows: &TickRows) -> Result<(), String> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.write_rows(rows)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "a tick's write took longer than {}",
                humantime::format_duration(WRITE_TIMEOUT)
            )),
        }
    }

    async fn write_rows(&mut self, rows: &TickRows) -> Result<(), mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let host_changed = self.written_host.as_ref() != Some(&rows.host);
        if host_changed {
            let h = &rows.host;
            // What this tick did not know (libvirt unreachable) keeps the stored value.
            tx.exec_drop(
                "INSERT INTO hosts (host_ip, host_name, vmc, mac, cpus, memory_bytes)
                 VALUES (?, ?, COALESCE(?, 0), ?, ?, ?)
                 ON DUPLICATE KEY UPDATE host_name = VALUES(host_name), mac = VALUES(mac),
                     vmc = COALESCE(?, vmc), cpus = COALESCE(?, cpus),
                     memory_bytes = COALESCE(?, memory_bytes)",
                (
                    &h.host_ip,
                    &h.host_name,
                    h.vmc,
                    &h.mac,
                    h.cpus,
                    h.memory_bytes,
                    h.vmc,
                    h.cpus,
                    h.memory_bytes,
                ),
            )
            .await?;
        }
        let changed_vms: Vec<&VmRow> = rows
            .vms
            .iter()
            .filter(|vm| self.written_vms.get(&vm.uuid) != Some(*vm))
            .collect();
        for chunk in changed_vms.chunks(ROWS_PER_STATEMENT) {
            let mut params = Vec::with_capacity(chunk.len() * 5);
            for vm in chunk {
                params.extend([
                    vm.uuid.as_str().into(),
                    vm.host_ip.as_str().into(),
                    vm.name.as_str().into(),
                    vm.state.as_str().into(),
                    if rows.running.contains(&vm.uuid) {
                        rows.time.as_str().into()
                    } else {
                        mysql_async::Value::NULL
                    },
                ]);
            }
            // A state libvirt could not tell (`unknown`) keeps the stored one; the last
            // connect time never moves back (a replayed tick is older than the stored one).
            let sql = format!(
                "INSERT INTO vms (uuid, host_ip, name, state, lct) VALUES {}
                 ON DUPLICATE KEY UPDATE host_ip = VALUES(host_ip), name = VALUES(name),
                     state = IF(VALUES(state) = 'unknown', state, VALUES(state)),
                     lct = GREATEST(COALESCE(lct, VALUES(lct)), COALESCE(VALUES(lct), lct))",
                placeholders(5, chunk.len())
            );
            tx.exec_drop(sql, params).await?;
        }
        for chunk in rows.running.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE vms SET lct = GREATEST(COALESCE(lct, ?), ?) WHERE uuid IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut params: Vec<mysql_async::Value> =
                vec![rows.time.as_str().into(), rows.time.as_str().into()];
            params.extend(chunk.iter().map(|uuid| uuid.as_str().into()));
            tx.exec_drop(sql, params).await?;
        }
        for table in &rows.tables {
            write_rows(&mut tx, table, Conflict::Keep).await?;
        }
        tx.commit().await?;
        if host_changed {
            self.written_host = Some(rows.host.clone());
        }
        for vm in changed_vms {
            self.written_vms.insert(vm.uuid.clone(), vm.clone());
        }
        Ok(())
    }

    /// Writes spooled ticks, oldest first, until the spool is empty or a write fails.
    async fn replay(&mut self) -> Result<(), StoreError> {
        let mut replayed = 0usize;
        let mut progress = Progress::steps(
            &format!("replaying the spool into {}", self.target),
            self.spool.len() as u64,
        );
        while let Some(front) = self.spool.front() {
            match front {
                Ok(rows) => {
                    if let Err(reason) = self.try_write(&rows).await {
                        self.failed(reason);
                        break;
                    }
                    self.spool.pop_front()?;
                    replayed += 1;
                    progress.advance(1);
                }
                Err(e) => {
                    // Nothing can write it; keeping it would stop every later tick.
                    tracing::error!("{e}; the tick in it is lost");
                    self.spool.pop_front()?;
                }
            }
        }
        if replayed > 0 {
            self.recovered();
        }
        progress.finish(&format!(
            "replayed {replayed} spooled ticks into {}; {} left",
            self.target,
            self.spool.len()
        ));
        Ok(())
    }

    /// Closes the pool's connections.
    pub async fn close(self) {
        let _ = self.pool.clone().disconnect().await;
    }
}

impl Drop for MysqlStore {
    /// Says what is left for the next run, so that an operator stopping the monitor during an
    /// outage knows nothing is lost.
    fn drop(&mut self) {
        if !self.spool.is_empty() {
            tracing::warn!(
                "{} ticks wait in the spool {} for {}; the next `setmov run` with this database \
                 replays them",
                self.spool.len(),
                self.spool.dir().display(),
                self.target
            );
        }
    }
}

/// `(?, ?), (?, ?)` for `rows` rows of `columns` values.
fn placeholders(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// What happens to a row whose key is already there.
#[derive(Clone, Copy)]
enum Conflict {
    /// It is left as it is (a replayed tick).
    Keep,
    /// It is replaced (a rollup computed again).
    Replace,
}

async fn write_rows(
    tx: &mut mysql_async::Transaction<'_>,
    table: &Rows,
    conflict: Conflict,
) -> Result<(), mysql_async::Error> {
    let Some(first) = table.columns.first() else {
        return Ok(());
    };
    for chunk in table.rows.chunks(ROWS_PER_STATEMENT) {
        let columns = table.columns.join(", ");
        let values = placeholders(table.columns.len(), chunk.len());
        let sql = match conflict {
            // The no-op update makes a row already there (a replayed tick) not an error.
            Conflict::Keep => format!(
                "INSERT INTO {} ({columns}) VALUES {values} ON DUPLICATE KEY UPDATE {first} = {first}",
                table.table
            ),
            Conflict::Replace => {
                format!("REPLACE INTO {} ({columns}) VALUES {values}", table.table)
            }
        };
        let params: Vec<mysql_async::Value> = chunk.iter().flatten().map(to_mysql).collect();
        tx.exec_drop(sql, params).await?;
    }
    Ok(())
}

fn to_mysql(value: &Value) -> mysql_async::Value {
    match value {
        Value::Null => mysql_async::Value::NULL,
        Value::Int(v) => mysql_async::Value::Int(*v),
        Value::Real(v) => mysql_async::Value::Double(*v),
        Value::Text(v) => mysql_async::Value::Bytes(v.as_bytes().to_vec()),
    }
}

/// The highest migration applied, `None` when the database has no SETMOV schema. A version
/// this build does not know is an error.
async fn schema_version(
    mut conn: mysql_async::Conn,
    target: &str,
) -> Result<Option<u32>, StoreError> {
    let error = |e: mysql_async::Error| mysql_error(target, &e);
    let has_history: Option<u64> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = DATABASE() AND table_name = 'refinery_schema_history'",
        )
        .await
        .map_err(error)?;
    if has_history.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let version: Option<Option<u32>> = conn
        .query_first("SELECT MAX(version) FROM refinery_schema_history")
        .await
        .map_err(error)?;
    let version = version.flatten();
    let known = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| u32::try_from(m.version()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    if let Some(found) = version.filter(|v| *v > known) {
        return Err(StoreError::NewerSchema {
            target: target.to_owned(),
            found,
            known,
        });
    }
    Ok(version)
}

/// Whether `e` may pass by itself (the server down, restarting, overloaded), rather than a
/// setting that no retry fixes (credentials, an unknown database or host name).
fn is_outage(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => {
            !matches!(s.code, ER_ACCESS_DENIED | ER_BAD_DB | ER_DBACCESS_DENIED)
        }
        // A host name that does not resolve will not start resolving by waiting.
        mysql_async::Error::Io(io) => !io.to_string().contains("lookup address"),
        mysql_async::Error::Url(_) => false,
        mysql_async::Error::Driver(_) | mysql_async::Error::Other(_) => true,
    }
}

fn mysql_error(target: &str, e: &mysql_async::Error) -> StoreError {
    StoreError::Mysql {
        target: target.to_owned(),
        message: match e {
            // The URL parser's messages can carry the URL, password included.
            mysql_async::Error::Url(_) => "the URL is not valid".to_owned(),
            e => e.to_string(),
        },
    }
}

/// The bucket after the newest rollup of `host_ip` at `level`, or the one holding its oldest
/// raw row; `None` when it has no rows at all.
async fn first_bucket(
    conn: &mut mysql_async::Conn,
    host_ip: &str,
    level: Level,
) -> Result<Option<OffsetDateTime>, mysql_async::Error> {
    let rolled: Option<Option<i64>> = conn
        .exec_first(
            format!(
                "SELECT CAST(UNIX_TIMESTAMP(MAX(time)) AS SIGNED) FROM host_usage{}
                 WHERE host_ip = ?",
                level.suffix()
            ),
            (host_ip,),
        )
        .await?;
    if let Some(last) = rolled.flatten() {
        let span = i64::try_from(level.span().as_secs()).unwrap_or(60);
        return Ok(OffsetDateTime::from_unix_timestamp(last + span).ok());
    }
    let first: Option<Option<i64>> = conn
        .exec_first(
            "SELECT CAST(UNIX_TIMESTAMP(MIN(time)) AS SIGNED) FROM host_usage WHERE host_ip = ?",
            (host_ip,),
        )
        .await?;
    Ok(first
        .flatten()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()))
}

/// Rolls up one bucket of a host and its VMs from their raw rows.
async fn roll_up_bucket(
    tx: &mut mysql_async::Transaction<'_>,
    host_ip: &str,
    level: Level,
    bucket: OffsetDateTime,
) -> Result<(), mysql_async::Error> {
    let span = level.time_span();
    let (from, to) = (mysql_time(bucket), mysql_time(bucket + span));
    for (sql, table, owner, figures) in [
        (raw_host_sql(), "host_usage", "host_ip", HOST_FIGURES),
        (raw_vm_sql(), "vm_usage", "uuid", VM_FIGURES),
    ] {
        let rows: Vec<mysql_async::Row> = tx.exec(sql, (host_ip, &from, &to)).await?;
        let raw = rows
            .into_iter()
            .map(|mut r| {
                let owner: String = r.take(0).unwrap_or_default();
                let values = (1..=figures.len())
                    .map(|i| r.take::<Option<f64>, _>(i).flatten())
                    .collect();
                (owner, values)
            })
            .collect();
        let table = format!("{table}{}", level.suffix());
        let rows = rollup_rows(&table, owner, figures, &from, raw);
        write_rows(tx, &rows, Conflict::Replace).await?;
    }
    Ok(())
}

/// A tick's time as MySQL's DATETIME(3) takes it (UTC).
pub fn mysql_time(t: OffsetDateTime) -> String {
    super::utc_millis(t, ' ', "")
}

/// `column` as `setmov show` prints times (as the embedded store keeps them).
fn iso(column: &str) -> String {
    format!(
        "CONCAT(DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.'), \
         LPAD(FLOOR(MICROSECOND({column}) / 1000), 3, '0'), 'Z')"
    )
}

impl Store for MysqlStore {
    async fn write_tick(&mut self, tick: &TickRecord) -> Result<(), StoreError> {
        let rows = tick_rows(tick, &mysql_time(tick.time));
        if self.spool.is_empty() && self.may_try() {
            match self.try_write(&rows).await {
                Ok(()) => {
                    self.recovered();
                    return Ok(());
                }
                Err(reason) => self.failed(reason),
            }
        }
        // Behind the spooled ticks, so they reach the database in order.
        self.spool.push(&rows)?;
        if self.may_try() {
            self.replay().await?;
        }
        Ok(())
    }

    async fn recent_host_usage(
        &mut self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        let target = self.target.clone();
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(|e| mysql_error(&target, &e))?;
        let sql = format!(
            "SELECT host_ip, {}, interval_s, late_ms, cpu_pct, mem_used_pct,
                    disk_read_bytes_s, disk_write_bytes_s, net_rx_bps, net_tx_bps
             FROM host_usage WHERE (? IS NULL OR host_ip = ?) AND (? IS NULL OR time >= ?)
             ORDER BY time DESC LIMIT ?",
            iso("time")
        );
        let since = query.since.map(mysql_time);
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                sql,
                (&query.host_ip, &query.host_ip, &since, &since, query.limit),
            )
            .await
            .map_err(|e| mysql_error(&target, &e))?;
        let mut out = rows
            .into_iter()
            .map(|mut r| HostUsageRow {
                host_ip: r.take(0).unwrap_or_default(),
                time: r.take(1).unwrap_or_default(),
                interval_s: r.take(2).unwrap_or_default(),
                late_ms: r.take(3).unwrap_or_default(),
                cpu_pct: r.take(4).flatten(),
                mem_used_pct: r.take(5).flatten(),
                disk_read_bytes_s: r.take(6).flatten(),
                disk_write_bytes_s: r.take(7).flatten(),
                net_rx_bps: r.take(8).flatten(),
                net_tx_bps: r.take(9).flatten(),
            })
            .collect::<Vec<_>>();
        out.reverse();
        Ok(out)
    }

    async fn recent_vm_usage(
        &mut self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        let target = self.target.clone();
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(|e| mysql_error(&target, &e))?;
        let sql = format!(
            "SELECT u.uuid, v.name, v.host_ip, {}, u.state, u.missing, u.vcpus, u.cpu_pct,
                    u.cpu_vcpu_pct, u.steal_pct, u.mem_alloc_bytes, u.mem_used_pct,
                    u.mem_source, u.rss_bytes, u.disk_read_bytes_s, u.disk_write_bytes_s,
                    u.net_rx_bps, u.net_tx_bps
             FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
               AND (? IS NULL OR u.time >= ?)
             ORDER BY u.time DESC, v.name DESC LIMIT ?",
            iso("u.time")
        );
        let since = query.since.map(mysql_time);
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                sql,
                (
                    &query.host_ip,
                    &query.host_ip,
                    &query.vm,
                    &query.vm,
                    &query.vm,
                    &since,
                    &since,
                    query.limit,
                ),
            )
            .await
            .map_err(|e| mysql_error(&target, &e))?;
        let mut out = rows
            .into_iter()
            .map(|mut r| VmUsageRow {
                uuid: r.take(0).unwrap_or_default(),
                name: r.take(1).unwrap_or_default(),
                host_ip: r.take(2).unwrap_or_default(),
                time: r.take(3).unwrap_or_default(),
                state: r.take(4).unwrap_or_default(),
                missing: r.take(5).flatten(),
                vcpus: r.take(6).flatten(),
                cpu_pct: r.take(7).flatten(),
                cpu_vcpu_pct: r.take(8).flatten(),
                steal_pct: r.take(9).flatten(),
                mem_alloc_bytes: r.take(10).flatten(),
                mem_used_pct: r.take(11).flatten(),
                mem_source: r.take(12).flatten(),
                rss_bytes: r.take(13).flatten(),
                disk_read_bytes_s: r.take(14).flatten(),
                disk_write_bytes_s: r.take(15).flatten(),
                net_rx_bps: r.take(16).flatten(),
                net_tx_bps: r.take(17).flatten(),
            })
            .collect::<Vec<_>>();
        out.reverse();
        Ok(out)
    }

    async fn rollups(&mut self, q: &RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        let target = self.target.clone();
        let error = |e: mysql_async::Error| mysql_error(&target, &e);
        let mut conn = self.pool.get_conn().await.map_err(error)?;
        let sql = rollup_query_sql(q.vms, q.level, iso);
        let since = q.since.map(mysql_time);
        let params: Vec<mysql_async::Value> =
            rollup_query_params(q, since).iter().map(to_mysql).collect();
        let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.map_err(error)?;
        let figures = 3 * if q.vms {
            VM_FIGURES.len()
        } else {
            HOST_FIGURES.len()
        };
        let mut out: Vec<RollupRow> = rows
            .into_iter()
            .map(|mut r| {
                let values = (4..4 + figures)
                    .map(|i| r.take::<Option<f64>, _>(i).flatten())
                    .collect();
                RollupRow::new(
                    q.vms,
                    r.take(0).unwrap_or_default(),
                    r.take::<Option<String>, _>(1).flatten(),
                    r.take(2).unwrap_or_default(),
                    r.take(3).unwrap_or_default(),
                    values,
                )
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    async fn hosts(&mut self) -> Result<Vec<HostRow>, StoreError> {
        let target = self.target.clone();
        let error = |e: mysql_async::Error| mysql_error(&target, &e);
        let mut conn = self.pool.get_conn().await.map_err(error)?;
        let rows: Vec<mysql_async::Row> = conn
            .query(
                "SELECT host_ip, host_name, mac, vmc, cpus, memory_bytes FROM hosts
                 ORDER BY host_ip",
            )
            .await
            .map_err(error)?;
        Ok(rows
            .into_iter()
            .map(|mut r| HostRow {
                host_ip: r.take(0).unwrap_or_default(),
                host_name: r.take(1).unwrap_or_default(),
                mac: r.take::<Option<String>, _>(2).flatten(),
                vmc: r.take::<Option<u32>, _>(3).flatten(),
                cpus: r.take::<Option<u32>, _>(4).flatten(),
                memory_bytes: r.take::<Option<u64>, _>(5).flatten(),
            })
            .collect())
    }

    async fn report_samples(&mut self, q: &ReportQuery) -> Result<Vec<ReportSample>, StoreError> {
        let target = self.target.clone();
        let error = |e: mysql_async::Error| mysql_error(&target, &e);
        let mut conn = self.pool.get_conn().await.map_err(error)?;
        let (since, until) = (mysql_time(q.since), mysql_time(q.until));
        let params: Vec<mysql_async::Value> = report_params(q, since, until)
            .iter()
            .map(to_mysql)
            .collect();
        let sql = report_sql(q, |column| {
            format!("CAST(UNIX_TIMESTAMP({column}) AS SIGNED)")
        });
        let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.map_err(error)?;
        let figures = report::figures(q.vms).len();
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let values = (0..figures)
                    .map(|f| {
                        let at = 4 + 3 * f;
                        let mut take = |i: usize| r.take::<Option<f64>, _>(i).flatten();
                        let (mean, max, p95) = (take(at), take(at + 1), take(at + 2));
                        mean.zip(max).zip(p95).map(|((a, b), c)| (a, b, c))
                    })
                    .collect();
                ReportSample {
                    time: r.take(0).unwrap_or_default(),
                    owner: r.take(1).unwrap_or_default(),
                    uuid: r.take::<Option<String>, _>(2).flatten(),
                    ticks: r.take(3).unwrap_or_default(),
                    values,
                }
            })
            .collect())
    }

    async fn maintain(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        // Ticks still in the spool would leave a bucket's rollup short: wait for the replay.
        if !self.spool.is_empty() || self.failing.is_some() {
            return Ok(());
        }
        // A server that stopped answering must not hold the writer: try again next tick.
        let target = self.target.clone();
        tokio::time::timeout(MAINTAIN_TIMEOUT, self.maintain_now(host_ip, now, retention))
            .await
            .map_err(|_| StoreError::Mysql {
                target,
                message: format!(
                    "rollups and purges took longer than {}",
                    humantime::format_duration(MAINTAIN_TIMEOUT)
                ),
            })?
    }
}

impl MysqlStore {
    async fn maintain_now(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        let target = self.target.clone();
        let error = |e: mysql_async::Error| mysql_error(&target, &e);
        let mut conn = self.pool.get_conn().await.map_err(error)?;
        let upkeep = self.upkeep.entry(host_ip.to_owned()).or_default();
        for level in Level::ALL {
            let first = if upkeep.needs_first(level) {
                first_bucket(&mut conn, host_ip, level)
                    .await
                    .map_err(error)?
            } else {
                None
            };
            let due = upkeep.due_buckets(level, now, || first);
            let Some(&last) = due.last() else {
                continue;
            };
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(error)?;
            for bucket in due {
                roll_up_bucket(&mut tx, host_ip, level, bucket)
                    .await
                    .map_err(error)?;
            }
            tx.commit().await.map_err(error)?;
            upkeep.rolled_up(level, last);
        }
        if upkeep.purge_due(now) {
            for (sql, at) in purge_statements(now, retention) {
                conn.exec_drop(sql, (host_ip, mysql_time(at)))
                    .await
                    .map_err(error)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact("mysql://setmov:s3cret@db.example:3307/fleet"),
            "mysql://setmov@db.example:3307/fleet"
        );
        assert_eq!(
            redact("mysql://setmov@127.0.0.1/fleet"),
            "mysql://setmov@127.0.0.1/fleet"
        );
        // A password with an @ in it.
        assert_eq!(redact("mysql://u:p@ss@h/d"), "mysql://u@h/d");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn a_bad_url_is_reported_without_the_password() {
        let config = MysqlConfig {
            url: "mysql://u:topsecret@/".into(),
            password: None,
            tls: false,
            ca_file: None,
            spool_dir: PathBuf::from("/nonexistent"),
            spool_max_bytes: 1,
        };
        let Err(err) = config.opts() else {
            panic!("a URL without a database was accepted");
        };
        assert!(!err.to_string().contains("topsecret"), "{err}");
        assert!(!format!("{config:?}").contains("topsecret"));
    }

    #[test]
    fn times_and_placeholders() {
        let t = time::macros::datetime!(2026-11-30 15:04:05.123_456 +09:00);
        assert_eq!(mysql_time(t), "2026-11-30 06:04:05.123");
        assert_eq!(placeholders(2, 3), "(?, ?), (?, ?), (?, ?)");
    }
}
