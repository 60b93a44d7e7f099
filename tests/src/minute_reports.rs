//! `report --level minute` reads a window's whole hours from the hour rollups that hold exactly
//! what their minutes hold (`setmov::store::minute_report`): it must give what folding every
//! minute row of the window gives, on every store, whatever hour or minute rows a retention
//! purged.

use std::time::Duration as StdDuration;

use setmov::analysis::ReportQuery;
use setmov::analysis::report::{OwnerReport, report};
use setmov::store::Store;
use setmov::store::rollup::{Level, Retention};
use time::Duration;

use crate::rollups::{uneven_ticks, write_uneven_ticks};
use crate::ticks::{HOST_IP, host_tick, instant};

/// Windows over [`write_uneven_ticks`]'s two hours, in seconds after the epoch: both whole
/// hours; ragged edges with hour 1 whole; no whole hour at all; into hour 2, whose minute 0 is
/// rolled up and the hour not.
const WINDOWS: [(i64, i64); 4] = [(0, 7200), (1800, 7200), (3590, 5430), (1800, 10800)];

/// The minute report of each window against the fold of every minute row of it
/// ([`same_reports`]).
async fn check_against_every_minute(store: &mut impl Store, what: &str) -> usize {
    let mut figures = 0;
    for (since, until) in WINDOWS {
        for vms in [false, true] {
            let query = ReportQuery {
                level: Some(Level::Minute),
                vms,
                host_ip: Some(HOST_IP.into()),
                vm: None,
                since: instant(Duration::seconds(since)),
                until: instant(Duration::seconds(until)),
            };
            let read = store.report(&query).await.expect("report");
            // report_samples reads every minute row of the window.
            let minutes = report(vms, store.report_samples(&query).await.expect("rows"));
            let what = format!("{what}, {since}..{until} s, vms {vms}");
            figures += same_reports(&read, &minutes, &what);
        }
    }
    figures
}

/// Asserts that a report read as the store reads it and one folded over every row agree: the
/// same owners, ticks, counts, maxima, percentiles and estimate marks, the means within 1e-12.
/// Gives how many figures it compared.
pub fn same_reports(read: &[OwnerReport], minutes: &[OwnerReport], what: &str) -> usize {
    let owners = |r: &[OwnerReport]| {
        r.iter()
            .map(|o| (o.owner.clone(), o.uuid.clone(), o.ticks))
            .collect::<Vec<_>>()
    };
    assert_eq!(owners(read), owners(minutes), "{what}");
    let mut figures = 0;
    for (got, every) in read.iter().zip(minutes) {
        assert_eq!(
            got.figures.keys().collect::<Vec<_>>(),
            every.figures.keys().collect::<Vec<_>>(),
            "{what}"
        );
        for (name, f) in &got.figures {
            let e = every.figures[name];
            assert_eq!(
                (f.n, f.max, f.p50, f.p95, f.p99, f.approximate),
                (e.n, e.max, e.p50, e.p95, e.p99, e.approximate),
                "{what}: {name}"
            );
            assert!(
                (f.mean - e.mean).abs() <= 1e-12 * e.mean.abs().max(1.0),
                "{what}: {name} mean {} against {}",
                f.mean,
                e.mean
            );
            figures += 1;
        }
    }
    figures
}

/// Purges the rows of `level` older than `cutoff` s after the epoch, with `now` a year ahead:
/// the purge is due whenever the last one was.
async fn purge_before(store: &mut impl Store, cutoff: i64, level: Level) {
    let year = StdDuration::from_secs(365 * 86_400);
    let retention = Retention {
        raw: None,
        minute: (level == Level::Minute).then_some(year),
        hour: (level == Level::Hour).then_some(year),
    };
    let now = instant(Duration::seconds(cutoff) + Duration::days(365));
    store
        .maintain(HOST_IP, now, &retention)
        .await
        .expect("purge");
}

/// Writes the uneven ticks, then checks the minute report against every minute: with every
/// row kept; once hour 0's row is purged (a shorter hour retention); and once the minutes
/// before 01:20 are purged, which leaves hour 1's row holding ticks its minutes lost.
pub async fn check_minute_reports(store: &mut impl Store) {
    write_uneven_ticks(store).await;
    // A tick at 02:01 completes minute 02:00 (its tick at 02:00:00), not hour 2.
    let seq = uneven_ticks().len() as u64 + 1;
    let tick = host_tick(seq, Duration::seconds(7260), 60.0, 5.0);
    store.write_tick(&tick).await.expect("write");
    let keep = Retention {
        raw: None,
        minute: None,
        hour: None,
    };
    store
        .maintain(HOST_IP, tick.time, &keep)
        .await
        .expect("roll up");
    let mut figures = check_against_every_minute(store, "every row kept").await;
    purge_before(store, 1800, Level::Hour).await;
    figures += check_against_every_minute(store, "hour 0 purged").await;
    // 50 min after the last purge: more than the purge interval.
    purge_before(store, 4800, Level::Minute).await;
    figures += check_against_every_minute(store, "minutes before 01:20 purged").await;
    eprintln!("checked {figures} minute-report figures against every minute row");
}
