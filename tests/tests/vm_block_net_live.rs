//! The block latency and NIC drops SETMOV stores per VM, read back from the database after a
//! real `setmov run`, against references outside SETMOV over the same window: bpftrace on the
//! same block tracepoints, and tc's own counters of a qdisc that drops the guest's traffic.
//!
//! The guests and libvirtd are prepared by `cargo xtask guests up` (or `cargo xtask test`);
//! without them, root, bpftrace or eBPF this test skips loudly (and fails under
//! SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use setmov_tests::bpftrace::{self, Bpftrace};
use setmov_tests::guests::{self, BOOT, Guest, Workload};
use setmov_tests::lat_hist::{self, histogram_differs, in_bucket_of, nearest_rank};
use setmov_tests::skip;
use setmov_tests::stored::{Cell, num, query};
use setmov_tests::streaming::{Record, Streaming};
use setmov_tests::window::monotonic_ns;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// Issue-to-completion latency of the block requests process `$1` submitted, one line per
/// completed request: direction (1 read, 2 write), completion instant, latency (ns). Measured
/// as the product does (setmov-ebpf/src/block.rs), except that the product knows a request by
/// its address, which these classic tracepoints do not give: here it is known by device,
/// direction and first sector (the same requests unless two to one sector overlap); its
/// submitter is whoever was current at `block_io_start`; the clock starts
/// there and restarts at `block_rq_issue`; a bio merged in front moves the request to its own
/// first sector; the first `block_rq_complete` of the key ends it; a write without data (an
/// fsync's pre-flush, ended by the flush machinery without being issued) is not timed. The
/// direction is the operation letter of `rwbs`, after an optional `F` (pre-flush).
const BLOCK_SCRIPT: &str = r#"
tracepoint:block:block_io_start {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    if ($d != 0 && args->nr_sector > 0) {
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
///   summed over the ticks must equal bpftrace's histogram in the product's log-linear buckets
///   (rows by `low_ns`) bucket for bucket, per direction, but for requests within 10 µs of a
///   bucket boundary, which may land on either side ([`lat_hist::SAME_REQUEST_SLACK_NS`]: the two programs stamp a request one after
///   the other).
///   Per tick, bpftrace's completions are handed out in order by the stored counts (each
///   tick's boundary must then lie before its record's arrival and at most 500 ms before it:
///   the probes are read at the tick, the record follows); each tick's buckets must then agree
///   the same way, and the stored p50/p95/p99 must lie in the bucket holding the exact
///   percentile (nearest rank) of bpftrace's latencies of that tick.
/// - NIC drops: a tbf qdisc on the tap's egress drops the host's echo replies to the guest's
///   20 pings ([`TBF_BURST`]). `vm_nic_drops` for the tap with the kernel's reason
///   [`TBF_DROP_REASON`], summed over the ticks, must equal tc's own drop count of the qdisc,
///   and Σ `net_drops_s × interval_s` over the ticks must equal Σ `vm_nic_drops` (within 0.01
///   per tick, float products) and be at least tc's count.
#[test]
fn block_latency_and_nic_drops_are_bpftraces_and_tcs() {
    if let Some(reason) = bpftrace::why_unusable() {
        return skip(reason);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let Some(run) = run_the_workload(&db, dir.path()) else {
        return;
    };
    block_latency_is_bpftraces(&db, &run);
    nic_drops_are_tcs(&db, &run);
}

/// What one run of the guest's workload gives the checks.
struct LatencyRun {
    /// Still running.
    guest: Guest,
    /// Its tap device, with the tbf qdisc on its egress.
    tap: String,
    /// The streamed records of the guest, one per tick.
    records: Vec<Record>,
    /// bpftrace's output: one line per completed request of qemu.
    latencies: bpftrace::Output,
    /// CLOCK_MONOTONIC when bpftrace had attached.
    attached_ns: u64,
    /// tc's count of the packets the qdisc dropped.
    dropped: u64,
}

/// Boots the guest, puts the dropping qdisc on its tap, streams the monitor at 250 ms and
/// attaches bpftrace while the guest waits; then the guest writes, reads and pings. None when
/// the guest cannot start (skipped).
fn run_the_workload(db: &Path, dir: &Path) -> Option<LatencyRun> {
    let guest = guests::start_or_skip(
        "latency",
        &Workload {
            delay_secs: 8,
            write_mb: BLOCK_MIB,
            read_mb: BLOCK_MIB,
            ping_count: u32::try_from(PINGS).expect("pings"),
            ping_size: PING_SIZE,
            ..Workload::default()
        },
    )?;
    let tap = guest.tap_device().expect("a tap device");
    tc(&[
        "qdisc", "replace", "dev", &tap, "root", "tbf", "rate", "100mbit", "burst", TBF_BURST,
        "limit", "100000",
    ]);
    let qemu = guest.qemu_pid().expect("qemu pid");
    let monitor = Streaming::start(
        SETMOV,
        db,
        &["--interval", "250ms"],
        guest.uuid().to_owned(),
        || 0,
    );
    guest
        .wait_for("SETMOV: delay-start", BOOT)
        .expect("guest waits");
    let reference =
        Bpftrace::attach(BLOCK_SCRIPT, &[qemu.to_string()], dir).unwrap_or_else(|e| panic!("{e}"));
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
    Some(LatencyRun {
        guest,
        tap,
        records,
        latencies,
        attached_ns,
        dropped,
    })
}

/// Block latency: the stored histograms and percentiles of the ticks after bpftrace attached,
/// per direction, against bpftrace's requests.
fn block_latency_is_bpftraces(db: &Path, run: &LatencyRun) {
    let guest = &run.guest;
    // Block latency: bpftrace's requests by direction, in completion order.
    let mut theirs: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for line in &run.latencies.lines {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().expect("a number"))
            .collect();
        let direction = if f[0] == 1 { "read" } else { "write" };
        theirs.entry(direction).or_default().push((f[1], f[2]));
    }
    // The stored ticks of the window: the records that came after bpftrace attached.
    let ticks: Vec<&Record> = run
        .records
        .iter()
        .filter(|r| r.at_ns > run.attached_ns)
        .collect();
    let from = &run
        .records
        .iter()
        .rev()
        .find(|r| r.at_ns <= run.attached_ns)
        .expect("a record before bpftrace attached")
        .fields["time"];
    let hist = query::<Cell>(
        db,
        &format!(
            "SELECT time, direction, low_ns, requests FROM vm_latency_hist
             WHERE uuid = ?1 AND time > '{from}' ORDER BY time"
        ),
        guest.uuid(),
    );
    let percentiles = query::<Cell>(
        db,
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
        let latency = StoredLatency {
            direction,
            hist: &hist,
            percentiles: &percentiles,
            columns,
        };
        window_histogram_is_bpftraces(&latency, &ticks, &completions);
        each_ticks_latency_is_bpftraces(&latency, &ticks, &completions);
    }
}

/// The stored latency figures of one direction.
struct StoredLatency<'a> {
    direction: &'a str,
    /// vm_latency_hist rows (time, direction, low_ns, requests) of the window.
    hist: &'a [Vec<Option<Cell>>],
    /// vm_ebpf_usage rows (time, read p50/p95/p99, write p50/p95/p99) of the window.
    percentiles: &'a [Vec<Option<Cell>>],
    /// Where the direction's p50 is in a `percentiles` row (p95, p99 follow).
    columns: usize,
}

impl StoredLatency<'_> {
    /// The stored histogram of the tick at `time`: requests per bucket lower bound (ns).
    fn tick(&self, time: &str) -> BTreeMap<u64, u64> {
        self.hist
            .iter()
            .filter(|r| r[0].as_deref() == Some(time) && r[1].as_deref() == Some(self.direction))
            .map(|r| (num(&r[2]) as u64, num(&r[3]) as u64))
            .collect()
    }
}

/// The stored histogram summed over the window's ticks against bpftrace's `completions`
/// ((instant, latency) in completion order).
fn window_histogram_is_bpftraces(
    latency: &StoredLatency,
    ticks: &[&Record],
    completions: &[(u64, u64)],
) {
    let direction = latency.direction;
    let mut stored_all: BTreeMap<u64, u64> = BTreeMap::new();
    for tick in ticks {
        for (b, n) in latency.tick(&tick.fields["time"]) {
            *stored_all.entry(b).or_default() += n;
        }
    }
    let all: Vec<u64> = completions.iter().map(|c| c.1).collect();
    eprintln!(
        "{direction}: stored requests per bucket (low ns) {stored_all:?}; bpftrace {:?}",
        lat_hist::histogram(&all)
    );
    assert!(
        all.len() >= BLOCK_MIB as usize,
        "{direction}: {} requests",
        all.len()
    );
    if let Some(why) = histogram_differs(&stored_all, &all) {
        panic!("{direction}: stored histogram against bpftrace's over the window: {why}");
    }
}

/// bpftrace's `completions`, handed out to the ticks in order by the stored counts: each
/// tick's boundary against its record's arrival, its histogram and its percentiles.
fn each_ticks_latency_is_bpftraces(
    latency: &StoredLatency,
    ticks: &[&Record],
    completions: &[(u64, u64)],
) {
    let (direction, columns) = (latency.direction, latency.columns);
    let mut next = 0;
    for (tick, row) in ticks.iter().zip(latency.percentiles) {
        let time = &tick.fields["time"];
        assert_eq!(row[0].as_deref(), Some(time.as_str()));
        let stored = latency.tick(time);
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

/// NIC drops, over every stored tick (the filter was added before the monitor started).
fn nic_drops_are_tcs(db: &Path, run: &LatencyRun) {
    let (guest, tap, dropped) = (&run.guest, &run.tap, run.dropped);
    let drops = query::<Cell>(
        db,
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
    let rates = query::<Cell>(
        db,
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
