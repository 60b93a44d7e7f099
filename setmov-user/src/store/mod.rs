//! The database module (the paper's third): where ticks are kept and read back.
//!
//! [`Store`] is what the sampler writes to and `setmov show` reads from. The embedded SQLite
//! store is the default; other back ends implement the same trait.

pub mod fit;
pub mod location;
pub mod minute_report;
pub mod mysql;
pub mod private_files;
pub mod quarantine;
pub mod rollup;
pub mod rows;
pub mod sketch;
pub mod spool;
pub mod sqlite;
pub mod tick_schema;

use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use crate::host::identity::HostIdentity;
use crate::usage::ebpf::{HostEbpfFigures, VmEbpfFigures};
use crate::usage::host::HostUsage;
use crate::usage::vm::VmUsage;
use crate::vm::libvirt::NodeFacts;
use crate::vm::stats::DomainState;

/// The host's figures for one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSample {
    /// Measured Δt of the interval this sample closes.
    pub interval_secs: f64,
    /// How long after its scheduled instant the sample was read.
    pub late_ms: f64,
    /// Ticks skipped since the previous sample (the interval spans them).
    pub missed_ticks: u64,
    pub usage: HostUsage,
    /// What could not be read, one sentence each.
    pub problems: Vec<String>,
}

/// One VM at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSample {
    pub uuid: String,
    pub name: String,
    /// `None` when libvirt could not be asked this tick, or the domain is gone.
    pub state: Option<DomainState>,
    /// libvirt no longer lists the domain (destroyed transient domain, undefined).
    pub gone: bool,
    pub qemu_pid: Option<u32>,
    /// Thread ids of its vCPUs, by vCPU number; empty when unknown.
    pub vcpu_tids: Vec<u32>,
    /// Why this tick has no figures for the VM (libvirt unreachable or too slow, the domain
    /// busy with a job); `None` when it was sampled.
    pub missing: Option<String>,
    /// Measured Δt since this VM's previous sample; `None` on first sight or after a restart.
    pub interval_secs: Option<f64>,
    /// `None` exactly when `missing` is set.
    pub usage: Option<VmUsage>,
    /// What the eBPF probes saw of its qemu process; `None` without eBPF or figures.
    pub ebpf: Option<VmEbpfFigures>,
}

impl VmSample {
    /// A VM with no figures this tick: not running, or `missing` says why.
    pub fn without_figures(
        uuid: &str,
        name: &str,
        state: Option<DomainState>,
        missing: Option<&str>,
    ) -> VmSample {
        VmSample {
            uuid: uuid.to_owned(),
            name: name.to_owned(),
            state,
            gone: false,
            qemu_pid: None,
            vcpu_tids: Vec::new(),
            missing: missing.map(str::to_owned),
            interval_secs: None,
            usage: None,
            ebpf: None,
        }
    }

    /// Gets a usage row (T4): it has a qemu process, or it did at the last good sample.
    pub fn has_usage_row(&self) -> bool {
        !self.gone && self.state.is_none_or(DomainState::has_process)
    }
}

/// Everything written for one tick, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct TickRecord {
    pub seq: u64,
    /// The tick's instant: the time of every row it writes.
    pub time: OffsetDateTime,
    pub host: HostIdentity,
    /// VMs running at this tick (T1 VMC); `None` when libvirt could not be asked.
    pub vm_count: Option<u32>,
    /// The host's capacity as libvirt reports it; `None` when libvirt could not be asked.
    pub node: Option<NodeFacts>,
    /// `None` when the host source did not report for this tick.
    pub host_sample: Option<HostSample>,
    /// Every VM libvirt listed, or the VMs last seen running marked missing.
    pub vms: Vec<VmSample>,
    /// The host's eBPF figures; `None` without eBPF, or when the maps could not be read.
    pub ebpf: Option<HostEbpfFigures>,
}

/// The versions among `migrations` above `current`, in order: what migrating applies.
pub fn pending_versions(migrations: &[refinery::Migration], current: Option<i32>) -> Vec<i32> {
    let mut versions: Vec<i32> = migrations
        .iter()
        .map(refinery::Migration::version)
        .filter(|v| current.is_none_or(|c| *v > c))
        .collect();
    versions.sort_unstable();
    versions
}

/// One T2 row as `setmov show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostUsageRow {
    pub host_ip: String,
    pub time: String,
    pub interval_s: f64,
    pub late_ms: f64,
    pub cpu_pct: Option<f64>,
    pub mem_used_pct: Option<f64>,
    pub disk_read_bytes_s: Option<f64>,
    pub disk_write_bytes_s: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
}

/// One T4 row as `setmov show --vms` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmUsageRow {
    pub uuid: String,
    pub name: String,
    pub host_ip: String,
    pub time: String,
    pub state: String,
    pub missing: Option<String>,
    pub vcpus: Option<u32>,
    pub cpu_pct: Option<f64>,
    pub cpu_vcpu_pct: Option<f64>,
    pub steal_pct: Option<f64>,
    pub mem_alloc_bytes: Option<u64>,
    pub mem_used_pct: Option<f64>,
    pub mem_source: Option<String>,
    pub rss_bytes: Option<u64>,
    pub disk_read_bytes_s: Option<f64>,
    pub disk_write_bytes_s: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
}

/// Which T2 rows to read back.
#[derive(Debug, Clone, Default)]
pub struct HostUsageQuery {
    pub host_ip: Option<String>,
    /// Rows at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// The newest `limit` rows, returned oldest first.
    pub limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create database folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create database {path}: {source}")]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot migrate database {path}: {message}")]
    Migrate { path: PathBuf, message: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database worker stopped: {0}")]
    Worker(String),
    #[error("{0}")]
    Config(String),
    #[error("database {target}: {message}")]
    Mysql { target: String, message: String },
    /// A value read back that its reader cannot take (a column type it did not expect).
    #[error("database {target}: cannot read a value back: {source}")]
    Decode {
        target: String,
        source: mysql::DecodeError,
    },
    #[error(
        "database {target} has no SETMOV schema: create it with `setmov migrate --database {target}`"
    )]
    NoSchema { target: String },
    #[error(
        "database {target} has schema version {found}, older than this setmov writes ({known}): \
         bring it up to date with `setmov migrate --database {target}`"
    )]
    OlderSchema {
        target: String,
        found: u32,
        known: u32,
    },
    #[error(
        "database {target} has schema version {found}, newer than this setmov knows ({known}): \
         upgrade setmov rather than write into it"
    )]
    NewerSchema {
        target: String,
        found: u32,
        known: u32,
    },
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}

/// Which T4 rows to read back.
#[derive(Debug, Clone, Default)]
pub struct VmUsageQuery {
    pub host_ip: Option<String>,
    /// A VM's name or UUID.
    pub vm: Option<String>,
    /// Rows at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// The newest `limit` rows, returned oldest first.
    pub limit: u32,
}

/// What became of a tick given to [`Store::write_tick`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored, or kept on disk to be stored when the database answers again (the MySQL spool).
    Stored,
    /// Refused by the database for what it holds (no retry would change that): set aside in the
    /// store's quarantine, with the error, so that it never blocks the ticks after it.
    Quarantined,
}

/// A place ticks are written to and read back from.
pub trait Store: Send + 'static {
    /// Writes one tick atomically: either all of its rows land or none. An error is an outage
    /// (the database away, locked, full): the tick is kept and tried again.
    fn write_tick(
        &mut self,
        tick: &TickRecord,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Keeps `ticks` on local disk, for this store to write first when it next opens (at the
    /// end of a run, for what could not be written in time). Returns where they are. Must not
    /// wait for the database.
    fn spill(&mut self, ticks: &[std::sync::Arc<TickRecord>]) -> Result<PathBuf, StoreError>;

    /// The newest T2 rows matching `query`, oldest first.
    fn recent_host_usage(
        &mut self,
        query: &HostUsageQuery,
    ) -> impl Future<Output = Result<Vec<HostUsageRow>, StoreError>> + Send;

    /// The newest T4 rows matching `query`, oldest first.
    fn recent_vm_usage(
        &mut self,
        query: &VmUsageQuery,
    ) -> impl Future<Output = Result<Vec<VmUsageRow>, StoreError>> + Send;

    /// The newest rollup rows matching `query`, oldest first.
    fn rollups(
        &mut self,
        query: &rollup::RollupQuery,
    ) -> impl Future<Output = Result<Vec<rollup::RollupRow>, StoreError>> + Send;

    /// Every host (T1), as last written.
    fn hosts(&mut self) -> impl Future<Output = Result<Vec<rows::HostRow>, StoreError>> + Send;

    /// The rows of a report's window (see [`crate::analysis::report`]).
    fn report_samples(
        &mut self,
        query: &crate::analysis::ReportQuery,
    ) -> impl Future<Output = Result<Vec<crate::analysis::report::ReportSample>, StoreError>> + Send;

    /// The report over a window (see [`crate::analysis::report`]), folded as its rows are
    /// read.
    fn report(
        &mut self,
        query: &crate::analysis::ReportQuery,
    ) -> impl Future<Output = Result<Vec<crate::analysis::report::OwnerReport>, StoreError>> + Send;

    /// Rolls up the complete minutes and hours of host `host_ip` (its T2 rows and its VMs'
    /// T4 rows) up to `now`, and deletes rows older than `retention` allows. Cheap when
    /// nothing is due; called by the writer after each tick.
    fn maintain(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &rollup::Retention,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What a store remembers between two [`Store::maintain`] calls for one host.
#[derive(Debug, Default)]
pub struct Upkeep {
    /// Per level (minute, hour), the start of the next bucket to roll up; `None` until read
    /// from the database.
    next_bucket: [Option<OffsetDateTime>; 2],
    /// When old rows were last deleted.
    last_purge: Option<OffsetDateTime>,
}

/// How many buckets one `maintain` call rolls up at most per level: catching up after a long
/// outage is spread over ticks rather than stalling the writer.
const BUCKETS_PER_CALL: usize = 30;
/// Old rows are deleted at most this often.
const PURGE_EVERY: time::Duration = time::Duration::minutes(10);

impl Upkeep {
    /// Buckets of `level` complete at `now`, from the next one due; `first` gives the start of
    /// the first bucket (from the database) when it is not known yet.
    fn due_buckets(
        &mut self,
        level: rollup::Level,
        now: OffsetDateTime,
        first: impl FnOnce() -> Option<OffsetDateTime>,
    ) -> Vec<OffsetDateTime> {
        let slot = self.next_bucket_mut(level);
        if slot.is_none() {
            *slot = first().map(|t| level.bucket_start(t));
        }
        let Some(mut next) = *slot else {
            return Vec::new();
        };
        let span = level.time_span();
        let current = level.bucket_start(now);
        let mut due = Vec::new();
        while next < current && due.len() < BUCKETS_PER_CALL {
            due.push(next);
            // The first bucket comes from the database: near the end of time, stop there.
            let Some(after) = next.checked_add(span) else {
                break;
            };
            next = after;
        }
        due
    }

    /// Whether [`Upkeep::due_buckets`] will ask for the first bucket of `level`.
    fn needs_first(&self, level: rollup::Level) -> bool {
        let [minute, hour] = &self.next_bucket;
        match level {
            rollup::Level::Minute => minute.is_none(),
            rollup::Level::Hour => hour.is_none(),
        }
    }

    fn rolled_up(&mut self, level: rollup::Level, bucket: OffsetDateTime) {
        let span = level.time_span();
        *self.next_bucket_mut(level) = Some(bucket.checked_add(span).unwrap_or(bucket));
    }

    fn next_bucket_mut(&mut self, level: rollup::Level) -> &mut Option<OffsetDateTime> {
        let [minute, hour] = &mut self.next_bucket;
        match level {
            rollup::Level::Minute => minute,
            rollup::Level::Hour => hour,
        }
    }

    fn purge_due(&mut self, now: OffsetDateTime) -> bool {
        let due = self.last_purge.is_none_or(|at| now - at >= PURGE_EVERY);
        if due {
            self.last_purge = Some(now);
        }
        due
    }
}

/// The oldest time kept under `keep`, if rows expire at all.
fn cutoff(now: OffsetDateTime, keep: Option<std::time::Duration>) -> Option<OffsetDateTime> {
    // A retention reaching back before the year -9999 keeps everything.
    keep.and_then(|k| time::Duration::try_from(k).ok())
        .and_then(|k| now.checked_sub(k))
}

/// The store chosen at run time.
pub enum AnyStore {
    Sqlite(sqlite::SqliteStore),
    Mysql(Box<mysql::MysqlStore>),
}

impl AnyStore {
    /// The file, or the server URL without its password.
    pub fn describe(&self) -> String {
        match self {
            AnyStore::Sqlite(s) => s.path().display().to_string(),
            AnyStore::Mysql(s) => s.target().to_owned(),
        }
    }
}

impl Store for AnyStore {
    async fn write_tick(&mut self, tick: &TickRecord) -> Result<WriteOutcome, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.write_tick(tick).await,
            AnyStore::Mysql(s) => s.write_tick(tick).await,
        }
    }

    fn spill(&mut self, ticks: &[std::sync::Arc<TickRecord>]) -> Result<PathBuf, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.spill(ticks),
            AnyStore::Mysql(s) => s.spill(ticks),
        }
    }

    async fn recent_host_usage(
        &mut self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.recent_host_usage(query).await,
            AnyStore::Mysql(s) => s.recent_host_usage(query).await,
        }
    }

    async fn recent_vm_usage(
        &mut self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.recent_vm_usage(query).await,
            AnyStore::Mysql(s) => s.recent_vm_usage(query).await,
        }
    }

    async fn rollups(
        &mut self,
        query: &rollup::RollupQuery,
    ) -> Result<Vec<rollup::RollupRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.rollups(query).await,
            AnyStore::Mysql(s) => s.rollups(query).await,
        }
    }

    async fn hosts(&mut self) -> Result<Vec<rows::HostRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.hosts().await,
            AnyStore::Mysql(s) => s.hosts().await,
        }
    }

    async fn report_samples(
        &mut self,
        query: &crate::analysis::ReportQuery,
    ) -> Result<Vec<crate::analysis::report::ReportSample>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.report_samples(query).await,
            AnyStore::Mysql(s) => s.report_samples(query).await,
        }
    }

    async fn report(
        &mut self,
        query: &crate::analysis::ReportQuery,
    ) -> Result<Vec<crate::analysis::report::OwnerReport>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.report(query).await,
            AnyStore::Mysql(s) => s.report(query).await,
        }
    }

    async fn maintain(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &rollup::Retention,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.maintain(host_ip, now, retention).await,
            AnyStore::Mysql(s) => s.maintain(host_ip, now, retention).await,
        }
    }
}

/// The DELETE statements of a purge, each with its cutoff; `?1` is the host, `?2` the cutoff.
fn purge_statements(
    now: OffsetDateTime,
    retention: &rollup::Retention,
) -> Vec<(&'static str, OffsetDateTime)> {
    let mut statements = Vec::new();
    if let Some(at) = cutoff(now, retention.raw) {
        statements.extend([
            ("DELETE FROM host_usage WHERE host_ip = ? AND time < ?", at),
            ("DELETE FROM host_ebpf_usage WHERE host_ip = ? AND time < ?", at),
            (
                "DELETE FROM vm_usage WHERE uuid IN (SELECT uuid FROM vms WHERE host_ip = ?) AND time < ?",
                at,
            ),
            (
                "DELETE FROM vm_ebpf_usage WHERE uuid IN (SELECT uuid FROM vms WHERE host_ip = ?) AND time < ?",
                at,
            ),
        ]);
    }
    if let Some(at) = cutoff(now, retention.minute) {
        statements.extend([
            ("DELETE FROM host_usage_1m WHERE host_ip = ? AND time < ?", at),
            (
                "DELETE FROM vm_usage_1m WHERE uuid IN (SELECT uuid FROM vms WHERE host_ip = ?) AND time < ?",
                at,
            ),
        ]);
    }
    if let Some(at) = cutoff(now, retention.hour) {
        statements.extend([
            ("DELETE FROM host_usage_1h WHERE host_ip = ? AND time < ?", at),
            (
                "DELETE FROM vm_usage_1h WHERE uuid IN (SELECT uuid FROM vms WHERE host_ip = ?) AND time < ?",
                at,
            ),
        ]);
    }
    statements
}

/// UTC with milliseconds, fixed width, so text order is time order.
pub fn format_time(t: OffsetDateTime) -> String {
    utc_millis(t, 'T', "Z")
}

/// `t` in UTC as `YYYY-MM-DD<separator>HH:MM:SS.mmm<zone>`.
fn utc_millis(t: OffsetDateTime, separator: char, zone: &str) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}.{:03}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The read half of [`Store`] for test stores that are only written to: every read is empty,
    /// upkeep does nothing.
    macro_rules! no_reads {
        () => {
            async fn recent_host_usage(
                &mut self,
                _query: &$crate::store::HostUsageQuery,
            ) -> Result<Vec<$crate::store::HostUsageRow>, $crate::store::StoreError> {
                Ok(Vec::new())
            }

            async fn recent_vm_usage(
                &mut self,
                _query: &$crate::store::VmUsageQuery,
            ) -> Result<Vec<$crate::store::VmUsageRow>, $crate::store::StoreError> {
                Ok(Vec::new())
            }

            async fn rollups(
                &mut self,
                _query: &$crate::store::rollup::RollupQuery,
            ) -> Result<Vec<$crate::store::rollup::RollupRow>, $crate::store::StoreError> {
                Ok(Vec::new())
            }

            async fn hosts(
                &mut self,
            ) -> Result<Vec<$crate::store::rows::HostRow>, $crate::store::StoreError> {
                Ok(Vec::new())
            }

            async fn report_samples(
                &mut self,
                _query: &$crate::analysis::ReportQuery,
            ) -> Result<Vec<$crate::analysis::report::ReportSample>, $crate::store::StoreError> {
                Ok(Vec::new())
            }

            async fn report(
                &mut self,
                _query: &$crate::analysis::ReportQuery,
            ) -> Result<Vec<$crate::analysis::report::OwnerReport>, $crate::store::StoreError> {
                Ok(Vec::new())
            }

            async fn maintain(
                &mut self,
                _host_ip: &str,
                _now: time::OffsetDateTime,
                _retention: &$crate::store::rollup::Retention,
            ) -> Result<(), $crate::store::StoreError> {
                Ok(())
            }
        };
    }
    pub(crate) use no_reads;

    #[test]
    fn times_are_utc_with_milliseconds() {
        let t = time::macros::datetime!(2026-11-30 15:04:05.123_456 +09:00);
        assert_eq!(format_time(t), "2026-11-30T06:04:05.123Z");
    }
}
