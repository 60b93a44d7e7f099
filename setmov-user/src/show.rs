//! Rendering stored rows for `setmov show`: a terminal table, JSON or CSV.

use std::fmt::Write;

use crate::sampler::summary::{human_bits, human_bytes};
use crate::store::HostUsageRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

pub fn render(rows: &[HostUsageRow], format: Format) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Table => table(rows),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(rows)?;
            s.push('\n');
            s
        }
        Format::Csv => csv(rows),
    })
}

fn opt(value: Option<f64>, f: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), f)
}

fn table(rows: &[HostUsageRow]) -> String {
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
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.time.clone(),
                r.host_ip.clone(),
                format!("{:.3}s", r.interval_s),
                format!("{:.1}ms", r.late_ms),
                opt(r.cpu_pct, |v| format!("{v:.1}%")),
                opt(r.mem_used_pct, |v| format!("{v:.1}%")),
                opt(r.disk_read_bytes_s, |v| format!("{}/s", human_bytes(v))),
                opt(r.disk_write_bytes_s, |v| format!("{}/s", human_bytes(v))),
                opt(r.net_rx_bps, human_bits),
                opt(r.net_tx_bps, human_bits),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[&str]| {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            // Text columns left-aligned, figures right-aligned.
            if i < 2 {
                let _ = write!(out, "{sep}{c:<w$}");
            } else {
                let _ = write!(out, "{sep}{c:>w$}");
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &cells {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&mut out, &refs);
    }
    if rows.is_empty() {
        out.push_str("(no rows)\n");
    }
    out
}

fn csv(rows: &[HostUsageRow]) -> String {
    let mut out = String::from(
        "host_ip,time,interval_s,late_ms,cpu_pct,mem_used_pct,disk_read_bytes_s,\
         disk_write_bytes_s,net_rx_bps,net_tx_bps\n",
    );
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.host_ip),
            csv_field(&r.time),
            r.interval_s,
            r.late_ms,
            num(r.cpu_pct),
            num(r.mem_used_pct),
            num(r.disk_read_bytes_s),
            num(r.disk_write_bytes_s),
            num(r.net_rx_bps),
            num(r.net_tx_bps)
        );
    }
    out
}

/// Quotes a field when CSV requires it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
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
    fn table_has_a_header_and_aligned_units() {
        let t = render(&[row()], Format::Table).expect("render");
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("time"));
        assert!(lines[1].contains("50.0%") && lines[1].contains("1.0 MiB/s"));
        assert!(lines[1].contains("1.0 kbit/s") && lines[1].contains(" -"));
    }

    #[test]
    fn csv_leaves_missing_figures_empty_and_json_uses_null() {
        let c = render(&[row()], Format::Csv).expect("render");
        assert_eq!(
            c.lines().nth(1),
            Some("192.0.2.2,2026-11-30T06:00:01.000Z,1,0.5,50,25,0,1048576,,1000")
        );
        let j: serde_json::Value =
            serde_json::from_str(&render(&[row()], Format::Json).expect("render")).expect("json");
        assert_eq!(j[0]["net_rx_bps"], serde_json::Value::Null);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
