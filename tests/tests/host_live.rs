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
/// counts them (busy: user, nice, system, irq, softirq and steal; guest time is inside user).
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
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    (busy, total)
}

/// One tick as `setmov run` printed it, and /proc/stat as the test read it right after.
struct PrintedTick {
    cpu_pct: f64,
    busy: u64,
    total: u64,
    /// When the test read /proc/stat for it.
    read_at: Instant,
    /// How long after setmov's tick (the time its line starts with) the test read /proc/stat.
    lag_s: f64,
}

/// Seconds from the tick time a summary line starts with to now.
fn lag_since_line(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let tick = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("no tick time in {line:?}: {e}"));
    (time::OffsetDateTime::now_utc() - tick).as_seconds_f64()
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
            read_at: Instant::now(),
            lag_s: 0.0,
        }];
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let (busy, total) = cpu_times();
            let read_at = Instant::now();
            let lag_s = lag_since_line(&line);
            let cpu_pct = summary_cpu(&line).unwrap_or_else(|| panic!("no CPU in {line:?}"));
            ticks.push(PrintedTick {
                cpu_pct,
                busy,
                total,
                read_at,
                lag_s,
            });
        }
        ticks
    });
    std::thread::sleep(Duration::from_millis(2_500));
    let spin_start = Instant::now();
    let until = spin_start + Duration::from_secs(5);
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let spin_end = Instant::now();
    assert!(child.wait().expect("setmov").success(), "setmov failed");
    let ticks = reader.join().expect("reader");

    let share = 100.0 / setmov_tests::host_cpus() as f64;
    // The test reads /proc/stat some ms after setmov (the line has to be stored and reach
    // it), so the kernel's window is setmov's shifted by those lags at both ends: the CPU in
    // the two slivers can move the kernel's figure by up to 100 × (lag before + lag after) /
    // interval points (26 ms in all is 2.6 points where the 3 test guests or the spinner change
    // what they do). Each tick is allowed 1 point plus that; over an interval in which the
    // spinner starts or stops the slivers are certain to differ, so those are only printed.
    let steady = |w: &[PrintedTick]| {
        let margin = Duration::from_millis(100);
        [spin_start, spin_end]
            .iter()
            .all(|&edge| edge + margin < w[0].read_at || edge > w[1].read_at + margin)
    };
    // (setmov, /proc/stat, allowed difference, steady)
    let pairs: Vec<(f64, f64, f64, bool)> = ticks
        .windows(2)
        .skip(1) // the first interval starts at setmov's baseline, before the test's read
        .map(|w| {
            let kernel = 100.0 * (w[1].busy - w[0].busy) as f64 / (w[1].total - w[0].total) as f64;
            let interval = (w[1].read_at - w[0].read_at).as_secs_f64();
            let allowed = 1.0 + 100.0 * (w[0].lag_s.abs() + w[1].lag_s.abs()) / interval;
            (w[1].cpu_pct, kernel, allowed, steady(w))
        })
        .collect();
    eprintln!(
        "(setmov, /proc/stat, allowed, steady) per tick, one CPU's share {share:.1} %: {pairs:?}"
    );
    assert!(pairs.len() >= 7, "{} ticks printed", ticks.len() - 1);
    let busy_ticks = pairs.iter().filter(|p| p.1 >= 0.9 * share).count();
    assert!(
        busy_ticks >= 3,
        "the spinner shows in too few ticks: {pairs:?}"
    );
    let steady_ticks = pairs.iter().filter(|p| p.3).count();
    assert!(steady_ticks >= 4, "{steady_ticks} steady ticks: {pairs:?}");
    for (ours, kernel, allowed, _) in pairs.iter().filter(|p| p.3) {
        assert!(
            (ours - kernel).abs() <= *allowed,
            "host CPU {ours:.1} %, /proc/stat {kernel:.1} % over the same second (allowed \
             {allowed:.1}): {pairs:?}"
        );
    }
}

/// One stored tick's timing: the wall-clock time it was stored under and its three figures.
#[derive(Debug, Clone)]
struct Timing {
    time: time::OffsetDateTime,
    interval_s: f64,
    late_ms: f64,
    missed_ticks: i64,
}

/// The ticks stored so far (none when the database is not there yet). Read-only, so a poll
/// never creates the file before the monitor does.
fn timings(db: &Path) -> Vec<Timing> {
    use rusqlite::OpenFlags;
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn
        .prepare("SELECT time, interval_s, late_ms, missed_ticks FROM host_usage ORDER BY time")
    else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        let time: String = r.get(0)?;
        Ok(Timing {
            time: time::OffsetDateTime::parse(
                &time,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or_else(|e| panic!("stored time {time:?}: {e}")),
            interval_s: r.get(1)?,
            late_ms: r.get(2)?,
            missed_ticks: r.get(3)?,
        })
    })
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .unwrap_or_default()
}

/// SIGSTOP the monitor for a measured ~2.2 s (500 ms ticks) right after a tick is stored, and
/// check the three timing figures against the test's monotonic clock and the stored times.
///
/// The tick read after SIGCONT covers the whole stop: its `interval_s` is at least the stop
/// measured here and matches the stored times of it and the tick before it within 5 ms (the
/// times are wall-clock milliseconds taken a few µs before each read). The scheduled instants
/// that fell in the stop are counted from the test's clock; the resumed tick stands for the
/// last of them, so `missed_ticks` is one fewer. Its `late_ms` is how long after that last
/// instant it was read: its interval less the missed and own periods, plus the late of the tick
/// before (both measured from the same schedule), within 2 ms; and, by the test's clock, between
/// SIGCONT and 100 ms after it (read against the tick before, bracketed by the test's polls).
/// Ordinary ticks are 500 ms apart within 20 ms, at most 20 ms late, none missed (measured on a
/// busy 2-core machine: within 4 ms, 1 to 3 ms late). The tick after the resumed one is on
/// schedule again, none missed, its interval short by the resumed tick's late (within 2 ms).
#[test]
fn a_stopped_monitor_counts_the_ticks_it_missed() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    const PERIOD: f64 = 0.5;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let started = Instant::now();
    let monitor = monitor(&db, "500ms");
    let pid = Pid::from_raw(i32::try_from(monitor.pid()).expect("pid"));
    setmov_tests::wait_until("3 ticks", || timings(&db).len() >= 3);

    // Stop right after a tick is stored: then the stop starts early in a period, and the count
    // of scheduled instants in it is clear (see below).
    let before = timings(&db).len();
    let mut previous_poll = Instant::now();
    let seen = loop {
        let now = Instant::now();
        if timings(&db).len() > before {
            break now;
        }
        previous_poll = now;
        std::thread::sleep(Duration::from_millis(2));
    };
    let stopped_at = Instant::now();
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    std::thread::sleep(Duration::from_millis(2_200));
    let continued_at = Instant::now();
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let stop = continued_at.duration_since(stopped_at).as_secs_f64();
    setmov_tests::wait_until("3 ticks after the stop", || timings(&db).len() > before + 3);
    let _ = monitor.stop();
    let ticks = timings(&db);
    eprintln!(
        "stopped {:.1} ms after the tick was seen (polled every ~{:.1} ms), for {:.1} ms; {} ticks in {:.1} s:",
        stopped_at.duration_since(seen).as_secs_f64() * 1e3,
        seen.duration_since(previous_poll).as_secs_f64() * 1e3,
        stop * 1e3,
        ticks.len(),
        started.elapsed().as_secs_f64()
    );
    for t in &ticks {
        eprintln!(
            "  {} interval {:.4} s late {:.2} ms missed {}",
            t.time, t.interval_s, t.late_ms, t.missed_ticks
        );
    }

    // The tick before the stop is the one seen; the resumed one follows it.
    let last_before = before; // index of the tick seen before the stop
    let (pre, resumed) = (&ticks[last_before], &ticks[last_before + 1]);
    // Scheduled instants lie at S + n × 0.5 s, S being the instant of the tick before the stop,
    // read at S + its late. The stop began `lead` after that read at most (the read precedes the
    // row the test saw), so the instants in the stop are those in (S, S + late + lead + stop].
    let lead = stopped_at.duration_since(previous_poll).as_secs_f64();
    let span = pre.late_ms / 1e3 + lead + stop;
    let in_stop = (span / PERIOD).floor() as i64;
    // Away from a boundary (the stop starts early in a period), the count cannot be off by one.
    let fraction = span / PERIOD - in_stop as f64;
    assert!(
        (0.02..0.98).contains(&fraction),
        "the stop ended too near a scheduled instant to count them ({span:.3} s after it)"
    );
    assert_eq!(
        in_stop, 4,
        "a stop of {stop:.3} s starting early in a 0.5 s period"
    );
    assert_eq!(
        resumed.missed_ticks,
        in_stop - 1,
        "{in_stop} scheduled instants fell in the stop; the resumed tick stands for the last"
    );
    assert!(
        resumed.interval_s >= stop && resumed.interval_s <= stop + lead + 0.1,
        "the resumed tick's interval {:.4} s, the stop {stop:.4} s",
        resumed.interval_s
    );
    let late = (resumed.interval_s - in_stop as f64 * PERIOD) * 1e3 + pre.late_ms;
    assert!(
        (resumed.late_ms - late).abs() <= 2.0,
        "the resumed tick read {:.2} ms after its instant, {late:.2} ms by its interval",
        resumed.late_ms
    );
    // And by the test's clock: the resumed tick was read after SIGCONT (and within 100 ms of
    // it), the one before it at most 50 ms before the last poll that did not see it yet (a row
    // is visible a few ms after its read) and before the poll that did.
    let instant_after_pre = in_stop as f64 * PERIOD - pre.late_ms / 1e3;
    let earliest = continued_at.duration_since(seen).as_secs_f64() - instant_after_pre;
    let latest =
        continued_at.duration_since(previous_poll).as_secs_f64() + 0.15 - instant_after_pre;
    assert!(
        (earliest * 1e3..=latest * 1e3).contains(&resumed.late_ms),
        "the resumed tick {:.2} ms late; by the test's clock {:.2} to {:.2} ms",
        resumed.late_ms,
        earliest * 1e3,
        latest * 1e3
    );

    for (n, pair) in ticks.windows(2).enumerate() {
        let between = (pair[1].time - pair[0].time).as_seconds_f64();
        assert!(
            (pair[1].interval_s - between).abs() <= 0.005,
            "tick {}: interval {:.4} s, {between:.3} s between the stored times",
            n + 1,
            pair[1].interval_s
        );
    }
    // Ordinary ticks: neither the resumed one nor the one after it (read on schedule after a
    // resumed tick that was read late in its period, so its interval is short by that late).
    for (n, t) in ticks.iter().enumerate() {
        if n == last_before + 1 || n == last_before + 2 {
            continue;
        }
        assert!(
            (t.interval_s - PERIOD).abs() <= 0.02 && t.late_ms <= 20.0 && t.missed_ticks == 0,
            "tick {n}: {t:?}"
        );
    }
    let next = &ticks[last_before + 2];
    assert_eq!(next.missed_ticks, 0, "{next:?}");
    let expected = PERIOD - resumed.late_ms / 1e3 + next.late_ms / 1e3;
    assert!(
        (next.interval_s - expected).abs() <= 0.002,
        "the tick after the resumed one: {next:?}, expected interval {expected:.4} s"
    );
}
