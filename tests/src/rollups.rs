//! Rollup values of every rolled-up figure over ticks of uneven Δt, checked the same way on
//! every store.
//!
//! Three windows of one minute each, at 00:00:00, 00:59:30 (across the hour) and 01:30:00,
//! with ticks 0.5 s, 1 s and 3 s apart in turn (a window's first tick closes a 3 s interval, as
//! after a restart), and one more at 02:00:00 that completes hour 1. The host's CPU reads 10
//! after a 0.5 s gap, 20 after 1 s, and after 3 s 40 in the window's first 4.5 s turn, 41 in the
//! second and so on; 100 at 31.5 s into each window (a spike). Its VM's is half the host's. A
//! rollup's mean weighs each tick by its Δt (`setmov::store::rollup`), so it differs from the
//! per-tick mean; the p95 is the nearest rank, here the third or fourth largest value, which no
//! other rank or interpolation gives. Each figure also keeps how many ticks had it and the
//! seconds they cover, and a report over the buckets must give the raw ticks' mean, count and
//! maximum, and their percentiles within the distributions' relative error.
//!
//! Every other figure of `host_usage_1m/1h` and `vm_usage_1m/1h` is its own function of that
//! CPU figure `v` or of a second sequence `w` = 37 n mod 101 (n the tick's number), which peaks
//! at other ticks: in each bucket its mean, maximum and p95 differ from each other and from every
//! other column's. Some figures are missing from some ticks (the host's memory every third tick,
//! the VM's balloon figures and CPU ready in one turn of three) and some from whole windows (the
//! host's network and the VM's eBPF figures in the third): a rollup averages over the ticks that
//! had the figure, and is NULL where none had it.

use setmov::analysis::ReportQuery;
use setmov::analysis::report::{FigureReport, report};
use setmov::ebpf::BlockTotals;
use setmov::store::rollup::{Level, Retention, RollupQuery, RollupRow, SHOWN_STATS};
use setmov::store::sketch::RELATIVE_ERROR;
use setmov::store::{Store, TickRecord};
use setmov::usage::PacketRates;
use setmov::usage::disk::DiskTotals;
use setmov::usage::ebpf::{CpuReady, DirectionLatency, LatencySummary, VmEbpfFigures};
use setmov::usage::host::{MemUsage, NetTotals};
use setmov::usage::vm::{MemSource, VmMemUsage};
use setmov::vm::stats::DomainState;
use setmov_common::{DIR_READ, DIR_WRITE, LatHist};
use time::Duration;

use crate::minute_reports::same_reports;
use crate::ticks::{HOST_IP, host_tick, instant, vm_sample};

const VM_UUID: &str = "3f9a7c1e-0000-4000-8000-0000000000e1";
const VM_NAME: &str = "desk-uneven";
/// The gaps before the ticks of a window, in turn; the first tick of a window follows a gap
/// of 3 s too (or a longer one).
const GAPS: [f64; 3] = [3.0, 0.5, 1.0];
/// The host's CPU after each gap of [`GAPS`], in a window's first turn; the one after 3 s grows
/// by 1 each turn.
const CPU: [f64; 3] = [40.0, 10.0, 20.0];
const SPIKE_AT: f64 = 31.5;
const SPIKE: f64 = 100.0;
/// The windows' starts, in seconds after the epoch.
const WINDOWS: [f64; 3] = [0.0, 3570.0, 5400.0];
/// The tick that completes hour 1.
const LAST: f64 = 7200.0;

/// One tick of the schedule: when, after which gap, and what its figures derive from.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// Seconds after the epoch.
    at: f64,
    dt: f64,
    /// Which window (0 to 2; 3 for the last tick).
    window: usize,
    /// Which gap of [`GAPS`] it followed in its window.
    turn: usize,
    /// The host's CPU.
    v: f64,
    /// 37 n mod 101 for the n-th tick: distinct over any 101 ticks in a row.
    w: f64,
}

/// Every tick, in time order.
fn schedule() -> Vec<Point> {
    let mut ticks: Vec<Point> = Vec::new();
    for (window, start) in WINDOWS.into_iter().enumerate() {
        let mut offset = 0.0;
        for n in 0.. {
            let turn = n % GAPS.len();
            if n > 0 {
                offset += GAPS[turn];
            }
            if offset >= 60.0 {
                break;
            }
            let v = match (offset == SPIKE_AT, turn) {
                (true, _) => SPIKE,
                (false, 0) => CPU[0] + (n / GAPS.len()) as f64,
                (false, _) => CPU[turn],
            };
            let dt = if n == 0 { GAPS[0] } else { GAPS[turn] };
            let w = ((ticks.len() * 37) % 101) as f64;
            ticks.push(Point {
                at: start + offset,
                dt,
                window,
                turn,
                v,
                w,
            });
        }
    }
    let previous = ticks.last().map_or(0.0, |t| t.at);
    let w = ((ticks.len() * 37) % 101) as f64;
    ticks.push(Point {
        at: LAST,
        dt: LAST - previous,
        window: 3,
        turn: 0,
        v: 0.0,
        w,
    });
    ticks
}

/// A rolled-up figure: its column in the raw table, and its value in a tick (`None`: the tick
/// has not got it).
type Figure = (&'static str, fn(&Point) -> Option<f64>);

/// The host's figures, in the order of `host_usage_1m`'s columns. Memory is missing every
/// third tick; the network from the third window.
const HOST: [Figure; 8] = [
    ("cpu_pct", |p| Some(p.v)),
    ("mem_used_pct", |p| {
        (p.turn != 2).then_some(30.3 + 0.5 * p.w)
    }),
    ("disk_read_bytes_s", |p| Some(1e6 + 3e4 * p.v)),
    ("disk_write_bytes_s", |p| Some(5e6 + 2e4 * p.w)),
    ("disk_read_iops", |p| Some(7.01 + 1.5 * p.w)),
    ("disk_write_iops", |p| Some(300.0 + 2.5 * p.v)),
    ("net_rx_bps", |p| (p.window != 2).then_some(1e7 + 1e5 * p.w)),
    ("net_tx_bps", |p| (p.window != 2).then_some(2e6 + 7e3 * p.v)),
];

/// The VM's figures, in the order of `vm_usage_1m`'s columns. Its balloon figures (used %,
/// usable bytes) and CPU ready are missing after the 0.5 s gaps; its eBPF figures in the third
/// window. The integer columns (vCPUs, bytes) get whole numbers.
const VM: [Figure; 23] = [
    ("cpu_pct", |p| Some(p.v / 2.0)),
    ("cpu_vcpu_pct", |p| Some(1.0 + 0.8 * p.v)),
    ("cpu_vcpu_threads_pct", |p| Some(0.5 + 0.7 * p.v)),
    ("steal_pct", |p| Some(0.013 + 0.1 * p.w)),
    ("mem_used_pct", |p| {
        (p.turn != 1).then_some(30.0 + 0.4 * p.w)
    }),
    ("disk_read_bytes_s", |p| Some(2e5 + 1e3 * p.w)),
    ("disk_write_bytes_s", |p| Some(4e5 + 2e3 * p.v)),
    ("disk_read_iops", |p| Some(3.07 + 0.25 * p.w)),
    ("disk_write_iops", |p| Some(5.0 + 0.75 * p.v)),
    ("net_rx_bps", |p| Some(8e5 + 1e4 * p.w)),
    ("net_tx_bps", |p| Some(6e5 + 3e3 * p.v)),
    ("vcpus", |p| Some(1.0 + p.w)),
    ("mem_alloc_bytes", |p| {
        Some(1_073_741_824.0 + 1_048_576.0 * p.w)
    }),
    ("mem_used_bytes", |p| {
        Some(536_870_912.0 + 1_048_576.0 * p.v)
    }),
    ("mem_usable_bytes", |p| {
        (p.turn != 1).then_some(268_435_456.0 + 12_345.0 * p.w)
    }),
    ("mem_actual_less_usable_bytes", |p| {
        (p.turn != 1).then_some(805_306_368.0 + 1_048_576.0 * p.w)
    }),
    ("mem_guest_cache_bytes", |p| {
        (p.turn != 1).then_some(134_217_728.0 + 4_096.0 * p.v)
    }),
    ("swap_in_bytes_s", |p| Some(17.0 + 4096.0 * p.w)),
    ("major_faults_s", |p| Some(2.0 + 0.3 * p.v)),
    ("cpu_ready_pct", |p| {
        (p.window != 2 && p.turn != 1).then_some(0.003 + 0.05 * p.w)
    }),
    ("read_latency_p99_us", |p| {
        (p.window != 2).then_some(100.0 + 3.0 * p.w)
    }),
    ("write_latency_p99_us", |p| {
        (p.window != 2).then_some(250.0 + 2.0 * p.v)
    }),
    ("kvm_events_s", |p| {
        (p.window != 2).then_some(1000.0 + 10.0 * p.w)
    }),
];

/// The value of figure `name` of `figures` in tick `p`.
fn value(figures: &[Figure], name: &str, p: &Point) -> Option<f64> {
    let (_, f) = figures
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no figure {name}"));
    f(p)
}

/// A whole number of a figure that is stored as an integer.
fn whole(x: Option<f64>) -> Option<u64> {
    x.map(|x| {
        assert!(x.fract() == 0.0 && x >= 0.0, "{x} is not a count");
        x as u64
    })
}

fn rates(pps: f64, bps: Option<f64>) -> Option<PacketRates> {
    bps.map(|bps| PacketRates {
        pps,
        bytes_per_sec: bps / 8.0,
        avg_packet_bits: Some(8.0),
        bps,
    })
}

fn latency(direction: u32, p99: Option<f64>) -> Option<DirectionLatency> {
    p99.map(|p99_us| DirectionLatency {
        direction,
        hist: LatHist::default(),
        summary: LatencySummary {
            count: 1,
            p50_us: p99_us / 4.0,
            p95_us: p99_us / 2.0,
            p99_us,
        },
    })
}

/// The tick of `p`, with the VM running, every figure of [`HOST`] and [`VM`] set.
fn tick(p: &Point, seq: u64) -> TickRecord {
    let host = |name| value(&HOST, name, p);
    let vm = |name| value(&VM, name, p);
    let mut tick = host_tick(seq, Duration::seconds_f64(p.at), p.dt, p.v);
    if let Some(sample) = &mut tick.host_sample {
        let u = &mut sample.usage;
        u.mem = host("mem_used_pct").map(|used_pct| MemUsage {
            total_bytes: 16 << 30,
            used_bytes: ((16u64 << 30) as f64 * used_pct / 100.0) as u64,
            used_pct,
            nonfree_pct: 99.0,
            noncache_pct: Some(97.0),
            unavailable_pct: Some(used_pct),
        });
        u.disk_total = Some(DiskTotals {
            read_bytes_per_sec: host("disk_read_bytes_s").expect("every tick"),
            write_bytes_per_sec: host("disk_write_bytes_s").expect("every tick"),
            read_iops: host("disk_read_iops").expect("every tick"),
            write_iops: host("disk_write_iops").expect("every tick"),
        });
        u.net_total = rates(1.0, host("net_rx_bps"))
            .zip(rates(2.0, host("net_tx_bps")))
            .map(|(rx, tx)| NetTotals { rx, tx });
    }
    tick.vm_count = Some(1);
    let mut sample = vm_sample(VM_UUID, VM_NAME, DomainState::Running, p.dt, p.v / 2.0);
    let usage = sample.usage.as_mut().expect("a running VM's usage");
    usage.cpu_host_pct = vm("cpu_pct");
    usage.cpu_vcpu_pct = vm("cpu_vcpu_pct");
    usage.cpu_vcpu_threads_pct = vm("cpu_vcpu_threads_pct");
    usage.steal_pct = vm("steal_pct");
    usage.vcpus = whole(vm("vcpus")).map(|n| u32::try_from(n).expect("vCPUs"));
    usage.mem = VmMemUsage {
        allocated_bytes: whole(vm("mem_alloc_bytes")),
        max_bytes: Some(8 << 30),
        used_bytes: whole(vm("mem_used_bytes")),
        used_pct: vm("mem_used_pct"),
        source: MemSource::BalloonUsable,
        actual_less_usable_bytes: whole(vm("mem_actual_less_usable_bytes")),
        unused_bytes: None,
        usable_bytes: whole(vm("mem_usable_bytes")),
        available_bytes: None,
        guest_cache_bytes: whole(vm("mem_guest_cache_bytes")),
        rss_bytes: Some(1 << 30),
        swap_in_bytes_per_sec: vm("swap_in_bytes_s"),
        swap_out_bytes_per_sec: Some(0.0),
        major_faults_per_sec: vm("major_faults_s"),
        minor_faults_per_sec: Some(0.0),
    };
    usage.disk_total = Some(DiskTotals {
        read_bytes_per_sec: vm("disk_read_bytes_s").expect("every tick"),
        write_bytes_per_sec: vm("disk_write_bytes_s").expect("every tick"),
        read_iops: vm("disk_read_iops").expect("every tick"),
        write_iops: vm("disk_write_iops").expect("every tick"),
    });
    usage.net_total = rates(3.0, vm("net_rx_bps"))
        .zip(rates(4.0, vm("net_tx_bps")))
        .map(|(rx, tx)| NetTotals { rx, tx });
    // The eBPF figures: none at all in the third window; CPU ready missing in some ticks.
    // kvm_events_s is the events of the interval ÷ its length: 1 s here.
    if let Some(kvm) = vm("kvm_events_s") {
        sample.ebpf = Some(VmEbpfFigures {
            interval_secs: 1.0,
            block: BlockTotals::default(),
            block_rates: None,
            latency: [
                latency(DIR_READ, vm("read_latency_p99_us")),
                latency(DIR_WRITE, vm("write_latency_p99_us")),
            ]
            .into_iter()
            .flatten()
            .collect(),
            cpu_ready: vm("cpu_ready_pct").map(|pct| CpuReady {
                pct,
                p99_us: Some(50.0),
                waits: 3,
            }),
            kvm_events: vec![(
                "kvm_exit".into(),
                "HLT".into(),
                whole(Some(kvm)).expect("events"),
            )],
            nics: Vec::new(),
        });
    }
    tick.vms = vec![sample];
    tick
}

/// The ticks of [`schedule`], with the VM running in each.
pub fn uneven_ticks() -> Vec<TickRecord> {
    schedule()
        .iter()
        .zip(1..)
        .map(|(p, seq)| tick(p, seq))
        .collect()
}

/// Δt-weighted mean, maximum, p95, count and seconds covered of one figure over a bucket, as
/// the test computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    avg: f64,
    max: f64,
    p95: f64,
    n: u64,
    secs: f64,
}

/// A bucket as the test computes it: start, samples, and per figure its stats or `None` when
/// no tick of the bucket had it.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    time: String,
    samples: u64,
    figures: Vec<(&'static str, Option<Stats>)>,
}

/// Of (value, Δt) pairs: Σ value·Δt / Σ Δt, maximum, the value at rank ⌈0.95 n⌉ of the
/// sorted values, n and Σ Δt; `None` for none.
fn stats(timed: Vec<(f64, f64)>) -> Option<Stats> {
    if timed.is_empty() {
        return None;
    }
    let secs: f64 = timed.iter().map(|(_, dt)| dt).sum();
    let avg = timed.iter().map(|(v, dt)| v * dt).sum::<f64>() / secs;
    let mut values: Vec<f64> = timed.into_iter().map(|(v, _)| v).collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let rank = (0.95 * n as f64).ceil() as usize;
    Some(Stats {
        avg,
        max: values[n - 1],
        p95: values[rank - 1],
        n: n as u64,
        secs,
    })
}

/// The buckets of `level` complete at [`LAST`], computed from the schedule, for `figures`.
fn expected(level: Level, figures: &[Figure]) -> Vec<Expected> {
    let span = level.span().as_secs_f64();
    let mut buckets: Vec<(f64, Vec<Point>)> = Vec::new();
    for p in schedule() {
        let start = (p.at / span).floor() * span;
        if start + span > LAST {
            continue;
        }
        match buckets.last_mut() {
            Some((s, points)) if *s == start => points.push(p),
            _ => buckets.push((start, vec![p])),
        }
    }
    buckets
        .into_iter()
        .map(|(start, points)| Expected {
            time: setmov::store::format_time(instant(Duration::seconds_f64(start))),
            samples: points.len() as u64,
            figures: figures
                .iter()
                .map(|(name, f)| {
                    let timed = points.iter().filter_map(|p| Some((f(p)?, p.dt))).collect();
                    (*name, stats(timed))
                })
                .collect(),
        })
        .collect()
}

/// Checks every column of every rollup row against the buckets computed from the schedule:
/// time, samples, and each figure's mean, maximum, p95, count and seconds to 1e-12 relative
/// (summation order only), or NULL where the test expects none.
fn check_rows(what: &str, rows: &[RollupRow], expected: &[Expected]) {
    let times: Vec<&str> = rows.iter().map(|r| r.time.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|e| e.time.as_str()).collect();
    assert_eq!(times, want, "{what}: buckets");
    for (row, e) in rows.iter().zip(expected) {
        assert_eq!(row.samples, e.samples, "{what} {}: samples", row.time);
        assert_eq!(
            row.figures.len(),
            SHOWN_STATS.len() * e.figures.len(),
            "{what} {}: columns {:?}",
            row.time,
            row.figures.keys().collect::<Vec<_>>()
        );
        for (name, stats) in &e.figures {
            let want = stats.map(|s| [s.avg, s.max, s.p95, s.n as f64, s.secs]);
            for (i, stat) in SHOWN_STATS.into_iter().enumerate() {
                let column = format!("{name}_{stat}");
                let stored = row
                    .figures
                    .get(&column)
                    .unwrap_or_else(|| panic!("{what} {}: no column {column}", row.time));
                match want {
                    None => assert!(
                        stored.is_null(),
                        "{what} {} {column}: {stored}, expected NULL (no tick had it)",
                        row.time
                    ),
                    Some(want) => {
                        let got = stored.as_f64().unwrap_or_else(|| {
                            panic!(
                                "{what} {} {column}: {stored}, expected {}",
                                row.time, want[i]
                            )
                        });
                        assert!(
                            (got - want[i]).abs() <= 1e-12 * want[i].abs().max(1.0),
                            "{what} {} {column}: {got}, expected {}",
                            row.time,
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

/// Writes [`uneven_ticks`] into `store` and rolls up as the writer does after each tick (then
/// enough more times for every bucket due, 30 per call), keeping every row.
pub async fn write_uneven_ticks(store: &mut impl Store) {
    let keep = Retention {
        raw: None,
        minute: None,
        hour: None,
    };
    let ticks = uneven_ticks();
    for tick in &ticks {
        store.write_tick(tick).await.expect("write");
        store
            .maintain(HOST_IP, tick.time, &keep)
            .await
            .expect("roll up");
    }
    let end = instant(Duration::seconds_f64(LAST));
    for _ in 0..4 {
        store.maintain(HOST_IP, end, &keep).await.expect("roll up");
    }
}

/// Checks every column of every minute and hour row of the host and its VM that
/// [`write_uneven_ticks`] leaves against the figures computed from the schedule.
pub async fn check_rollup_values(store: &mut impl Store) {
    write_uneven_ticks(store).await;
    let mut columns = 0;
    for level in Level::ALL {
        for (vms, figures) in [(false, &HOST[..]), (true, &VM[..])] {
            let query = RollupQuery {
                level,
                vms,
                host_ip: Some(HOST_IP.into()),
                vm: None,
                since: None,
                limit: 1000,
            };
            let rows = store.rollups(&query).await.expect("rollups");
            let owner = if vms { VM_NAME } else { HOST_IP };
            assert!(rows.iter().all(|r| r.owner == owner), "{level:?}: {rows:?}");
            let what = format!("{level:?} rollups of {owner}");
            check_rows(&what, &rows, &expected(level, figures));
            columns += rows.iter().map(|r| r.figures.len()).sum::<usize>();
        }
    }
    eprintln!("checked {columns} rollup values");
    check_reports(store).await;
}

/// A figure over every tick before [`LAST`] as the test computes it: Δt-weighted mean, n,
/// maximum and the nearest-rank p50, p95 and p99.
fn expected_report(f: fn(&Point) -> Option<f64>) -> Option<(f64, u64, f64, [f64; 3])> {
    let timed: Vec<(f64, f64)> = schedule()
        .iter()
        .filter(|p| p.at < LAST)
        .filter_map(|p| Some((f(p)?, p.dt)))
        .collect();
    let s = stats(timed.clone())?;
    let mut values: Vec<f64> = timed.into_iter().map(|(v, _)| v).collect();
    values.sort_by(f64::total_cmp);
    let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).max(1) - 1];
    Some((s.avg, s.n, s.max, [rank(0.5), rank(0.95), rank(0.99)]))
}

/// Reports over the two complete hours from raw ticks, minutes and hours: each gives the raw
/// ticks' Δt-weighted mean (1e-12), their count and maximum, and their p50/p95/p99 exactly
/// from raw ticks and within the distributions' relative error from rollups.
async fn check_reports(store: &mut impl Store) {
    let mut checked = 0;
    for level in [None, Some(Level::Minute), Some(Level::Hour)] {
        for (vms, figures) in [(false, &HOST[..]), (true, &VM[..])] {
            let query = ReportQuery {
                level,
                vms,
                host_ip: Some(HOST_IP.into()),
                vm: None,
                since: instant(Duration::ZERO),
                until: instant(Duration::seconds_f64(LAST)),
            };
            let owners = store.report(&query).await.expect("report");
            // The fold over the rows as read and the one over the rows collected agree (the
            // minute report reads whole hours from hour rows: its means to the last bits).
            let samples = store.report_samples(&query).await.expect("report rows");
            let collected = report(vms, samples);
            if level == Some(Level::Minute) {
                same_reports(&owners, &collected, &format!("minute report, vms {vms}"));
            } else {
                assert_eq!(collected, owners, "{level:?} vms {vms}");
            }
            assert_eq!(owners.len(), 1, "{level:?} vms {vms}: {owners:?}");
            for (name, f) in figures {
                let got: Option<&FigureReport> = owners[0].figures.get(*name);
                let what = format!("report of {name} from {level:?}");
                let Some((mean, n, max, percentiles)) = expected_report(*f) else {
                    assert!(got.is_none(), "{what}: {got:?}, expected none");
                    continue;
                };
                let got = got.unwrap_or_else(|| panic!("{what}: missing"));
                assert!(
                    (got.mean - mean).abs() <= 1e-12 * mean.abs().max(1.0),
                    "{what}: mean {}, expected {mean}",
                    got.mean
                );
                assert_eq!((got.n, got.max), (n, max), "{what}");
                assert!(!got.approximate, "{what}");
                for (read, exact) in [got.p50, got.p95, got.p99].into_iter().zip(percentiles) {
                    let allowed = if level.is_none() { 0.0 } else { RELATIVE_ERROR };
                    assert!(
                        (read - exact).abs() <= allowed * exact.abs() + 1e-12,
                        "{what}: percentile {read}, raw ticks' {exact}"
                    );
                }
                checked += 1;
            }
        }
    }
    eprintln!("checked {checked} reported figures against the raw ticks");
}

#[cfg(test)]
mod tests {
    use super::*;

    use setmov::store::rollup::{HOST_FIGURES, VM_FIGURES};

    #[test]
    fn the_figures_are_the_products_rolled_up_figures() {
        let names = |figures: &[Figure]| figures.iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(names(&HOST), HOST_FIGURES);
        assert_eq!(names(&VM), VM_FIGURES);
    }

    #[test]
    fn the_schedule_has_uneven_gaps_and_the_hours_come_out_as_computed_by_hand() {
        let mut gaps: Vec<f64> = schedule()
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .filter(|gap| *gap < 60.0)
            .collect();
        gaps.sort_by(f64::total_cmp);
        gaps.dedup();
        assert_eq!(gaps, [0.5, 1.0, 3.0]);
        let minutes: Vec<String> = expected(Level::Minute, &HOST)
            .into_iter()
            .map(|m| m.time)
            .collect();
        assert_eq!(
            minutes,
            [
                "1970-01-01T00:00:00.000Z",
                "1970-01-01T00:59:00.000Z",
                "1970-01-01T01:00:00.000Z",
                "1970-01-01T01:30:00.000Z"
            ]
        );
        // Hour 0: window 1 (41 ticks: 40..=53 without the 47 the spike replaces, 100, 14 × 10,
        // 13 × 20 = 1104) and the first 21 of window 2 (40..=46, 7 × 10, 7 × 20 = 511); its
        // p95 is the 59th of 62 values, the fourth largest: 100, 53, 52, 51. Hour 1: the other
        // 20 of window 2 (48..=53, 100, 7 × 10, 6 × 20 = 593) and window 3 (1104); its p95 is
        // the 58th of 61, the fourth largest: 100, 100, 53, 53.
        let hours: Vec<(u64, Option<Stats>)> = expected(Level::Hour, &HOST)
            .into_iter()
            .map(|h| (h.samples, h.figures[0].1))
            .collect();
        // Weighted by Δt: window 1 is 14 ticks after 3 s (Σ 704 with the spike), 14 × 10
        // after 0.5 s and 13 × 20 after 1 s: 3 · 704 + 70 + 260 = 2442 over 62 s. The first 21
        // of window 2: 3 · 301 + 35 + 140 = 1078 over 31.5 s; its other 20: 3 · 403 + 35 + 120
        // = 1364 over 30.5 s.
        let stats = |avg, max, p95, n, secs| {
            Some(Stats {
                avg,
                max,
                p95,
                n,
                secs,
            })
        };
        assert_eq!(
            hours,
            [
                (62, stats(3520.0 / 93.5, 100.0, 51.0, 62, 93.5)),
                (61, stats(3806.0 / 92.5, 100.0, 53.0, 61, 92.5))
            ]
        );
    }

    /// What makes the check able to fail: in every bucket, each figure the ticks had has a
    /// mean, maximum and p95 that differ from each other (but where ⌈0.95 n⌉ = n, under 20
    /// values, when the p95 is the maximum) and from every other column's; some are averaged
    /// over part of the ticks, and some are NULL.
    #[test]
    fn every_column_of_every_bucket_is_distinct_and_the_null_rule_is_exercised() {
        let mut partial = 0;
        let mut nulls = 0;
        for level in Level::ALL {
            let span = level.span().as_secs_f64();
            for figures in [&HOST[..], &VM[..]] {
                for bucket in expected(level, figures) {
                    let points: Vec<Point> = schedule()
                        .into_iter()
                        .filter(|p| {
                            let start = (p.at / span).floor() * span;
                            setmov::store::format_time(instant(Duration::seconds_f64(start)))
                                == bucket.time
                        })
                        .collect();
                    assert_eq!(points.len() as u64, bucket.samples);
                    let mut seen: Vec<f64> = Vec::new();
                    for ((name, f), (_, stats)) in figures.iter().zip(&bucket.figures) {
                        let Some(s) = stats else {
                            nulls += 1;
                            continue;
                        };
                        let had = points.iter().filter(|p| f(p).is_some()).count();
                        if had < points.len() {
                            partial += 1;
                        }
                        let p95_is_max = (0.95 * had as f64).ceil() as usize == had;
                        assert!(
                            s.avg != s.max && s.avg != s.p95 && (p95_is_max || s.max != s.p95),
                            "{level:?} {} {name}: {s:?}",
                            bucket.time
                        );
                        let own = if p95_is_max {
                            vec![s.avg, s.max]
                        } else {
                            vec![s.avg, s.max, s.p95]
                        };
                        for x in own {
                            assert!(
                                !seen.contains(&x),
                                "{level:?} {} {name}: {x} in another column too",
                                bucket.time
                            );
                            seen.push(x);
                        }
                    }
                }
            }
        }
        eprintln!("{partial} summaries over part of the ticks, {nulls} NULL");
        assert!(
            partial >= 10 && nulls >= 6,
            "partial {partial}, NULL {nulls}"
        );
    }
}
