//! Per-minute and per-hour rollups of T2 and T4, and how long raw rows are kept.
//!
//! A bucket is rolled up once it is complete (the store has a tick at or after its end), from
//! the raw rows in the database, so a restart of the monitor or a replayed spool gives the same
//! rollup. Each figure is summarised over the ticks that had it, never over those where it was
//! NULL: their count and the seconds they cover, the mean weighted by each tick's Δt, the
//! maximum, the bucket's 95th percentile (nearest rank), and a mergeable distribution
//! ([`Sketch`]) from which a report reads percentiles over any window of buckets.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::rows::{Rows, Value};
use super::sketch::Sketch;

/// The T2 figures rolled up, as named in `host_usage`.
pub const HOST_FIGURES: &[&str] = &[
    "cpu_pct",
    "mem_used_pct",
    "disk_read_bytes_s",
    "disk_write_bytes_s",
    "disk_read_iops",
    "disk_write_iops",
    "net_rx_bps",
    "net_tx_bps",
];

/// The T4 figures rolled up, as named in `vm_usage`.
pub const VM_FIGURES: &[&str] = &[
    "cpu_pct",
    "cpu_vcpu_pct",
    "cpu_vcpu_threads_pct",
    "steal_pct",
    "mem_used_pct",
    "disk_read_bytes_s",
    "disk_write_bytes_s",
    "disk_read_iops",
    "disk_write_iops",
    "net_rx_bps",
    "net_tx_bps",
    // What sizing needs: the allocation and the guest's own view of its memory.
    "vcpus",
    "mem_alloc_bytes",
    "mem_used_bytes",
    "mem_usable_bytes",
    "mem_actual_less_usable_bytes",
    "mem_guest_cache_bytes",
    "swap_in_bytes_s",
    "major_faults_s",
    // From vm_ebpf_usage (NULL without eBPF).
    "cpu_ready_pct",
    "read_latency_p99_us",
    "write_latency_p99_us",
    "kvm_events_s",
];

/// The VM figures that come from `vm_ebpf_usage` rather than `vm_usage`.
const EBPF_VM_FIGURES: &[&str] = &[
    "cpu_ready_pct",
    "read_latency_p99_us",
    "write_latency_p99_us",
    "kvm_events_s",
];

/// A rollup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Minute,
    Hour,
}

impl Level {
    pub const ALL: [Level; 2] = [Level::Minute, Level::Hour];

    /// Table suffix: `host_usage_1m`, `vm_usage_1h`.
    pub fn suffix(self) -> &'static str {
        match self {
            Level::Minute => "_1m",
            Level::Hour => "_1h",
        }
    }

    pub fn span(self) -> Duration {
        match self {
            Level::Minute => Duration::from_secs(60),
            Level::Hour => Duration::from_secs(3600),
        }
    }

    /// [`Level::span`] for arithmetic on times.
    pub fn time_span(self) -> time::Duration {
        match self {
            Level::Minute => time::Duration::MINUTE,
            Level::Hour => time::Duration::HOUR,
        }
    }

    /// The start of the bucket holding `t`.
    pub fn bucket_start(self, t: OffsetDateTime) -> OffsetDateTime {
        let span = self.span().as_secs() as i64;
        let seconds = t.unix_timestamp().div_euclid(span) * span;
        OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(t)
    }
}

/// How long rows are kept; `None` keeps them for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Option<Duration>,
    pub minute: Option<Duration>,
    pub hour: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: Some(Duration::from_secs(14 * 86_400)),
            minute: Some(Duration::from_secs(90 * 86_400)),
            hour: None,
        }
    }
}

/// What a bucket keeps of one figure: the Δt-weighted mean, the maximum and the 95th
/// percentile (nearest rank) over the ticks that had it, how many they were and the seconds they
/// cover, and their distribution, which merges with other buckets' (see [`Sketch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub avg: f64,
    pub max: f64,
    pub p95: f64,
    pub n: u64,
    pub secs: f64,
    pub sketch: Sketch,
}

/// The stats a rollup table keeps per figure, in column order: `<figure>_avg`, …
pub const STATS: [&str; 6] = ["avg", "max", "p95", "n", "secs", "sketch"];
/// The stats `setmov show --level` reads (all but the distribution).
pub const SHOWN_STATS: [&str; 5] = ["avg", "max", "p95", "n", "secs"];

/// The `q` quantile (0 < q ≤ 1) by nearest rank: the smallest value with at least `q` of the
/// values at or below it. Sorts `values`; `None` when there are none.
pub fn nearest_rank(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

/// The summary of (value, Δt) pairs; `None` when there are none. The mean weighs each value
/// by its tick's Δt, so an interval of 3 s counts three times one of 1 s.
pub fn summarize(ticks: &[(f64, f64)]) -> Option<Summary> {
    let mut values: Vec<f64> = ticks.iter().map(|&(v, _)| v).collect();
    let p95 = nearest_rank(&mut values, 0.95)?;
    let secs: f64 = ticks.iter().map(|&(_, dt)| dt).sum();
    let weighted: f64 = ticks.iter().map(|&(v, dt)| v * dt).sum();
    let mut sketch = Sketch::new();
    values.iter().for_each(|&v| sketch.add(v));
    Some(Summary {
        avg: if secs > 0.0 {
            weighted / secs
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        },
        // Sorted by nearest_rank.
        max: values.last().copied()?,
        p95,
        n: values.len() as u64,
        secs,
        sketch,
    })
}

/// A tick's Δt as a weight: its measured interval, or, when it has none (a VM's first sample),
/// the mean of the measured ones around it (`fallback`).
pub fn tick_weight(interval_s: Option<f64>, fallback: f64) -> f64 {
    interval_s
        .filter(|dt| dt.is_finite() && *dt > 0.0)
        .unwrap_or(fallback)
}

/// The mean of the measured intervals, 1 s when none was measured.
pub fn mean_interval(intervals: impl Iterator<Item = Option<f64>>) -> f64 {
    let (sum, n) = intervals
        .flatten()
        .filter(|dt| dt.is_finite() && *dt > 0.0)
        .fold((0.0, 0u32), |(s, n), dt| (s + dt, n + 1));
    if n == 0 { 1.0 } else { sum / f64::from(n) }
}

/// The columns of a rollup table: owner, time, samples, then `<figure>_<stat>` for [`STATS`].
pub fn rollup_columns(owner_column: &str, figures: &[&str]) -> Vec<String> {
    let mut columns = vec![owner_column.to_owned(), "time".into(), "samples".into()];
    columns.extend(figure_columns(figures, &STATS));
    columns
}

/// `<figure>_<stat>` for every figure and stat, figure by figure.
pub fn figure_columns(figures: &[&str], stats: &[&str]) -> Vec<String> {
    figures
        .iter()
        .flat_map(|figure| stats.iter().map(move |stat| format!("{figure}_{stat}")))
        .collect()
}

/// One raw row of a bucket: its owner, its measured Δt and one value per figure.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTick {
    pub owner: String,
    pub interval_s: Option<f64>,
    pub values: Vec<Option<f64>>,
}

/// The raw rows of one bucket as rollup rows, one per owner.
pub fn rollup_rows(
    table: &str,
    owner_column: &str,
    figures: &[&str],
    bucket: &str,
    raw: Vec<RawTick>,
) -> Rows {
    let mut by_owner: BTreeMap<String, Vec<RawTick>> = BTreeMap::new();
    for tick in raw {
        by_owner.entry(tick.owner.clone()).or_default().push(tick);
    }
    let rows = by_owner
        .into_iter()
        .map(|(owner, ticks)| {
            let fallback = mean_interval(ticks.iter().map(|t| t.interval_s));
            let mut row = vec![Value::Text(owner), bucket.into(), ticks.len().into()];
            for f in 0..figures.len() {
                let had: Vec<(f64, f64)> = ticks
                    .iter()
                    .filter_map(|t| {
                        let v = t.values.get(f).copied().flatten()?;
                        v.is_finite()
                            .then(|| (v, tick_weight(t.interval_s, fallback)))
                    })
                    .collect();
                match summarize(&had) {
                    Some(s) => row.extend([
                        s.avg.into(),
                        s.max.into(),
                        s.p95.into(),
                        s.n.into(),
                        s.secs.into(),
                        Value::Blob(s.sketch.encode()),
                    ]),
                    None => row.extend(std::iter::repeat_n(Value::Null, STATS.len())),
                }
            }
            row
        })
        .collect();
    Rows {
        table: table.to_owned(),
        columns: rollup_columns(owner_column, figures),
        rows,
    }
}

/// The query for one bucket's raw T2 rows of a host: `host_ip`, Δt, then the figures.
/// Parameters: host, bucket start, bucket end.
pub fn raw_host_sql() -> String {
    format!(
        "SELECT host_ip, interval_s, {} FROM host_usage WHERE host_ip = ? AND time >= ? AND time < ?",
        HOST_FIGURES.join(", ")
    )
}

/// Where a raw VM figure is read, in a query joining `vm_usage u` and `vm_ebpf_usage e`.
pub fn vm_figure_source(figure: &str) -> String {
    let table = if EBPF_VM_FIGURES.contains(&figure) {
        "e"
    } else {
        "u"
    };
    format!("{table}.{figure}")
}

/// The query for one bucket's raw T4 rows of a host's VMs, with their eBPF figures: `uuid`,
/// Δt, then the figures. Rows marked missing (libvirt did not answer) have no figures and are left
/// out. Parameters: host, bucket start, bucket end.
pub fn raw_vm_sql() -> String {
    let figures: Vec<String> = VM_FIGURES
        .iter()
        .map(|f| {
            let table = if EBPF_VM_FIGURES.contains(f) {
                "e"
            } else {
                "u"
            };
            format!("{table}.{f}")
        })
        .collect();
    format!(
        "SELECT u.uuid, u.interval_s, {} FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
         LEFT JOIN vm_ebpf_usage e ON e.time = u.time AND e.uuid = u.uuid
         WHERE v.host_ip = ? AND u.time >= ? AND u.time < ? AND u.missing IS NULL",
        figures.join(", ")
    )
}

/// The query for rollup rows, newest first: owner (host IP or VM name), UUID (VMs only), time
/// (as `time_expr` renders column `time`), samples, then `<figure>_avg/_max/_p95`.
/// Parameters: host twice, [VM name or UUID three times,] since twice, limit.
pub fn rollup_query_sql(vms: bool, level: Level, time_expr: impl Fn(&str) -> String) -> String {
    let figures = if vms { VM_FIGURES } else { HOST_FIGURES };
    let columns: Vec<String> = figure_columns(figures, &SHOWN_STATS)
        .into_iter()
        .map(|c| format!("r.{c}"))
        .collect();
    if vms {
        format!(
            "SELECT v.name, r.uuid, {}, r.samples, {} FROM vm_usage{} r
             JOIN vms v ON v.uuid = r.uuid
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
               AND (? IS NULL OR r.time >= ?)
             ORDER BY r.time DESC, v.name DESC LIMIT ?",
            time_expr("r.time"),
            columns.join(", "),
            level.suffix()
        )
    } else {
        format!(
            "SELECT r.host_ip, NULL, {}, r.samples, {} FROM host_usage{} r
             WHERE (? IS NULL OR r.host_ip = ?) AND (? IS NULL OR r.time >= ?)
             ORDER BY r.time DESC LIMIT ?",
            time_expr("r.time"),
            columns.join(", "),
            level.suffix()
        )
    }
}

/// The parameters of [`rollup_query_sql`], with `since` written in the store's time syntax.
pub fn rollup_query_params(query: &RollupQuery, since: Option<String>) -> Vec<Value> {
    let mut params: Vec<Value> = vec![query.host_ip.clone().into(), query.host_ip.clone().into()];
    if query.vms {
        params.extend([
            query.vm.clone().into(),
            query.vm.clone().into(),
            query.vm.clone().into(),
        ]);
    }
    params.extend([since.clone().into(), since.into(), query.limit.into()]);
    params
}

/// Which rollup rows `setmov show` reads.
#[derive(Debug, Clone)]
pub struct RollupQuery {
    pub level: Level,
    /// VM rollups (T4) rather than the host's (T2).
    pub vms: bool,
    pub host_ip: Option<String>,
    /// A VM's name or UUID.
    pub vm: Option<String>,
    /// Buckets starting at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// The newest `limit` rows, returned oldest first.
    pub limit: u32,
}

/// One bucket of a host or a VM as `setmov show` prints it. The figures are flattened into
/// `<figure>_avg`, `_max`, `_p95` fields, in the tables' order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RollupRow {
    /// The host's IP, or the VM's name.
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub time: String,
    pub samples: u64,
    #[serde(flatten)]
    pub figures: serde_json::Map<String, serde_json::Value>,
}

impl RollupRow {
    /// The row from the query's columns after owner, UUID, time and samples.
    pub fn new(
        vms: bool,
        owner: String,
        uuid: Option<String>,
        time: String,
        samples: u64,
        values: Vec<Option<f64>>,
    ) -> RollupRow {
        let figures = if vms { VM_FIGURES } else { HOST_FIGURES };
        let names = figure_columns(figures, &SHOWN_STATS).into_iter();
        RollupRow {
            owner,
            uuid,
            time,
            samples,
            figures: names
                .zip(values)
                .map(|(name, value)| (name, value.map_or(serde_json::Value::Null, Into::into)))
                .collect(),
        }
    }

    /// A figure's summary field, e.g. `cpu_pct_p95`.
    pub fn get(&self, field: &str) -> Option<f64> {
        self.figures.get(field).and_then(serde_json::Value::as_f64)
    }
}

/// The level that suits a window reaching `since` back from `now`: raw ticks for up to six
/// hours, minutes for up to a week, hours beyond.
pub fn level_for(now: OffsetDateTime, since: OffsetDateTime) -> Option<Level> {
    let span = now - since;
    if span <= time::Duration::hours(6) {
        None
    } else if span <= time::Duration::days(7) {
        Some(Level::Minute)
    } else {
        Some(Level::Hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_picks_the_level() {
        let now = time::macros::datetime!(2026-11-30 12:00 UTC);
        assert_eq!(level_for(now, now - time::Duration::hours(2)), None);
        assert_eq!(
            level_for(now, now - time::Duration::days(2)),
            Some(Level::Minute)
        );
        assert_eq!(
            level_for(now, now - time::Duration::days(30)),
            Some(Level::Hour)
        );
    }

    #[test]
    fn summaries_are_dt_weighted_mean_max_and_nearest_rank_p95() {
        let ticks: Vec<(f64, f64)> = (1..=100).map(|v| (f64::from(v), 1.0)).collect();
        let s = summarize(&ticks).expect("values");
        assert_eq!(
            (s.avg, s.max, s.p95, s.n, s.secs),
            (50.5, 100.0, 95.0, 100, 100.0)
        );
        // 10 over 3 s and 20 over 1 s: (30 + 20) / 4.
        let s = summarize(&[(10.0, 3.0), (20.0, 1.0)]).expect("values");
        assert_eq!((s.avg, s.max, s.n, s.secs), (12.5, 20.0, 2, 4.0));
        assert_eq!(s.sketch.count(), 2);
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn a_tick_without_an_interval_weighs_the_mean_interval() {
        assert_eq!(tick_weight(Some(2.0), 5.0), 2.0);
        assert_eq!(tick_weight(None, 5.0), 5.0);
        assert_eq!(tick_weight(Some(f64::NAN), 5.0), 5.0);
        assert_eq!(tick_weight(Some(0.0), 5.0), 5.0);
        assert_eq!(mean_interval([Some(1.0), None, Some(3.0)].into_iter()), 2.0);
        assert_eq!(mean_interval([None, Some(-1.0)].into_iter()), 1.0);
    }

    #[test]
    fn buckets_start_on_the_minute_and_the_hour() {
        let t = time::macros::datetime!(2026-11-30 06:59:59.900 UTC);
        assert_eq!(
            Level::Minute.bucket_start(t),
            time::macros::datetime!(2026-11-30 06:59 UTC)
        );
        assert_eq!(
            Level::Hour.bucket_start(t),
            time::macros::datetime!(2026-11-30 06:00 UTC)
        );
    }

    #[test]
    fn raw_rows_become_one_row_per_owner_and_nulls_are_not_zeros() {
        let tick = |owner: &str, interval_s, values| RawTick {
            owner: owner.to_owned(),
            interval_s,
            values,
        };
        let raw = vec![
            tick("a", Some(1.0), vec![Some(10.0), None]),
            tick("a", Some(3.0), vec![Some(30.0), None]),
            // No interval: weighs the mean of b's, 2 s.
            tick("b", None, vec![Some(5.0), Some(1.0)]),
            tick("b", Some(2.0), vec![Some(8.0), None]),
        ];
        let rows = rollup_rows("t_1m", "uuid", &["x", "y"], "T", raw);
        assert_eq!(
            rows.columns,
            [
                "uuid", "time", "samples", "x_avg", "x_max", "x_p95", "x_n", "x_secs", "x_sketch",
                "y_avg", "y_max", "y_p95", "y_n", "y_secs", "y_sketch"
            ]
        );
        assert_eq!(rows.rows.len(), 2);
        let a = &rows.rows[0];
        assert_eq!(a[2], Value::Int(2));
        assert_eq!(
            &a[3..8],
            [
                Value::Real(25.0),
                Value::Real(30.0),
                Value::Real(30.0),
                Value::Int(2),
                Value::Real(4.0)
            ]
        );
        let Value::Blob(stored) = &a[8] else {
            panic!("no sketch: {:?}", a[8]);
        };
        let sketch = Sketch::decode(stored).expect("sketch");
        assert_eq!(sketch.count(), 2);
        assert_eq!(&a[9..15], vec![Value::Null; 6]);
        let b = &rows.rows[1];
        assert_eq!(&b[3..5], [Value::Real(6.5), Value::Real(8.0)]);
        assert_eq!(
            &b[9..13],
            [
                Value::Real(1.0),
                Value::Real(1.0),
                Value::Real(1.0),
                Value::Int(1)
            ]
        );
        assert_eq!(b[13], Value::Real(2.0));
    }
}
