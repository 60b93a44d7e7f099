//! A guest's CPU figures against a real TCG guest under a real libvirtd whose vCPU burns: the
//! stored CPU against libvirt's CPU time over the same ticks, the a-priori full vCPU and its
//! share of the host, and the same figures streamed for piping. The guest and libvirtd are
//! prepared by `cargo xtask guests up` (or `cargo xtask test`); without them this test skips
//! loudly (and fails under SETMOV_REQUIRE_ALL=1).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use setmov_tests::checks::Checks;
use setmov_tests::guests::{self, Guest};
use setmov_tests::monitor::Monitor;
use setmov_tests::stored::{self, Span};
use setmov_tests::window::unix_now;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

#[test]
fn a_burning_vcpu_reads_full_per_vcpu_and_its_share_of_the_host() {
    let Some(guest) = guests::start_burning_or_skip("burn") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let (span, readings) = store_while_polling_libvirt(&db, &guest);
    stored_cpu_is_libvirts_cpu_time(&db, &guest, &span, &readings);
    stored_cpu_is_a_full_vcpu(&db, &guest);
    streamed_cpu_is_a_full_vcpu(&guest);
    a_reader_that_goes_away_ends_the_stream();
}

/// Runs the monitor at 1 s over 3 s of ticks of the burning guest, with libvirt's CPU time of
/// the domain and the kernel's run time of its vCPU threads read every 20 ms through the run:
/// the span of ticks and the (Unix seconds, domain ns, vCPU threads ns) readings.
fn store_while_polling_libvirt(db: &Path, guest: &Guest) -> (Span, Vec<(f64, f64, f64)>) {
    let m = Monitor::without_ebpf(SETMOV, db, "1s");
    // libvirt's CPU time of the domain, read every 20 ms through the run.
    let stop = AtomicBool::new(false);
    let (from, to, readings) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut readings = Vec::new();
            let threads = guest.vcpu_threads();
            assert!(!threads.is_empty(), "no vCPU thread of the guest");
            while !stop.load(Ordering::Relaxed) {
                let ns = guest.cpu_time_ns().expect("libvirt's CPU time");
                readings.push((unix_now(), ns as f64, vcpu_threads_ns(guest, &threads)));
                std::thread::sleep(Duration::from_millis(20));
            }
            readings
        });
        let from = stored::tick_after(db, guest.uuid());
        std::thread::sleep(Duration::from_millis(3_000));
        let to = stored::tick_after(db, guest.uuid());
        stop.store(true, Ordering::Relaxed);
        (from, to, poller.join().expect("poller"))
    });
    let _ = m.stop();
    (Span { from, to }, readings)
}

/// The kernel's run time of the guest's vCPU threads, ns: Σ the first field of
/// /proc/PID/task/TID/schedstat.
fn vcpu_threads_ns(guest: &Guest, threads: &[u32]) -> f64 {
    let pid = guest.qemu_pid().expect("qemu pid");
    threads
        .iter()
        .map(|tid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
                .expect("a vCPU thread's schedstat");
            text.split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<f64>().ok())
                .expect("run time")
        })
        .sum()
}

/// Equation (2) undone over the window of rows stamped after `from` up to `to`:
/// Σ cpu_pct / 100 × host CPUs × Δt and Σ cpu_vcpu_pct / 100 × vCPUs × Δt are the domain's
/// CPU seconds, whose mean rate must be libvirt's (cpu.time, all of qemu's threads, as
/// virt-top reads it) between the two ticks' stamps, within 1 point of a vCPU. The guest burns
/// at a steady rate, so the few ms to a few hundred ms between a stamp and libvirt's answer
/// to the monitor change the mean rate by far less. The vCPU threads' figure
/// (`cpu_vcpu_threads_pct`) the same way against the kernel's run time of those threads
/// (schedstat); the rest of the process's time is qemu's own work for the guest.
fn stored_cpu_is_libvirts_cpu_time(
    db: &Path,
    guest: &Guest,
    span: &Span,
    readings: &[(f64, f64, f64)],
) {
    let cores = setmov_tests::host_cpus() as f64;
    let conn = rusqlite::Connection::open(db).expect("db");
    let sums = stored::window_sums(
        &conn,
        "vm_usage u",
        &[
            format!("u.interval_s * u.cpu_pct / 100.0 * {cores}"),
            "u.interval_s * u.cpu_vcpu_pct / 100.0 * u.vcpus".to_owned(),
            "u.interval_s".to_owned(),
            "u.interval_s * u.cpu_vcpu_threads_pct / 100.0 * u.vcpus".to_owned(),
        ],
        guest.uuid(),
        span,
        3,
    );
    let rate_of = |column: fn(&(f64, f64, f64)) -> f64| {
        let points: Vec<(f64, f64)> = readings.iter().map(|r| (r.0, column(r))).collect();
        let at = |t: f64| interpolate(&points, t);
        let (t0, t1) = (stored::unix_of(&span.from), stored::unix_of(&span.to));
        (at(t1) - at(t0)) / 1e9 / (t1 - t0) * 100.0
    };
    let libvirt_pct = rate_of(|r| r.1);
    let threads_pct = rate_of(|r| r.2);
    eprintln!(
        "whole qemu process {libvirt_pct:.2} % of a vCPU (libvirt), vCPU threads {threads_pct:.2} % \
         (schedstat): qemu's own work {:.2} %",
        libvirt_pct - threads_pct
    );
    let mut checks = Checks::default();
    checks.near(
        "CPU % of a vCPU from cpu_pct",
        sums[0] / sums[2] * 100.0,
        libvirt_pct,
        1.0,
    );
    checks.near(
        "CPU % of a vCPU from cpu_vcpu_pct",
        sums[1] / sums[2] * 100.0,
        libvirt_pct,
        1.0,
    );
    checks.near(
        "vCPU threads' CPU % from cpu_vcpu_threads_pct, against schedstat",
        sums[3] / sums[2] * 100.0,
        threads_pct,
        1.0,
    );
    checks.finish();
}

/// The value of a counter read at `(instant, value)` points, linearly between the two readings
/// around `t`; panics when `t` is outside the readings.
fn interpolate(readings: &[(f64, f64)], t: f64) -> f64 {
    let after = readings
        .iter()
        .position(|&(at, _)| at >= t)
        .unwrap_or_else(|| panic!("no reading after {t}"));
    assert!(after > 0, "no reading before {t}");
    let ((t0, v0), (t1, v1)) = (readings[after - 1], readings[after]);
    v0 + (v1 - v0) * (t - t0) / (t1 - t0)
}

/// A priori: every stored row of the burning guest reads a full vCPU (100 ± 10 %) and its
/// share of the host (100 ± 10 % ÷ host CPUs).
fn stored_cpu_is_a_full_vcpu(db: &Path, guest: &Guest) {
    let cores = setmov_tests::host_cpus() as f64;
    let rows = stored::query::<f64>(
        db,
        "SELECT cpu_vcpu_pct, cpu_pct FROM vm_usage WHERE uuid = ?1 AND cpu_pct IS NOT NULL",
        guest.uuid(),
    );
    eprintln!("burning guest, per vCPU and host-normalised (÷{cores}): {rows:?}");
    assert!(rows.len() >= 4, "{rows:?}");
    for row in &rows {
        let (per_vcpu, host) = (row[0].expect("per vCPU"), row[1].expect("host"));
        assert!((per_vcpu - 100.0).abs() <= 10.0, "per vCPU {per_vcpu}");
        assert!((host - 100.0 / cores).abs() <= 10.0 / cores, "host {host}");
    }
}

/// The same figures streamed for piping: a CSV header, then one record per VM per tick.
fn streamed_cpu_is_a_full_vcpu(guest: &Guest) {
    let out = setmov_tests::setmov_command(SETMOV)
        .args([
            "run",
            "--stream",
            "--format",
            "csv",
            "--no-store",
            "--no-ebpf",
        ])
        .args(["--count", "4", "--interval", "1s"])
        .output()
        .expect("setmov starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (uuid, per_vcpu) = (column("uuid"), column("cpu_vcpu_pct"));
    let records: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r[uuid] == guest.uuid())
        .collect();
    eprintln!("streamed: {records:?}");
    // One record per tick the VM source answered: under load a slow libvirt answer makes it
    // skip a tick (the next sample then spans both), so 3 or 4 of the 4 ticks.
    assert!((3..=4).contains(&records.len()), "{csv}");
    for record in &records[1..] {
        let cpu: f64 = record[per_vcpu].parse().expect("a figure");
        assert!((cpu - 100.0).abs() <= 10.0, "per vCPU {cpu}");
    }
}

/// A reader that goes away (`| head -3`) ends the run, as it would any Unix filter.
fn a_reader_that_goes_away_ends_the_stream() {
    let mut child = setmov_tests::setmov_command(SETMOV)
        .args([
            "run",
            "--stream",
            "--format",
            "json",
            "--no-store",
            "--no-ebpf",
        ])
        .args(["--interval", "200ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setmov starts");
    let stdout = child.stdout.take().expect("stdout");
    let first: Vec<serde_json::Value> = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .take(3)
        .map(|l| serde_json::from_str(&l.expect("line")).expect("one JSON object per line"))
        .collect();
    assert_eq!(first.len(), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after its reader left"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}
