//! `setmov report` over a month of one-minute data for 100 VMs on the embedded store: the data
//! is generated (per-minute and per-hour rollups of every figure with their distributions, as
//! the monitor leaves them), then the report is timed at the level its window picks (hours)
//! and at `--level minute` over a window that ends on no hour.

use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params, params_from_iter};
use setmov::analysis::ReportQuery;
use setmov::store::format_time;
use setmov::store::rollup::{HOST_FIGURES, Level, VM_FIGURES, rollup_columns};
use setmov::store::sketch::Sketch;
use setmov::store::sqlite::SqliteStore;
use time::OffsetDateTime;

const VMS: usize = 100;
const HOST: &str = "192.0.2.1";

/// A small deterministic generator: figures that vary, without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn uuid(vm: usize) -> String {
    format!("3f9a7c1e-0000-4000-8000-{vm:012}")
}

/// Each figure's scale and spread, in the order of the host's and the VMs' rolled-up figures:
/// a tick's value lies between `scale` and (1 + `spread`) × `scale`. Rates and CPU move every
/// tick; memory barely; vCPUs and the allocation not at all (their distribution is one bucket).
const HOST_SCALES: [(f64, f64); 8] = [
    (10.0, 5.0),
    (40.0, 0.02),
    (1e7, 10.0),
    (1e7, 10.0),
    (100.0, 10.0),
    (100.0, 10.0),
    (1e6, 10.0),
    (1e6, 10.0),
];
const VM_SCALES: [(f64, f64); 23] = [
    (5.0, 10.0),   // cpu_pct
    (10.0, 10.0),  // cpu_vcpu_pct
    (8.0, 10.0),   // cpu_vcpu_threads_pct
    (0.1, 5.0),    // steal_pct
    (50.0, 0.02),  // mem_used_pct
    (1e5, 100.0),  // disk_read_bytes_s
    (1e5, 100.0),  // disk_write_bytes_s
    (10.0, 50.0),  // disk_read_iops
    (10.0, 50.0),  // disk_write_iops
    (1e4, 100.0),  // net_rx_bps
    (1e4, 100.0),  // net_tx_bps
    (2.0, 0.0),    // vcpus
    (4e9, 0.0),    // mem_alloc_bytes
    (2e9, 0.02),   // mem_used_bytes
    (1e9, 0.02),   // mem_usable_bytes
    (1e9, 0.02),   // mem_actual_less_usable_bytes
    (5e8, 0.05),   // mem_guest_cache_bytes
    (0.0, 0.0),    // swap_in_bytes_s
    (0.1, 20.0),   // major_faults_s
    (0.5, 10.0),   // cpu_ready_pct
    (200.0, 20.0), // read_latency_p99_us
    (400.0, 20.0), // write_latency_p99_us
    (500.0, 10.0), // kvm_events_s
];

/// Distributions of a minute's 60 ticks (see [`VM_SCALES`]), and of an hour's 60 such minutes:
/// a pool to draw the stored sketches from (drawing each from its own ticks would take the
/// bench minutes), as large and as costly to read as the monitor's.
struct SketchPool {
    minutes: Vec<Vec<u8>>,
    hours: Vec<Vec<u8>>,
}

impl SketchPool {
    fn new(rng: &mut Lcg, (scale, spread): (f64, f64)) -> SketchPool {
        let minutes: Vec<Sketch> = (0..256)
            .map(|_| {
                let mut minute = Sketch::new();
                (0..60).for_each(|_| minute.add(scale * (1.0 + spread * rng.next())));
                minute
            })
            .collect();
        let hours = (0..64)
            .map(|h| {
                let mut hour = Sketch::new();
                (0..60).for_each(|m| hour.merge(&minutes[(h * 61 + m * 7) % minutes.len()]));
                hour.encode()
            })
            .collect();
        SketchPool {
            minutes: minutes.iter().map(Sketch::encode).collect(),
            hours,
        }
    }

    fn draw(&self, level: Level, rng: &mut Lcg) -> &[u8] {
        let pool = match level {
            Level::Minute => &self.minutes,
            Level::Hour => &self.hours,
        };
        &pool[(rng.next() * pool.len() as f64) as usize % pool.len()]
    }
}

/// `INSERT INTO <table> (owner, time, samples, <figure>_avg … _sketch …)`.
fn insert_sql(table: &str, owner: &str, figures: &[&str]) -> String {
    let columns = rollup_columns(owner, figures);
    let marks = vec!["?"; columns.len()].join(", ");
    format!(
        "INSERT INTO {table} ({}) VALUES ({marks})",
        columns.join(", ")
    )
}

/// One figure's columns: mean `v`, max, p95, n, seconds and a drawn sketch.
fn figure_values(v: f64, ticks: u64, sketch: &[u8]) -> [SqlValue; 6] {
    [
        SqlValue::Real(v),
        SqlValue::Real(2.0 * v),
        SqlValue::Real(1.8 * v),
        SqlValue::Integer(ticks as i64),
        SqlValue::Real(ticks as f64),
        SqlValue::Blob(sketch.to_vec()),
    ]
}

/// Rollup rows of `level` from `start` for `buckets` buckets: the host and every VM, each
/// figure with its count, seconds and distribution as the monitor writes them.
fn generate(conn: &mut Connection, level: Level, start: OffsetDateTime, buckets: usize) {
    let span = time::Duration::try_from(level.span()).expect("span");
    let ticks = level.span().as_secs();
    let mut rng = Lcg(42);
    let mut pools = |scales: &[(f64, f64)]| -> Vec<SketchPool> {
        scales
            .iter()
            .map(|&scale| SketchPool::new(&mut rng, scale))
            .collect()
    };
    let (host_pools, vm_pools) = (pools(&HOST_SCALES), pools(&VM_SCALES));
    let mut rng = Lcg(7);
    let suffix = level.suffix();
    let host_sql = insert_sql(&format!("host_usage{suffix}"), "host_ip", HOST_FIGURES);
    let vm_sql = insert_sql(&format!("vm_usage{suffix}"), "uuid", VM_FIGURES);
    let uuids: Vec<String> = (0..VMS).map(uuid).collect();
    // A transaction per 1,440 buckets: one for the whole month would grow the WAL to the
    // database's size.
    for first in (0..buckets).step_by(1440) {
        let tx = conn.transaction().expect("transaction");
        {
            let mut host = tx.prepare_cached(&host_sql).expect("host insert");
            let mut vm = tx.prepare_cached(&vm_sql).expect("vm insert");
            for b in first..buckets.min(first + 1440) {
                let time = format_time(start + span * b as u32);
                let mut row = vec![
                    SqlValue::Text(HOST.into()),
                    SqlValue::Text(time.clone()),
                    SqlValue::Integer(ticks as i64),
                ];
                for (pool, (scale, spread)) in host_pools.iter().zip(HOST_SCALES) {
                    let v = scale * (1.0 + spread * rng.next());
                    row.extend(figure_values(v, ticks, pool.draw(level, &mut rng)));
                }
                host.execute(params_from_iter(row)).expect("host row");
                for uuid in &uuids {
                    let mut row = vec![
                        SqlValue::Text(uuid.clone()),
                        SqlValue::Text(time.clone()),
                        SqlValue::Integer(ticks as i64),
                    ];
                    let c = rng.next();
                    for (pool, (scale, spread)) in vm_pools.iter().zip(VM_SCALES) {
                        let v = scale * (1.0 + spread * c);
                        row.extend(figure_values(v, ticks, pool.draw(level, &mut rng)));
                    }
                    vm.execute(params_from_iter(row)).expect("vm row");
                }
            }
        }
        tx.commit().expect("commit");
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let days = if std::env::args().any(|a| a == "--bench") {
        30
    } else {
        1
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("month.db");
    let store = SqliteStore::open(&path).expect("store");
    let mut conn = Connection::open(&path).expect("connection");
    conn.execute_batch(&format!(
        "INSERT INTO hosts (host_ip, host_name, vmc) VALUES ('{HOST}', 'bench', {VMS});"
    ))
    .expect("host");
    for vm in 0..VMS {
        conn.execute(
            "INSERT INTO vms (uuid, host_ip, name, state) VALUES (?1, ?2, ?3, 'running')",
            params![uuid(vm), HOST, format!("desk-{vm:03}")],
        )
        .expect("vm");
    }
    let until = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let since = until - time::Duration::days(days);
    let generated = Instant::now();
    generate(&mut conn, Level::Minute, since, days as usize * 1440);
    generate(&mut conn, Level::Hour, since, days as usize * 24);
    drop(conn);
    println!(
        "report: generated {days} days of per-minute and per-hour rollups for {VMS} VMs in {:.1} s",
        generated.elapsed().as_secs_f64()
    );
    // What a month of rollups takes on disk (the hours add 1/60 to the minutes).
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let minute_rows = days as u64 * 1440 * (VMS as u64 + 1);
    println!(
        "report: the file holds {:.2} GiB, {:.0} bytes per minute row (a host or a VM)",
        bytes as f64 / f64::from(1 << 30),
        bytes as f64 / minute_rows as f64
    );

    let run = |level: Level, (since, until): (OffsetDateTime, OffsetDateTime)| {
        let started = Instant::now();
        let mut owners = 0;
        for vms in [false, true] {
            let query = ReportQuery {
                level: Some(level),
                vms,
                host_ip: None,
                vm: None,
                since,
                until,
            };
            owners += store.report_blocking(&query).expect("report").len();
        }
        (started.elapsed(), owners)
    };
    // A window that ends on no hour, as one reaching back from now does: a minute report
    // reads its whole hours from hour rows and its edges from minute rows.
    let (edge_since, edge_until) = (time::Duration::minutes(17), time::Duration::minutes(23));
    let unaligned = (since + edge_since, until - edge_until);
    let hours = days as u64 * 24 - 2;
    let edge_minutes: u64 = [edge_since, edge_until]
        .iter()
        .map(|edge| {
            (time::Duration::HOUR - *edge)
                .whole_minutes()
                .unsigned_abs()
        })
        .sum();
    for (what, level, window, runs, rows) in [
        (
            "hour rollups (the level a month picks)".to_owned(),
            Level::Hour,
            (since, until),
            3,
            days as u64 * 24,
        ),
        (
            format!(
                "--level minute, ending 23 min past the hour ({hours} whole hours from hour rows, \
                 {edge_minutes} edge minutes)"
            ),
            Level::Minute,
            unaligned,
            3,
            hours + edge_minutes,
        ),
    ] {
        // The best of three: the first run also warms the page cache.
        let (best, owners) = (0..runs)
            .map(|_| run(level, window))
            .min_by_key(|(elapsed, _)| *elapsed)
            .unwrap_or((Duration::ZERO, 0));
        let rows = rows * (VMS as u64 + 1);
        println!(
            "report: {days} days, {owners} hosts and VMs, {what}: {rows} rows in {:.0} ms",
            best.as_secs_f64() * 1e3
        );
    }
}
