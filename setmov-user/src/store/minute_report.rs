//! `report --level minute` without reading every minute: a report's figures over an hour are
//! the same from its hour rollup as from its 60 minute rollups (n and the seconds add up, the
//! maximum is the largest, the distributions merge by adding counts), provided the hour row
//! holds exactly the ticks its minute rows hold. So the window's whole hours are read from the
//! hour rows that surely do, and minute rows only for the rest: the partial hours at the
//! window's edges and any hour without such a row.
//!
//! Both levels are rolled up from the same raw rows once the bucket is complete (the minutes
//! before their hour), so an hour row holds its minutes' ticks unless one level lost rows the
//! other kept. An hour row is read only when
//! - it starts at or after the owner's oldest minute row: minute rows purged by a shorter
//!   retention (or never written for ticks older than the first rollup) leave the hour holding
//!   ticks the minutes no longer have;
//! - it kept its distributions (every figure it has comes with `_n` and `_sketch`): a rollup
//!   from before SQLite schema 10 / MySQL schema 7 reads as its mean repeated, which differs
//!   from the same approximation over its minutes.
//!
//! One thing does differ: a tick without a measured Δt (a VM's first) weighs its bucket's mean
//! Δt, over the hour rather than over its minute, so such a tick's weight, and the mean, can
//! move by a fraction of a tick's share.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::rollup::Level;
use super::rows::Value;
use crate::analysis::{REPORT_STATS, ReportQuery, report_figure_columns};

/// The hour rows' query: the report's own, over the window's whole hours; `None` when the
/// window holds no whole hour.
pub fn hour_query(q: &ReportQuery) -> Option<ReportQuery> {
    let (first, end) = whole_hours(q.since, q.until)?;
    Some(ReportQuery {
        level: Some(Level::Hour),
        since: first,
        until: end,
        ..q.clone()
    })
}

/// The first and the end of the whole hours inside `[since, until)`.
fn whole_hours(
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let start = Level::Hour.bucket_start(since);
    let first = if start < since {
        start + time::Duration::HOUR
    } else {
        start
    };
    let end = Level::Hour.bucket_start(until);
    (first < end).then_some((first, end))
}

/// The owners a report may cover, each with its oldest minute row (seconds since the epoch,
/// `NULL` without any): key (host IP or VM UUID), then that time. `unix_time` renders seconds
/// from a time expression in the store's dialect. Parameters: [`owner_params`].
pub fn oldest_minute_sql(vms: bool, unix_time: impl Fn(&str) -> String) -> String {
    if vms {
        let oldest = unix_time("(SELECT MIN(m.time) FROM vm_usage_1m m WHERE m.uuid = v.uuid)");
        format!(
            "SELECT v.uuid, {oldest} FROM vms v
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)"
        )
    } else {
        let oldest =
            unix_time("(SELECT MIN(m.time) FROM host_usage_1m m WHERE m.host_ip = h.host_ip)");
        format!("SELECT h.host_ip, {oldest} FROM hosts h WHERE (? IS NULL OR h.host_ip = ?)")
    }
}

/// The parameters of [`oldest_minute_sql`]: host twice, [VM three times].
pub fn owner_params(q: &ReportQuery) -> Vec<Value> {
    let mut params: Vec<Value> = vec![q.host_ip.clone().into(), q.host_ip.clone().into()];
    if q.vms {
        params.extend([
            q.vm.clone().into(),
            q.vm.clone().into(),
            q.vm.clone().into(),
        ]);
    }
    params
}

/// One owner's minute rows over a span, with the columns of [`crate::analysis::report_sql`].
/// Parameters: the owner's key (host IP or VM UUID), since, until.
pub fn owner_minutes_sql(vms: bool, unix_time: impl Fn(&str) -> String) -> String {
    let stats = report_figure_columns(vms, Some(Level::Minute));
    let r = unix_time("r.time");
    if vms {
        format!(
            "SELECT {r}, v.name, r.uuid, r.samples, {stats} FROM vm_usage_1m r
             JOIN vms v ON v.uuid = r.uuid
             WHERE r.uuid = ? AND r.time >= ? AND r.time < ?"
        )
    } else {
        format!(
            "SELECT {r}, r.host_ip, NULL, r.samples, {stats} FROM host_usage_1m r
             WHERE r.host_ip = ? AND r.time >= ? AND r.time < ?"
        )
    }
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

/// Which hours of which owners were read from hour rows, and what is left to read from
/// minute rows.
pub struct HourCover {
    window: (OffsetDateTime, OffsetDateTime),
    /// Per owner key, its oldest minute row (seconds since the epoch).
    oldest_minute: BTreeMap<String, i64>,
    /// Per owner key, the starts of the hours read from hour rows.
    covered: BTreeMap<String, BTreeSet<i64>>,
}

impl HourCover {
    /// `owners` as [`oldest_minute_sql`] gives them; those without minute rows are left out,
    /// as reading the minutes would.
    pub fn new(q: &ReportQuery, owners: impl IntoIterator<Item = (String, Option<i64>)>) -> Self {
        HourCover {
            window: (q.since, q.until),
            oldest_minute: owners
                .into_iter()
                .filter_map(|(key, oldest)| Some((key, oldest?)))
                .collect(),
            covered: BTreeMap::new(),
        }
    }

    /// Whether the hour row of `key` starting at `hour` (seconds since the epoch) stands for
    /// its minute rows; it then counts as read. `kept_distributions` as the row says.
    pub fn take_hour(&mut self, key: &str, hour: i64, kept_distributions: bool) -> bool {
        let after_oldest_minute = self
            .oldest_minute
            .get(key)
            .is_some_and(|&oldest| hour >= oldest);
        let take = after_oldest_minute && kept_distributions;
        if take {
            self.covered.entry(key.to_owned()).or_default().insert(hour);
        }
        take
    }

    /// Per owner key, the spans of the window still to read from minute rows, in time order.
    pub fn minute_spans(&self) -> Vec<(String, OffsetDateTime, OffsetDateTime)> {
        let (since, until) = self.window;
        let mut spans = Vec::new();
        let no_hours = BTreeSet::new();
        for (key, &oldest) in &self.oldest_minute {
            let covered = self.covered.get(key).unwrap_or(&no_hours);
            let mut gaps = Vec::new();
            let mut from = since;
            for &hour in covered {
                let Ok(start) = OffsetDateTime::from_unix_timestamp(hour) else {
                    continue;
                };
                if from < start {
                    gaps.push((from, start));
                }
                from = from.max(start + time::Duration::HOUR);
            }
            if from < until {
                gaps.push((from, until));
            }
            // Nothing older than the owner's oldest minute row is there to read.
            spans.extend(
                gaps.into_iter()
                    .filter(|(_, end)| end.unix_timestamp() > oldest)
                    .map(|(from, end)| (key.clone(), from, end)),
            );
        }
        spans
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
        let hours = hour_query(&q).expect("whole hours");
        assert_eq!(
            (hours.since, hours.until, hours.level),
            (
                datetime!(2026-12-01 11:00 UTC),
                datetime!(2026-12-01 13:00 UTC),
                Some(Level::Hour)
            )
        );
        let aligned = query(
            datetime!(2026-12-01 10:00 UTC),
            datetime!(2026-12-01 11:00 UTC),
        );
        assert_eq!(
            hour_query(&aligned).map(|h| (h.since, h.until)),
            Some((
                datetime!(2026-12-01 10:00 UTC),
                datetime!(2026-12-01 11:00 UTC)
            ))
        );
        let short = query(
            datetime!(2026-12-01 10:20 UTC),
            datetime!(2026-12-01 11:10 UTC),
        );
        assert!(hour_query(&short).is_none());
    }

    #[test]
    fn minutes_are_read_where_no_hour_row_stands_for_them() {
        let t = |dt: OffsetDateTime| dt.unix_timestamp();
        let q = query(
            datetime!(2026-12-01 09:30 UTC),
            datetime!(2026-12-01 14:15 UTC),
        );
        let mut cover = HourCover::new(
            &q,
            [
                ("a".to_owned(), Some(t(datetime!(2026-12-01 00:00 UTC)))),
                // Its minutes were purged up to 11:20: the 11:00 hour holds ticks they lost.
                ("b".to_owned(), Some(t(datetime!(2026-12-01 11:20 UTC)))),
                ("none".to_owned(), None),
            ],
        );
        for hour in [10, 11, 13] {
            let start = t(datetime!(2026-12-01 00:00 UTC)) + hour * 3600;
            assert!(cover.take_hour("a", start, true));
        }
        assert!(!cover.take_hour("b", t(datetime!(2026-12-01 11:00 UTC)), true));
        // A rollup without distributions.
        assert!(!cover.take_hour("b", t(datetime!(2026-12-01 12:00 UTC)), false));
        assert!(cover.take_hour("b", t(datetime!(2026-12-01 13:00 UTC)), true));
        assert!(!cover.take_hour("none", t(datetime!(2026-12-01 10:00 UTC)), true));
        let spans: Vec<_> = cover
            .minute_spans()
            .into_iter()
            .map(|(k, from, to)| (k, from.time(), to.time()))
            .collect();
        let at = |h, m| time::Time::from_hms(h, m, 0).expect("time");
        assert_eq!(
            spans,
            [
                ("a".to_owned(), at(9, 30), at(10, 0)),
                ("a".to_owned(), at(12, 0), at(13, 0)),
                ("a".to_owned(), at(14, 0), at(14, 15)),
                ("b".to_owned(), at(9, 30), at(13, 0)),
                ("b".to_owned(), at(14, 0), at(14, 15)),
            ]
        );
        assert!(kept_distributions(2, |_| true, |_| true));
        // Figure 1 (columns 9..14) has a mean but no distribution; a figure without a mean
        // needs none.
        assert!(!kept_distributions(2, |_| true, |at| at != 13));
        assert!(kept_distributions(2, |at| at < 9, |at| at < 9));
    }
}
