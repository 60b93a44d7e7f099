//! The embedded default store: one SQLite file, schema from `migrations/sqlite`.
//!
//! WAL journal with `synchronous=NORMAL`: a commit survives a crash of the monitor; after a
//! power loss the last ticks before it may be missing, but the file is never corrupt. That
//! keeps a tick's commit off the disk's flush path.

mod kept;
mod read;
mod upkeep;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use time::OffsetDateTime;

use crate::analysis::ReportQuery;
use crate::analysis::report::{OwnerReport, ReportSample};

use super::private_files;
use super::rollup::{Retention, RollupQuery, RollupRow};
use super::rows::{HostRow, VmRow};
use super::{
    HostUsageQuery, HostUsageRow, Store, StoreError, TickRecord, Upkeep, VmUsageQuery, VmUsageRow,
    WriteOutcome,
};
use crate::progress::Progress;
use kept::KeptTicks;

mod embedded {
    refinery::embed_migrations!("../migrations/sqlite");
}

/// The SQLite store. Cheap to clone; clones share one connection. A database it creates is
/// private (0600, see [`private_files`]); an existing one others can read is warned about.
#[derive(Clone)]
pub struct SqliteStore {
    state: Arc<Mutex<OpenDatabase>>,
    path: PathBuf,
    /// Ticks kept for later and ticks refused: apart from the connection, so that they can be
    /// reached while a write waits on a locked database.
    kept: Arc<Mutex<KeptTicks>>,
}

/// Statements kept prepared: every statement a tick and the upkeep use, with room to spare.
const STATEMENT_CACHE: usize = 64;

/// The connection and the T1 and T3 rows it last wrote.
struct OpenDatabase {
    conn: Connection,
    written_host: Option<HostRow>,
    /// The T3 rows written (without their last connect time), by UUID.
    written_vms: HashMap<String, VmRow>,
    /// Rollup and purge bookkeeping, by host.
    upkeep: HashMap<String, Upkeep>,
}

/// Brings the schema up to date one migration at a time, with progress when there is any
/// (the migration to time-ordered rows copies every VM row).
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let failed = |e: refinery::Error| StoreError::Migrate {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let runner = || {
        embedded::migrations::runner()
            .set_abort_divergent(true)
            .set_abort_missing(true)
    };
    // A new database has no history table yet (refinery creates it on its first run).
    let has_history =
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master \
             WHERE type = 'table' AND name = 'refinery_schema_history'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })? > 0;
    let current = if has_history {
        runner()
            .get_last_applied_migration(conn)
            .map_err(failed)?
            .map(|m| m.version())
    } else {
        None
    };
    let pending = super::pending_versions(runner().get_migrations(), current);
    if pending.is_empty() {
        // Still run: it refuses a divergent or unknown history.
        return runner().run(conn).map(drop).map_err(failed);
    }
    let mut progress = Progress::steps(
        &format!("migrating {}", path.display()),
        pending.len() as u64,
    );
    for version in &pending {
        runner()
            .set_target(refinery::Target::Version(*version))
            .run(conn)
            .map_err(failed)?;
        progress.advance(1);
    }
    progress.finish(&format!(
        "{}: schema {} applied",
        path.display(),
        pending
            .iter()
            .map(|v| format!("V{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    /// A database written by a newer SETMOV (migrations this build does not know) is refused.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_files::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let io_err = |source| StoreError::CreateFile {
            path: path.to_owned(),
            source,
        };
        // SQLite creates a file 0644 less the umask, and gives the -wal and -shm files the
        // mode of the database: a database created empty and private keeps all three private.
        if !private_files::create_empty_file(path).map_err(io_err)?
            && let Some(mode) = private_files::readable_by_others(path).map_err(io_err)?
        {
            tracing::warn!(
                "database {} is readable by other users (mode {mode:04o}): they can see VM names \
                 and usage; `chmod 600` it (and its -wal and -shm files) to keep it private",
                path.display()
            );
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_err)?;
        // A tick uses up to 20 statements (BEGIN, COMMIT, T1, T3, the last connect time and
        // 15 data tables), upkeep a few more: with rusqlite's default of 16 cached statements
        // they would evict each other and be parsed again on every tick.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn, path)?;
        Ok(SqliteStore {
            state: Arc::new(Mutex::new(OpenDatabase {
                conn,
                written_host: None,
                written_vms: HashMap::new(),
                upkeep: HashMap::new(),
            })),
            path: path.to_owned(),
            kept: Arc::new(Mutex::new(KeptTicks::new(path))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, OpenDatabase>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Worker("a database call panicked".into()))
    }
}

/// Runs `call` on a blocking thread. A panic there is raised again in the caller (the writer
/// task, which then ends the run) rather than turned into an error a writer would retry for
/// ever against a mutex the panic poisoned.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Worker(e.to_string())),
    }
}

impl Store for SqliteStore {
    async fn write_tick(&mut self, tick: &TickRecord) -> Result<WriteOutcome, StoreError> {
        let store = self.clone();
        let tick = tick.clone();
        blocking(move || store.write_tick_blocking(&tick)).await
    }

    fn spill(&mut self, ticks: &[Arc<TickRecord>]) -> Result<PathBuf, StoreError> {
        self.spill_blocking(ticks)
    }

    async fn recent_host_usage(
        &mut self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        blocking(move || store.recent_host_usage_blocking(&query)).await
    }

    async fn recent_vm_usage(
        &mut self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        blocking(move || store.recent_vm_usage_blocking(&query)).await
    }

    async fn rollups(&mut self, query: &RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        blocking(move || store.rollups_blocking(&query)).await
    }

    async fn hosts(&mut self) -> Result<Vec<HostRow>, StoreError> {
        let store = self.clone();
        blocking(move || store.hosts_blocking()).await
    }

    async fn report_samples(
        &mut self,
        query: &ReportQuery,
    ) -> Result<Vec<ReportSample>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        blocking(move || store.report_samples_blocking(&query)).await
    }

    async fn report(&mut self, query: &ReportQuery) -> Result<Vec<OwnerReport>, StoreError> {
        let store = self.clone();
        let query = query.clone();
        blocking(move || store.report_blocking(&query)).await
    }

    async fn maintain(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        let (host_ip, retention) = (host_ip.to_owned(), *retention);
        blocking(move || store.maintain_blocking(&host_ip, now, &retention)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::identity::HostIdentity;
    use crate::store::{HostSample, VmSample};
    use crate::usage::host::{CpuUsage, HostUsage};
    use crate::usage::vm::vm_usage;
    use crate::vm::libvirt::NodeFacts;
    use crate::vm::stats::{DomainState, DomainStats};
    use setmov_common::DIR_WRITE;

    /// Number of T2 rows of a host.
    fn host_usage_count(store: &SqliteStore, host_ip: &str) -> u64 {
        let state = store.lock().expect("lock");
        state
            .conn
            .query_row(
                "SELECT COUNT(*) FROM host_usage WHERE host_ip = ?1",
                [host_ip],
                |r| r.get(0),
            )
            .expect("count")
    }

    pub(super) fn tick(seq: u64, ms: i64) -> TickRecord {
        let cpu = CpuUsage {
            busy_pct: 12.5,
            user_pct: 10.0,
            user_excl_guest_pct: 10.0,
            nice_pct: 0.0,
            system_pct: 2.5,
            idle_pct: 87.5,
            iowait_pct: 0.0,
            irq_pct: 0.0,
            softirq_pct: 0.0,
            steal_pct: 0.0,
            guest_pct: 0.0,
        };
        TickRecord {
            seq,
            time: OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .expect("time"),
            host: HostIdentity {
                name: "hv1".into(),
                ip: "192.0.2.2".into(),
                mac: None,
                interface: None,
            },
            vm_count: Some(0),
            node: None,
            host_sample: Some(HostSample {
                interval_secs: 1.0,
                late_ms: 0.2,
                missed_ticks: 0,
                usage: HostUsage {
                    disk_total_over: Vec::new(),
                    net_total_over: Vec::new(),
                    cpu: Some(cpu),
                    per_cpu: vec![Some(cpu), None],
                    mem: None,
                    disks: Vec::new(),
                    disk_total: None,
                    nets: Vec::new(),
                    net_total: None,
                },
                problems: Vec::new(),
            }),
            vms: Vec::new(),
            ebpf: None,
        }
    }

    pub(super) fn vm(state: Option<DomainState>, missing: bool) -> VmSample {
        VmSample {
            uuid: "3f9a7c1e-0000-4000-8000-000000000001".into(),
            name: "desk-1".into(),
            state,
            gone: false,
            qemu_pid: Some(4300),
            vcpu_tids: vec![4301],
            missing: missing.then(|| "libvirt did not answer within 1s".to_owned()),
            interval_secs: Some(1.0),
            usage: (!missing).then(|| vm_usage(None, &DomainStats::default(), 1.0, 2)),
            ebpf: None,
        }
    }

    #[test]
    fn vm_rows_keep_the_last_connect_time_and_the_vm_count_through_an_outage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut t = tick(1, 1_000);
        t.vm_count = Some(1);
        t.node = Some(NodeFacts {
            cpus: 2,
            memory_bytes: Some(24 << 30),
        });
        t.vms = vec![vm(Some(DomainState::Running), false)];
        store.write_tick_blocking(&t).expect("running");
        // libvirt away: state unknown, the row marked missing, VMC not known.
        let mut t = tick(2, 2_000);
        t.vm_count = None;
        t.vms = vec![vm(None, true)];
        store.write_tick_blocking(&t).expect("missing");
        let mut t = tick(3, 3_000);
        t.vm_count = Some(0);
        t.vms = vec![vm(Some(DomainState::Paused), false)];
        store.write_tick_blocking(&t).expect("paused");

        let state = store.lock().expect("lock");
        let (vm_state, lct, vmc, cpus): (String, String, u32, u32) = state
            .conn
            .query_row(
                "SELECT v.state, v.lct, h.vmc, h.cpus FROM vms v JOIN hosts h USING (host_ip)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("row");
        assert_eq!(cpus, 2, "capacity kept while libvirt was away");
        assert_eq!(
            (vm_state.as_str(), lct.as_str(), vmc),
            ("paused", "1970-01-01T00:00:01.000Z", 0)
        );
        drop(state);
        let rows = store
            .recent_vm_usage_blocking(&VmUsageQuery {
                vm: Some("desk-1".into()),
                limit: 10,
                ..VmUsageQuery::default()
            })
            .expect("rows");
        let summary: Vec<_> = rows
            .iter()
            .map(|r| (r.state.as_str(), r.missing.is_some()))
            .collect();
        assert_eq!(
            summary,
            [("running", false), ("unknown", true), ("paused", false)]
        );
        assert_eq!(rows[0].mem_source.as_deref(), Some("allocation-only"));
    }

    #[test]
    fn ebpf_figures_land_beside_the_host_and_vm_rows() {
        use crate::ebpf::BlockTotals;
        use crate::ebpf::{KvmCounters, KvmEventKind, NetDeviceCounters};
        use crate::usage::ebpf::{
            EbpfInterval, ProgramCost, VmOwnership, host_ebpf_figures, vm_ebpf_figures,
        };
        use setmov_common::net::NetDeviceValue;
        use setmov_common::{BlockKey, DeviceKey, LatHist, Log2Hist, PairingCounters};
        use std::collections::{HashMap, HashSet};

        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let mut kvm = KvmCounters::default();
        kvm.by_kind
            .entry(KvmEventKind::Mmio)
            .or_default()
            .insert("write".into(), 7);
        // Three writes of 150 µs, one of 300 µs.
        let mut latency = LatHist::default();
        latency.buckets[setmov_common::lat_bucket(150_000)] = 3;
        latency.buckets[setmov_common::lat_bucket(300_000)] = 1;
        let mut sizes = Log2Hist::default();
        sizes.buckets[10] = 2;
        let writes = BlockTotals {
            write_ops: 4,
            write_bytes: 16384,
            ..BlockTotals::default()
        };
        let interval = EbpfInterval {
            interval_secs: 1.0,
            block_total: BlockTotals {
                write_ops: 5,
                write_bytes: 20480,
                ..BlockTotals::default()
            },
            block_by_device: HashMap::from([(
                254 << 20,
                BlockTotals {
                    write_ops: 5,
                    write_bytes: 20480,
                    ..BlockTotals::default()
                },
            )]),
            block_by_tgid: HashMap::from([(4300, writes)]),
            latency_by_device: HashMap::from([(
                DeviceKey {
                    dev: 254 << 20,
                    direction: DIR_WRITE,
                },
                latency,
            )]),
            latency_by_tgid: HashMap::from([(
                BlockKey {
                    tgid: 4300,
                    direction: DIR_WRITE,
                },
                latency,
            )]),
            device_names: HashMap::from([(254 << 20, "vda".to_owned())]),
            programs: vec![ProgramCost {
                program: "block_io_start".into(),
                events_per_sec: 5.0,
                mean_ns: Some(420.0),
            }],
            net_devices: HashMap::from([(
                "vnet0".to_owned(),
                NetDeviceCounters {
                    rx: NetDeviceValue {
                        packets: 2,
                        bytes: 2056,
                        sizes,
                    },
                    ..NetDeviceCounters::default()
                },
            )]),
            net_drops: HashMap::from([(("vnet0".to_owned(), "NO_SOCKET".to_owned()), 3)]),
            kvm_by_tgid: HashMap::from([(4300, kvm)]),
            // Its vCPU thread watched the whole interval, without waiting: 0 %, not unknown.
            runq_watched_throughout: HashSet::from([4301]),
            sched_on: true,
            pairing: HashMap::from([(
                DeviceKey {
                    dev: 254 << 20,
                    direction: DIR_WRITE,
                },
                PairingCounters {
                    collided: 6,
                    overflowed: 0,
                    unpaired: 1,
                },
            )]),
            ..EbpfInterval::default()
        };
        let mut t = tick(1, 1_000);
        let mut sample = vm(Some(DomainState::Running), false);
        sample.ebpf = Some(vm_ebpf_figures(
            &interval,
            VmOwnership {
                qemu_pid: 4300,
                vcpu_tids: &[4301],
                taps: &["vnet0"],
            },
        ));
        t.vms = vec![sample];
        let disks = ["vda".to_owned()];
        t.ebpf = Some(host_ebpf_figures(
            &interval,
            &HashSet::from([4300]),
            Some(&disks),
        ));
        store.write_tick_blocking(&t).expect("write");

        let state = store.lock().expect("lock");
        let row: (f64, f64, u32, f64, u32, u32) = state
            .conn
            .query_row(
                "SELECT h.unattributed_write_bytes_s, v.block_write_bytes_s,
                    (SELECT requests FROM host_disk_latency WHERE device = 'vda'),
                    v.write_latency_p50_us,
                    (SELECT SUM(requests) FROM vm_latency_hist),
                    (SELECT COUNT(*) FROM vm_latency_hist)
                 FROM host_ebpf_usage h, vm_ebpf_usage v",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .expect("rows");
        assert_eq!((row.0, row.1, row.2), (4096.0, 16384.0, 4));
        assert!((150.0..=150.0 * 1.125).contains(&row.3), "p50 {}", row.3);
        assert_eq!(
            (row.4, row.5),
            (4, 2),
            "two non-empty buckets, four requests"
        );
        // The rows carry their bounds, each bucket within 1/8 of its lower bound.
        let bounds: Vec<(i64, i64, i64)> = state
            .conn
            .prepare("SELECT low_ns, high_ns, requests FROM vm_latency_hist ORDER BY low_ns")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("bounds");
        assert_eq!(bounds, [(147_456, 163_840, 3), (294_912, 327_680, 1)]);
        let pairing: (i64, i64, i64) = state
            .conn
            .query_row(
                "SELECT latency_collided, latency_overflowed, latency_unpaired \
                 FROM host_ebpf_usage",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("pairing");
        assert_eq!(pairing, (6, 0, 1));
        let cost: f64 = state
            .conn
            .query_row("SELECT mean_ns FROM ebpf_program_stats", [], |r| r.get(0))
            .expect("program cost");
        assert_eq!(cost, 420.0);
        let vm: (f64, f64, f64, f64, String, u32, u32) = state
            .conn
            .query_row(
                "SELECT cpu_ready_pct, kvm_events_s, net_tx_bytes_s, net_drops_s,
                    (SELECT reason FROM vm_kvm_events),
                    (SELECT SUM(packets) FROM vm_nic_packet_sizes WHERE direction = 'tx'),
                    (SELECT packets FROM vm_nic_drops WHERE reason = 'NO_SOCKET')
                 FROM vm_ebpf_usage",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .expect("vm eBPF row");
        // The tap's receive is the guest's transmit, with the 14-byte headers added back.
        assert_eq!(vm, (0.0, 7.0, 2084.0, 3.0, "write".into(), 2, 3));
    }

    #[test]
    fn ticks_are_written_once_and_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("sub/s.db")).expect("open");
        for (seq, ms) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            store.write_tick_blocking(&tick(seq, ms)).expect("write");
        }
        // A replay of tick 2 changes nothing.
        store.write_tick_blocking(&tick(2, 2_000)).expect("replay");
        assert_eq!(host_usage_count(&store, "192.0.2.2"), 3);
        let rows = store
            .recent_host_usage_blocking(&HostUsageQuery {
                host_ip: None,
                since: None,
                limit: 2,
            })
            .expect("rows");
        let times: Vec<_> = rows.iter().map(|r| r.time.as_str()).collect();
        assert_eq!(
            times,
            ["1970-01-01T00:00:02.000Z", "1970-01-01T00:00:03.000Z"]
        );
        assert_eq!(rows[0].cpu_pct, Some(12.5));
        assert_eq!(rows[0].disk_read_bytes_s, None);
    }

    #[test]
    fn schema_3_keeps_the_vm_rows_of_schema_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).expect("raw");
        conn.execute_batch("PRAGMA foreign_keys = ON;").expect("fk");
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(2))
            .run(&mut conn)
            .expect("schema 2");
        conn.execute_batch(
            "INSERT INTO hosts (host_ip, host_name, vmc) VALUES ('192.0.2.2', 'hv1', 1);
             INSERT INTO vms (uuid, host_ip, name, state, lct)
                 VALUES ('u1', '192.0.2.2', 'desk-1', 'running', '1970-01-01T00:00:02.000Z');
             INSERT INTO vm_usage (uuid, time, state, cpu_pct)
                 VALUES ('u1', '1970-01-01T00:00:01.000Z', 'running', 10.0),
                        ('u1', '1970-01-01T00:00:02.000Z', 'running', 20.0);
             INSERT INTO vm_disk_usage (uuid, time, device, read_bytes_s, write_bytes_s,
                 read_iops, write_iops) VALUES ('u1', '1970-01-01T00:00:02.000Z', 'vda', 1, 2, 3, 4);
             INSERT INTO vm_nic_usage (uuid, time, iface, rx_pps, tx_pps, rx_bytes_s, tx_bytes_s,
                 rx_bps, tx_bps, rx_errs, rx_drop, tx_errs, tx_drop)
                 VALUES ('u1', '1970-01-01T00:00:02.000Z', 'vnet0', 1, 2, 3, 4, 5, 6, 0, 0, 0, 0);",
        )
        .expect("schema 2 rows");
        drop(conn);
        let store = SqliteStore::open(&path).expect("migrate to the latest schema");
        let rows = store
            .recent_vm_usage_blocking(&VmUsageQuery {
                limit: 10,
                ..VmUsageQuery::default()
            })
            .expect("rows");
        let cpu: Vec<_> = rows.iter().map(|r| r.cpu_pct).collect();
        assert_eq!(cpu, [Some(10.0), Some(20.0)]);
        let state = store.lock().expect("lock");
        let details: (u32, u32, u32) = state
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM vm_disk_usage), (SELECT COUNT(*) FROM vm_nic_usage),
                        (SELECT COUNT(*) FROM pragma_foreign_key_check)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("counts");
        assert_eq!(
            details,
            (1, 1, 0),
            "detail rows kept, every foreign key holds"
        );
    }

    #[test]
    fn schema_9_gives_log2_latency_rows_their_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).expect("raw");
        conn.execute_batch("PRAGMA foreign_keys = ON;").expect("fk");
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(8))
            .run(&mut conn)
            .expect("schema 8");
        conn.execute_batch(
            "INSERT INTO hosts (host_ip, host_name, vmc) VALUES ('192.0.2.2', 'hv1', 1);
             INSERT INTO vms (uuid, host_ip, name, state, lct)
                 VALUES ('u1', '192.0.2.2', 'desk-1', 'running', '1970-01-01T00:00:02.000Z');
             INSERT INTO vm_ebpf_usage (time, uuid, interval_s)
                 VALUES ('1970-01-01T00:00:02.000Z', 'u1', 1.0);
             INSERT INTO vm_latency_hist (time, uuid, direction, bucket, requests)
                 VALUES ('1970-01-01T00:00:02.000Z', 'u1', 'read', 0, 1),
                        ('1970-01-01T00:00:02.000Z', 'u1', 'read', 17, 30),
                        ('1970-01-01T00:00:02.000Z', 'u1', 'write', 39, 2);",
        )
        .expect("schema 8 rows");
        drop(conn);
        let store = SqliteStore::open(&path).expect("migrate to the latest schema");
        let state = store.lock().expect("lock");
        let rows: Vec<(String, i64, Option<i64>, i64)> = state
            .conn
            .prepare(
                "SELECT direction, low_ns, high_ns, requests FROM vm_latency_hist \
                 ORDER BY direction, low_ns",
            )
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            rows,
            [
                ("read".to_owned(), 0, Some(2), 1),
                ("read".to_owned(), 131_072, Some(262_144), 30),
                ("write".to_owned(), 1 << 39, None, 2),
            ]
        );
        let broken: u32 = state
            .conn
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .expect("fk check");
        assert_eq!(broken, 0);
    }

    #[test]
    fn reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        SqliteStore::open(&path)
            .expect("open")
            .write_tick_blocking(&tick(1, 1_000))
            .expect("write");
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(host_usage_count(&store, "192.0.2.2"), 1);
        drop(store);
        let conn = Connection::open(&path).expect("raw");
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
            [],
        )
        .expect("insert");
        drop(conn);
        let err = SqliteStore::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("cannot migrate"), "{err}");
    }
}
