//! A guest's memory and identity figures against real TCG guests under a real libvirtd: the
//! collector's balloon figures against `virsh dommemstat`, and a guest that takes 32 MiB more
//! half-way through, whose stored T4 rows are checked against dommemstat, the qemu process's
//! VmRSS, vcpucount, domstate and dominfo over the whole run. The guests and libvirtd are
//! prepared by `cargo xtask guests up` (or `cargo xtask test`); without them these tests skip
//! loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use setmov::usage::vm::vm_mem_usage;
use setmov::vm::libvirt::LibvirtCollector;
use setmov_tests::checks::Checks;
use setmov_tests::guests::{self, BOOT, Guest, Workload};
use setmov_tests::memstat::{MemPoll, MemPoller, dommemstat};
use setmov_tests::monitor::Monitor;
use setmov_tests::stored::{self, Span, query, seconds_between, shifted};

/// The guests compete for the same two cores: one test at a time.
static MACHINE: Mutex<()> = Mutex::new(());

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
const MIB: f64 = 1_048_576.0;

/// `virsh -c qemu:///system ARGS`'s output; panics when it fails.
fn virsh_output(args: &[&str]) -> String {
    guests::virsh(args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn memory_figures_match_virsh_dommemstat() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(guest) = guests::start_or_skip("mem", &Workload::default()) else {
        return;
    };
    guest.wait_for("SETMOV: ready", BOOT).expect("boot");
    // The balloon driver reports every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    let mut collector = LibvirtCollector::new("qemu:///system", "/run/libvirt/qemu");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot = collector.sample().expect("libvirt");
        let virsh = dommemstat(guest.name());
        let domain = snapshot
            .domains
            .iter()
            .find(|d| d.uuid == guest.uuid())
            .expect("the guest");
        let ours = vm_mem_usage(None, &domain.stats.balloon, 0.0);
        let kib = |v: Option<u64>| v.map(|b| b / 1024);
        let pairs = [
            ("actual", kib(ours.allocated_bytes)),
            ("unused", kib(ours.unused_bytes)),
            ("available", kib(ours.available_bytes)),
            ("usable", kib(ours.usable_bytes)),
        ];
        let same = pairs.iter().all(|(k, v)| virsh.get(*k).copied() == *v);
        // The guest's report may change between the two reads; then read both again.
        if !same && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        eprintln!(
            "ours {pairs:?} rss {:?}; virsh {virsh:?}",
            kib(ours.rss_bytes)
        );
        assert!(same, "{pairs:?} vs {virsh:?}");
        let rss = kib(ours.rss_bytes).expect("rss") as f64;
        let virsh_rss = virsh["rss"] as f64;
        assert!(
            (rss / virsh_rss - 1.0).abs() <= 0.02,
            "rss {rss} vs {virsh_rss}"
        );
        break;
    }
}

/// MiB the guest takes half-way through.
const TAKEN_MIB: f64 = 32.0;

/// The stored "used" memory of a guest against what it really takes: the guest holds 32 MiB
/// more half-way through, and the figure rises by that, within 4 MiB (what the guest's own
/// kernel does meanwhile). Over the same run every memory and identity figure of its T4 rows
/// against libvirt (see `memory_and_identity_are_libvirts`).
#[test]
fn a_guest_that_takes_32_mib_more_shows_32_mib_more_used() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(guest) = guests::start_or_skip(
        "alloc",
        &Workload {
            delay_secs: 20,
            alloc_mb: TAKEN_MIB as u32,
            ..Workload::default()
        },
    ) else {
        return;
    };
    guest.wait_for("SETMOV: ready", BOOT).expect("boot");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let run = store_while_the_guest_takes_memory(&db, &guest);
    memory_and_identity_are_libvirts(&db, &guest, &run.polls);
    used_grew_by_what_was_taken(&db, &guest, &run);
}

/// The references read through the run, and the ticks before and after the guest took
/// [`TAKEN_MIB`].
struct AllocationRun {
    polls: Vec<MemPoll>,
    before: Span,
    after: Span,
}

/// Runs the monitor at 1 s, with the references read every 200 ms, while the guest waits,
/// takes [`TAKEN_MIB`] and holds it.
fn store_while_the_guest_takes_memory(db: &Path, guest: &Guest) -> AllocationRun {
    let m = Monitor::without_ebpf(SETMOV, db, "1s");
    let poller = MemPoller::start(guest);
    // The balloon reports every 2 s: its first figures need a few seconds.
    std::thread::sleep(Duration::from_secs(6));
    let before_from = stored::now();
    guest
        .wait_for("SETMOV: alloc-start", Duration::from_secs(60))
        .expect("alloc starts");
    let before_to = stored::now();
    guest
        .wait_for("SETMOV: alloc-done", Duration::from_secs(60))
        .expect("alloc done");
    // Two balloon reports after it, then as long again.
    std::thread::sleep(Duration::from_secs(5));
    let after_from = stored::now();
    std::thread::sleep(Duration::from_secs(8));
    let after_to = stored::now();
    let _ = m.stop();
    AllocationRun {
        polls: poller.stop(),
        before: Span {
            from: before_from,
            to: before_to,
        },
        after: Span {
            from: after_from,
            to: after_to,
        },
    }
}

/// The median used memory after the allocation exceeds the one before by [`TAKEN_MIB`],
/// within 4 MiB.
fn used_grew_by_what_was_taken(db: &Path, guest: &Guest, run: &AllocationRun) {
    let (before, n_before) = median_used(db, guest.uuid(), &run.before);
    let (after, n_after) = median_used(db, guest.uuid(), &run.after);
    let grown = (after - before) / MIB;
    eprintln!(
        "used {:.1} MiB over {n_before} ticks before, {:.1} MiB over {n_after} after: \
         {grown:.1} MiB more for {TAKEN_MIB} MiB taken",
        before / MIB,
        after / MIB
    );
    assert!(
        (grown - TAKEN_MIB).abs() <= 4.0,
        "used grew by {grown:.1} MiB for {TAKEN_MIB} MiB taken"
    );
}

/// Median of the stored `mem_used_bytes` of `uuid` over ticks stamped in [`from`, `to`).
fn median_used(db: &Path, uuid: &str, Span { from, to }: &Span) -> (f64, usize) {
    let rows = query::<f64>(
        db,
        &format!(
            "SELECT mem_used_bytes FROM vm_usage WHERE uuid = ?1 AND time >= '{from}'
             AND time < '{to}' AND mem_used_bytes IS NOT NULL ORDER BY mem_used_bytes"
        ),
        uuid,
    );
    let used: Vec<f64> = rows.iter().filter_map(|r| r[0]).collect();
    assert!(
        used.len() >= 3,
        "too few ticks from {from} to {to}: {used:?}"
    );
    (used[used.len() / 2], used.len())
}

/// KiB (as virsh and /proc give them) in bytes (as stored).
fn kib(v: u64) -> f64 {
    v as f64 * 1024.0
}

/// The memory and identity figures of a guest's stored T4 rows against libvirt. Levels are
/// compared tick by tick with the references read around the tick: libvirt samples at most a
/// few hundred ms after the tick's time, so the readings taken from 0.5 s before to 1 s after
/// it bracket that instant. The guest's balloon figures change only with its report (every
/// 2 s), so a stored one must be exactly one of the values dommemstat showed in that window;
/// the host-side RSS moves continuously, so it must lie within the range read there (± 1 MiB
/// for what moves between the readings' instants). Counters the guest reports (swap, faults)
/// are compared as Σ rate × interval_s between two ticks at which dommemstat's value was
/// steady, against its difference. Fixed figures (pid, vCPUs, maximum memory, state) are
/// compared on every row.
fn memory_and_identity_are_libvirts(db: &Path, guest: &Guest, polls: &[MemPoll]) {
    let mut checks = Checks::default();
    let identity = LibvirtIdentity::of(guest);
    eprintln!(
        "references: pid {}, vCPUs {}, state {}, max memory {} KiB, {} dommemstat readings, \
         the first {:?}",
        identity.pid,
        identity.vcpus,
        identity.state,
        identity.max_kib,
        polls.len(),
        polls.first().map(|p| &p.stat)
    );
    let rows = StoredRow::all_of(db, guest);
    let sampled: Vec<&StoredRow> = rows.iter().filter(|r| r.sampled()).collect();
    eprintln!("{} rows, {} sampled", rows.len(), sampled.len());
    assert!(sampled.len() >= 20, "{} sampled rows", sampled.len());

    fixed_figures_are_libvirts(&mut checks, &sampled, &identity);
    intervals_are_the_stored_times_and_the_hosts(&mut checks, &rows);
    memory_levels_are_the_readings_around_each_tick(&mut checks, &sampled, polls);
    guest_counters_are_dommemstats(&mut checks, &sampled, polls);
    checks.finish();
}

/// The fixed figures of a guest as libvirt tells them.
struct LibvirtIdentity {
    /// From libvirt's pid file.
    pid: f64,
    /// `virsh vcpucount --live --active`.
    vcpus: f64,
    /// `virsh domstate`.
    state: String,
    /// dominfo's Max memory.
    max_kib: u64,
}

impl LibvirtIdentity {
    fn of(guest: &Guest) -> LibvirtIdentity {
        let pid = f64::from(guest.qemu_pid().expect("qemu pid"));
        let vcpus: f64 = virsh_output(&["vcpucount", guest.name(), "--live", "--active"])
            .trim()
            .parse()
            .expect("vcpucount");
        let state = virsh_output(&["domstate", guest.name()]).trim().to_owned();
        let max_kib: u64 = virsh_output(&["dominfo", guest.name()])
            .lines()
            .find_map(|l| l.strip_prefix("Max memory:"))
            .and_then(|v| v.trim().trim_end_matches("KiB").trim().parse().ok())
            .expect("dominfo's Max memory");
        LibvirtIdentity {
            pid,
            vcpus,
            state,
            max_kib,
        }
    }
}

/// The numeric figures of a stored row the checks read, by name (the last two are SQL: the
/// host's interval of the same tick, and whether the row was sampled).
const NUMBERS: [&str; 18] = [
    "interval_s",
    "qemu_pid",
    "vcpus",
    "mem_alloc_bytes",
    "mem_max_bytes",
    "mem_used_bytes",
    "mem_used_pct",
    "mem_unused_bytes",
    "mem_usable_bytes",
    "mem_available_bytes",
    "mem_actual_less_usable_bytes",
    "rss_bytes",
    "swap_in_bytes_s",
    "swap_out_bytes_s",
    "major_faults_s",
    "minor_faults_s",
    "(SELECT h.interval_s FROM host_usage h WHERE h.time = vm_usage.time)",
    "missing IS NULL",
];

/// One stored T4 row of the guest: its time, state, memory source and [`NUMBERS`].
struct StoredRow {
    time: String,
    state: String,
    mem_source: Option<String>,
    numbers: Vec<Option<f64>>,
}

impl StoredRow {
    /// Every stored row of `guest`, in time order.
    fn all_of(db: &Path, guest: &Guest) -> Vec<StoredRow> {
        let conn = rusqlite::Connection::open(db).expect("db");
        let mut stmt = conn
            .prepare(&format!(
                "SELECT time, state, mem_source, {} FROM vm_usage WHERE uuid = ?1 ORDER BY time",
                NUMBERS.join(", ")
            ))
            .expect("sql");
        stmt.query_map([guest.uuid()], |r| {
            Ok(StoredRow {
                time: r.get(0)?,
                state: r.get(1)?,
                mem_source: r.get(2)?,
                numbers: (0..NUMBERS.len())
                    .map(|i| r.get(3 + i))
                    .collect::<Result<_, _>>()?,
            })
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    /// Whether libvirt sampled the VM on this tick (`missing IS NULL`).
    fn sampled(&self) -> bool {
        self.numbers[17] == Some(1.0)
    }

    /// The stored value of [`NUMBERS`] entry `name`.
    fn value(&self, name: &str) -> Option<f64> {
        let col = NUMBERS.iter().position(|n| *n == name).expect(name);
        self.numbers[col]
    }

    /// [`StoredRow::value`], which must be there.
    fn figure(&self, name: &str) -> f64 {
        self.value(name)
            .unwrap_or_else(|| panic!("{name} missing at {}", self.time))
    }
}

/// Fixed figures, on every sampled row.
fn fixed_figures_are_libvirts(
    checks: &mut Checks,
    sampled: &[&StoredRow],
    identity: &LibvirtIdentity,
) {
    let LibvirtIdentity {
        pid,
        vcpus,
        state,
        max_kib,
    } = identity;
    let (mut pids, mut cpus, mut maxes, mut states) = (0, 0, 0, 0);
    for row in sampled {
        pids += usize::from(row.figure("qemu_pid") == *pid);
        cpus += usize::from(row.figure("vcpus") == *vcpus);
        maxes += usize::from(row.figure("mem_max_bytes") == kib(*max_kib));
        states += usize::from(row.state == *state);
    }
    let n = sampled.len();
    checks.that(
        &format!("qemu_pid is libvirt's pid file's {pid} on {pids}/{n} rows"),
        pids == n,
    );
    checks.that(
        &format!("vcpus is vcpucount's {vcpus} on {cpus}/{n} rows"),
        cpus == n,
    );
    checks.that(
        &format!("mem_max_bytes is dominfo's {max_kib} KiB on {maxes}/{n} rows"),
        maxes == n,
    );
    checks.that(
        &format!("state is domstate's {state} on {states}/{n} rows"),
        states == n,
    );
}

/// interval_s: the time between this VM's samples, against the stored times and the host's
/// interval of the same tick, both within 0.25 s (a quarter of the 1 s tick: libvirt's
/// answer may come that much later than one tick and not the next).
fn intervals_are_the_stored_times_and_the_hosts(checks: &mut Checks, rows: &[StoredRow]) {
    let mut intervals = Vec::new();
    for pair in rows.windows(2) {
        let (prev, row) = (&pair[0], &pair[1]);
        if !prev.sampled() || !row.sampled() {
            continue;
        }
        let stamped = seconds_between(&prev.time, &row.time);
        let host =
            row.figure("(SELECT h.interval_s FROM host_usage h WHERE h.time = vm_usage.time)");
        intervals.push((row.figure("interval_s"), stamped, host));
    }
    eprintln!("(interval_s, Δ stored time, host interval_s): {intervals:.3?}");
    checks.that(
        &format!("{} consecutive sampled rows", intervals.len()),
        intervals.len() >= 20,
    );
    let worst = intervals
        .iter()
        .map(|(vm, stamped, host)| (vm - stamped).abs().max((vm - host).abs()))
        .fold(0.0, f64::max);
    checks.that(
        &format!(
            "interval_s within 0.25 s of the stored times' difference and the host's \
             interval on every row (worst {worst:.3} s)"
        ),
        worst <= 0.25,
    );
    let (vm_total, stamped_total): (f64, f64) = intervals
        .iter()
        .fold((0.0, 0.0), |(a, b), i| (a + i.0, b + i.1));
    checks.near(
        "Σ interval_s against the stored times' span",
        vm_total,
        stamped_total,
        0.25,
    );
}

/// The dommemstat readings taken from 0.5 s before `row`'s tick to 1 s after it.
fn readings_around<'a>(polls: &'a [MemPoll], row: &StoredRow) -> Vec<&'a MemPoll> {
    let (from, to) = (shifted(&row.time, -0.5), shifted(&row.time, 1.0));
    polls
        .iter()
        .filter(|p| p.from >= from && p.to <= to)
        .collect()
}

/// Levels against the dommemstat readings around each tick.
fn memory_levels_are_the_readings_around_each_tick(
    checks: &mut Checks,
    sampled: &[&StoredRow],
    polls: &[MemPoll],
) {
    let mut compared = 0;
    let mut skipped = Vec::new();
    for row in sampled.iter().filter(|r| r.value("interval_s").is_some()) {
        let near = readings_around(polls, row);
        if near.len() < 2 {
            continue;
        }
        if balloon_skipped_for_a_reading(row, polls) {
            skipped.push(row.time.as_str());
            continue;
        }
        compared += 1;
        balloon_levels_are_one_reading(checks, row, &near);
        print_levels(row, &near);
        rss_is_within_the_readings(checks, row, &near);
    }
    checks.that(
        &format!("memory levels of {compared} ticks compared with their readings"),
        compared >= 20,
    );
    checks.that(
        &format!(
            "{} ticks without balloon figures while the test's dommemstat held the domain \
             (at most 2): {skipped:?}",
            skipped.len()
        ),
        skipped.len() <= 2,
    );
}

/// Whether libvirt left out the balloon group at `row`'s tick because the test's own
/// `virsh dommemstat` held the domain's job then: under the NOWAIT flag libvirt gives a busy
/// domain's allocation only, without the guest's figures or qemu's RSS (which it always gives
/// otherwise), so the row has neither, and a reading overlaps the tick's instant. The monitor
/// stores such a tick as missing (its next sample spans both intervals) unless it is the fourth
/// in a row; this tolerates those.
fn balloon_skipped_for_a_reading(row: &StoredRow, polls: &[MemPoll]) -> bool {
    let guest_figures = ["mem_unused_bytes", "mem_usable_bytes", "rss_bytes"];
    if guest_figures.iter().any(|c| row.value(c).is_some()) {
        return false;
    }
    let (from, to) = (shifted(&row.time, -0.05), shifted(&row.time, 0.3));
    polls.iter().any(|p| p.from <= to && p.to >= from)
}

/// The balloon figures of a tick, its used memory and percentage, and its source, against
/// the readings `near` it.
fn balloon_levels_are_one_reading(checks: &mut Checks, row: &StoredRow, near: &[&MemPoll]) {
    for (column, key) in [
        ("mem_alloc_bytes", "actual"),
        ("mem_unused_bytes", "unused"),
        ("mem_usable_bytes", "usable"),
        ("mem_available_bytes", "available"),
    ] {
        let seen: Vec<Option<u64>> = near.iter().map(|p| p.field(key)).collect();
        let ours = row.value(column);
        let ok = seen.iter().any(|v| v.map(kib) == ours);
        if !ok {
            checks.that(
                &format!(
                    "{column} {ours:?} at {} among dommemstat's {key} {seen:?}",
                    row.time
                ),
                false,
            );
        }
    }
    // Used and its percentage: one reading's guest view, available − usable, ÷ available
    // (actual − usable, ÷ actual, when the guest does not report available); and actual −
    // usable beside it.
    let used = row.value("mem_used_bytes");
    let pct = row.value("mem_used_pct");
    let actual_less_usable = row.value("mem_actual_less_usable_bytes");
    let matched = near.iter().any(|p| {
        let (Some(actual), Some(usable)) = (p.field("actual"), p.field("usable")) else {
            return used.is_none() && pct.is_none() && actual_less_usable.is_none();
        };
        let of = p.field("available").unwrap_or(actual);
        let reference = 100.0 * of.saturating_sub(usable) as f64 / of as f64;
        used == Some(kib(of.saturating_sub(usable)))
            && pct.is_some_and(|pct| (pct - reference).abs() <= 1e-6)
            && actual_less_usable == Some(kib(actual.saturating_sub(usable)))
    });
    if !matched {
        checks.that(
            &format!(
                "mem_used {used:?} B, {pct:?} % at {} from one dommemstat reading",
                row.time
            ),
            false,
        );
    }
    // The source: which fields the guest reports.
    let sources: Vec<&str> = near
        .iter()
        .map(
            |p| match (p.field("available"), p.field("usable"), p.field("unused")) {
                (Some(_), Some(_), _) => "balloon-available-usable",
                (None, Some(_), _) => "balloon-usable",
                (_, None, Some(_)) => "balloon-unused",
                (_, None, None) => "allocation-only",
            },
        )
        .collect();
    if sources.iter().all(|s| *s == sources[0]) && row.mem_source.as_deref() != Some(sources[0]) {
        checks.that(
            &format!(
                "mem_source {:?} at {}, dommemstat says {}",
                row.mem_source, row.time, sources[0]
            ),
            false,
        );
    }
}

fn print_levels(row: &StoredRow, near: &[&MemPoll]) {
    eprintln!(
        "  {}: stored alloc {:?} unused {:?} usable {:?} available {:?} used {:.2?} % \
         rss {:?} KiB; dommemstat unused {:?} usable {:?}, VmRSS {:?}",
        row.time,
        row.value("mem_alloc_bytes").map(|b| b / 1024.0),
        row.value("mem_unused_bytes").map(|b| b / 1024.0),
        row.value("mem_usable_bytes").map(|b| b / 1024.0),
        row.value("mem_available_bytes").map(|b| b / 1024.0),
        row.value("mem_used_pct"),
        row.value("rss_bytes").map(|b| b / 1024.0),
        near.iter().map(|p| p.field("unused")).collect::<Vec<_>>(),
        near.iter().map(|p| p.field("usable")).collect::<Vec<_>>(),
        near.iter().map(|p| p.vm_rss_kib).collect::<Vec<_>>(),
    );
}

/// RSS: within what the test read around the tick.
fn rss_is_within_the_readings(checks: &mut Checks, row: &StoredRow, near: &[&MemPoll]) {
    let rss = row.figure("rss_bytes");
    let read: Vec<f64> = near
        .iter()
        .flat_map(|p| [Some(p.vm_rss_kib), p.field("rss")])
        .map(|v| kib(v.expect("dommemstat's rss")))
        .collect();
    let (lo, hi) = read
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if !(lo - MIB..=hi + MIB).contains(&rss) {
        checks.that(
            &format!(
                "rss {rss} at {} outside VmRSS/dommemstat's {lo}..{hi}",
                row.time
            ),
            false,
        );
    }
}

/// Counters the guest reports: swap in/out (KiB) and faults, as rates.
fn guest_counters_are_dommemstats(checks: &mut Checks, sampled: &[&StoredRow], polls: &[MemPoll]) {
    for (column, key, scale) in [
        ("swap_in_bytes_s", "swap_in", 1024.0),
        ("swap_out_bytes_s", "swap_out", 1024.0),
        ("major_faults_s", "major_fault", 1.0),
        ("minor_faults_s", "minor_fault", 1.0),
    ] {
        let reported = polls.iter().any(|p| p.stat.contains_key(key));
        if !reported {
            let stored = sampled.iter().filter(|r| r.value(column).is_some()).count();
            checks.that(
                &format!("the guest reports no {key}: {column} stored on {stored} rows (none)"),
                stored == 0,
            );
            continue;
        }
        // Ticks at which the readings around agree: the counter's value there is known.
        let steady: Vec<(usize, u64)> = sampled
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let values: Vec<Option<u64>> = readings_around(polls, row)
                    .iter()
                    .map(|p| p.field(key))
                    .collect();
                let first = *values.first()?;
                (values.len() >= 2 && values.iter().all(|v| *v == first)).then_some((i, first?))
            })
            .collect();
        // The widest pair of steady ticks with a rate on every row between (a tick whose
        // balloon group libvirt left out has none, nor has the one after it).
        let rated = |from: usize, to: usize| {
            sampled[from + 1..=to]
                .iter()
                .all(|r| r.value(column).is_some())
        };
        let widest = steady
            .iter()
            .flat_map(|a| steady.iter().map(move |b| (*a, *b)))
            .filter(|((a, _), (b, _))| a < b && rated(*a, *b))
            .max_by_key(|((a, _), (b, _))| b - a);
        let Some(((a, at_a), (b, at_b))) = widest else {
            checks.that(&format!("{key}: no two ticks with steady readings"), false);
            continue;
        };
        let ours: f64 = sampled[a + 1..=b]
            .iter()
            .map(|r| r.figure("interval_s") * r.figure(column) / scale)
            .sum();
        checks.near(
            &format!(
                "Σ {column} × interval_s from {} to {}",
                sampled[a].time, sampled[b].time
            ),
            ours,
            (at_b - at_a) as f64,
            0.01,
        );
    }
}
