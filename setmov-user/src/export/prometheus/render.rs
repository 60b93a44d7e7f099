//! The text exposition (format 0.0.4): `# HELP` and `# TYPE` of each family with series, then
//! one line per series, its labels escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::families::{FAMILIES, MetricKind};
use super::{Labels, Owner, PrometheusExporter, Series};

impl PrometheusExporter {
    /// The text exposition (format 0.0.4) of everything observed so far.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let build_info: Series = BTreeMap::from([(
            (
                Owner::Exporter,
                vec![("version", env!("CARGO_PKG_VERSION").to_owned())],
            ),
            1.0,
        )]);
        for family in FAMILIES {
            let series = if family.name == "setmov_build_info" {
                Some(&build_info)
            } else {
                match family.kind {
                    MetricKind::Counter => self.counters.get(family.name),
                    MetricKind::Gauge => self.gauges.get(family.name),
                }
            };
            let Some(series) = series.filter(|s| !s.is_empty()) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.name());
            for ((owner, labels), value) in series {
                if !value.is_finite() {
                    continue;
                }
                out.push_str(family.name);
                self.write_labels(&mut out, owner, labels);
                // `+ 0.0` turns -0 into 0; Display never uses an exponent, which the format
                // accepts either way.
                let _ = writeln!(out, " {}", value + 0.0);
            }
        }
        out
    }

    fn write_labels(&self, out: &mut String, owner: &Owner, labels: &Labels) {
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(labels.len() + 3);
        if *owner != Owner::Exporter
            && let Some(host) = &self.host
        {
            all.push(("host", host));
        }
        if let Owner::Vm(uuid) = owner {
            let name = self
                .vm_names
                .get(uuid)
                .map_or(uuid.as_str(), String::as_str);
            all.push(("vm", name));
            all.push(("uuid", uuid));
        }
        all.extend(labels.iter().map(|(k, v)| (*k, v.as_str())));
        if all.is_empty() {
            return;
        }
        out.push('{');
        for (i, (key, value)) in all.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text as the text format wants it: `\` and line feeds escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::prometheus::fixtures::{full_tick, host_sample, mem, tick, vm, vm_usage};
    use crate::usage::host::HostUsage;

    const VERSION: &str = env!("CARGO_PKG_VERSION");

    #[test]
    fn a_small_tick_renders_exactly() {
        let mut e = PrometheusExporter::new();
        let host = host_sample(HostUsage {
            mem: Some(mem(25.0)),
            ..HostUsage::default()
        });
        e.observe(&tick(
            1,
            Some(host),
            vec![vm("0b9e-1", "desk-1", Some(vm_usage(50.0)))],
        ));
        let expected = format!(
            r#"# HELP setmov_build_info Always 1; label version is the SETMOV version exporting these metrics.
# TYPE setmov_build_info gauge
setmov_build_info{{version="{VERSION}"}} 1
# HELP setmov_ticks_total Ticks the exporter received since it started.
# TYPE setmov_ticks_total counter
setmov_ticks_total{{host="hv-1"}} 1
# HELP setmov_missed_ticks_total Scheduled ticks the host sampling skipped (the next interval spans them).
# TYPE setmov_missed_ticks_total counter
setmov_missed_ticks_total{{host="hv-1"}} 0
# HELP setmov_last_tick_timestamp_seconds Unix time of the newest tick: time() minus it is the age of the figures.
# TYPE setmov_last_tick_timestamp_seconds gauge
setmov_last_tick_timestamp_seconds{{host="hv-1"}} 1796021123
# HELP setmov_tick_interval_seconds Measured interval the newest host sample closes.
# TYPE setmov_tick_interval_seconds gauge
setmov_tick_interval_seconds{{host="hv-1"}} 2
# HELP setmov_tick_late_seconds How long after its scheduled instant the newest host sample was read.
# TYPE setmov_tick_late_seconds gauge
setmov_tick_late_seconds{{host="hv-1"}} 0
# HELP setmov_host_info Always 1; labels host_ip (the host's key in the database) and mac.
# TYPE setmov_host_info gauge
setmov_host_info{{host="hv-1",host_ip="192.0.2.2"}} 1
# HELP setmov_host_running_vms VMs running on the host, as libvirt lists them.
# TYPE setmov_host_running_vms gauge
setmov_host_running_vms{{host="hv-1"}} 1
# HELP setmov_host_memory_total_bytes MemTotal of the host.
# TYPE setmov_host_memory_total_bytes gauge
setmov_host_memory_total_bytes{{host="hv-1"}} 8589934592
# HELP setmov_host_memory_used_ratio (MemTotal - MemAvailable) / MemTotal: used memory as free and top (procps 4) show it.
# TYPE setmov_host_memory_used_ratio gauge
setmov_host_memory_used_ratio{{host="hv-1"}} 0.25
# HELP setmov_host_memory_nonfree_ratio (MemTotal - MemFree) / MemTotal: page cache counted as used.
# TYPE setmov_host_memory_nonfree_ratio gauge
setmov_host_memory_nonfree_ratio{{host="hv-1"}} 0.5
# HELP setmov_vm_up 1 when the VM was sampled at the newest tick; 0 when libvirt listed it without figures (not running, busy with a job, libvirt too slow).
# TYPE setmov_vm_up gauge
setmov_vm_up{{host="hv-1",vm="desk-1",uuid="0b9e-1"}} 1
# HELP setmov_vm_state Always 1; label state is the VM's libvirt state (running, paused, shutoff, ...).
# TYPE setmov_vm_state gauge
setmov_vm_state{{host="hv-1",vm="desk-1",uuid="0b9e-1",state="running"}} 1
# HELP setmov_vm_vcpus vCPUs of the VM.
# TYPE setmov_vm_vcpus gauge
setmov_vm_vcpus{{host="hv-1",vm="desk-1",uuid="0b9e-1"}} 1
# HELP setmov_vm_cpu_seconds_total CPU time of the VM's qemu process (vCPUs and emulator threads).
# TYPE setmov_vm_cpu_seconds_total counter
setmov_vm_cpu_seconds_total{{host="hv-1",vm="desk-1",uuid="0b9e-1"}} 1
# HELP setmov_vm_cpu_usage_ratio CPU time of the VM over the newest interval / (interval x its vCPUs): 1 when every vCPU is busy.
# TYPE setmov_vm_cpu_usage_ratio gauge
setmov_vm_cpu_usage_ratio{{host="hv-1",vm="desk-1",uuid="0b9e-1"}} 0.5
# HELP setmov_vm_cpu_host_ratio CPU time of the VM over the newest interval / (interval x host CPUs): its share of the host, virt-top's way.
# TYPE setmov_vm_cpu_host_ratio gauge
setmov_vm_cpu_host_ratio{{host="hv-1",vm="desk-1",uuid="0b9e-1"}} 0.25
"#
        );
        assert_eq!(e.render(), expected);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = PrometheusExporter::new();
        let mut t = tick(
            1,
            None,
            vec![vm("u-1", "a\\b \"c\"\nd", Some(vm_usage(10.0)))],
        );
        t.host.name = "hv\"2".into();
        e.observe(&t);
        let text = e.render();
        assert!(
            text.contains(r#"setmov_vm_up{host="hv\"2",vm="a\\b \"c\"\nd",uuid="u-1"} 1"#),
            "{text}"
        );
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
        // One line per sample: the line feed in the name did not split it.
        assert!(
            text.lines()
                .all(|l| l.starts_with("setmov_") || l.starts_with("# "))
        );
    }

    #[test]
    fn promtool_finds_no_problem_in_a_full_exposition() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let mut e = PrometheusExporter::new();
        e.observe(&full_tick(1));
        e.observe(&full_tick(2));
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            // The live test in tests/prometheus_live.rs checks a real exposition with it too.
            assert!(
                !std::env::var("SETMOV_REQUIRE_ALL").is_ok_and(|v| v == "1"),
                "SETMOV_REQUIRE_ALL=1 but promtool is missing (cargo xtask setup unpacks it)"
            );
            eprintln!("SKIPPED: promtool is missing (cargo xtask setup unpacks it)");
            return;
        };
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(e.render().as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.trim().is_empty(), "{said}");
    }
}
