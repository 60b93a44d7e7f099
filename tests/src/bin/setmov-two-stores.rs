//! One live monitor writing every tick into the embedded store and a MySQL/MariaDB database at
//! once, through the store code `setmov run` uses, for the test that the two stores give the
//! same answers (`tests/store_equivalence.rs`). After the live run the same ticks are written
//! again, moved back so that they start 90 s before the end of the hour two hours before theirs
//! (10:20 → 08:58:30), and given to a second host (its VMs under new UUIDs and names ending in
//! `-past`), so that two complete hour buckets roll up from real VM rows too.
//!
//! Usage: `setmov-two-stores SQLITE_FILE MYSQL_URL PASSWORD_FILE SPOOL_DIR TICKS INTERVAL_MS`.
//! The live host is 192.0.2.10, the moved one [`PAST_HOST_IP`]. Prints one line of facts
//! (`ticks= written= lost= ebpf=on|off`) and exits 1 on any failure.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use setmov::analysis::ReportQuery;
use setmov::analysis::report::{OwnerReport, ReportSample};
use setmov::commands::sources::{EbpfStatus, SourceOptions, start_sources};
use setmov::host::devices::DEFAULT_SKIPPED_DISK_PREFIXES;
use setmov::host::identity::HostIdentity;
use setmov::sampler::{self, Outputs, SamplerConfig};
use setmov::store::mysql::{MysqlConfig, MysqlStore};
use setmov::store::rollup::{Level, Retention, RollupQuery, RollupRow};
use setmov::store::rows::HostRow;
use setmov::store::sqlite::SqliteStore;
use setmov::store::{
    HostUsageQuery, HostUsageRow, Store, StoreError, TickRecord, VmUsageQuery, VmUsageRow,
    WriteOutcome,
};
use time::OffsetDateTime;

const LIVE_HOST_IP: &str = "192.0.2.10";
const PAST_HOST_IP: &str = "192.0.2.11";

/// Writes each tick to both stores and keeps a copy; reads nothing.
struct TwoStores {
    sqlite: SqliteStore,
    mysql: MysqlStore,
    ticks: Arc<Mutex<Vec<TickRecord>>>,
}

fn write_only() -> StoreError {
    StoreError::Worker("the two-store writer only writes".into())
}

impl Store for TwoStores {
    async fn write_tick(&mut self, tick: &TickRecord) -> Result<WriteOutcome, StoreError> {
        // Both stores must store every tick: a quarantined one is a failure here.
        for outcome in [
            self.sqlite.write_tick(tick).await?,
            self.mysql.write_tick(tick).await?,
        ] {
            if outcome != WriteOutcome::Stored {
                return Err(StoreError::Worker(format!(
                    "tick {}: {outcome:?}",
                    tick.seq
                )));
            }
        }
        self.ticks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tick.clone());
        Ok(WriteOutcome::Stored)
    }

    fn spill(&mut self, _: &[Arc<TickRecord>]) -> Result<PathBuf, StoreError> {
        Err(write_only())
    }

    async fn recent_host_usage(
        &mut self,
        _: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        Err(write_only())
    }

    async fn recent_vm_usage(&mut self, _: &VmUsageQuery) -> Result<Vec<VmUsageRow>, StoreError> {
        Err(write_only())
    }

    async fn rollups(&mut self, _: &RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        Err(write_only())
    }

    async fn hosts(&mut self) -> Result<Vec<HostRow>, StoreError> {
        Err(write_only())
    }

    async fn report_samples(&mut self, _: &ReportQuery) -> Result<Vec<ReportSample>, StoreError> {
        Err(write_only())
    }

    async fn report(&mut self, _: &ReportQuery) -> Result<Vec<OwnerReport>, StoreError> {
        Err(write_only())
    }

    async fn maintain(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        self.sqlite.maintain(host_ip, now, retention).await?;
        self.mysql.maintain(host_ip, now, retention).await
    }
}

/// `tick` moved by `shift` onto the second host, its VMs renamed.
fn moved(tick: &TickRecord, shift: time::Duration) -> TickRecord {
    let mut tick = tick.clone();
    tick.time += shift;
    tick.host.ip = PAST_HOST_IP.into();
    tick.host.name = format!("{}-past", tick.host.name);
    for vm in &mut tick.vms {
        // Same shape, another key.
        vm.uuid = format!("00000000{}", vm.uuid.get(8..).unwrap_or_default());
        vm.name = format!("{}-past", vm.name);
    }
    tick
}

async fn two_stores(args: &[String]) -> anyhow::Result<()> {
    let [
        sqlite_path,
        url,
        password_file,
        spool_dir,
        ticks,
        interval_ms,
    ] = args
    else {
        bail!(
            "usage: setmov-two-stores SQLITE_FILE MYSQL_URL PASSWORD_FILE SPOOL_DIR TICKS INTERVAL_MS"
        );
    };
    let count: u64 = ticks.parse().context("TICKS")?;
    let interval = Duration::from_millis(interval_ms.parse().context("INTERVAL_MS")?);
    let password = std::fs::read_to_string(password_file)
        .with_context(|| format!("cannot read {password_file}"))?;
    let config = MysqlConfig {
        url: url.clone(),
        password: Some(password.trim().to_owned()),
        tls: false,
        ca_file: None,
        spool_dir: PathBuf::from(spool_dir),
        spool_max_bytes: 1 << 30,
    };
    let open = async || -> anyhow::Result<(SqliteStore, MysqlStore)> {
        Ok((
            SqliteStore::open(std::path::Path::new(sqlite_path))?,
            MysqlStore::open(config.clone()).await?,
        ))
    };
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let (sqlite, mysql) = open().await?;
    let store = TwoStores {
        sqlite,
        mysql,
        ticks: Arc::clone(&ticks),
    };
    let (sources, status) = start_sources(SourceOptions {
        proc_root: std::path::Path::new("/proc"),
        skipped_disks: DEFAULT_SKIPPED_DISK_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        libvirt_uri: "qemu:///system",
        libvirt_run_dir: std::path::Path::new(setmov::cli::DEFAULT_LIBVIRT_RUN_DIR),
        no_libvirt: false,
        no_ebpf: false,
        bpf_stats: false,
    })?;
    let ebpf_on = match status.ebpf {
        EbpfStatus::On { .. } => true,
        EbpfStatus::Off(why) => {
            eprintln!("setmov-two-stores: eBPF is off: {why}");
            false
        }
    };
    let sampling = SamplerConfig {
        interval,
        count: Some(count),
        print_summary: false,
        net_total_excluded: Vec::new(),
        retention: Retention::default(),
    };
    let identity = HostIdentity {
        name: setmov::host::identity::hostname(std::path::Path::new("/proc")),
        ip: LIVE_HOST_IP.into(),
        mac: None,
        interface: None,
    };
    let report = sampler::run(
        sampling,
        identity,
        sources,
        Some(store),
        Outputs::default(),
        tokio::sync::watch::channel(sampler::Stop::Run).1,
    )
    .await;
    println!(
        "ticks={} written={} lost={} ebpf={}",
        report.ticks,
        report.written,
        report.lost,
        if ebpf_on { "on" } else { "off" }
    );
    if let Some(failure) = report.writer_failure {
        bail!("the writer stopped: {failure}");
    }
    if report.lost > 0 {
        bail!("{} ticks lost", report.lost);
    }

    // The same ticks three hours back, starting 90 s before an hour ends.
    let ticks = std::mem::take(&mut *ticks.lock().unwrap_or_else(PoisonError::into_inner));
    let Some(first) = ticks.first().map(|t| t.time) else {
        bail!("no tick was recorded");
    };
    let target =
        Level::Hour.bucket_start(first) - time::Duration::hours(2) - time::Duration::seconds(90);
    let shift = target - first;
    let (mut sqlite, mut mysql) = open().await?;
    for tick in &ticks {
        let tick = moved(tick, shift);
        sqlite.write_tick(&tick).await?;
        mysql.write_tick(&tick).await?;
    }
    // Each call rolls up at most 30 buckets a level: enough calls for three hours of minutes.
    let now = OffsetDateTime::now_utc();
    for _ in 0..10 {
        for host in [PAST_HOST_IP, LIVE_HOST_IP] {
            sqlite.maintain(host, now, &Retention::default()).await?;
            mysql.maintain(host, now, &Retention::default()).await?;
        }
    }
    mysql.close().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("setmov-two-stores: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(two_stores(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("setmov-two-stores: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
