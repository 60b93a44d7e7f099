//! The CPU ready SETMOV stores per VM (eBPF run-queue wait, its 99th percentile) and the steal
//! libvirt reports, read back from the database after a real `setmov run`, against the
//! kernel's schedstat of the vCPU thread and bpftrace's run-queue waits of that thread over the
//! same ticks.
//!
//! The guests and libvirtd are prepared by `cargo xtask guests up` (or `cargo xtask test`);
//! without them, root, bpftrace or eBPF this test skips loudly (and fails under
//! SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use setmov_tests::bpftrace::{self, Bpftrace};
use setmov_tests::guests::{self, Guest};
use setmov_tests::lat_hist::{bucket_high, bucket_low, nearest_rank};
use setmov_tests::skip;
use setmov_tests::stored::{Cell, num, query};
use setmov_tests::streaming::{Record, Streaming};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// The time a thread has waited on a run queue, in ns, as the scheduler accounts it
/// (`schedstat`'s second field).
fn run_delay_ns(pid: u32, tid: u32) -> u64 {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: {text:?}"))
}

/// The run-queue waits of thread `$1`, one line each: the instant it was switched in and how
/// long it waited (ns). A wait starts when the thread is woken (unless it is already waiting:
/// preempted between setting a sleep state and calling schedule()) or switched out still
/// runnable (`prev_state` without a sleep bit, 0xff on this kernel: R or R+), and ends when it
/// is switched in; switched out asleep, it waits for nothing. runqlat's definition, read off
/// the same three tracepoints the product uses.
const RUNQ_SCRIPT: &str = r#"
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new /args->pid == $1/ {
    if (@since == 0) { @since = nsecs; }
}
tracepoint:sched:sched_switch {
    if (args->prev_pid == $1) {
        if ((args->prev_state & 0xff) == 0) { @since = nsecs; } else { @since = 0; }
    }
    if (args->next_pid == $1) {
        if (@since != 0) { printf("%llu %llu\n", nsecs, nsecs - @since); }
        @since = 0;
    }
}
"#;

/// A guest that burns its one vCPU, pinned with two host spinners to CPU 0 so that it waits
/// its turn (unpinned, the fairness between cgroups gives qemu a CPU of its own). Over the same
/// ticks, read back from the database:
///
/// - `vm_ebpf_usage.cpu_ready_pct` (eBPF run-queue wait) and `vm_usage.steal_pct` (libvirt's
///   `vcpu.N.delay`) against the kernel's own `run_delay` of the vCPU thread
///   (/proc/PID/task/TID/schedstat) read by the test as each tick's record is streamed:
///   time-weighted over the ticks watched whole, within ±2 points. The figures are per tick
///   and the test's reads lag each record by a few ms (the VM source samples libvirt a little
///   before that): over the 4 s of ticks watched whole both span the same time.
/// - `vm_ebpf_usage.cpu_ready_p99_us` per tick against the exact 99th percentile (nearest
///   rank) of bpftrace's waits of the same thread in that tick: the product reads it off a
///   log-linear histogram, so it must lie in the bucket (at most 1/8 of its lower bound wide)
///   holding the exact value. A
///   tick's end is known to the test only as the instant its record arrived, a few ms after
///   the probes' read: the exact value is taken over the windows shifted back by 0 to 200 ms,
///   and the stored one must lie between the lowest and highest of their buckets.
#[test]
fn cpu_ready_steal_and_ready_p99_are_the_vcpu_threads_run_queue_wait() {
    if let Some(reason) = bpftrace::why_unusable() {
        return skip(reason);
    }
    let Some(guest) = guests::start_burning_or_skip("ready") else {
        return;
    };
    let qemu = guest.qemu_pid().expect("qemu pid");
    let vcpus = guest.vcpu_threads();
    assert_eq!(vcpus.len(), 1, "one vCPU thread: {vcpus:?}");
    let vcpu = vcpus[0];

    let spinners = Spinners::contend_with(vcpu);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let reference = Bpftrace::attach(RUNQ_SCRIPT, &[vcpu.to_string()], dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let monitor = Streaming::start(
        SETMOV,
        &db,
        &["--count", "8", "--interval", "1s"],
        guest.uuid().to_owned(),
        move || run_delay_ns(qemu, vcpu),
    );
    let records = monitor.stop(false);
    let waits = reference.finish();
    spinners.stop();

    // The probe watches the vCPU thread once the VM source has named it (its first sample):
    // from the third record on, every interval is watched whole. The last record is written as
    // the run stops, later than its tick: it closes no window.
    assert!(records.len() >= 7, "{} records", records.len());
    let span = &records[2..records.len() - 1];
    ready_and_steal_are_the_run_delay(&db, &guest, span);
    ready_p99_is_in_the_bucket_of_the_exact_p99(&db, &guest, span, &waits);
}

/// Two host threads spinning on CPU 0, where the vCPU thread is pinned too.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Spinners {
    /// Pins thread `vcpu` to CPU 0 and starts two spinners there.
    fn contend_with(vcpu: u32) -> Spinners {
        let mut cpu0 = nix::sched::CpuSet::new();
        cpu0.set(0).expect("CPU 0");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(vcpu).expect("a thread id"));
        nix::sched::sched_setaffinity(pid, &cpu0).expect("pin the vCPU thread");
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0)
                        .expect("pin the spinner");
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Spinners { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for spinner in self.threads {
            spinner.join().expect("spinner");
        }
    }
}

/// CPU ready and steal, time-weighted over the ticks of `span` (watched whole), against the
/// kernel's run_delay of the vCPU thread read as the span's first and last records arrived:
/// within ±2 points.
fn ready_and_steal_are_the_run_delay(db: &Path, guest: &Guest, span: &[Record]) {
    let (first, last) = (&span[0], &span[span.len() - 1]);
    let (from, to) = (&first.fields["time"], &last.fields["time"]);
    let elapsed = (last.at_ns - first.at_ns) as f64 / 1e9;
    let kernel = (last.sample - first.sample) as f64 / 1e9 / elapsed * 100.0;
    let weighted = |table: &str, column: &str| -> (f64, f64, usize) {
        let got = query::<Cell>(
            db,
            &format!(
                "SELECT interval_s, {column} FROM {table} WHERE uuid = ?1
                 AND time > '{from}' AND time <= '{to}' ORDER BY time"
            ),
            guest.uuid(),
        );
        let seconds: f64 = got.iter().map(|r| num(&r[0])).sum();
        let sum: f64 = got.iter().map(|r| num(&r[0]) * num(&r[1])).sum();
        (sum / seconds, seconds, got.len())
    };
    let (ready, ready_s, ready_n) = weighted("vm_ebpf_usage", "cpu_ready_pct");
    let (steal, steal_s, steal_n) = weighted("vm_usage", "steal_pct");
    eprintln!(
        "stored CPU ready {ready:.2} % over {ready_n} ticks ({ready_s:.2} s), steal \
         {steal:.2} % over {steal_n} rows ({steal_s:.2} s); run_delay of the vCPU thread \
         {kernel:.2} % over {elapsed:.2} s"
    );
    assert!(kernel >= 5.0, "the vCPU never waited: {kernel:.2} %");
    assert!(
        ready_n >= 3 && (ready_s - elapsed).abs() <= 0.1 * elapsed,
        "the stored ticks do not span the reads: {ready_n} ticks, {ready_s:.2} s"
    );
    assert!(
        (ready - kernel).abs() <= 2.0,
        "stored CPU ready {ready:.2} %, run_delay {kernel:.2} % over the same seconds"
    );
    // A tick the VM source skipped under load leaves a row spanning two: the seconds count.
    assert!(
        (steal_s - elapsed).abs() <= 0.1 * elapsed,
        "the stored vm_usage rows do not span the reads: {steal_n} rows, {steal_s:.2} s"
    );
    assert!(
        (steal - kernel).abs() <= 2.0,
        "stored steal {steal:.2} %, run_delay {kernel:.2} % over the same seconds"
    );
}

/// The 99th percentile of each tick's waits.
fn ready_p99_is_in_the_bucket_of_the_exact_p99(
    db: &Path,
    guest: &Guest,
    span: &[Record],
    waits: &bpftrace::Output,
) {
    let waits: Vec<(u64, u64)> = waits
        .lines
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace().map(|v| v.parse::<u64>().expect("ns"));
            (f.next().expect("at"), f.next().expect("wait"))
        })
        .collect();
    let p99s = query::<Cell>(
        db,
        "SELECT time, cpu_ready_p99_us FROM vm_ebpf_usage WHERE uuid = ?1",
        guest.uuid(),
    );
    let stored_p99: BTreeMap<String, f64> = p99s
        .iter()
        .map(|r| (r[0].clone().expect("time").0, num(&r[1])))
        .collect();
    let mut compared = 0;
    for pair in span.windows(2) {
        let (start, end) = (pair[0].at_ns, pair[1].at_ns);
        let stored = stored_p99[&pair[1].fields["time"]];
        let exact: Vec<u64> = (0..=8)
            .map(|step| {
                let shift = step * 25_000_000;
                let mut inside: Vec<u64> = waits
                    .iter()
                    .filter(|(at, _)| *at > start - shift && *at <= end - shift)
                    .map(|(_, wait)| *wait)
                    .collect();
                inside.sort_unstable();
                nearest_rank(&inside, 0.99)
            })
            .collect();
        let (low, high) = (
            exact.iter().copied().min().expect("some"),
            exact.iter().copied().max().expect("some"),
        );
        let waits_in_tick = waits
            .iter()
            .filter(|(at, _)| *at > start && *at <= end)
            .count();
        eprintln!(
            "tick {}: stored p99 {stored:.0} µs; bpftrace's {waits_in_tick} waits: exact p99 \
             {:.0}..{:.0} µs",
            pair[1].fields["time"],
            low as f64 / 1e3,
            high as f64 / 1e3
        );
        let (lowest, highest) = (bucket_low(low) as f64 / 1e3, bucket_high(high) as f64 / 1e3);
        assert!(
            (lowest * (1.0 - 1e-9)..=highest * (1.0 + 1e-9)).contains(&stored),
            "tick {}: stored p99 {stored} µs outside [{lowest}, {highest}] µs",
            pair[1].fields["time"]
        );
        compared += 1;
    }
    assert!(compared >= 3, "{compared} ticks compared");
}
