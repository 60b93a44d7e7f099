//! Per-minute and per-hour rollups of T2 and T4, and how long raw rows are kept.
//!
//! A bucket is rolled up once it is complete (the store has a tick at or after its end), from
//! the raw rows in the database, so a restart of the monitor or a replayed spool gives the same
//! rollup. Each figure is summarised over the ticks that had it: mean, maximum and the 95th
//! percentile (nearest rank).

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::rows::{Rows, Value};

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

/// Mean, maximum and 95th percentile of one figure over a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub avg: f64,
    pub max: f64,
    pub p95: f64,
}

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

/// `None` when no tick had the figure; the percentile is the nearest rank.
pub fn summarize(values: &mut [f64]) -> Option<Summary> {
    let p95 = nearest_rank(values, 0.95)?;
    Some(Summary {
        avg: values.iter().sum::<f64>() / values.len() as f64,
        // Sorted by nearest_rank.
        max: values.last().copied()?,
        p95,
    })
}

/// The columns of a rollup table: owner, time, samples, then `<figure>_avg/_max/_p95`.
pub fn rollup_columns(owner_column: &str, figures: &[&str]) -> Vec<String> {
    let mut columns = vec![owner_column.to_owned(), "time".into(), "samples".into()];
    for figure in figures {
        for stat in ["avg", "max", "p95"] {
            columns.push(format!("{figure}_{stat}"));
        }
    }
    columns
}

/// Raw rows of one bucket — (owner, one value per figure) — as rollup rows, one per owner.
pub fn rollup_rows(
    table: &str,
    owner_column: &str,
    figures: &[&str],
    bucket: &str,
    raw: Vec<(String, Vec<Option<f64>>)>,
) -> Rows {
    let mut by_owner: BTreeMap<String, (u64, Vec<Vec<f64>>)> = BTreeMap::new();
    for (owner, values) in raw {
        let (samples, columns) = by_owner
            .entry(owner)
            .or_insert_with(|| (0, vec![Vec::new(); figures.len()]));
        *samples += 1;
        for (column, value) in columns.iter_mut().zip(values) {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                column.push(v);
            }
        }
    }
    let rows = by_owner
        .into_iter()
        .map(|(owner, (samples, mut columns))| {
            let mut row = vec![Value::Text(owner), bucket.into(), samples.into()];
            for values in &mut columns {
                let summary = summarize(values);
                row.extend([
                    summary.map(|s| s.avg).into(),
                    summary.map(|s| s.max).into(),
                    summary.map(|s| s.p95).into(),
                ]);
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

/// The query for one bucket's raw T2 rows of a host: `host_ip`, then the figures.
/// Parameters: host, bucket start, bucket end.
pub fn raw_host_sql() -> String {
    format!(
        "SELECT host_ip, {} FROM host_usage WHERE host_ip = ? AND time >= ? AND time < ?",
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
/// then the figures. Rows marked missing (libvirt did not answer) have no figures and are left
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
        "SELECT u.uuid, {} FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
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
    let columns: Vec<String> = rollup_columns("", figures)
        .into_iter()
        .skip(3)
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
        let names = rollup_columns("", figures).into_iter().skip(3);
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
    fn summaries_are_mean_max_and_nearest_rank_p95() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&mut values).expect("values");
        assert_eq!((s.avg, s.max, s.p95), (50.5, 100.0, 95.0));
        let mut one = [7.0];
        assert_eq!(
            summarize(&mut one),
            Some(Summary {
                avg: 7.0,
                max: 7.0,
                p95: 7.0
            })
        );
        assert_eq!(summarize(&mut []), None);
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
        let raw = vec![
            ("a".to_owned(), vec![Some(10.0), None]),
            ("a".to_owned(), vec![Some(30.0), None]),
            ("b".to_owned(), vec![Some(5.0), Some(1.0)]),
        ];
        let rows = rollup_rows("t_1m", "uuid", &["x", "y"], "T", raw);
        assert_eq!(
            rows.columns,
            [
                "uuid", "time", "samples", "x_avg", "x_max", "x_p95", "y_avg", "y_max", "y_p95"
            ]
        );
        assert_eq!(rows.rows.len(), 2);
        let a = &rows.rows[0];
        assert_eq!(a[2], Value::Int(2));
        assert_eq!(
            &a[3..6],
            [Value::Real(20.0), Value::Real(30.0), Value::Real(30.0)]
        );
        assert_eq!(&a[6..9], [Value::Null, Value::Null, Value::Null]);
        assert_eq!(rows.rows[1][6], Value::Real(1.0));
    }
}
