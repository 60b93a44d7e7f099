//! Analysis of stored usage (the paper's §3.5–3.6): what each host and VM really used.

pub mod recommend;
pub mod report;

use time::OffsetDateTime;

use crate::store::rollup::{Level, vm_figure_source};
use report::figures;

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

/// The query behind [`ReportQuery`]: owner (host IP or VM name), UUID (VMs), ticks, then per
/// figure its mean, max and p95 (a raw tick gives its value three times). `time_expr` is not
/// needed: times are compared as the store writes them. Parameters: host twice, [VM three
/// times,] since, until.
pub fn report_sql(query: &ReportQuery) -> String {
    let names = figures(query.vms);
    let stats: Vec<String> = match query.level {
        None => names
            .iter()
            .map(|f| {
                let source = if query.vms {
                    vm_figure_source(f)
                } else {
                    format!("r.{f}")
                };
                format!("{source}, {source}, {source}")
            })
            .collect(),
        Some(_) => names
            .iter()
            .map(|f| format!("r.{f}_avg, r.{f}_max, r.{f}_p95"))
            .collect(),
    };
    let stats = stats.join(", ");
    let suffix = query.level.map_or("", Level::suffix);
    match (query.vms, query.level) {
        (false, None) => format!(
            "SELECT r.host_ip, NULL, 1, {stats} FROM host_usage r
             WHERE (? IS NULL OR r.host_ip = ?) AND r.time >= ? AND r.time < ?"
        ),
        (false, Some(_)) => format!(
            "SELECT r.host_ip, NULL, r.samples, {stats} FROM host_usage{suffix} r
             WHERE (? IS NULL OR r.host_ip = ?) AND r.time >= ? AND r.time < ?"
        ),
        (true, None) => format!(
            "SELECT v.name, u.uuid, 1, {stats} FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
             LEFT JOIN vm_ebpf_usage e ON e.time = u.time AND e.uuid = u.uuid
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
               AND u.time >= ? AND u.time < ? AND u.missing IS NULL"
        ),
        (true, Some(_)) => format!(
            "SELECT v.name, r.uuid, r.samples, {stats} FROM vm_usage{suffix} r
             JOIN vms v ON v.uuid = r.uuid
             WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
               AND r.time >= ? AND r.time < ?"
        ),
    }
}
