//! `setmov run --stream`: one record per VM per tick on stdout, for piping into other tools
//! (virt-top's `--stream`/`--csv`). CSV starts with a header line; JSON is one object per line.
//! A figure that could not be measured is an empty CSV field or a JSON `null`, never 0.

use std::io::Write;

use serde::Serialize;

use crate::show::{csv_header, csv_row};
use crate::store::rows::vm_state;
use crate::store::{TickRecord, VmSample, format_time};
use setmov_common::{DIR_READ, DIR_WRITE};

/// How the records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamFormat {
    Csv,
    Json,
}

/// One VM at one tick, flat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRecord<'a> {
    pub time: String,
    pub host: &'a str,
    pub host_ip: &'a str,
    pub vm: &'a str,
    pub uuid: &'a str,
    pub state: &'static str,
    /// Why this tick has no figures for the VM; `None` when it was sampled.
    pub missing: Option<&'a str>,
    pub interval_s: Option<f64>,
    pub vcpus: Option<u32>,
    /// virt-top's %CPU: of the whole host.
    pub cpu_pct: Option<f64>,
    /// Of its own vCPUs (100 = every vCPU busy).
    pub cpu_vcpu_pct: Option<f64>,
    pub steal_pct: Option<f64>,
    pub cpu_ready_pct: Option<f64>,
    pub mem_alloc_bytes: Option<u64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_used_pct: Option<f64>,
    /// Where the memory figure comes from (`allocation-only`: the guest reports nothing).
    pub mem_source: Option<&'static str>,
    pub rss_bytes: Option<u64>,
    pub disk_read_bytes_s: Option<f64>,
    pub disk_write_bytes_s: Option<f64>,
    pub disk_read_iops: Option<f64>,
    pub disk_write_iops: Option<f64>,
    pub io_read_p99_us: Option<f64>,
    pub io_write_p99_us: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
    pub net_rx_pps: Option<f64>,
    pub net_tx_pps: Option<f64>,
    pub kvm_events_s: Option<f64>,
}

impl<'a> VmRecord<'a> {
    pub fn new(tick: &'a TickRecord, vm: &'a VmSample) -> VmRecord<'a> {
        let usage = vm.usage.as_ref();
        let mem = usage.map(|u| &u.mem);
        let disk = usage.and_then(|u| u.disk_total.as_ref());
        let net = usage.and_then(|u| u.net_total.as_ref());
        let ebpf = vm.ebpf.as_ref();
        let p99 = |direction| {
            ebpf.and_then(|e| e.latency.iter().find(|l| l.direction == direction))
                .map(|l| l.summary.p99_us)
        };
        VmRecord {
            time: format_time(tick.time),
            host: &tick.host.name,
            host_ip: &tick.host.ip,
            vm: &vm.name,
            uuid: &vm.uuid,
            state: vm_state(vm),
            missing: vm.missing.as_deref(),
            interval_s: vm.interval_secs,
            vcpus: usage.and_then(|u| u.vcpus),
            cpu_pct: usage.and_then(|u| u.cpu_host_pct),
            cpu_vcpu_pct: usage.and_then(|u| u.cpu_vcpu_pct),
            steal_pct: usage.and_then(|u| u.steal_pct),
            cpu_ready_pct: ebpf.and_then(|e| e.cpu_ready.as_ref()).map(|r| r.pct),
            mem_alloc_bytes: mem.and_then(|m| m.allocated_bytes),
            mem_used_bytes: mem.and_then(|m| m.used_bytes),
            mem_used_pct: mem.and_then(|m| m.used_pct),
            mem_source: mem.map(|m| m.source.name()),
            rss_bytes: mem.and_then(|m| m.rss_bytes),
            disk_read_bytes_s: disk.map(|d| d.read_bytes_per_sec),
            disk_write_bytes_s: disk.map(|d| d.write_bytes_per_sec),
            disk_read_iops: disk.map(|d| d.read_iops),
            disk_write_iops: disk.map(|d| d.write_iops),
            io_read_p99_us: p99(DIR_READ),
            io_write_p99_us: p99(DIR_WRITE),
            net_rx_bps: net.map(|n| n.rx.bps),
            net_tx_bps: net.map(|n| n.tx.bps),
            net_rx_pps: net.map(|n| n.rx.pps),
            net_tx_pps: net.map(|n| n.tx.pps),
            kvm_events_s: ebpf.and_then(|e| e.kvm_events_per_sec()),
        }
    }
}

/// The lines of one tick: a record per VM that has a usage row (sampled, or missing with the
/// reason), and the CSV header first of all, even when the first tick has no VM.
pub fn tick_lines(
    tick: &TickRecord,
    format: StreamFormat,
    header_written: &mut bool,
) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    if format == StreamFormat::Csv && !*header_written {
        let nobody = VmSample::without_figures("", "", None, None);
        out.push_str(&csv_header(&VmRecord::new(tick, &nobody))?);
        *header_written = true;
    }
    for vm in tick.vms.iter().filter(|vm| vm.has_usage_row()) {
        let record = VmRecord::new(tick, vm);
        match format {
            StreamFormat::Csv => out.push_str(&csv_row(&record)?),
            StreamFormat::Json => {
                out.push_str(&serde_json::to_string(&record)?);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Writes every tick received to `out` until the sender closes or `out` does (a reader such
/// as `head` went away: `Err`). Each tick is flushed at once, for live piping.
pub fn write_stream(
    mut ticks: tokio::sync::mpsc::Receiver<std::sync::Arc<TickRecord>>,
    format: StreamFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut header_written = false;
    while let Some(tick) = ticks.blocking_recv() {
        let lines =
            tick_lines(&tick, format, &mut header_written).map_err(std::io::Error::other)?;
        out.write_all(lines.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::identity::HostIdentity;
    use crate::usage::vm::{VmMemUsage, VmUsage};
    use crate::vm::stats::DomainState;

    fn tick() -> TickRecord {
        let sampled = VmSample {
            state: Some(DomainState::Running),
            interval_secs: Some(1.0),
            usage: Some(VmUsage {
                cpu_host_pct: Some(25.0),
                cpu_vcpu_pct: Some(50.0),
                vcpus: Some(1),
                mem: VmMemUsage {
                    allocated_bytes: Some(1 << 30),
                    ..VmMemUsage::default()
                },
                ..VmUsage::default()
            }),
            ..VmSample::without_figures("u-1", "desk,1", Some(DomainState::Running), None)
        };
        TickRecord {
            seq: 1,
            time: time::macros::datetime!(2026-11-30 10:00:00 UTC),
            host: HostIdentity {
                name: "hv1".into(),
                ip: "192.0.2.2".into(),
                mac: None,
                interface: None,
            },
            vm_count: Some(1),
            node: None,
            host_sample: None,
            vms: vec![
                sampled,
                VmSample::without_figures("u-2", "desk-2", None, Some("libvirt did not answer")),
                // Shut off: no usage row, so no record.
                VmSample::without_figures("u-3", "desk-3", Some(DomainState::Shutoff), None),
            ],
            ebpf: None,
        }
    }

    #[test]
    fn csv_has_one_header_then_a_line_per_vm_and_empty_unknowns() {
        let mut header = false;
        let first = tick_lines(&tick(), StreamFormat::Csv, &mut header).expect("csv");
        let second = tick_lines(&tick(), StreamFormat::Csv, &mut header).expect("csv");
        let lines: Vec<&str> = first.lines().collect();
        assert_eq!(lines.len(), 3, "{first}");
        assert!(lines[0].starts_with("time,host,host_ip,vm,uuid,state,missing,interval_s,"));
        assert!(
            lines[1].starts_with(
                "2026-11-30T10:00:00.000Z,hv1,192.0.2.2,\"desk,1\",u-1,running,,1.0,1,25.0,50.0,,,\
                 1073741824,,,allocation-only,"
            ),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(",u-2,unknown,libvirt did not answer,,"),
            "{}",
            lines[2]
        );
        assert_eq!(second.lines().count(), 2, "the header comes once");
        let nobody = TickRecord {
            vms: Vec::new(),
            ..tick()
        };
        let mut header = false;
        let first = tick_lines(&nobody, StreamFormat::Csv, &mut header).expect("csv");
        assert_eq!(
            first,
            lines[0].to_owned() + "\n",
            "a header even without VMs"
        );
    }

    #[test]
    fn json_is_one_object_per_line_with_nulls() {
        let mut header = false;
        let out = tick_lines(&tick(), StreamFormat::Json, &mut header).expect("json");
        let records: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("one object per line"))
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["cpu_vcpu_pct"], 50.0);
        assert_eq!(records[0]["disk_read_bytes_s"], serde_json::Value::Null);
        assert_eq!(records[1]["missing"], "libvirt did not answer");
    }

    #[test]
    fn control_characters_in_names_are_escaped_in_csv_and_json() {
        let mut tick = tick();
        tick.vms.truncate(1);
        if let Some(vm) = tick.vms.first_mut() {
            vm.name = "evil\n\x1b[2J\tvm".into();
        }
        let mut header = false;
        let csv = tick_lines(&tick, StreamFormat::Csv, &mut header).expect("csv");
        assert_eq!(csv.lines().count(), 2, "{csv:?}");
        assert!(csv.contains(",evil\\n\\x1b[2J\\tvm,u-1,"), "{csv:?}");
        let json = tick_lines(&tick, StreamFormat::Json, &mut header).expect("json");
        assert_eq!(json.lines().count(), 1, "{json:?}");
        assert!(!json.contains('\x1b'), "serde escapes it: {json:?}");
        let record: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(record["vm"], "evil\n\x1b[2J\tvm");
    }
}
