//! Analysis of stored usage (the paper's §3.5–3.6): what each host and VM really used.

mod axis_labels;
pub mod chart;
pub mod knee;
pub mod migrate;
pub mod recommend;
pub mod recommend_script;
pub mod report;

use time::OffsetDateTime;

use crate::store::rollup::{Level, vm_figure_source};
use crate::store::rows::Value;
use report::figures;

/// Each VM's CPU load in host CPUs per time bucket, from its rows of the window: (host, its
/// CPU count, row). All VMs share one timeline (every bucket any row has); a bucket without
/// a row of the VM counts 0. Memory is the largest allocation seen.
pub fn vm_loads(samples: &[(String, u32, report::ReportSample)]) -> Vec<migrate::VmLoad> {
    let names = figures(true);
    let cpu = names.iter().position(|n| *n == "cpu_pct");
    let memory = names.iter().position(|n| *n == "mem_alloc_bytes");
    let mut times: Vec<i64> = samples.iter().map(|(_, _, s)| s.time).collect();
    times.sort_unstable();
    times.dedup();
    let mut vms: std::collections::BTreeMap<(String, String), migrate::VmLoad> =
        std::collections::BTreeMap::new();
    for (host, cpus, sample) in samples {
        let vm = vms
            .entry((
                host.clone(),
                sample.uuid.clone().unwrap_or_else(|| sample.owner.clone()),
            ))
            .or_insert_with(|| migrate::VmLoad {
                name: sample.owner.clone(),
                host: host.clone(),
                memory_bytes: 0,
                load: vec![0.0; times.len()],
            });
        let value = |index: Option<usize>| index.and_then(|i| sample.values.get(i)?.as_ref());
        let slot = times
            .binary_search(&sample.time)
            .ok()
            .and_then(|slot| vm.load.get_mut(slot));
        if let (Some(share), Some(slot)) = (value(cpu), slot) {
            *slot = share.mean / 100.0 * f64::from(*cpus);
        }
        if let Some(memory) = value(memory) {
            vm.memory_bytes = vm.memory_bytes.max(memory.max as u64);
        }
    }
    vms.into_values().collect()
}

/// A chart's title, unit and lines (legend label, figure).
type ChartDefinition = (
    &'static str,
    chart::Unit,
    &'static [(&'static str, &'static str)],
);

const NETWORK: ChartDefinition = (
    "Network",
    chart::Unit::BitsPerSecond,
    &[("received", "net_rx_bps"), ("sent", "net_tx_bps")],
);

const DISK: ChartDefinition = (
    "Disk",
    chart::Unit::BytesPerSecond,
    &[
        ("read", "disk_read_bytes_s"),
        ("written", "disk_write_bytes_s"),
    ],
);

/// The charts of a host or a VM from a window's rows (bucket means, or ticks): for a VM its
/// CPU (per vCPU, share of the host, steal, CPU ready), network, disk and I/O latency; for a
/// host its CPU and memory, network and disk. Lines without a single value are left out, and
/// so are charts left without lines.
pub fn charts(vms: bool, owner: &str, samples: &[report::ReportSample]) -> Vec<chart::Chart> {
    use chart::Unit;
    let vm_charts: &[ChartDefinition] = &[
        (
            "CPU",
            Unit::Percent,
            &[
                ("CPU per vCPU", "cpu_vcpu_pct"),
                ("CPU, share of the host", "cpu_pct"),
                ("steal", "steal_pct"),
                ("CPU ready", "cpu_ready_pct"),
            ],
        ),
        NETWORK,
        DISK,
        (
            "I/O latency p99",
            Unit::Microseconds,
            &[
                ("read", "read_latency_p99_us"),
                ("write", "write_latency_p99_us"),
            ],
        ),
    ];
    let host_charts: &[ChartDefinition] = &[
        (
            "CPU and memory",
            Unit::Percent,
            &[("CPU", "cpu_pct"), ("memory used", "mem_used_pct")],
        ),
        NETWORK,
        DISK,
    ];
    let names = figures(vms);
    let definitions = if vms { vm_charts } else { host_charts };
    definitions
        .iter()
        .filter_map(|(title, unit, lines)| {
            let series: Vec<chart::Series> = lines
                .iter()
                .filter_map(|(label, figure)| {
                    let index = names.iter().position(|n| n == figure)?;
                    let points: Vec<(i64, Option<f64>)> = samples
                        .iter()
                        .map(|s| {
                            (
                                s.time,
                                s.values.get(index).and_then(|v| Some(v.as_ref()?.mean)),
                            )
                        })
                        .collect();
                    points.iter().any(|p| p.1.is_some()).then(|| chart::Series {
                        label: (*label).to_owned(),
                        points,
                    })
                })
                .collect();
            (!series.is_empty()).then(|| chart::Chart {
                title: format!("{owner}: {title}"),
                unit: *unit,
                x_axis: chart::XAxis::Time,
                series,
            })
        })
        .collect()
}

/// Which rows a report reads.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    /// `None` reads raw ticks.
    pub level: Option<Level>,
    /// VMs (T4) rather than hosts (T2).
    pub vms: bool,
    pub host_ip: Option<String>,
    /// A VM's name or UUID.
    pub vm: Option<String>,
    pub since: OffsetDateTime,
    pub until: OffsetDateTime,
}

/// The parameters of [`report_sql`], with the window written in the store's time syntax.
pub fn report_params(query: &ReportQuery, since: String, until: String) -> Vec<Value> {
    let mut params: Vec<Value> = vec![query.host_ip.clone().into(), query.host_ip.clone().into()];
    if query.vms {
        params.extend([
            query.vm.clone().into(),
            query.vm.clone().into(),
            query.vm.clone().into(),
        ]);
    }
    params.extend([since.into(), until.into()]);
    params
}

/// How many columns [`report_sql`] gives per figure.
pub const REPORT_STATS: usize = 5;

/// The query behind [`ReportQuery`]: the row's time in seconds since the epoch (`unix_time`
/// renders that from a time column in the store's dialect), owner (host IP or VM name), UUID
/// (VMs), ticks, then per figure the [`REPORT_STATS`] columns: for a raw tick its value twice,
/// 1, its Δt and no sketch; for a bucket `<figure>_avg, _max, _n, _secs, _sketch`. In time
/// order. Parameters: host twice, [VM three times,] since, until.
pub fn report_sql(query: &ReportQuery, unix_time: impl Fn(&str) -> String) -> String {
    let stats = report_figure_columns(query.vms, query.level);
    let suffix = query.level.map_or("", Level::suffix);
    let (r, u) = (unix_time("r.time"), unix_time("u.time"));
    match (query.vms, query.level) {
        (false, None) => format!(
            "SELECT {r}, r.host_ip, NULL, 1, {stats} FROM host_usage r
             WHERE (? IS NULL OR r.host_ip = ?) AND r.time >= ? AND r.time < ?
             ORDER BY r.time"
        ),
        (false, Some(_)) => format!(
            "SELECT {r}, r.host_ip, NULL, r.samples, {stats} FROM host_usage{suffix} r
             WHERE (? IS NULL OR r.host_ip = ?) AND r.time >= ? AND r.time < ?
             ORDER BY r.time"
        ),
        (true, None) => format!(
            "SELECT {u}, v.name, u.uuid, 1, {stats} FROM vm_usage u
             JOIN vms v ON v.uuid = u.uuid
             LEFT JOIN vm_ebpf_usage e ON e.time = u.time AND e.uuid = u.uuid
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
               AND u.time >= ? AND u.time < ? AND u.missing IS NULL
             ORDER BY u.time"
        ),
        (true, Some(_)) => format!(
            "SELECT {r}, v.name, r.uuid, r.samples, {stats} FROM vm_usage{suffix} r
             JOIN vms v ON v.uuid = r.uuid
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
               AND r.time >= ? AND r.time < ?
             ORDER BY r.time"
        ),
    }
}

/// The [`REPORT_STATS`] columns per figure of [`report_sql`], joined: of `u`/`r` for raw
/// ticks, of `r` for a rollup level.
pub fn report_figure_columns(vms: bool, level: Option<Level>) -> String {
    let names = figures(vms);
    let stats: Vec<String> = match level {
        None => names
            .iter()
            .map(|f| {
                let (source, interval) = if vms {
                    (vm_figure_source(f), "u.interval_s")
                } else {
                    (format!("r.{f}"), "r.interval_s")
                };
                format!("{source}, {source}, 1, {interval}, NULL")
            })
            .collect(),
        Some(_) => names
            .iter()
            .map(|f| format!("r.{f}_avg, r.{f}_max, r.{f}_n, r.{f}_secs, r.{f}_sketch"))
            .collect(),
    };
    stats.join(", ")
}
