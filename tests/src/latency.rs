//! Latency percentiles the product reads off its log-linear histograms, judged against the exact
//! latencies of the same requests as bpftrace times them; and the bpftrace script that times
//! every request of one block device the way the product does, with the instants the product
//! reads its histograms, so that each stored tick gets exactly the requests it counted.

use std::collections::BTreeMap;

use crate::lat_hist::{in_bucket_of, nearest_rank};
use crate::window::monotonic_ns;

/// Unix seconds at CLOCK_MONOTONIC 0 (to within a few µs): adds to `nsecs` / 1e9 to give
/// the wall-clock time the product stores its ticks at.
pub fn unix_at_monotonic_zero() -> f64 {
    // The read of the monotonic clock bracketed most tightly by two reads of the wall clock.
    (0..5)
        .map(|_| {
            let before = crate::window::unix_now();
            let monotonic = monotonic_ns();
            let after = crate::window::unix_now();
            (
                after - before,
                (before + after) / 2.0 - monotonic as f64 / 1e9,
            )
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("a reading")
        .1
}

/// The kernel's dev_t of block device `name` (`MAJOR << 20 | MINOR`), as the block
/// tracepoints report it.
pub fn dev_t(name: &str) -> u32 {
    let numbers = std::fs::read_to_string(format!("/sys/class/block/{name}/dev")).expect("dev");
    let (major, minor) = numbers.trim().split_once(':').expect("MAJOR:MINOR");
    (major.parse::<u32>().expect("major") << 20) | minor.parse::<u32>().expect("minor")
}

/// Issue-to-completion latency of every request of one device (`$1`, the kernel's dev_t,
/// `MAJOR << 20 | MINOR`), whoever submitted it, timed as the product does
/// (setmov-ebpf/src/block.rs), one line per completion: `c DIRECTION NSECS LATENCY_NS`.
/// The product pairs a request by its address; the classic tracepoints bpftrace reads here do
/// not give it, so a request is known by device, direction and first sector, which pairs the
/// same requests unless two to one sector are in flight together; the clock starts at
/// `block_io_start` and restarts at `block_rq_issue` (which also starts it for a request not
/// seen starting); a bio merged in front moves the request to its own first sector; the first
/// `block_rq_complete` of the key ends it. A write without data (an fsync's pre-flush, which
/// the flush machinery ends without issuing it) is not timed, as the product does not time
/// it. The direction is the operation letter of `rwbs`,
/// after an optional `F` (pre-flush), 0 read and 1 write as the product numbers them. The
/// requests of every device are followed, as the product's map does, and only `$1`'s printed.
///
/// A completion of `$1` with no request to pair (none started or issued at its sector since
/// bpftrace attached) is printed as `u DIRECTION NSECS`: the product, whose map of requests
/// in flight is older, might pair it.
///
/// And one line, `r DIRECTION ENTER EXIT`, each time process `$2` (the monitor) looks up
/// `$1`'s histogram of DIRECTION in its map at descriptor `$3` (BPF_MAP_LOOKUP_ELEM: its
/// tick's read), with the instants the system call entered and returned: a completion before
/// it is in the figures of that tick or an earlier one, a completion after it in a later one,
/// a completion during it in either (the kernel copies the histogram's per-CPU slots one
/// after the other, at some instant in between; on a busy machine the monitor's thread may
/// be preempted in the call for milliseconds).
pub const DEVICE_SCRIPT: &str = r#"
tracepoint:block:block_io_start {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    if ($d != 0 && args->nr_sector > 0) { @since[args->dev, args->sector, $d] = nsecs; }
}
tracepoint:block:block_bio_frontmerge {
    $d = 0;
    if (strncmp(args->rwbs, "R", 1) == 0 || strncmp(args->rwbs, "FR", 2) == 0) { $d = 1; }
    if (strncmp(args->rwbs, "W", 1) == 0 || strncmp(args->rwbs, "FW", 2) == 0) { $d = 2; }
    $old = args->sector + args->nr_sector;
    $t = @since[args->dev, $old, $d];
    if ($d != 0 && $t != 0) {
        @since[args->dev, args->sector, $d] = $t;
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
        if (args->dev == $1) { printf("c %d %llu %llu\n", $d - 1, nsecs, nsecs - $t); }
        delete(@since[args->dev, args->sector, $d]);
    } else {
        if ($d != 0 && args->dev == $1) { printf("u %d %llu\n", $d - 1, nsecs); }
    }
}
tracepoint:syscalls:sys_enter_bpf /pid == $2 && args->cmd == 1/ {
    $attr = (uint64)args->uattr;
    if (*uptr((uint32 *)$attr) == $3) {
        $key = *uptr((uint64 *)($attr + 8));
        if (*uptr((uint32 *)$key) == $1) {
            @reading[tid] = 1 + *uptr((uint32 *)($key + 4));
            @entered[tid] = nsecs;
        }
    }
}
tracepoint:syscalls:sys_exit_bpf /@reading[tid] != 0/ {
    printf("r %u %llu %llu\n", @reading[tid] - 1, @entered[tid], nsecs);
    delete(@reading[tid]);
    delete(@entered[tid]);
}
"#;

/// What [`DEVICE_SCRIPT`] printed, by direction (0 read, 1 write).
#[derive(Debug, Default)]
pub struct DeviceTrace {
    /// (completion instant, latency), ns, in completion order.
    pub completions: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Instants of the completions bpftrace could not pair, ns.
    pub unpaired: BTreeMap<u32, Vec<u64>>,
    /// The monitor's reads of the direction's histogram (system call entry and return), ns,
    /// in order.
    pub reads: BTreeMap<u32, Vec<(u64, u64)>>,
}

impl DeviceTrace {
    pub fn parse(lines: &[String]) -> DeviceTrace {
        let mut trace = DeviceTrace::default();
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| -> u64 {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .unwrap_or_else(|| panic!("bpftrace printed {line:?}"))
            };
            let direction = u32::try_from(number(1)).expect("a direction");
            match fields[0] {
                "c" => trace
                    .completions
                    .entry(direction)
                    .or_default()
                    .push((number(2), number(3))),
                "u" => trace.unpaired.entry(direction).or_default().push(number(2)),
                "r" => trace
                    .reads
                    .entry(direction)
                    .or_default()
                    .push((number(2), number(3))),
                _ => panic!("bpftrace printed {line:?}"),
            }
        }
        for list in trace.completions.values_mut() {
            list.sort_unstable();
        }
        for list in trace.reads.values_mut() {
            list.sort_unstable();
        }
        trace
    }

    /// The latencies of `direction` each stored tick counted: `ticks` are the instants
    /// (monotonic ns) the ticks were stored at, the first only opening the interval the
    /// second closes. A tick's interval ends at the monitor's read of the histogram that
    /// follows its instant within [`MAX_READ_DELAY_NS`] (as the read's system call enters),
    /// or, when there is none (the histogram did not exist yet: nothing had completed), at
    /// the instant itself.
    pub fn per_tick(&self, direction: u32, ticks: &[u64]) -> Vec<TickLatencies> {
        let reads = self.reads.get(&direction).map_or(&[][..], Vec::as_slice);
        let ends: Vec<(u64, u64)> = ticks
            .iter()
            .map(|&at| {
                reads
                    .iter()
                    .copied()
                    .find(|&(enter, _)| enter >= at && enter < at + MAX_READ_DELAY_NS)
                    .unwrap_or((at, at))
            })
            .collect();
        let completions = self
            .completions
            .get(&direction)
            .map_or(&[][..], Vec::as_slice);
        let near = |(enter, exit): (u64, u64)| {
            completions
                .iter()
                .filter(|(at, _)| {
                    *at + SAME_READ_SLACK_NS >= enter && *at <= exit + SAME_READ_SLACK_NS
                })
                .count()
        };
        let unpaired = self.unpaired.get(&direction).map_or(&[][..], Vec::as_slice);
        ends.windows(2)
            .map(|pair| TickLatencies {
                unpaired: unpaired
                    .iter()
                    .filter(|at| **at > pair[0].0 && **at <= pair[1].0)
                    .count(),
                values: completions
                    .iter()
                    .filter(|(at, _)| *at > pair[0].0 && *at <= pair[1].0)
                    .map(|(_, value)| *value)
                    .collect(),
                near_start: near(pair[0]),
                near_end: near(pair[1]),
                read_ns: pair[1].1 - pair[1].0,
            })
            .collect()
    }
}

/// The requests bpftrace assigns to one stored tick.
#[derive(Debug, PartialEq)]
pub struct TickLatencies {
    /// Their latencies, ns, in completion order.
    pub values: Vec<u64>,
    /// Requests that completed during the read opening the interval or within
    /// [`SAME_READ_SLACK_NS`] of it, and likewise of the read closing it: each may be on
    /// either side of it.
    pub near_start: usize,
    pub near_end: usize,
    /// How long the read closing the interval took (its system call), ns.
    pub read_ns: u64,
    /// Completions in the interval bpftrace could not pair with a request.
    pub unpaired: usize,
}

/// A stored tick of one device and direction: its instant (Unix seconds) and, when it has a
/// row, its requests, p50, p95 and p99 (µs).
pub type StoredTick = (f64, Option<(usize, f64, f64, f64)>);

/// The fewest requests a tick must have for its percentiles to be judged: with fewer, p99 is
/// the largest request or nearly, and a single request timed across a bucket boundary moves
/// it.
pub const PERCENTILE_MIN_REQUESTS: usize = 100;

/// Stored `ticks` of `direction` (the first only opening the interval of the second) against
/// the requests `trace` assigns each ([`DeviceTrace::per_tick`]; `unix_at_zero`: see
/// [`unix_at_monotonic_zero`]). A tick's requests must equal bpftrace's but for those that
/// completed during or within [`SAME_READ_SLACK_NS`] of its reads, and so must the window's;
/// in a tick of [`PERCENTILE_MIN_REQUESTS`] or more, p50, p95 and p99 must lie in the
/// log-linear bucket of the exact percentile (nearest rank) of bpftrace's latencies ([`in_bucket_of`]).
///
/// `reference_missed`: the completions the kernel did not run bpftrace's program for in the
/// window (its recursion misses, see [`crate::bpftool::recursion_misses`]). Those requests
/// are missing from bpftrace's count, in ticks it cannot say, and may be stored: a tick, and
/// the window, may hold up to that many more requests than bpftrace saw, never fewer.
pub fn check_ticks(
    what: &str,
    ticks: &[StoredTick],
    trace: &DeviceTrace,
    direction: u32,
    unix_at_zero: f64,
    reference_missed: usize,
) {
    let instants: Vec<u64> = ticks
        .iter()
        .map(|t| ((t.0 - unix_at_zero) * 1e9) as u64)
        .collect();
    let theirs = trace.per_tick(direction, &instants);
    assert!(
        !theirs.is_empty(),
        "{what}: no tick in the window: {ticks:?}"
    );
    let slack_us = SAME_READ_SLACK_NS / 1000;
    let (mut ours_total, mut theirs_total) = (0, 0);
    for ((seconds, row), tick) in ticks[1..].iter().zip(&theirs) {
        let at = format!("{what} tick +{:.3} s", seconds - ticks[0].0);
        let mut values = tick.values.clone();
        values.sort_unstable();
        let (requests, n) = (row.map_or(0, |r| r.0), values.len());
        (ours_total, theirs_total) = (ours_total + requests, theirs_total + n);
        let near = tick.near_start + tick.near_end;
        let mut line = format!(
            "{at}: {requests} requests stored, bpftrace {n} ({near} during or within \
             {slack_us} µs of a read; the read took {} µs)",
            tick.read_ns / 1000
        );
        assert!(
            n <= requests + near && requests <= n + near + reference_missed,
            "{at}: {requests} requests stored, bpftrace {n}, {near} of them during or within \
             {slack_us} µs of the monitor's reads; {} completions bpftrace could not pair, \
             {reference_missed} in the window the kernel did not run its program for",
            tick.unpaired
        );
        if let Some((_, p50, p95, p99)) = row.filter(|r| r.0 >= PERCENTILE_MIN_REQUESTS) {
            for (q, stored) in [(0.5, p50), (0.95, p95), (0.99, p99)] {
                let exact = nearest_rank(&values, q);
                line += &format!(
                    "; p{} {stored:.0} µs, exact {:.0} µs",
                    q * 100.0,
                    exact as f64 / 1e3
                );
                assert!(
                    in_bucket_of(stored, exact),
                    "{at}: p{} stored {stored} µs, not in the bucket of the exact {exact} \
                     ns of bpftrace's {n} requests",
                    q * 100.0
                );
            }
        }
        eprintln!("{line}");
    }
    let edges = theirs[0].near_start + theirs[theirs.len() - 1].near_end;
    eprintln!(
        "{what} requests over the window: {ours_total} stored, bpftrace {theirs_total} \
         ({edges} during or within {slack_us} µs of the reads at its ends; \
         {reference_missed} completions the kernel did not run bpftrace's program for)"
    );
    assert!(
        theirs_total <= ours_total + edges && ours_total <= theirs_total + edges + reference_missed,
        "{what} requests over the window: {ours_total} stored, bpftrace {theirs_total}"
    );
}

/// How long after a tick's stored instant the monitor may read its maps: milliseconds
/// normally (it reads the host's files first), tens on a loaded machine.
pub const MAX_READ_DELAY_NS: u64 = 500_000_000;

/// How far a request's completion and the monitor's read may be apart in bpftrace's times
/// and still be the other way round in the monitor's figures: bpftrace stamps the read as the
/// system call enters (the kernel copies the histogram's per-CPU slots microseconds later)
/// and the completion after the product's program has counted it, microseconds later too.
pub const SAME_READ_SLACK_NS: u64 = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_go_to_the_tick_whose_read_follows_them() {
        let trace = DeviceTrace::parse(
            &[
                "c 1 1500 7",
                "r 1 1000 1010",
                "c 1 1000 5",
                "r 1 2000 2010",
                "c 1 2000 8",
                "c 0 2100 9",
                "c 1 2001 6",
                "c 1 3050 4",
            ]
            .map(str::to_owned),
        );
        // The ticks at 500 and 1500 were read at 1000 and 2000, the one at 3100 never (its
        // interval ends at its instant); a completion at a read's instant is in that read.
        let values = |direction, ticks: &[u64]| -> Vec<Vec<u64>> {
            let ticks = trace.per_tick(direction, ticks);
            ticks.into_iter().map(|t| t.values).collect()
        };
        assert_eq!(values(1, &[500, 1500, 3100]), [vec![7, 8], vec![6, 4]]);
        assert_eq!(values(0, &[500, 1500, 3100]), [vec![], vec![9]]);
        // During a read, or within 20 µs of it, a completion may be counted on either side.
        let near = DeviceTrace::parse(
            &[
                "r 0 1000000 1001000",
                "c 0 1015000 1",
                "r 0 2000000 2500000",
                "c 0 2400000 2",
            ]
            .map(str::to_owned),
        );
        assert_eq!(
            near.per_tick(0, &[900_000, 1_900_000]),
            [TickLatencies {
                values: vec![1],
                near_start: 1,
                near_end: 1,
                read_ns: 500_000,
                unpaired: 0,
            }]
        );
    }

    /// A tick of 100 requests of 1 to 100 µs, read 1 s after the one opening it, and its
    /// stored row as `row`.
    fn hundred(row: (usize, f64, f64, f64)) {
        hundred_with_misses(row, 0);
    }

    /// [`hundred`], with `missed` completions bpftrace's program did not run for.
    fn hundred_with_misses(row: (usize, f64, f64, f64), missed: usize) {
        let mut lines = vec![
            "r 0 1000000000 1000010000".to_owned(),
            "r 0 2000000000 2000010000".to_owned(),
        ];
        lines.extend((1..=100).map(|i| format!("c 0 {} {}", 1_500_000_000 + i, i * 1000)));
        let trace = DeviceTrace::parse(&lines);
        check_ticks(
            "read",
            &[(0.9999, None), (1.9999, Some(row))],
            &trace,
            0,
            0.0,
            missed,
        );
    }

    #[test]
    fn percentiles_in_the_exact_values_buckets_pass() {
        // p50 50 µs, p95 95 µs, p99 99 µs, each ± 10 µs (two programs time one request):
        // in [36.9, 61.4), [81.9, 106.5) and [81.9, 114.7) µs.
        hundred((100, 40.0, 100.0, 110.0));
    }

    #[test]
    #[should_panic(expected = "p99 stored 140 µs, not in the bucket of the exact 99000 ns")]
    fn a_percentile_outside_its_bucket_fails() {
        hundred((100, 40.0, 100.0, 140.0));
    }

    #[test]
    #[should_panic(expected = "101 requests stored, bpftrace 100, 0 of them")]
    fn a_request_more_than_bpftrace_saw_fails() {
        hundred((101, 40.0, 100.0, 120.0));
    }

    #[test]
    fn a_request_more_than_bpftrace_saw_passes_when_its_program_was_skipped() {
        hundred_with_misses((101, 40.0, 100.0, 110.0), 1);
    }

    #[test]
    #[should_panic(expected = "99 requests stored, bpftrace 100, 0 of them")]
    fn a_request_fewer_than_bpftrace_saw_fails_whatever_it_missed() {
        hundred_with_misses((99, 40.0, 100.0, 110.0), 5);
    }

    #[test]
    fn monotonic_time_maps_to_the_wall_clock() {
        let unix = unix_at_monotonic_zero() + monotonic_ns() as f64 / 1e9;
        assert!((unix - crate::window::unix_now()).abs() < 0.01);
    }
}
