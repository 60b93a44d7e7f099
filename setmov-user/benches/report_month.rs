//! `setmov report` over a month of one-minute data for 100 VMs on the embedded store: the data
//! is generated (per-minute and per-hour rollups, as the monitor leaves them), then the report
//! is timed at the level its window picks (hours) and, for comparison, over every minute.

use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use setmov::analysis::ReportQuery;
use setmov::analysis::report::report;
use setmov::store::format_time;
use setmov::store::rollup::Level;
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

/// Rollup rows of `level` from `start` for `buckets` buckets: the host and every VM.
fn generate(conn: &mut Connection, level: Level, start: OffsetDateTime, buckets: usize) {
    let span = time::Duration::try_from(level.span()).expect("span");
    let ticks = level.span().as_secs();
    let tx = conn.transaction().expect("transaction");
    {
        let suffix = level.suffix();
        let mut host = tx
            .prepare(&format!(
                "INSERT INTO host_usage{suffix} (host_ip, time, samples, cpu_pct_avg, cpu_pct_max,
                    cpu_pct_p95, mem_used_pct_avg, mem_used_pct_max, mem_used_pct_p95)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))
            .expect("host insert");
        let mut vm = tx
            .prepare(&format!(
                "INSERT INTO vm_usage{suffix} (time, uuid, samples, cpu_pct_avg, cpu_pct_max,
                    cpu_pct_p95, cpu_vcpu_pct_avg, cpu_vcpu_pct_max, cpu_vcpu_pct_p95,
                    mem_used_pct_avg, mem_used_pct_max, mem_used_pct_p95, disk_read_bytes_s_avg,
                    disk_read_bytes_s_max, disk_read_bytes_s_p95, net_rx_bps_avg, net_rx_bps_max,
                    net_rx_bps_p95)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18)"
            ))
            .expect("vm insert");
        let mut rng = Lcg(42);
        let uuids: Vec<String> = (0..VMS).map(uuid).collect();
        for b in 0..buckets {
            let time = format_time(start + span * b as u32);
            let cpu = 30.0 + 40.0 * rng.next();
            host.execute(params![
                HOST,
                time,
                ticks,
                cpu,
                cpu + 10.0,
                cpu + 5.0,
                40.0,
                45.0,
                44.0
            ])
            .expect("host row");
            for uuid in &uuids {
                let c = 100.0 * rng.next();
                vm.execute(params![
                    time,
                    uuid,
                    ticks,
                    c / 2.0,
                    c,
                    c * 0.9,
                    c,
                    c * 2.0,
                    c * 1.8,
                    50.0,
                    60.0,
                    58.0,
                    1e6 * c,
                    2e6 * c,
                    1.8e6 * c,
                    1e5 * c,
                    2e5 * c,
                    1.8e5 * c
                ])
                .expect("vm row");
            }
        }
    }
    tx.commit().expect("commit");
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

    let run = |level| {
        let started = Instant::now();
        let mut rows = 0;
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
            let samples = store.report_samples_blocking(&query).expect("rows");
            rows += samples.len();
            owners += report(vms, samples).len();
        }
        (started.elapsed(), rows, owners)
    };
    for (what, level) in [
        ("hour rollups (the level a month picks)", Level::Hour),
        ("every minute", Level::Minute),
    ] {
        // The best of three: the first run also warms the page cache.
        let (best, rows, owners) = (0..3)
            .map(|_| run(level))
            .min_by_key(|(elapsed, _, _)| *elapsed)
            .unwrap_or((Duration::ZERO, 0, 0));
        println!(
            "report: {days} days, {owners} hosts and VMs, {what}: {rows} rows in {:.0} ms",
            best.as_secs_f64() * 1e3
        );
    }
}
