//! The eBPF figures SETMOV stores per VM, read back from the database after a real `setmov
//! run`, against references outside SETMOV over the same window: bpftrace on the same
//! tracepoints (KVM events, block latency, run-queue waits), the kernel's schedstat (CPU ready,
//! steal) and tc's own counters (NIC drops).
//!
//! The guests and libvirtd are prepared by `cargo xtask guests up` (or `cargo xtask test`);
//! without them, root, bpftrace or eBPF these tests skip loudly (and fail under
//! SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use setmov_tests::bpftrace::{self, Bpftrace};
use setmov_tests::guests::{Guest, Workload};
use setmov_tests::monitor::Monitor;
use setmov_tests::skip;

/// The guests compete for the same two cores: one test at a time.
static MACHINE: Mutex<()> = Mutex::new(());

const BOOT: Duration = Duration::from_secs(90);

/// Why these tests cannot run here, if they cannot (besides the guests, which say for
/// themselves).
fn unable() -> Option<&'static str> {
    if !setmov_tests::is_root() {
        Some("the eBPF probes and bpftrace need root")
    } else if !bpftrace::installed() {
        Some("bpftrace is not installed")
    } else {
        None
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpftrace's `nsecs` (bpf_ktime_get_ns).
fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    u64::try_from(now.tv_sec()).expect("seconds") * 1_000_000_000
        + u64::try_from(now.tv_nsec()).expect("nanoseconds")
}

/// Rows of `sql` (one `?1` parameter) as text, NULL as None.
fn rows(db: &Path, sql: &str, param: &str) -> Vec<Vec<Option<String>>> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn.prepare(sql).expect("sql");
    let columns = stmt.column_count();
    stmt.query_map([param], |r| {
        (0..columns)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Text(t) => {
                        Some(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Blob(_) => None,
                })
            })
            .collect()
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn num(cell: &Option<String>) -> f64 {
    cell.as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One streamed record of the guest: its fields, the CLOCK_MONOTONIC instant the test read it
/// and what `sample` returned then.
struct Record {
    fields: BTreeMap<String, String>,
    at_ns: u64,
    sample: u64,
}

/// `setmov run --stream --format csv --database DB`: the ticks are stored as usual, and each
/// record tells the test when its tick ended (to a few ms: the record follows the probes'
/// read). `sample` runs as each record of `uuid` arrives.
struct Streaming {
    child: Child,
    reader: Option<JoinHandle<Vec<Record>>>,
}

impl Streaming {
    fn start(
        db: &Path,
        args: &[&str],
        uuid: String,
        mut sample: impl FnMut() -> u64 + Send + 'static,
    ) -> Streaming {
        let mut child = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
            .args(["run", "--stream", "--format", "csv", "--database"])
            .arg(db)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("setmov starts");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok);
            let Some(header) = lines.next() else {
                return Vec::new();
            };
            let header: Vec<String> = header.split(',').map(str::to_owned).collect();
            let mut records = Vec::new();
            for line in lines {
                let (sample, at_ns) = (sample(), monotonic_ns());
                let fields: BTreeMap<String, String> = header
                    .iter()
                    .cloned()
                    .zip(line.split(',').map(str::to_owned))
                    .collect();
                if fields.get("uuid") == Some(&uuid) {
                    records.push(Record {
                        fields,
                        at_ns,
                        sample,
                    });
                }
            }
            records
        });
        Streaming {
            child,
            reader: Some(reader),
        }
    }

    /// SIGINT (unless it stops by itself with `--count`), then its records once it exited 0.
    fn stop(mut self, interrupt: bool) -> Vec<Record> {
        if interrupt {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        }
        let status = self.child.wait().expect("wait for setmov");
        assert!(status.success(), "setmov failed: {status}");
        self.reader.take().expect("reader").join().expect("reader")
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log2 bucket of `ns` as the product's histograms have it: [2^b, 2^(b+1)).
fn bucket(ns: u64) -> u32 {
    ns.max(1).ilog2()
}

/// The value of rank ⌈q·n⌉ (nearest rank, as the product ranks) of sorted `values`.
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// How far apart the product and bpftrace may time one request: each stamps it with
/// `bpf_ktime_get_ns` in its own program on the same tracepoints, one program after the other,
/// microseconds apart at most. A request that close to a bucket boundary may land on either
/// side of it.
const SAME_REQUEST_SLACK_NS: u64 = 10_000;

/// Whether `stored_us`, a percentile the product read off a log2 histogram of the same values
/// (linear within the bucket), lies in the bucket holding `exact_ns`: a log2 histogram knows a
/// value to within its bucket, [2^b, 2^(b+1)], no better. (Either neighbour counts when the
/// exact value is within [`SAME_REQUEST_SLACK_NS`] of the boundary.)
fn in_bucket_of(stored_us: f64, exact_ns: u64) -> bool {
    let low = bucket(exact_ns.saturating_sub(SAME_REQUEST_SLACK_NS));
    let high = bucket(exact_ns + SAME_REQUEST_SLACK_NS);
    let (low, high) = (
        (1u64 << low) as f64 / 1e3,
        (1u64 << (high + 1)) as f64 / 1e3,
    );
    // The stored value went through a float division and SQLite's REAL.
    (low * (1.0 - 1e-9)..=high * (1.0 + 1e-9)).contains(&stored_us)
}

/// Why the stored log2 histogram `stored` is not that of bpftrace's `values`, if it is not:
/// the same number of requests, and below each bucket boundary 2^b as many as bpftrace has,
/// give or take its requests within [`SAME_REQUEST_SLACK_NS`] of 2^b.
fn histogram_differs(stored: &BTreeMap<u32, u64>, values: &[u64]) -> Option<String> {
    let total: u64 = stored.values().sum();
    if total != values.len() as u64 {
        return Some(format!(
            "{total} requests stored, bpftrace {}",
            values.len()
        ));
    }
    for b in 0..64u32 {
        let boundary = 1u64 << b;
        let stored_below: u64 = stored.range(..b).map(|(_, n)| n).sum();
        let theirs_below = values.iter().filter(|v| **v < boundary).count() as u64;
        let ambiguous = values
            .iter()
            .filter(|v| v.abs_diff(boundary) <= SAME_REQUEST_SLACK_NS)
            .count() as u64;
        if stored_below.abs_diff(theirs_below) > ambiguous {
            return Some(format!(
                "below {boundary} ns: {stored_below} stored, bpftrace {theirs_below} \
                 ({ambiguous} within {SAME_REQUEST_SLACK_NS} ns of it)"
            ));
        }
        if ambiguous > 0 && stored_below != theirs_below {
            eprintln!(
                "below {boundary} ns: {stored_below} stored, bpftrace {theirs_below}; its \
                 requests that close: {:?} ns",
                values
                    .iter()
                    .filter(|v| v.abs_diff(boundary) <= SAME_REQUEST_SLACK_NS)
                    .collect::<Vec<_>>()
            );
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// KVM events

/// The reference: counts of the kvm:* tracepoints for qemu process `$1`, each map keyed by the
/// raw field the product turns into a reason name (as in tests/tests/ebpf_kvm.rs).
const KVM_SCRIPT: &str = r#"
tracepoint:kvm:kvm_exit /pid == $1/ { @kvm_exit = count(); }
tracepoint:kvm:kvm_userspace_exit /pid == $1 && args->errno >= 0/ {
    @kvm_userspace_exit[args->reason] = count();
}
tracepoint:kvm:kvm_userspace_exit /pid == $1 && args->errno < 0/ {
    @kvm_userspace_exit_errno[-args->errno] = count();
}
tracepoint:kvm:kvm_pio /pid == $1/ { @kvm_pio[args->rw] = count(); }
tracepoint:kvm:kvm_mmio /pid == $1/ { @kvm_mmio[args->type] = count(); }
tracepoint:kvm:kvm_halt_poll_ns /pid == $1/ { @kvm_halt_poll_ns[args->grow] = count(); }
tracepoint:kvm:kvm_vcpu_wakeup /pid == $1/ { @kvm_vcpu_wakeup[args->waited] = count(); }
"#;

/// `KVM_EXIT_*` names by value (include/uapi/linux/kvm.h), as the tracepoint's table has them.
const KVM_EXIT_NAMES: [&str; 31] = [
    "UNKNOWN",
    "EXCEPTION",
    "IO",
    "HYPERCALL",
    "DEBUG",
    "HLT",
    "MMIO",
    "IRQ_WINDOW_OPEN",
    "SHUTDOWN",
    "FAIL_ENTRY",
    "INTR",
    "SET_TPR",
    "TPR_ACCESS",
    "S390_SIEIC",
    "S390_RESET",
    "DCR",
    "NMI",
    "INTERNAL_ERROR",
    "OSI",
    "PAPR_HCALL",
    "S390_UCONTROL",
    "WATCHDOG",
    "S390_TSCH",
    "EPR",
    "SYSTEM_EVENT",
    "S390_STSI",
    "IOAPIC_EOI",
    "HYPERV",
    "ARM_NISV",
    "X86_RDMSR",
    "X86_WRMSR",
];

/// The stored (event, reason) of a raw key of bpftrace's map `map`: the names the kernel's
/// print fmt gives those values.
fn kvm_reason(map: &str, raw: u64) -> (String, String) {
    let two_way = |first: bool, a: &str, b: &str| if first { a } else { b }.to_owned();
    let (event, reason) = match map {
        "@kvm_userspace_exit" => (
            "kvm_userspace_exit",
            usize::try_from(raw)
                .ok()
                .and_then(|v| KVM_EXIT_NAMES.get(v))
                .map_or_else(|| raw.to_string(), |name| format!("KVM_EXIT_{name}")),
        ),
        // EINTR: a KVM_RUN cut short by a signal, which the tracepoint calls "restart".
        "@kvm_userspace_exit_errno" if raw == 4 => ("kvm_userspace_exit", "restart".to_owned()),
        "@kvm_userspace_exit_errno" => ("kvm_userspace_exit", format!("error {raw}")),
        "@kvm_pio" => ("kvm_pio", two_way(raw != 0, "out", "in")),
        "@kvm_mmio" => (
            "kvm_mmio",
            ["unsatisfied-read", "read", "write"]
                .get(usize::try_from(raw).unwrap_or(usize::MAX))
                .map_or_else(|| raw.to_string(), |s| (*s).to_owned()),
        ),
        "@kvm_halt_poll_ns" => ("kvm_halt_poll_ns", two_way(raw != 0, "grow", "shrink")),
        "@kvm_vcpu_wakeup" => ("kvm_vcpu_wakeup", two_way(raw != 0, "waited", "polled")),
        _ => panic!("bpftrace printed a map {map} the script does not have"),
    };
    (event.to_owned(), reason)
}

/// The KVM events a firmware-only guest makes under this machine's nested PVM, each of which
/// the window must contain: SeaBIOS's port I/O and MMIO are emulated and go back to qemu.
/// `kvm_exit` cannot fire here (it needs VMX or SVM; PVM never fires it) and is compared all
/// the same (0 and 0); `kvm_halt_poll_ns` and `kvm_vcpu_wakeup` fire in some windows only.
const KVM_SEEN_HERE: [&str; 3] = ["kvm_userspace_exit", "kvm_pio", "kvm_mmio"];

/// `vm_kvm_events` (per event and reason) and `vm_ebpf_usage.kvm_events_s × interval_s`, summed
/// over the stored ticks, against bpftrace's count of the same tracepoints for the qemu pid.
/// The window is exact: the guest is created paused (no vCPU has entered KVM), the monitor
/// stores a row for it, bpftrace attaches, `virsh resume` lets the firmware run for 5 s, and
/// `virsh suspend` returns once every vCPU is out of KVM_RUN; two ticks later the monitor and
/// bpftrace stop. No event happens outside [resume, suspend], so the counts must be equal.
/// `kvm_events_s × interval_s` is a float product: within 0.01 of the integer count per tick.
#[test]
fn stored_kvm_events_are_bpftraces_count_over_the_same_window() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = unable() {
        return skip(reason);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = Monitor::start(
        env!("CARGO_BIN_EXE_setmov-cli"),
        &db,
        &["--interval", "500ms"],
    );
    let guest = match Guest::start_kvm_firmware_paused("kvm-window") {
        Ok(guest) => guest,
        Err(reason) => {
            let _ = m.stop();
            return skip(&reason);
        }
    };
    let uuid = guest.uuid().to_owned();
    let stored_rows = || -> usize {
        rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM vm_ebpf_usage WHERE uuid = ?1",
                    [&uuid],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    };
    setmov_tests::wait_until("a stored eBPF row of the paused guest", || {
        stored_rows() >= 1
    });
    let qemu = guest.qemu_pid().expect("qemu pid");
    let reference = Bpftrace::attach(KVM_SCRIPT, &[qemu.to_string()], dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    guest.resume();
    std::thread::sleep(Duration::from_secs(5));
    guest.suspend();
    let after = stored_rows();
    setmov_tests::wait_until("two more ticks", || stored_rows() >= after + 2);
    let _ = m.stop();
    let reference = reference.finish();

    let mut theirs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut kvm_exit = 0;
    for (map, value) in &reference.maps {
        if map == "@kvm_exit" {
            kvm_exit = value.as_u64().expect("a count");
            continue;
        }
        for (key, count) in value.as_object().expect("keyed") {
            let raw: u64 = key.parse().expect("a number");
            *theirs.entry(kvm_reason(map, raw)).or_default() += count.as_u64().expect("count");
        }
    }
    if kvm_exit > 0 {
        theirs.insert(("kvm_exit".into(), "(all reasons)".into()), kvm_exit);
    }
    let mut ours: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in rows(
        &db,
        "SELECT event, reason, SUM(count) FROM vm_kvm_events WHERE uuid = ?1 GROUP BY 1, 2",
        &uuid,
    ) {
        let (event, reason) = (row[0].clone().expect("event"), row[1].clone().expect("r"));
        // bpftrace does not name kvm_exit's VMX/SVM reasons: compared as a total.
        let reason = if event == "kvm_exit" {
            "(all reasons)".to_owned()
        } else {
            reason
        };
        *ours.entry((event, reason)).or_default() += num(&row[2]) as u64;
    }
    eprintln!("stored: {ours:?}\nbpftrace: {theirs:?}");
    for event in KVM_SEEN_HERE {
        assert!(
            theirs.keys().any(|(e, _)| e == event),
            "the window has no {event}: {theirs:?}"
        );
    }
    assert_eq!(ours, theirs, "stored KVM events against bpftrace's count");

    // Per tick, the rate times the interval is that tick's count; summed, bpftrace's total.
    let ticks = rows(
        &db,
        "SELECT u.time, u.interval_s, u.kvm_events_s, (SELECT SUM(count) FROM vm_kvm_events k
           WHERE k.uuid = u.uuid AND k.time = u.time)
         FROM vm_ebpf_usage u WHERE u.uuid = ?1 ORDER BY u.time",
        &uuid,
    );
    let mut total = 0.0;
    for tick in &ticks {
        let events = tick[3].as_deref().map_or(0.0, |_| num(&tick[3]));
        let product = num(&tick[1]) * tick[2].as_deref().map_or(0.0, |_| num(&tick[2]));
        assert!(
            (product - events).abs() <= 0.01,
            "tick {:?}: kvm_events_s × interval_s = {product}, its events {events}",
            tick[0]
        );
        total += product;
    }
    let reference_total: u64 = theirs.values().sum();
    eprintln!(
        "Σ kvm_events_s × interval_s over {} ticks: {total:.2}; bpftrace: {reference_total}",
        ticks.len()
    );
    assert!(
        (total - reference_total as f64).abs() <= 0.01 * ticks.len() as f64,
        "Σ kvm_events_s × interval_s = {total}, bpftrace {reference_total}"
    );
}

// ---------------------------------------------------------------------------------------------
// CPU ready, its 99th percentile, and steal

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
///   rank) of bpftrace's waits of the same thread in that tick: the product reads it off a log2
///   histogram, so it must lie in the bucket [2^b, 2^(b+1)] ns holding the exact value. A
///   tick's end is known to the test only as the instant its record arrived, a few ms after
///   the probes' read: the exact value is taken over the windows shifted back by 0 to 200 ms,
///   and the stored one must lie between the lowest and highest of their buckets.
#[test]
fn cpu_ready_steal_and_ready_p99_are_the_vcpu_threads_run_queue_wait() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = unable() {
        return skip(reason);
    }
    let guest = match Guest::start(
        "ready",
        &Workload {
            burn_secs: -1,
            ..Workload::default()
        },
    ) {
        Ok(guest) => guest,
        Err(reason) => return skip(&reason),
    };
    guest
        .wait_for("SETMOV: burn-start", BOOT)
        .expect("burn starts");
    let qemu = guest.qemu_pid().expect("qemu pid");
    let vcpus = guest.vcpu_threads();
    assert_eq!(vcpus.len(), 1, "one vCPU thread: {vcpus:?}");
    let vcpu = vcpus[0];

    let mut cpu0 = nix::sched::CpuSet::new();
    cpu0.set(0).expect("CPU 0");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(vcpu).expect("a thread id"));
    nix::sched::sched_setaffinity(pid, &cpu0).expect("pin the vCPU thread");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0)
                    .expect("pin the spinner");
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let reference = Bpftrace::attach(RUNQ_SCRIPT, &[vcpu.to_string()], dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let monitor = Streaming::start(
        &db,
        &["--count", "8", "--interval", "1s"],
        guest.uuid().to_owned(),
        move || run_delay_ns(qemu, vcpu),
    );
    let records = monitor.stop(false);
    let waits = reference.finish();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().expect("spinner");
    }

    // The probe watches the vCPU thread once the VM source has named it (its first sample):
    // from the third record on, every interval is watched whole. The last record is written as
    // the run stops, later than its tick: it closes no window.
    assert!(records.len() >= 7, "{} records", records.len());
    let span = &records[2..records.len() - 1];
    let (first, last) = (&span[0], &span[span.len() - 1]);
    let (from, to) = (&first.fields["time"], &last.fields["time"]);
    let elapsed = (last.at_ns - first.at_ns) as f64 / 1e9;
    let kernel = (last.sample - first.sample) as f64 / 1e9 / elapsed * 100.0;
    let weighted = |table: &str, column: &str| -> (f64, f64, usize) {
        let got = rows(
            &db,
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

    // The 99th percentile of each tick's waits.
    let waits: Vec<(u64, u64)> = waits
        .lines
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace().map(|v| v.parse::<u64>().expect("ns"));
            (f.next().expect("at"), f.next().expect("wait"))
        })
        .collect();
    let p99s = rows(
        &db,
        "SELECT time, cpu_ready_p99_us FROM vm_ebpf_usage WHERE uuid = ?1",
        guest.uuid(),
    );
    let stored_p99: BTreeMap<String, f64> = p99s
        .iter()
        .map(|r| (r[0].clone().expect("time"), num(&r[1])))
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
        let (lowest, highest) = (
            (1u64 << bucket(low)) as f64 / 1e3,
            (1u64 << (bucket(high) + 1)) as f64 / 1e3,
        );
        assert!(
            (lowest * (1.0 - 1e-9)..=highest * (1.0 + 1e-9)).contains(&stored),
            "tick {}: stored p99 {stored} µs outside [{lowest}, {highest}] µs",
            pair[1].fields["time"]
        );
        compared += 1;
    }
    assert!(compared >= 3, "{compared} ticks compared");
}

// ---------------------------------------------------------------------------------------------
// Block latency and NIC drops

/// Issue-to-completion latency of the block requests process `$1` submitted, one line per
/// completed request: direction (1 read, 2 write), completion instant, latency (ns). Measured
/// as the product does (setmov-ebpf/src/block.rs): a request is known by device, direction and
/// first sector; its submitter is whoever was current at `block_io_start`; the clock starts
/// there and restarts at `block_rq_issue`; a bio merged in front moves the request to its own
/// first sector; the first `block_rq_complete` of the key ends it. The direction is the
/// operation letter of `rwbs`, after an optional `F` (pre-flush).
const BLOCK_SCRIPT: &str = r#"
tracepoint:block:block_io_start {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    if ($d != 0) {
        @owner[args->dev, args->sector, $d] = pid;
        @since[args->dev, args->sector, $d] = nsecs;
    }
}
tracepoint:block:block_bio_frontmerge {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    $old = args->sector + args->nr_sector;
    $t = @since[args->dev, $old, $d];
    if ($d != 0 && $t != 0) {
        @owner[args->dev, args->sector, $d] = @owner[args->dev, $old, $d];
        @since[args->dev, args->sector, $d] = $t;
        delete(@owner[args->dev, $old, $d]);
        delete(@since[args->dev, $old, $d]);
    }
}
tracepoint:block:block_rq_issue {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    if ($d != 0) { @since[args->dev, args->sector, $d] = nsecs; }
}
tracepoint:block:block_rq_complete {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    $t = @since[args->dev, args->sector, $d];
    if ($d != 0 && $t != 0) {
        if (@owner[args->dev, args->sector, $d] == $1) {
            printf("%d %llu %llu\n", $d, nsecs, nsecs - $t);
        }
        delete(@owner[args->dev, args->sector, $d]);
        delete(@since[args->dev, args->sector, $d]);
    }
}
"#;

/// MiB the guest writes, then reads, in 1 MiB O_DIRECT blocks.
const BLOCK_MIB: u32 = 64;

/// Pings the guest sends; the host's echo replies to it are what the test drops.
const PINGS: u64 = 20;
/// Their data bytes: a reply is 1042 bytes on the wire, above [`TBF_BURST`].
const PING_SIZE: u32 = 1000;
/// The burst of the tbf qdisc on the tap's egress (toward the guest): tbf drops every packet
/// larger than its burst (tbf_enqueue: `qdisc_pkt_len(skb) > q->max_size`), so the echo
/// replies go and ARP (42 bytes) passes. (tc's drop action, act_gact, is not in this kernel.)
const TBF_BURST: &str = "600";
/// The reason the kernel gives kfree_skb for a packet a qdisc dropped.
const TBF_DROP_REASON: &str = "QDISC_DROP";

/// tc's own count of the packets the root qdisc of `tap` dropped.
fn tc_dropped(tap: &str) -> u64 {
    let out = Command::new("tc")
        .args(["-s", "qdisc", "show", "dev", tap, "root"])
        .output()
        .expect("tc");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("(dropped ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count in tc's output: {text}"))
}

fn tc(args: &[&str]) {
    let out = Command::new("tc").args(args).output().expect("tc");
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One guest run checks two figures:
///
/// - Block latency per VM: the guest writes then reads 64 MiB in 1 MiB O_DIRECT blocks (qemu's
///   disk is cache='none', so its requests reach the host's disk as they are). bpftrace
///   measures the issue-to-completion latency of the qemu process's requests as the product
///   does ([`BLOCK_SCRIPT`]), from before the guest's I/O until after it. `vm_latency_hist`
///   summed over the ticks must equal bpftrace's log2 histogram bucket for bucket, per
///   direction, but for requests within 10 µs of a bucket boundary, which may land on either
///   side ([`SAME_REQUEST_SLACK_NS`]: the two programs stamp a request one after the other).
///   Per tick, bpftrace's completions are handed out in order by the stored counts (each
///   tick's boundary must then lie before its record's arrival and at most 500 ms before it:
///   the probes are read at the tick, the record follows); each tick's buckets must then agree
///   the same way, and the stored p50/p95/p99 must lie in the log2 bucket holding the exact
///   percentile (nearest rank) of bpftrace's latencies of that tick.
/// - NIC drops: a tbf qdisc on the tap's egress drops the host's echo replies to the guest's
///   20 pings ([`TBF_BURST`]). `vm_nic_drops` for the tap with the kernel's reason
///   [`TBF_DROP_REASON`], summed over the ticks, must equal tc's own drop count of the qdisc,
///   and Σ `net_drops_s × interval_s` over the ticks must equal Σ `vm_nic_drops` (within 0.01
///   per tick, float products) and be at least tc's count.
#[test]
fn block_latency_and_nic_drops_are_bpftraces_and_tcs() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = unable() {
        return skip(reason);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let guest = match Guest::start(
        "latency",
        &Workload {
            delay_secs: 8,
            write_mb: BLOCK_MIB,
            read_mb: BLOCK_MIB,
            ping_count: u32::try_from(PINGS).expect("pings"),
            ping_size: PING_SIZE,
            ..Workload::default()
        },
    ) {
        Ok(guest) => guest,
        Err(reason) => return skip(&reason),
    };
    let tap = guest.tap_device().expect("a tap device");
    tc(&[
        "qdisc", "replace", "dev", &tap, "root", "tbf", "rate", "100mbit", "burst", TBF_BURST,
        "limit", "100000",
    ]);
    let qemu = guest.qemu_pid().expect("qemu pid");
    let monitor = Streaming::start(&db, &["--interval", "250ms"], guest.uuid().to_owned(), || 0);
    guest
        .wait_for("SETMOV: delay-start", BOOT)
        .expect("guest waits");
    let reference = Bpftrace::attach(BLOCK_SCRIPT, &[qemu.to_string()], dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let attached_ns = monotonic_ns();
    assert!(
        guest
            .wait_for("SETMOV: delay-done", Duration::ZERO)
            .is_err(),
        "bpftrace attached after the guest's delay: the window would miss I/O"
    );
    let pings = guest.wait_for("SETMOV: ping-done", BOOT).expect("pings");
    std::thread::sleep(Duration::from_millis(2_500));
    let records = monitor.stop(true);
    let latencies = reference.finish();
    let dropped = tc_dropped(&tap);
    eprintln!("guest pings received/sent: {pings}; tc dropped {dropped}");

    // Block latency: bpftrace's requests by direction, in completion order.
    let mut theirs: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for line in &latencies.lines {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().expect("a number"))
            .collect();
        let direction = if f[0] == 1 { "read" } else { "write" };
        theirs.entry(direction).or_default().push((f[1], f[2]));
    }
    // The stored ticks of the window: the records that came after bpftrace attached.
    let ticks: Vec<&Record> = records.iter().filter(|r| r.at_ns > attached_ns).collect();
    let from = &records
        .iter()
        .rev()
        .find(|r| r.at_ns <= attached_ns)
        .expect("a record before bpftrace attached")
        .fields["time"];
    let hist = rows(
        &db,
        &format!(
            "SELECT time, direction, bucket, requests FROM vm_latency_hist
             WHERE uuid = ?1 AND time > '{from}' ORDER BY time"
        ),
        guest.uuid(),
    );
    let percentiles = rows(
        &db,
        &format!(
            "SELECT time, read_latency_p50_us, read_latency_p95_us, read_latency_p99_us,
                    write_latency_p50_us, write_latency_p95_us, write_latency_p99_us
             FROM vm_ebpf_usage WHERE uuid = ?1 AND time > '{from}' ORDER BY time"
        ),
        guest.uuid(),
    );
    assert_eq!(
        percentiles.len(),
        ticks.len(),
        "one stored row per streamed record"
    );
    for (direction, columns) in [("write", 4), ("read", 1)] {
        let mut completions = theirs.remove(direction).unwrap_or_default();
        completions.sort_unstable();
        let histogram = |latencies: &[u64]| -> BTreeMap<u32, u64> {
            let mut h = BTreeMap::new();
            for ns in latencies {
                *h.entry(bucket(*ns)).or_default() += 1;
            }
            h
        };
        let stored_tick = |time: &str| -> BTreeMap<u32, u64> {
            hist.iter()
                .filter(|r| r[0].as_deref() == Some(time) && r[1].as_deref() == Some(direction))
                .map(|r| (num(&r[2]) as u32, num(&r[3]) as u64))
                .collect()
        };
        let mut stored_all: BTreeMap<u32, u64> = BTreeMap::new();
        for tick in &ticks {
            for (b, n) in stored_tick(&tick.fields["time"]) {
                *stored_all.entry(b).or_default() += n;
            }
        }
        let all: Vec<u64> = completions.iter().map(|c| c.1).collect();
        eprintln!(
            "{direction}: stored requests per log2-ns bucket {stored_all:?}; bpftrace {:?}",
            histogram(&all)
        );
        assert!(
            all.len() >= BLOCK_MIB as usize,
            "{direction}: {} requests",
            all.len()
        );
        if let Some(why) = histogram_differs(&stored_all, &all) {
            panic!("{direction}: stored histogram against bpftrace's over the window: {why}");
        }

        let mut next = 0;
        for (tick, row) in ticks.iter().zip(&percentiles) {
            let time = &tick.fields["time"];
            assert_eq!(row[0].as_deref(), Some(time.as_str()));
            let stored = stored_tick(time);
            let n = usize::try_from(stored.values().sum::<u64>()).expect("count");
            let mine = &completions[next..next + n];
            next += n;
            if let Some(last) = mine.last() {
                assert!(
                    last.0 <= tick.at_ns,
                    "{direction} tick {time}: a request completed after its record"
                );
            }
            if let Some(following) = completions.get(next) {
                assert!(
                    following.0 + 500_000_000 > tick.at_ns,
                    "{direction} tick {time}: the next request completed over 500 ms before \
                     the record"
                );
            }
            let mut values: Vec<u64> = mine.iter().map(|c| c.1).collect();
            if let Some(why) = histogram_differs(&stored, &values) {
                panic!("{direction} tick {time}: {why}");
            }
            if values.is_empty() {
                assert!(row[columns].is_none(), "{direction} tick {time}: {row:?}");
                continue;
            }
            values.sort_unstable();
            for (i, q) in [0.5, 0.95, 0.99].into_iter().enumerate() {
                let exact = nearest_rank(&values, q);
                let figure = num(&row[columns + i]);
                eprintln!(
                    "{direction} tick {time}: {} requests, p{} stored {figure:.0} µs, exact \
                     {:.0} µs",
                    values.len(),
                    q * 100.0,
                    exact as f64 / 1e3
                );
                assert!(
                    in_bucket_of(figure, exact),
                    "{direction} tick {time}: p{} stored {figure} µs, exact {exact} ns",
                    q * 100.0
                );
            }
        }
        assert_eq!(
            next,
            completions.len(),
            "{direction}: every request in a tick"
        );
    }

    // NIC drops, over every stored tick (the filter was added before the monitor started).
    let drops = rows(
        &db,
        "SELECT iface, reason, SUM(packets) FROM vm_nic_drops WHERE uuid = ?1 GROUP BY 1, 2",
        guest.uuid(),
    );
    eprintln!("stored drops of {tap}: {drops:?}");
    let by_tbf: u64 = drops
        .iter()
        .filter(|r| {
            r[0].as_deref() == Some(tap.as_str()) && r[1].as_deref() == Some(TBF_DROP_REASON)
        })
        .map(|r| num(&r[2]) as u64)
        .sum();
    assert_eq!(
        dropped, PINGS,
        "tc dropped {dropped} of {PINGS} echo replies"
    );
    assert_eq!(
        by_tbf, dropped,
        "stored {TBF_DROP_REASON} drops against tc's count"
    );
    let all_drops: f64 = drops.iter().map(|r| num(&r[2])).sum();
    let rates = rows(
        &db,
        "SELECT interval_s, net_drops_s FROM vm_ebpf_usage WHERE uuid = ?1",
        guest.uuid(),
    );
    let from_rates: f64 = rates
        .iter()
        .map(|r| num(&r[0]) * r[1].as_deref().map_or(0.0, |_| num(&r[1])))
        .sum();
    eprintln!(
        "Σ net_drops_s × interval_s = {from_rates:.2} over {} ticks",
        rates.len()
    );
    assert!(
        (from_rates - all_drops).abs() <= 0.01 * rates.len() as f64
            && from_rates >= dropped as f64 - 0.01 * rates.len() as f64,
        "Σ net_drops_s × interval_s = {from_rates}, stored drops {all_drops}, tc {dropped}"
    );
}
