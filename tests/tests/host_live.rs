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
    // On the disk under the target folder: tmpfs or overlay would never reach a block device,
    // and then the test cannot run here (it says why).
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    match setmov_tests::not_on_block_device(work.path()) {
        Ok(None) => {}
        Ok(Some(reason)) => return setmov_tests::skip(&reason),
        Err(e) => panic!("cannot tell where {} is: {e}", work.path().display()),
    }
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

/// The host's busy and total CPU time from `/proc/stat`'s `cpu` line, counted as the product
/// counts them (busy: all but idle and iowait; guest time is inside user).
fn cpu_times() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .expect("a cpu line")
        .split_whitespace()
        .map(|f| f.parse().expect("a counter"))
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest and guest_nice
    // are already inside user and nice.
    let total: u64 = fields.iter().take(8).sum();
    (total - fields[3] - fields[4], total)
}

/// One tick as `setmov run` printed it, and /proc/stat as the test read it right after.
struct PrintedTick {
    cpu_pct: f64,
    busy: u64,
    total: u64,
}

/// The host CPU figure of a summary line (`... cpu  24.4% mem ...`).
fn summary_cpu(line: &str) -> Option<f64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "cpu")?;
    words.next()?.strip_suffix('%')?.parse().ok()
}

#[test]
fn one_busy_core_of_all_reads_as_its_share() {
    use std::io::BufRead as _;
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");

    // Its summary lines, each followed at once by the test's own read of /proc/stat: the
    // kernel's count over the same interval as each tick, a few ms apart at most.
    let mut child = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
        .args([
            "run",
            "--no-ebpf",
            "--no-libvirt",
            "--interval",
            "1s",
            "--count",
            "9",
        ])
        .arg("--database")
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("setmov starts");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let (busy, total) = cpu_times();
        let mut ticks = vec![PrintedTick {
            cpu_pct: f64::NAN,
            busy,
            total,
        }];
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let (busy, total) = cpu_times();
            let cpu_pct = summary_cpu(&line).unwrap_or_else(|| panic!("no CPU in {line:?}"));
            ticks.push(PrintedTick {
                cpu_pct,
                busy,
                total,
            });
        }
        ticks
    });
    std::thread::sleep(Duration::from_millis(2_500));
    let until = Instant::now() + Duration::from_secs(5);
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    assert!(child.wait().expect("setmov").success(), "setmov failed");
    let ticks = reader.join().expect("reader");

    let share = 100.0 / setmov_tests::host_cpus() as f64;
    let pairs: Vec<(f64, f64)> = ticks
        .windows(2)
        .skip(1) // the first interval starts at setmov's baseline, before the test's read
        .map(|w| {
            let kernel = 100.0 * (w[1].busy - w[0].busy) as f64 / (w[1].total - w[0].total) as f64;
            (w[1].cpu_pct, kernel)
        })
        .collect();
    eprintln!("(setmov, /proc/stat) per tick, one CPU's share {share:.1} %: {pairs:?}");
    assert!(pairs.len() >= 7, "{} ticks printed", ticks.len() - 1);
    let busy_ticks = pairs.iter().filter(|(_, k)| *k >= 0.9 * share).count();
    assert!(
        busy_ticks >= 3,
        "the spinner shows in too few ticks: {pairs:?}"
    );
    for (ours, kernel) in &pairs {
        assert!(
            (ours - kernel).abs() <= 1.0,
            "host CPU {ours:.1} %, /proc/stat {kernel:.1} % over the same second: {pairs:?}"
        );
    }
}
