//! The host figures on the live machine against known load: direct writes of a known size
//! and one core kept busy. The tests share the machine, so they run one at a time.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use setmov_tests::monitor::Monitor;
use std::time::{Duration, Instant};

static MACHINE: Mutex<()> = Mutex::new(());

fn monitor(db: &Path, interval: &str) -> Monitor {
    Monitor::start(
        env!("CARGO_BIN_EXE_setmov-cli"),
        db,
        &["--no-ebpf", "--no-libvirt", "--interval", interval],
    )
}

fn rows(db: &Path, sql: &str) -> Vec<(String, f64, Option<f64>)> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn.prepare(sql).expect("sql");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn direct_writes_are_all_in_the_disk_write_figure() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    // On the disk under the target folder: tmpfs would never reach a block device.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let db = work.path().join("setmov.db");
    let target = work.path().join("dd.out");
    const MIB: u64 = 1 << 20;
    const WRITTEN: u64 = 200 * MIB;

    // The figure is the whole machine's: dirty pages of other writers (the test binaries the
    // build just wrote) must reach the disk before the measured window, not during it.
    let synced = Command::new("sync").status().expect("sync");
    assert!(synced.success(), "sync failed");
    let monitor = monitor(&db, "250ms");
    std::thread::sleep(Duration::from_millis(750));
    let dd = Command::new("dd")
        .args([
            "if=/dev/zero",
            "bs=1M",
            "count=200",
            "oflag=direct",
            "status=none",
        ])
        .arg(format!("of={}", target.display()))
        .status()
        .expect("dd");
    assert!(dd.success(), "dd failed");
    std::thread::sleep(Duration::from_millis(750));
    let _ = monitor.stop();

    // Over the whole run (which contains the dd window), Σ rate × Δt is the bytes written.
    let ticks = rows(
        &db,
        "SELECT time, interval_s, disk_write_bytes_s FROM host_usage ORDER BY time",
    );
    assert!(ticks.len() >= 4, "{ticks:?}");
    let written: f64 = ticks
        .iter()
        .map(|(_, dt, rate)| dt * rate.expect("a disk write rate every tick"))
        .sum();
    let ratio = written / WRITTEN as f64;
    eprintln!(
        "dd wrote {} MiB; the disk write figure accounts for {:.1} MiB ({:.3}×) over {} ticks",
        WRITTEN / MIB,
        written / MIB as f64,
        ratio,
        ticks.len()
    );
    assert!(
        (1.0..=1.10).contains(&ratio),
        "disk write figure {ratio:.3}× the bytes dd wrote"
    );
}

#[test]
fn one_busy_core_of_all_reads_as_its_share() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let expected = 100.0 / cores;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");

    let monitor = monitor(&db, "500ms");
    std::thread::sleep(Duration::from_millis(600));
    let busy_from = time_now();
    let spin = std::thread::spawn(|| {
        let until = Instant::now() + Duration::from_secs(4);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    });
    spin.join().expect("spinner");
    let busy_to = time_now();
    let _ = monitor.stop();

    // Ticks whose whole interval lies inside the busy window.
    let ticks = rows(
        &db,
        "SELECT time, interval_s, cpu_pct FROM host_usage ORDER BY time",
    );
    let inside: Vec<f64> = ticks
        .iter()
        .filter(|(time, dt, _)| {
            let end = parse_ms(time);
            end <= busy_to && end - (dt * 1000.0) as i64 >= busy_from
        })
        .map(|(_, _, cpu)| cpu.expect("a CPU figure every tick"))
        .collect();
    assert!(inside.len() >= 4, "{ticks:?}");
    let mean = inside.iter().sum::<f64>() / inside.len() as f64;
    eprintln!(
        "one busy core of {cores}: host CPU {inside:?}, mean {mean:.1} % (expected {expected:.1} ± 8)"
    );
    assert!(
        (mean - expected).abs() <= 8.0,
        "host CPU {mean:.1} % with one of {cores} cores busy"
    );
}

fn time_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    now.as_millis() as i64
}

/// `2026-11-30T06:00:01.250Z` → milliseconds since the epoch.
fn parse_ms(time: &str) -> i64 {
    let format = time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(time, &format).expect("stored time");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
