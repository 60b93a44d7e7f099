//! `report --level minute` without reading every minute: a report's figures over an hour are
//! the same from its hour rollup as from its 60 minute rollups (n and the seconds add up, the
//! maximum is the largest, the distributions merge by adding counts), provided the hour rows
//! hold exactly the ticks the minute rows hold. So the window's whole hours are read from the
//! hour rows that surely do, and minute rows only for the rest: the partial hours at the
//! window's edges and any hour without such rows.
//!
//! A host's minute and hour rollups, of the host and its VMs at once, are made from the same
//! raw rows once the bucket is complete (the minutes before their hour), so a host's hour holds
//! its minutes' ticks unless a purge took rows from one level only. Hours are taken per host
//! (a VM goes with the host it is on now, as the report's host filter takes it):
//! - the host has an hour row there, with distributions (see below), and has a minute row at
//!   or before it: minute rows are purged oldest first, so none of the hour's were; a VM with
//!   ticks in the hour then has an hour row too, and one without ticks has no minute row;
//! - a row read from an hour rollup from before SQLite schema 10 / MySQL schema 7 reads as its
//!   mean repeated, which differs from the same approximation over its minutes: such an hour
//!   is read from minute rows (for a VM's row, for that VM).
//!
//! What this cannot see: a VM that moved to another host between its minute rollups and its
//! hour's, when neither host's hour rollup then took it (or when the two hosts keep minutes for
//! different times); that hour of that VM would then differ from its minutes.
//!
//! One thing does differ: a tick without a measured Δt (a VM's first) weighs its bucket's mean
//! Δt, the hour's rather than its minute's, so the mean can move by a fraction of that tick's
//! share.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::rollup::Level;
use super::rows::Value;
use crate::analysis::{REPORT_STATS, ReportQuery, report_figure_columns};

/// The report's query over the window's whole hours, of hour rows: of VMs with `vms`, else
/// of hosts (whose rows decide which hours are taken); `None` when the window holds no whole
/// hour.
pub fn whole_hours(q: &ReportQuery, vms: bool) -> Option<ReportQuery> {
    let start = Level::Hour.bucket_start(q.since);
    let first = if start < q.since {
        start + time::Duration::HOUR
    } else {
        start
    };
    let end = Level::Hour.bucket_start(q.until);
    (first < end).then(|| ReportQuery {
        level: Some(Level::Hour),
        vms,
        since: first,
        until: end,
        ..q.clone()
    })
}

/// The hosts a report may cover, each with its oldest minute row (seconds since the epoch,
/// `NULL` without any): host IP, then that time. `unix_time` renders seconds from a time
/// expression in the store's dialect. Parameters: host twice.
pub fn oldest_minute_sql(unix_time: impl Fn(&str) -> String) -> String {
    let oldest = unix_time("(SELECT MIN(m.time) FROM host_usage_1m m WHERE m.host_ip = h.host_ip)");
    format!("SELECT h.host_ip, {oldest} FROM hosts h WHERE (? IS NULL OR h.host_ip = ?)")
}

/// The parameters of [`oldest_minute_sql`].
pub fn host_params(q: &ReportQuery) -> Vec<Value> {
    vec![q.host_ip.clone().into(), q.host_ip.clone().into()]
}

/// The VMs' hour rows of `q` (see [`whole_hours`]): the columns of
/// [`crate::analysis::report_sql`], then the host the VM is on. Its parameters.
pub fn vm_hours_sql(unix_time: impl Fn(&str) -> String) -> String {
    let stats = report_figure_columns(true, Some(Level::Hour));
    let r = unix_time("r.time");
    format!(
        "SELECT {r}, v.name, r.uuid, r.samples, {stats}, v.host_ip FROM vm_usage_1h r
         JOIN vms v ON v.uuid = r.uuid
         WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
           AND r.time >= ? AND r.time < ?"
    )
}

/// Where [`vm_hours_sql`] puts the VM's host.
pub fn vm_hours_host_column(figures: usize) -> usize {
    4 + REPORT_STATS * figures
}

/// One VM's minute rows over a span, with the columns of [`crate::analysis::report_sql`].
/// Parameters: the VM's UUID, since, until.
pub fn vm_minutes_sql(unix_time: impl Fn(&str) -> String) -> String {
    let stats = report_figure_columns(true, Some(Level::Minute));
    let r = unix_time("r.time");
    format!(
        "SELECT {r}, v.name, r.uuid, r.samples, {stats} FROM vm_usage_1m r
         JOIN vms v ON v.uuid = r.uuid
         WHERE r.uuid = ? AND r.time >= ? AND r.time < ?"
    )
}

/// Whether a rollup row kept the distribution of every figure it has, given which of its
/// columns (as [`crate::analysis::report_sql`] numbers them) hold a value and which bytes.
pub fn kept_distributions(
    figures: usize,
    has_value: impl Fn(usize) -> bool,
    has_bytes: impl Fn(usize) -> bool,
) -> bool {
    (0..figures).all(|f| {
        let at = 4 + REPORT_STATS * f;
        !has_value(at) || (has_value(at + 2) && has_bytes(at + 4))
    })
}

/// Which hours of which hosts are read from hour rows, and what is left to read from minute
/// rows.
pub struct HourCover {
    window: (OffsetDateTime, OffsetDateTime),
    /// Per host, its oldest minute row (seconds since the epoch), `None` without any.
    oldest_minute: BTreeMap<String, Option<i64>>,
    /// Per host, the starts of the hours read from hour rows.
    taken: BTreeMap<String, BTreeSet<i64>>,
    /// VM hours read from minute rows although their host's are not: (UUID, hour start).
    vm_hours: Vec<(String, i64)>,
}

impl HourCover {
    /// `hosts` as [`oldest_minute_sql`] gives them.
    pub fn new(q: &ReportQuery, hosts: impl IntoIterator<Item = (String, Option<i64>)>) -> Self {
        HourCover {
            window: (q.since, q.until),
            oldest_minute: hosts.into_iter().collect(),
            taken: BTreeMap::new(),
            vm_hours: Vec::new(),
        }
    }

    /// Whether the hour row of `host` starting at `hour` (seconds since the epoch) stands for
    /// the minute rows of the host and its VMs; the hour is then read from hour rows.
    pub fn take_host_hour(&mut self, host: &str, hour: i64, kept_distributions: bool) -> bool {
        let minutes_kept = self
            .oldest_minute
            .get(host)
            .is_some_and(|oldest| oldest.is_some_and(|oldest| oldest <= hour));
        let take = minutes_kept && kept_distributions;
        if take {
            self.taken.entry(host.to_owned()).or_default().insert(hour);
        }
        take
    }

    /// Whether a VM's hour row, of `host` at `hour`, is read: its host's hour is, and the row
    /// kept its distributions; else the VM's minutes of that hour are read.
    pub fn take_vm_hour(&mut self, host: &str, uuid: &str, hour: i64, kept: bool) -> bool {
        let host_taken = self.taken.get(host).is_some_and(|h| h.contains(&hour));
        if host_taken && !kept {
            self.vm_hours.push((uuid.to_owned(), hour));
        }
        host_taken && kept
    }

    /// Per host, the spans of the window to read from minute rows, in time order.
    pub fn minute_spans(&self) -> Vec<(String, OffsetDateTime, OffsetDateTime)> {
        let (since, until) = self.window;
        let mut spans = Vec::new();
        let none = BTreeSet::new();
        for host in self.oldest_minute.keys() {
            let mut from = since;
            for &hour in self.taken.get(host).unwrap_or(&none) {
                let Ok(start) = OffsetDateTime::from_unix_timestamp(hour) else {
                    continue;
                };
                if from < start {
                    spans.push((host.clone(), from, start));
                }
                from = from.max(start + time::Duration::HOUR);
            }
            if from < until {
                spans.push((host.clone(), from, until));
            }
        }
        spans
    }

    /// The VM hours to read from minute rows ([`HourCover::take_vm_hour`]): UUID, start, end.
    pub fn vm_minute_spans(&self) -> Vec<(String, OffsetDateTime, OffsetDateTime)> {
        self.vm_hours
            .iter()
            .filter_map(|(uuid, hour)| {
                let start = OffsetDateTime::from_unix_timestamp(*hour).ok()?;
                Some((uuid.clone(), start, start + time::Duration::HOUR))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn query(since: OffsetDateTime, until: OffsetDateTime) -> ReportQuery {
        ReportQuery {
            level: Some(Level::Minute),
            vms: true,
            host_ip: None,
            vm: None,
            since,
            until,
        }
    }

    #[test]
    fn the_whole_hours_of_a_window() {
        let q = query(
            datetime!(2026-12-01 10:20:00.500 UTC),
            datetime!(2026-12-01 13:05 UTC),
        );
        let hours = whole_hours(&q, false).expect("whole hours");
        assert_eq!(
            (hours.since, hours.until, hours.level, hours.vms),
            (
                datetime!(2026-12-01 11:00 UTC),
                datetime!(2026-12-01 13:00 UTC),
                Some(Level::Hour),
                false
            )
        );
        let aligned = query(
            datetime!(2026-12-01 10:00 UTC),
            datetime!(2026-12-01 11:00 UTC),
        );
        assert_eq!(
            whole_hours(&aligned, true).map(|h| (h.since, h.until)),
            Some((
                datetime!(2026-12-01 10:00 UTC),
                datetime!(2026-12-01 11:00 UTC)
            ))
        );
        let short = query(
            datetime!(2026-12-01 10:20 UTC),
            datetime!(2026-12-01 11:10 UTC),
        );
        assert!(whole_hours(&short, true).is_none());
    }

    #[test]
    fn minutes_are_read_where_no_hour_row_stands_for_them() {
        let t = |dt: OffsetDateTime| dt.unix_timestamp();
        let hour = |h: i64| t(datetime!(2026-12-01 00:00 UTC)) + h * 3600;
        let q = query(
            datetime!(2026-12-01 09:30 UTC),
            datetime!(2026-12-01 14:15 UTC),
        );
        let mut cover = HourCover::new(
            &q,
            [
                ("a".to_owned(), Some(hour(0))),
                // Its minutes were purged up to 11:20: the 11:00 hour holds ticks they lost.
                ("b".to_owned(), Some(hour(11) + 20 * 60)),
                // No minute rows at all (its VMs may have some from another host).
                ("none".to_owned(), None),
            ],
        );
        for h in [10, 11, 13] {
            assert!(cover.take_host_hour("a", hour(h), true));
        }
        assert!(!cover.take_host_hour("b", hour(11), true));
        // A rollup without distributions.
        assert!(!cover.take_host_hour("b", hour(12), false));
        assert!(cover.take_host_hour("b", hour(13), true));
        assert!(!cover.take_host_hour("none", hour(10), true));
        assert!(!cover.take_host_hour("unknown", hour(10), true));
        // A VM's row goes with its host's hour, unless it kept no distributions.
        assert!(cover.take_vm_hour("a", "vm1", hour(10), true));
        assert!(!cover.take_vm_hour("a", "vm2", hour(11), false));
        assert!(!cover.take_vm_hour("b", "vm3", hour(12), true));
        let at = |h, m| time::Time::from_hms(h, m, 0).expect("time");
        let times = |spans: Vec<(String, OffsetDateTime, OffsetDateTime)>| {
            spans
                .into_iter()
                .map(|(k, from, to)| (k, from.time(), to.time()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            times(cover.minute_spans()),
            [
                ("a".to_owned(), at(9, 30), at(10, 0)),
                ("a".to_owned(), at(12, 0), at(13, 0)),
                ("a".to_owned(), at(14, 0), at(14, 15)),
                ("b".to_owned(), at(9, 30), at(13, 0)),
                ("b".to_owned(), at(14, 0), at(14, 15)),
                ("none".to_owned(), at(9, 30), at(14, 15)),
            ]
        );
        assert_eq!(
            times(cover.vm_minute_spans()),
            [("vm2".to_owned(), at(11, 0), at(12, 0))]
        );
        assert!(kept_distributions(2, |_| true, |_| true));
        // Figure 1 (columns 9..14) has a mean but no distribution; a figure without a mean
        // needs none.
        assert!(!kept_distributions(2, |_| true, |at| at != 13));
        assert!(kept_distributions(2, |at| at < 9, |at| at < 9));
    }
}
