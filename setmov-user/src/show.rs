//! Rendering stored rows for `setmov show`: a terminal table, JSON or CSV.

use std::fmt::Write;

use crate::sampler::summary::{human_bits, human_bytes};
use serde::Serialize;

use crate::analysis::migrate::MigrationPlan;
use crate::analysis::recommend::Plan;
use crate::analysis::report::OwnerReport;
use crate::escape::escape_control;
use crate::store::rollup::RollupRow;
use crate::store::{HostUsageRow, VmUsageRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Host rows (T2) in `format`.
pub fn render_hosts(rows: &[HostUsageRow], format: Format) -> Result<String, serde_json::Error> {
    let cells = || {
        rows.iter()
            .map(|r| {
                vec![
                    r.time.clone(),
                    r.host_ip.clone(),
                    format!("{:.3}s", r.interval_s),
                    format!("{:.1}ms", r.late_ms),
                    opt(r.cpu_pct, pct),
                    opt(r.mem_used_pct, pct),
                    opt(r.disk_read_bytes_s, per_sec),
                    opt(r.disk_write_bytes_s, per_sec),
                    opt(r.net_rx_bps, human_bits),
                    opt(r.net_tx_bps, human_bits),
                ]
            })
            .collect()
    };
    let header = [
        "time",
        "host",
        "interval",
        "late",
        "cpu",
        "mem",
        "disk read",
        "disk write",
        "net rx",
        "net tx",
    ];
    render(rows, format, &header, 2, cells)
}

/// VM rows (T4) in `format`.
pub fn render_vms(rows: &[VmUsageRow], format: Format) -> Result<String, serde_json::Error> {
    let cells = || {
        rows.iter()
            .map(|r| {
                vec![
                    r.time.clone(),
                    r.name.clone(),
                    r.state.clone(),
                    opt(r.cpu_pct, pct),
                    opt(r.cpu_vcpu_pct, pct),
                    opt(r.steal_pct, pct),
                    opt(r.mem_used_pct, pct),
                    r.mem_alloc_bytes
                        .map_or_else(|| "-".to_owned(), |b| human_bytes(b as f64)),
                    opt(r.disk_read_bytes_s, per_sec),
                    opt(r.disk_write_bytes_s, per_sec),
                    opt(r.net_rx_bps, human_bits),
                    opt(r.net_tx_bps, human_bits),
                    r.missing.clone().unwrap_or_default(),
                ]
            })
            .collect()
    };
    let header = [
        "time",
        "vm",
        "state",
        "cpu",
        "cpu/vcpu",
        "steal",
        "mem",
        "mem alloc",
        "disk read",
        "disk write",
        "net rx",
        "net tx",
        "missing",
    ];
    render(rows, format, &header, 3, cells)
}

/// One figure of one host or VM in a report, as printed.
#[derive(Debug, Serialize)]
struct ReportLine<'a> {
    kind: &'static str,
    owner: &'a str,
    uuid: Option<&'a str>,
    ticks: u64,
    figure: &'a str,
    /// Ticks that had the figure.
    n: u64,
    mean: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    approximate: bool,
}

/// A report in `format`: one line per host or VM and figure (ticks with the figure, mean,
/// median, 95th and 99th percentiles, maximum), hosts first. Percentiles marked `~` are
/// estimates from rollups that kept no distribution.
pub fn render_report(
    hosts: &[OwnerReport],
    vms: &[OwnerReport],
    format: Format,
) -> Result<String, serde_json::Error> {
    let lines: Vec<ReportLine<'_>> = [("host", hosts), ("vm", vms)]
        .into_iter()
        .flat_map(|(kind, owners)| {
            owners.iter().flat_map(move |o| {
                o.figures.iter().map(move |(figure, f)| ReportLine {
                    kind,
                    owner: &o.owner,
                    uuid: o.uuid.as_deref(),
                    ticks: o.ticks,
                    figure,
                    n: f.n,
                    mean: f.mean,
                    p50: f.p50,
                    p95: f.p95,
                    p99: f.p99,
                    max: f.max,
                    approximate: f.approximate,
                })
            })
        })
        .collect();
    let cells = || {
        lines
            .iter()
            .map(|l| {
                let unit = figure_unit(l.figure);
                // Percentiles from rollups that kept no distribution are estimates.
                let estimate = if l.approximate { "~" } else { "" };
                let percentile = |v: f64| format!("{estimate}{}", unit(v));
                vec![
                    l.kind.to_owned(),
                    l.owner.to_owned(),
                    l.figure.to_owned(),
                    l.ticks.to_string(),
                    l.n.to_string(),
                    unit(l.mean),
                    percentile(l.p50),
                    percentile(l.p95),
                    percentile(l.p99),
                    unit(l.max),
                ]
            })
            .collect()
    };
    let header = [
        "kind", "owner", "figure", "ticks", "n", "mean", "p50", "p95", "p99", "max",
    ];
    render(&lines, format, &header, 3, cells)
}

/// Recommendation plans, one per host: a line per VM (sizes now → recommended, flags, the
/// reasoning) and the host's totals against its capacity. JSON carries everything.
pub fn render_plans(plans: &[(String, Plan)], format: Format) -> Result<String, serde_json::Error> {
    if format != Format::Table {
        #[derive(Serialize)]
        struct HostPlan<'a> {
            host: &'a str,
            #[serde(flatten)]
            plan: &'a Plan,
        }
        let plans: Vec<_> = plans
            .iter()
            .map(|(host, plan)| HostPlan { host, plan })
            .collect();
        let mut s = serde_json::to_string_pretty(&plans)?;
        s.push('\n');
        return Ok(s);
    }
    let mut out = String::new();
    for (host, plan) in plans {
        let size = |bytes: Option<u64>| bytes.map_or_else(|| "-".into(), |b| human_bytes(b as f64));
        let count = |n: Option<u32>| n.map_or_else(|| "-".into(), |n| n.to_string());
        let rows: Vec<Vec<String>> = plan
            .vms
            .iter()
            .map(|r| {
                let flags = [(r.idle, "idle"), (r.starved, "starved")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, f)| *f)
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    r.name.clone(),
                    format!("{} → {}", count(r.vcpus), count(r.recommended_vcpus)),
                    format!(
                        "{} → {}",
                        size(r.memory_bytes),
                        size(r.recommended_memory_bytes)
                    ),
                    flags,
                ]
            })
            .collect();
        let _ = writeln!(out, "host {}", escape_control(host));
        out.push_str(&table(&["vm", "vcpus", "memory", "flags"], &rows, 4));
        for r in &plan.vms {
            for reason in &r.reasons {
                let (name, reason) = (escape_control(&r.name), escape_control(reason));
                let _ = writeln!(out, "  {name}: {reason}");
            }
        }
        let capacity = plan.capacity.map_or_else(
            || "capacity unknown (libvirt gave none)".to_owned(),
            |c| {
                format!(
                    "capacity {} vCPUs, {}",
                    c.vcpus,
                    human_bytes(c.memory_bytes as f64)
                )
            },
        );
        let _ = writeln!(
            out,
            "  total: {} → {} vCPUs, {} → {}; {capacity}",
            plan.vcpus_now,
            plan.vcpus_planned,
            human_bytes(plan.memory_now as f64),
            human_bytes(plan.memory_planned as f64)
        );
        for unmet in &plan.unmet {
            let _ = writeln!(out, "  unmet: {}", escape_control(unmet));
        }
    }
    Ok(out)
}

/// A migration plan: the moves with their reasons, then each host's p95 CPU load before and
/// after. JSON carries everything.
pub fn render_migration(plan: &MigrationPlan, format: Format) -> Result<String, serde_json::Error> {
    if format != Format::Table {
        let mut s = serde_json::to_string_pretty(plan)?;
        s.push('\n');
        return Ok(s);
    }
    let mut out = String::new();
    if plan.moves.is_empty() {
        let _ = writeln!(
            out,
            "no move: no host above {:.0} % p95 CPU load that a move could help",
            plan.threshold * 100.0
        );
    }
    for (i, m) in plan.moves.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. move {} from {} to {}",
            i + 1,
            escape_control(&m.vm),
            escape_control(&m.from),
            escape_control(&m.to)
        );
        let _ = writeln!(out, "   {}", escape_control(&m.reason));
    }
    let rows: Vec<Vec<String>> = plan
        .before
        .iter()
        .map(|(host, before)| {
            let after = plan.after.get(host).copied().unwrap_or(*before);
            vec![host.clone(), pct(before * 100.0), pct(after * 100.0)]
        })
        .collect();
    out.push_str(&table(&["host", "p95 load before", "after"], &rows, 1));
    for u in &plan.unresolved {
        let _ = writeln!(out, "unresolved: {}", escape_control(u));
    }
    Ok(out)
}

/// How a figure's values read, from its name's unit suffix.
fn figure_unit(figure: &str) -> fn(f64) -> String {
    if figure == "vcpus" {
        |v| format!("{v:.0}")
    } else if figure.ends_with("_bytes") {
        |v| human_bytes(v)
    } else if figure.ends_with("_pct") {
        pct
    } else if figure.ends_with("_bytes_s") {
        per_sec
    } else if figure.ends_with("_bps") {
        human_bits
    } else if figure.ends_with("_us") {
        |v| format!("{v:.0}µs")
    } else {
        |v| format!("{v:.1}/s")
    }
}

/// Rollup rows (per minute or hour) in `format`: the table shows the main figures' mean, 95th
/// percentile and maximum; JSON and CSV carry every figure.
pub fn render_rollups(
    rows: &[RollupRow],
    vms: bool,
    format: Format,
) -> Result<String, serde_json::Error> {
    let three = |r: &RollupRow, figure: &str, f: &dyn Fn(f64) -> String| {
        let get = |stat: &str| opt(r.get(&format!("{figure}_{stat}")), f);
        format!("{} {} {}", get("avg"), get("p95"), get("max"))
    };
    let cells = || {
        rows.iter()
            .map(|r| {
                let cpu = if vms { "cpu_vcpu_pct" } else { "cpu_pct" };
                vec![
                    r.time.clone(),
                    r.owner.clone(),
                    r.samples.to_string(),
                    three(r, cpu, &pct),
                    three(r, "mem_used_pct", &pct),
                    three(r, "disk_read_bytes_s", &per_sec),
                    three(r, "disk_write_bytes_s", &per_sec),
                    three(r, "net_rx_bps", &human_bits),
                    three(r, "net_tx_bps", &human_bits),
                ]
            })
            .collect()
    };
    let header = [
        "bucket",
        if vms { "vm" } else { "host" },
        "ticks",
        if vms {
            "cpu/vcpu avg p95 max"
        } else {
            "cpu avg p95 max"
        },
        "mem avg p95 max",
        "disk read avg p95 max",
        "disk write avg p95 max",
        "net rx avg p95 max",
        "net tx avg p95 max",
    ];
    render(rows, format, &header, 2, cells)
}

fn render<T: Serialize>(
    rows: &[T],
    format: Format,
    header: &[&str],
    text_columns: usize,
    cells: impl Fn() -> Vec<Vec<String>>,
) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Table => table(header, &cells(), text_columns),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(rows)?;
            s.push('\n');
            s
        }
        Format::Csv => csv(rows)?,
    })
}

fn opt(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), f)
}

fn pct(v: f64) -> String {
    format!("{v:.1}%")
}

fn per_sec(v: f64) -> String {
    format!("{}/s", human_bytes(v))
}

/// Aligned columns: the first `text_columns` left-aligned, figures right-aligned. Control
/// characters in a cell (a VM's name can hold any) are written out as escapes.
fn table(header: &[&str], rows: &[Vec<String>], text_columns: usize) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| escape_control(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[&str]| {
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            if i < text_columns {
                let _ = write!(out, "{sep}{c:<w$}");
            } else {
                let _ = write!(out, "{sep}{c:>w$}");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, header);
    for row in &rows {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &refs);
    }
    if rows.is_empty() {
        out.push_str("(no rows)\n");
    }
    out
}

/// CSV with a header from the rows' field names, through their JSON form: missing figures
/// are empty fields.
fn csv<T: Serialize>(rows: &[T]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i == 0 {
            out.push_str(&csv_header(row)?);
        }
        out.push_str(&csv_row(row)?);
    }
    Ok(out)
}

/// The CSV header line of rows like `row`: its field names.
pub fn csv_header<T: Serialize>(row: &T) -> Result<String, serde_json::Error> {
    let names: Vec<String> = json_fields(row)?.keys().map(|k| csv_field(k)).collect();
    Ok(format!("{}\n", names.join(",")))
}

/// One CSV line: `row`'s fields in order, missing figures empty.
pub fn csv_row<T: Serialize>(row: &T) -> Result<String, serde_json::Error> {
    let values: Vec<String> = json_fields(row)?
        .values()
        .map(|v| match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => csv_field(s),
            other => other.to_string(),
        })
        .collect();
    Ok(format!("{}\n", values.join(",")))
}

fn json_fields<T: Serialize>(
    row: &T,
) -> Result<serde_json::Map<String, serde_json::Value>, serde_json::Error> {
    match serde_json::to_value(row)? {
        serde_json::Value::Object(fields) => Ok(fields),
        other => Ok(serde_json::Map::from_iter([("value".to_owned(), other)])),
    }
}

/// Quotes a field when CSV requires it (RFC 4180), after writing out its control characters:
/// one record is one line, and a terminal showing it obeys no escape sequence.
fn csv_field(s: &str) -> String {
    let s = escape_control(s);
    // No line break is left to quote.
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> HostUsageRow {
        HostUsageRow {
            host_ip: "192.0.2.2".into(),
            time: "2026-11-30T06:00:01.000Z".into(),
            interval_s: 1.0,
            late_ms: 0.5,
            cpu_pct: Some(50.0),
            mem_used_pct: Some(25.0),
            disk_read_bytes_s: Some(0.0),
            disk_write_bytes_s: Some(1_048_576.0),
            net_rx_bps: None,
            net_tx_bps: Some(1000.0),
        }
    }

    #[test]
    fn rollups_show_mean_p95_and_max_and_csv_carries_every_figure() {
        let values: Vec<Option<f64>> = (0..40).map(|i| Some(f64::from(i))).collect();
        let row = RollupRow::new(
            false,
            "192.0.2.2".into(),
            None,
            "2026-11-30T06:00:00.000Z".into(),
            60,
            values,
        );
        let table =
            render_rollups(std::slice::from_ref(&row), false, Format::Table).expect("table");
        let lines: Vec<_> = table.lines().collect();
        assert!(lines[0].starts_with("bucket"), "{table}");
        // cpu_pct avg 0, p95 2, max 1 (the order of the stored columns is avg, max, p95, n,
        // secs).
        assert!(lines[1].contains("0.0% 2.0% 1.0%"), "{table}");
        let csv = render_rollups(&[row], false, Format::Csv).expect("csv");
        let header = csv.lines().next().expect("header");
        assert!(
            header.starts_with("owner,time,samples,cpu_pct_avg,cpu_pct_max,cpu_pct_p95"),
            "{header}"
        );
        assert!(header.contains(",cpu_pct_n,cpu_pct_secs,"), "{header}");
        assert_eq!(header.split(',').count(), 3 + 8 * 5);
    }

    #[test]
    fn table_has_a_header_and_aligned_units() {
        let t = render_hosts(&[row()], Format::Table).expect("render");
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("time"));
        assert!(lines[1].contains("50.0%") && lines[1].contains("1.0 MiB/s"));
        assert!(lines[1].contains("1.0 kbit/s") && lines[1].contains(" -"));
    }

    #[test]
    fn csv_leaves_missing_figures_empty_and_json_uses_null() {
        let c = render_hosts(&[row()], Format::Csv).expect("render");
        assert_eq!(
            c.lines().nth(1),
            Some("192.0.2.2,2026-11-30T06:00:01.000Z,1.0,0.5,50.0,25.0,0.0,1048576.0,,1000.0")
        );
        let j: serde_json::Value =
            serde_json::from_str(&render_hosts(&[row()], Format::Json).expect("render"))
                .expect("json");
        assert_eq!(j[0]["net_rx_bps"], serde_json::Value::Null);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    #[test]
    fn control_characters_are_escaped_in_tables_and_csv() {
        let rows = vec![vec!["evil\n\x1b[2J\tvm".to_owned(), "1".to_owned()]];
        let t = table(&["vm", "n"], &rows, 1);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            ["vm                 n", "evil\\n\\x1b[2J\\tvm  1"],
            "{t:?}"
        );
        // Still one record a line, quoted when a comma or quote asks for it.
        assert_eq!(csv_field("a\nb"), "a\\nb");
        assert_eq!(csv_field("a\r\n\"b\",c"), "\"a\\r\\n\"\"b\"\",c\"");
    }
}
