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

pub mod decode;
mod read;
mod schema;
mod upkeep;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::{Opts, OptsBuilder, Pool, SslOpts};
use time::OffsetDateTime;

use self::schema::{known_version, schema_version};
use super::location::redact;
use super::quarantine::{self, Quarantine};
use super::rollup::{Retention, RollupQuery, RollupRow};
use super::rows::{HostRow, Value, VmRow, tick_rows};
use super::spool::{Spool, SpoolError};
use super::{
    HostUsageQuery, HostUsageRow, Store, StoreError, TickRecord, Upkeep, VmUsageQuery, VmUsageRow,
    WriteOutcome,
};
use crate::analysis::ReportQuery;
use crate::analysis::report::{OwnerReport, ReportSample};
use crate::progress::Progress;
pub use decode::DecodeError;

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

impl MysqlConfig {
    fn opts(&self) -> Result<Opts, StoreError> {
        let target = redact(&self.url);
        // The parser's own message would repeat the URL, password included.
        let parsed = Opts::from_url(&self.url).map_err(|_| {
            StoreError::Config(format!(
                "{target} is not a MySQL URL (expected mysql://user@host[:port]/database; \
                 a password holding @ : / ? or # must be percent-encoded, or better go in \
                 --database-password-file)"
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
    /// Beside the spool; opened when first needed, so that none is made for nothing.
    quarantine: Option<Quarantine>,
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
    /// The schema of an earlier SETMOV: its tables lack columns this one writes.
    OlderSchema(u32),
    /// The server is down or slow: an outage, not a configuration error.
    Unreachable(String),
}

impl MysqlStore {
    /// Opens the store for `setmov run`. A wrong password, an unknown host or database, a
    /// database without the schema, or one with an older or a newer schema is an error. A server that does
    /// not answer is not: the monitor starts and spools until it does.
    pub async fn open(config: MysqlConfig) -> Result<Self, StoreError> {
        let opts = config.opts()?;
        let target = redact(&config.url);
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        // One already there is checked now: a folder others may write into stops the start.
        let quarantine_dir = quarantine::beside(spool.dir());
        let quarantine = match std::fs::symlink_metadata(&quarantine_dir) {
            Ok(_) => Some(Quarantine::open(
                &quarantine_dir,
                quarantine::DEFAULT_MAX_BYTES,
            )?),
            Err(_) => None,
        };
        let pool = Pool::new(opts.clone());
        let mut store = MysqlStore {
            opts,
            pool,
            spool,
            quarantine,
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
            Reach::OlderSchema(found) => {
                return Err(StoreError::OlderSchema {
                    target: store.target.clone(),
                    found,
                    known: known_version(),
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
            schema::embedded::migrations::runner()
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

    /// A connection from the pool, for a read.
    async fn conn(&self) -> Result<mysql_async::Conn, StoreError> {
        self.pool
            .get_conn()
            .await
            .map_err(|e| mysql_error(&self.target, &e))
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
            Some(found) if found < known_version() => Reach::OlderSchema(found),
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
                    if let Err(reason) = self.write_or_quarantine(&rows).await {
                        self.failed(reason);
                        break;
                    }
                    self.spool.pop_front()?;
                    replayed += 1;
                    progress.advance(1);
                }
                // Nothing can write it; keeping it would stop every later tick.
                Err(e) => self.set_aside_front(&e)?,
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

    /// Moves the oldest spool file, which cannot be written (`why`), to the quarantine; one
    /// that cannot be moved stays where it is and is passed over until the next start.
    fn set_aside_front(&mut self, why: &SpoolError) -> Result<(), StoreError> {
        let Some(file) = self.spool.front_path().map(Path::to_owned) else {
            return Ok(());
        };
        match self
            .quarantine()
            .and_then(|q| q.put_file(&file, &why.to_string()))
        {
            Ok(moved) => {
                tracing::error!("{why}; set aside, never written, as {}", moved.display());
                self.spool.pop_front()?;
            }
            Err(e) => {
                tracing::error!(
                    "{why}; it could not be set aside ({e}), and is passed over until the next \
                     start"
                );
                self.spool.skip_front();
            }
        }
        Ok(())
    }

    /// The quarantine beside the spool, opened (created) on first use.
    fn quarantine(&mut self) -> Result<&mut Quarantine, SpoolError> {
        match &mut self.quarantine {
            Some(quarantine) => Ok(quarantine),
            slot @ None => Ok(slot.insert(Quarantine::open(
                &quarantine::beside(self.spool.dir()),
                quarantine::DEFAULT_MAX_BYTES,
            )?)),
        }
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

fn to_mysql(value: &Value) -> mysql_async::Value {
    match value {
        Value::Null => mysql_async::Value::NULL,
        Value::Int(v) => mysql_async::Value::Int(*v),
        Value::Real(v) => mysql_async::Value::Double(*v),
        Value::Text(v) => mysql_async::Value::Bytes(v.as_bytes().to_vec()),
        Value::Blob(v) => mysql_async::Value::Bytes(v.clone()),
    }
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

/// What a value read from the server that is not of its column's type becomes.
fn decode_error(target: &str) -> impl FnOnce(DecodeError) -> StoreError + '_ {
    move |source| StoreError::Decode {
        target: target.to_owned(),
        source,
    }
}

/// A tick's time as MySQL's DATETIME(3) takes it (UTC).
pub fn mysql_time(t: OffsetDateTime) -> String {
    super::utc_millis(t, ' ', "")
}

/// `column` (a DATETIME(3)) as whole seconds since the epoch, rounded down as the embedded
/// store's `strftime('%s')` does: a bare CAST of `UNIX_TIMESTAMP` rounds .5 and up to the next
/// second, which moved ticks into the next second (and a minute's last tick into the next
/// minute).
fn unix_seconds(column: &str) -> String {
    format!("CAST(FLOOR(UNIX_TIMESTAMP({column})) AS SIGNED)")
}

/// `column` as `setmov show` prints times (as the embedded store keeps them).
fn iso(column: &str) -> String {
    format!(
        "CONCAT(DATE_FORMAT({column}, '%Y-%m-%dT%H:%i:%s.'), \
         LPAD(FLOOR(MICROSECOND({column}) / 1000), 3, '0'), 'Z')"
    )
}

impl Store for MysqlStore {
    async fn write_tick(&mut self, tick: &TickRecord) -> Result<WriteOutcome, StoreError> {
        let rows = tick_rows(tick, &mysql_time(tick.time));
        if self.spool.is_empty() && self.may_try() {
            match self.write_or_quarantine(&rows).await {
                Ok(outcome) => {
                    self.recovered();
                    return Ok(outcome);
                }
                Err(reason) => self.failed(reason),
            }
        }
        // Behind the spooled ticks, so they reach the database in order.
        self.spool.push(&rows)?;
        if self.may_try() {
            self.replay().await?;
        }
        Ok(WriteOutcome::Stored)
    }

    fn spill(&mut self, ticks: &[std::sync::Arc<TickRecord>]) -> Result<PathBuf, StoreError> {
        for tick in ticks {
            self.spool.push(&tick_rows(tick, &mysql_time(tick.time)))?;
        }
        Ok(self.spool.dir().to_owned())
    }

    async fn recent_host_usage(
        &mut self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        let mut conn = self.conn().await?;
        read::recent_host_usage(&mut conn, &self.target, query).await
    }

    async fn recent_vm_usage(
        &mut self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        let mut conn = self.conn().await?;
        read::recent_vm_usage(&mut conn, &self.target, query).await
    }

    async fn rollups(&mut self, query: &RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        let mut conn = self.conn().await?;
        read::rollups(&mut conn, &self.target, query).await
    }

    async fn hosts(&mut self) -> Result<Vec<HostRow>, StoreError> {
        let mut conn = self.conn().await?;
        read::hosts(&mut conn, &self.target).await
    }

    async fn report_samples(
        &mut self,
        query: &ReportQuery,
    ) -> Result<Vec<ReportSample>, StoreError> {
        let mut conn = self.conn().await?;
        read::report_samples(&mut conn, &self.target, query).await
    }

    async fn report(&mut self, query: &ReportQuery) -> Result<Vec<OwnerReport>, StoreError> {
        let mut conn = self.conn().await?;
        read::report(&mut conn, &self.target, query).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_reported_without_the_password() {
        for url in [
            "mysql://u:topsecret@/",
            "mysql://setmov:top/secret@db/fleet",
            "mysql://u:top@sec:ret/x@h/",
            "mysql://u:topsecret",
        ] {
            let config = MysqlConfig {
                url: url.into(),
                password: None,
                tls: false,
                ca_file: None,
                spool_dir: PathBuf::from("/nonexistent"),
                spool_max_bytes: 1,
            };
            let Err(err) = config.opts() else {
                panic!("{url} was accepted");
            };
            for secret in ["top", "secret", "sec"] {
                assert!(!err.to_string().contains(secret), "{err}");
                assert!(!format!("{config:?}").contains(secret));
            }
        }
    }

    #[test]
    fn times_and_placeholders() {
        let t = time::macros::datetime!(2026-11-30 15:04:05.123_456 +09:00);
        assert_eq!(mysql_time(t), "2026-11-30 06:04:05.123");
        assert_eq!(write::placeholders(2, 3), "(?, ?), (?, ?), (?, ?)");
    }
}
