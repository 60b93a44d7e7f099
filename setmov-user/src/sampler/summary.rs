//! The one-line-per-tick summary printed by `setmov run`.

use std::fmt::Write;
use std::time::Duration;

use super::assemble::AssembledTick;
use crate::host::identity::HostIdentity;
use crate::store::format_time;

/// Bytes with a binary unit, e.g. `1.5 MiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or_default();
    if unit == 0 {
        format!("{value:.0} {name}")
    } else {
        format!("{value:.1} {name}")
    }
}

/// Bits per second with a decimal unit, as network people read them, e.g. `12.0 Mbit/s`.
pub fn human_bits(bps: f64) -> String {
    const UNITS: [&str; 4] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
    let mut value = bps;
    let mut unit = 0;
    while value.abs() >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!(
        "{value:.1} {}",
        UNITS.get(unit).copied().unwrap_or_default()
    )
}

/// A tick is flagged late when it was read half an interval or more after its scheduled
/// instant, or when ticks were missed before it.
pub fn is_late(late_ms: f64, missed_ticks: u64, interval: Duration) -> bool {
    missed_ticks > 0 || late_ms >= interval.as_secs_f64() * 500.0
}

pub fn summary_line(host: &HostIdentity, tick: &AssembledTick, interval: Duration) -> String {
    let mut line = format!("{} {}", format_time(tick.time), host.ip);
    let na = "n/a";
    match &tick.host {
        None => line.push_str(" host sample missing"),
        Some(s) => {
            let u = &s.usage;
            match &u.cpu {
                Some(c) => {
                    let _ = write!(line, " cpu {:5.1}%", c.busy_pct);
                }
                None => {
                    let _ = write!(line, " cpu {na}");
                }
            }
            match &u.mem {
                Some(m) => {
                    let _ = write!(line, " mem {:5.1}%", m.used_pct);
                }
                None => {
                    let _ = write!(line, " mem {na}");
                }
            }
            match &u.disk_total {
                Some(d) => {
                    let _ = write!(
                        line,
                        " disk r {}/s w {}/s {:.0} IOPS",
                        human_bytes(d.read_bytes_per_sec),
                        human_bytes(d.write_bytes_per_sec),
                        d.read_iops + d.write_iops
                    );
                }
                None => {
                    let _ = write!(line, " disk {na}");
                }
            }
            match &u.net_total {
                Some(n) => {
                    let _ = write!(
                        line,
                        " net rx {} tx {}",
                        human_bits(n.rx.bps),
                        human_bits(n.tx.bps)
                    );
                }
                None => {
                    let _ = write!(line, " net {na}");
                }
            }
            if is_late(s.late_ms, s.missed_ticks, interval) {
                let _ = write!(line, " LATE +{:.0}ms missed {}", s.late_ms, s.missed_ticks);
            }
            if !s.problems.is_empty() {
                let _ = write!(line, " ({} read problems)", s.problems.len());
            }
        }
    }
    if let Some(vms) = &tick.vms {
        match vms.vm_count {
            Some(n) => {
                let _ = write!(line, " | vms {n}");
            }
            None => {
                let _ = write!(line, " | vms {na}");
            }
        }
        let busiest = vms
            .samples
            .iter()
            .filter_map(|s| Some((s, s.usage.as_ref()?.cpu_vcpu_pct?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((vm, pct)) = busiest {
            let name = crate::escape::escape_control(&vm.name);
            let _ = write!(line, " busiest {name} {pct:.1}%/vCPU");
        }
        let missing = vms.samples.iter().filter(|s| s.missing.is_some()).count();
        if missing > 0 {
            let _ = write!(line, " ({missing} missing)");
        }
    }
    if tick.ebpf_reported {
        match &tick.ebpf {
            Some(interval) => {
                let io = &interval.block_total;
                let _ = write!(
                    line,
                    " | ebpf block r {} ({} ops) w {} ({} ops)",
                    human_bytes(io.read_bytes as f64),
                    io.read_ops,
                    human_bytes(io.write_bytes as f64),
                    io.write_ops
                );
            }
            None => line.push_str(" | ebpf unreadable"),
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::BlockTotals;
    use crate::sampler::assemble::VmReport;
    use crate::usage::ebpf::EbpfInterval;

    #[test]
    fn units_read_naturally() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(human_bits(12_000_000.0), "12.0 Mbit/s");
    }

    #[test]
    fn late_ticks_and_ebpf_figures_show() {
        let host = HostIdentity {
            name: "hv1".into(),
            ip: "192.0.2.2".into(),
            mac: None,
            interface: None,
        };
        let mut sample = crate::sampler::tests::host_sample();
        sample.late_ms = 700.0;
        let tick = AssembledTick {
            seq: 3,
            time: time::OffsetDateTime::UNIX_EPOCH,
            host: Some(sample),
            vms: Some(VmReport {
                vm_count: Some(2),
                node: None,
                samples: Vec::new(),
            }),
            ebpf: Some(Box::new(EbpfInterval {
                block_total: BlockTotals {
                    read_ops: 0,
                    read_bytes: 0,
                    write_ops: 2,
                    write_bytes: 8192,
                },
                interval_secs: 1.0,
                ..EbpfInterval::default()
            })),
            ebpf_reported: true,
        };
        let line = summary_line(&host, &tick, Duration::from_secs(1));
        assert!(
            line.starts_with("1970-01-01T00:00:00.000Z 192.0.2.2 cpu n/a"),
            "{line}"
        );
        assert!(line.contains("LATE +700ms"), "{line}");
        assert!(
            line.ends_with("| ebpf block r 0 B (0 ops) w 8.0 KiB (2 ops)"),
            "{line}"
        );
    }
}
