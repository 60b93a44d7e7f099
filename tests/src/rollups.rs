//! Rollup values over ticks of uneven Δt, checked the same way on every store.
//!
//! Three windows of one minute each, at 00:00:00, 00:59:30 (across the hour) and 01:30:00,
//! with ticks 0.5 s, 1 s and 3 s apart in turn, and one more at 02:00:00 that completes hour 1.
//! The host's CPU reads 10 after a 0.5 s gap, 20 after 1 s, and after 3 s 40 in the window's
//! first 4.5 s turn, 41 in the second and so on; 100 at 31.5 s into each window (a spike). Its
//! VM's is half the host's. A rollup's mean is per tick, each tick weighing the same whatever its
//! Δt (`setmov::store::rollup`); the p95 is the nearest rank, here the third or fourth largest
//! value, which no other rank or interpolation gives.

use setmov::store::rollup::{Level, Retention, RollupQuery, RollupRow};
use setmov::store::{Store, TickRecord};
use setmov::vm::stats::DomainState;
use time::Duration;

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

/// (seconds after the epoch, Δt, host CPU) of every tick, in time order.
fn schedule() -> Vec<(f64, f64, f64)> {
    let mut ticks = Vec::new();
    for start in WINDOWS {
        let mut offset = 0.0;
        for n in 0.. {
            let turn = n % GAPS.len();
            if n > 0 {
                offset += GAPS[turn];
            }
            if offset >= 60.0 {
                break;
            }
            let cpu = match (offset == SPIKE_AT, turn) {
                (true, _) => SPIKE,
                (false, 0) => CPU[0] + (n / GAPS.len()) as f64,
                (false, _) => CPU[turn],
            };
            let dt = match ticks.last() {
                Some(&(previous, _, _)) => start + offset - previous,
                None => GAPS[0],
            };
            ticks.push((start + offset, dt, cpu));
        }
    }
    let previous = ticks.last().map_or(0.0, |t| t.0);
    ticks.push((LAST, LAST - previous, 0.0));
    ticks
}

/// The ticks of [`schedule`], with the VM running in each.
pub fn uneven_ticks() -> Vec<TickRecord> {
    schedule()
        .into_iter()
        .zip(1..)
        .map(|((at, dt, cpu), seq)| {
            let mut tick = host_tick(seq, Duration::seconds_f64(at), dt, cpu);
            tick.vm_count = Some(1);
            tick.vms = vec![vm_sample(
                VM_UUID,
                VM_NAME,
                DomainState::Running,
                dt,
                cpu / 2.0,
            )];
            tick
        })
        .collect()
}

/// A bucket as the test computes it: start, samples, mean, max, p95.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    time: String,
    samples: u64,
    avg: f64,
    max: f64,
    p95: f64,
}

/// The buckets of `level` complete at [`LAST`], computed from the schedule: per tick mean,
/// maximum, and the value at rank ⌈0.95 n⌉ of the sorted values. `scale` turns the host's CPU
/// into the owner's.
fn expected(level: Level, scale: f64) -> Vec<Expected> {
    let span = level.span().as_secs_f64();
    let mut buckets: Vec<(f64, Vec<f64>)> = Vec::new();
    for (at, _, cpu) in schedule() {
        let start = (at / span).floor() * span;
        if start + span > LAST {
            continue;
        }
        match buckets.last_mut() {
            Some((s, values)) if *s == start => values.push(cpu * scale),
            _ => buckets.push((start, vec![cpu * scale])),
        }
    }
    buckets
        .into_iter()
        .map(|(start, mut values)| {
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let rank = (0.95 * n as f64).ceil() as usize;
            Expected {
                time: setmov::store::format_time(instant(Duration::seconds_f64(start))),
                samples: n as u64,
                avg: values.iter().sum::<f64>() / n as f64,
                max: values[n - 1],
                p95: values[rank - 1],
            }
        })
        .collect()
}

fn read_back(rows: &[RollupRow]) -> Vec<Expected> {
    let figure = |row: &RollupRow, field: &str| {
        row.get(field)
            .unwrap_or_else(|| panic!("{} {}: no {field}", row.owner, row.time))
    };
    rows.iter()
        .map(|row| Expected {
            time: row.time.clone(),
            samples: row.samples,
            avg: figure(row, "cpu_pct_avg"),
            max: figure(row, "cpu_pct_max"),
            p95: figure(row, "cpu_pct_p95"),
        })
        .collect()
}

/// Writes [`uneven_ticks`] into `store` and rolls up as the writer does after each tick (then
/// enough more times for every bucket due, 30 per call); checks every minute and hour row of
/// the host and its VM against the figures computed from the schedule.
pub async fn check_rollup_values(store: &mut impl Store) {
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
    for level in Level::ALL {
        for (vms, scale) in [(false, 1.0), (true, 0.5)] {
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
            assert_eq!(
                read_back(&rows),
                expected(level, scale),
                "{level:?} rollups of {owner}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_uneven_gaps_and_the_hours_come_out_as_computed_by_hand() {
        let mut gaps: Vec<f64> = schedule()
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .filter(|gap| *gap < 60.0)
            .collect();
        gaps.sort_by(f64::total_cmp);
        gaps.dedup();
        assert_eq!(gaps, [0.5, 1.0, 3.0]);
        let minutes: Vec<String> = expected(Level::Minute, 1.0)
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
        let hours: Vec<(u64, f64, f64, f64)> = expected(Level::Hour, 1.0)
            .into_iter()
            .map(|h| (h.samples, h.avg, h.max, h.p95))
            .collect();
        assert_eq!(
            hours,
            [
                (62, 1615.0 / 62.0, 100.0, 51.0),
                (61, 1697.0 / 61.0, 100.0, 53.0)
            ]
        );
    }
}
