//! The metric families: every name the exporter can emit, its type and help text, in the
//! order they are rendered; and the family sets of the two kinds of network interface.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One metric family: its name, type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: MetricKind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: MetricKind::Gauge,
        help,
    }
}

/// Every family the exporter can emit, in the order they are rendered. Labels besides `host`,
/// `vm` and `uuid` are named in the help text.
pub const FAMILIES: &[Family] = &[
    gauge(
        "setmov_build_info",
        "Always 1; label version is the SETMOV version exporting these metrics.",
    ),
    counter(
        "setmov_ticks_total",
        "Ticks the exporter received since it started.",
    ),
    counter(
        "setmov_ticks_stored_total",
        "Ticks the database writer stored (or spooled, for MySQL, to store when it answers).",
    ),
    counter(
        "setmov_ticks_quarantined_total",
        "Ticks the database refused for what they hold, set aside in the quarantine folder.",
    ),
    counter(
        "setmov_ticks_dropped_total",
        "Ticks dropped because the database was too far behind (the writer's memory bound).",
    ),
    counter(
        "setmov_missed_ticks_total",
        "Scheduled ticks the host sampling skipped (the next interval spans them).",
    ),
    gauge(
        "setmov_last_tick_timestamp_seconds",
        "Unix time of the newest tick: time() minus it is the age of the figures.",
    ),
    gauge(
        "setmov_tick_interval_seconds",
        "Measured interval the newest host sample closes.",
    ),
    gauge(
        "setmov_tick_late_seconds",
        "How long after its scheduled instant the newest host sample was read.",
    ),
    // The host.
    gauge(
        "setmov_host_info",
        "Always 1; labels host_ip (the host's key in the database) and mac.",
    ),
    gauge(
        "setmov_host_running_vms",
        "VMs running on the host, as libvirt lists them.",
    ),
    gauge(
        "setmov_host_cpus",
        "Active logical CPUs of the host, as libvirt reports them.",
    ),
    counter(
        "setmov_host_cpu_seconds_total",
        "CPU time of all the host's CPUs by mode (user, nice, system, idle, iowait, irq, softirq, steal), from /proc/stat.",
    ),
    counter(
        "setmov_host_cpu_guest_seconds_total",
        "CPU time the host's CPUs ran guests; already part of mode user and nice.",
    ),
    gauge(
        "setmov_host_cpu_usage_ratio",
        "Busy share of all the host's CPUs over the newest interval: user, nice, system, irq, softirq and steal (guest time is inside user and nice).",
    ),
    gauge(
        "setmov_host_cpu_iowait_ratio",
        "Share of the host's CPU time idle with I/O outstanding over the newest interval.",
    ),
    gauge(
        "setmov_host_cpu_steal_ratio",
        "Share of the host's CPU time stolen by its own hypervisor over the newest interval.",
    ),
    gauge("setmov_host_memory_total_bytes", "MemTotal of the host."),
    gauge(
        "setmov_host_memory_used_ratio",
        "(MemTotal - MemAvailable) / MemTotal: used memory as free and top (procps 4) show it.",
    ),
    gauge(
        "setmov_host_memory_nonfree_ratio",
        "(MemTotal - MemFree) / MemTotal: page cache counted as used.",
    ),
    gauge(
        "setmov_host_memory_unavailable_ratio",
        "(MemTotal - MemAvailable) / MemTotal: what the kernel could not hand out without swapping.",
    ),
    counter(
        "setmov_host_disk_read_bytes_total",
        "Bytes read from each whole disk (label device), from /proc/diskstats.",
    ),
    counter(
        "setmov_host_disk_write_bytes_total",
        "Bytes written to each whole disk (label device), from /proc/diskstats.",
    ),
    counter(
        "setmov_host_disk_reads_total",
        "Reads completed by each whole disk (label device).",
    ),
    counter(
        "setmov_host_disk_writes_total",
        "Writes completed by each whole disk (label device).",
    ),
    counter(
        "setmov_host_disk_read_time_seconds_total",
        "Time the completed reads of each whole disk took (label device); divided by reads, the mean await.",
    ),
    counter(
        "setmov_host_disk_write_time_seconds_total",
        "Time the completed writes of each whole disk took (label device); divided by writes, the mean await.",
    ),
    counter(
        "setmov_host_disk_io_time_seconds_total",
        "Time each whole disk (label device) had I/O in flight; its rate is iostat's utilization.",
    ),
    counter(
        "setmov_host_network_receive_bytes_total",
        "Bytes received by the interfaces of the host's network total (not those --net-total-exclude leaves out).",
    ),
    counter(
        "setmov_host_network_transmit_bytes_total",
        "Bytes sent by the interfaces of the host's network total.",
    ),
    counter(
        "setmov_host_network_receive_packets_total",
        "Packets received by the interfaces of the host's network total.",
    ),
    counter(
        "setmov_host_network_transmit_packets_total",
        "Packets sent by the interfaces of the host's network total.",
    ),
    counter(
        "setmov_host_interface_receive_bytes_total",
        "Bytes received by each network interface of the host (label device), from /proc/net/dev.",
    ),
    counter(
        "setmov_host_interface_transmit_bytes_total",
        "Bytes sent by each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_interface_receive_packets_total",
        "Packets received by each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_interface_transmit_packets_total",
        "Packets sent by each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_interface_receive_errors_total",
        "Receive errors of each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_interface_transmit_errors_total",
        "Transmit errors of each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_interface_receive_drops_total",
        "Received packets dropped by each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_interface_transmit_drops_total",
        "Packets to send dropped by each network interface of the host (label device).",
    ),
    counter(
        "setmov_host_block_read_bytes_total",
        "Bytes of all block reads submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_host_block_write_bytes_total",
        "Bytes of all block writes submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_host_block_reads_total",
        "Block read requests submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_host_block_writes_total",
        "Block write requests submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_host_block_unattributed_read_bytes_total",
        "Bytes of block reads no VM's qemu process submitted (host processes, writeback), seen by eBPF.",
    ),
    counter(
        "setmov_host_block_unattributed_write_bytes_total",
        "Bytes of block writes no VM's qemu process submitted (host processes, writeback), seen by eBPF.",
    ),
    counter(
        "setmov_host_block_latency_collisions_total",
        "Block requests that found both slots of their in-flight bucket held by other requests and displaced one (whose latency is then lost), seen by eBPF.",
    ),
    counter(
        "setmov_host_block_latency_overflows_total",
        "Block requests that displaced a request already issued from their in-flight bucket: that one loses its latency unless its completion had been missed, seen by eBPF.",
    ),
    counter(
        "setmov_host_block_latency_unpaired_total",
        "Block completions eBPF could pair with no request, so in no latency histogram (started before the probe, displaced, or completed in parts).",
    ),
    gauge(
        "setmov_host_block_latency_p99_seconds",
        "99th percentile of the issue-to-completion time of the requests each device completed over the newest interval (labels device, direction), seen by eBPF.",
    ),
    // Each VM.
    gauge(
        "setmov_vm_up",
        "1 when the VM was sampled at the newest tick; 0 when libvirt listed it without figures (not running, busy with a job, libvirt too slow).",
    ),
    gauge(
        "setmov_vm_state",
        "Always 1; label state is the VM's libvirt state (running, paused, shutoff, ...).",
    ),
    gauge("setmov_vm_vcpus", "vCPUs of the VM."),
    counter(
        "setmov_vm_cpu_seconds_total",
        "CPU time of the VM's qemu process (vCPUs and emulator threads).",
    ),
    gauge(
        "setmov_vm_cpu_usage_ratio",
        "CPU time of the VM over the newest interval / (interval x its vCPUs): 1 when every vCPU is busy.",
    ),
    gauge(
        "setmov_vm_cpu_host_ratio",
        "CPU time of the VM over the newest interval / (interval x host CPUs): its share of the host, virt-top's way.",
    ),
    counter(
        "setmov_vm_vcpu_seconds_total",
        "CPU time of each vCPU of the VM (label vcpu).",
    ),
    gauge(
        "setmov_vm_vcpu_usage_ratio",
        "Busy share of each vCPU of the VM over the newest interval (label vcpu).",
    ),
    counter(
        "setmov_vm_steal_seconds_total",
        "Time the VM's vCPUs waited on the host's run queue, summed over vCPUs (libvirt's vcpu delay).",
    ),
    gauge(
        "setmov_vm_steal_ratio",
        "Time the VM's vCPUs waited on the host's run queue over the newest interval / (interval x vCPUs).",
    ),
    counter(
        "setmov_vm_cpu_ready_seconds_total",
        "Run-queue wait of the VM's vCPU threads summed over vCPUs (CPU ready), seen by eBPF.",
    ),
    gauge(
        "setmov_vm_cpu_ready_ratio",
        "Run-queue wait of the VM's vCPU threads over the newest interval / (interval x vCPUs), seen by eBPF.",
    ),
    gauge(
        "setmov_vm_memory_allocated_bytes",
        "Memory the VM has now (balloon actual).",
    ),
    gauge(
        "setmov_vm_memory_max_bytes",
        "Memory the VM may have at most.",
    ),
    gauge(
        "setmov_vm_memory_used_bytes",
        "Memory the guest reports used: actual - usable, or actual - unused; absent when the guest reports nothing.",
    ),
    gauge(
        "setmov_vm_memory_used_ratio",
        "Memory the guest reports used / memory it has.",
    ),
    gauge(
        "setmov_vm_memory_rss_bytes",
        "Resident set of the VM's qemu process on the host.",
    ),
    counter(
        "setmov_vm_memory_swap_in_bytes_total",
        "Bytes the guest swapped in, as it reports them.",
    ),
    counter(
        "setmov_vm_memory_swap_out_bytes_total",
        "Bytes the guest swapped out, as it reports them.",
    ),
    counter(
        "setmov_vm_memory_major_faults_total",
        "Major page faults of the guest, as it reports them.",
    ),
    counter(
        "setmov_vm_memory_minor_faults_total",
        "Minor page faults of the guest, as it reports them.",
    ),
    counter(
        "setmov_vm_disk_read_bytes_total",
        "Bytes read by each virtual disk of the VM (label device), from libvirt.",
    ),
    counter(
        "setmov_vm_disk_write_bytes_total",
        "Bytes written by each virtual disk of the VM (label device), from libvirt.",
    ),
    counter(
        "setmov_vm_disk_reads_total",
        "Read requests of each virtual disk of the VM (label device).",
    ),
    counter(
        "setmov_vm_disk_writes_total",
        "Write requests of each virtual disk of the VM (label device).",
    ),
    counter(
        "setmov_vm_disk_read_time_seconds_total",
        "Time the read requests of each virtual disk took (label device); divided by reads, the mean latency.",
    ),
    counter(
        "setmov_vm_disk_write_time_seconds_total",
        "Time the write requests of each virtual disk took (label device); divided by writes, the mean latency.",
    ),
    counter(
        "setmov_vm_network_receive_bytes_total",
        "Bytes the guest received on each NIC (label device: the host tap), from libvirt.",
    ),
    counter(
        "setmov_vm_network_transmit_bytes_total",
        "Bytes the guest sent on each NIC (label device: the host tap), from libvirt.",
    ),
    counter(
        "setmov_vm_network_receive_packets_total",
        "Packets the guest received on each NIC (label device).",
    ),
    counter(
        "setmov_vm_network_transmit_packets_total",
        "Packets the guest sent on each NIC (label device).",
    ),
    counter(
        "setmov_vm_network_receive_errors_total",
        "Receive errors on each NIC of the guest (label device).",
    ),
    counter(
        "setmov_vm_network_transmit_errors_total",
        "Transmit errors on each NIC of the guest (label device).",
    ),
    counter(
        "setmov_vm_network_receive_drops_total",
        "Received packets dropped on each NIC of the guest (label device).",
    ),
    counter(
        "setmov_vm_network_transmit_drops_total",
        "Packets to send dropped on each NIC of the guest (label device).",
    ),
    counter(
        "setmov_vm_network_kernel_drops_total",
        "Packets of each NIC's tap the host kernel dropped (labels device, reason), seen by eBPF.",
    ),
    counter(
        "setmov_vm_block_read_bytes_total",
        "Bytes of the block reads the VM's qemu process submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_vm_block_write_bytes_total",
        "Bytes of the block writes the VM's qemu process submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_vm_block_reads_total",
        "Block read requests the VM's qemu process submitted on the host, seen by eBPF.",
    ),
    counter(
        "setmov_vm_block_writes_total",
        "Block write requests the VM's qemu process submitted on the host, seen by eBPF.",
    ),
    gauge(
        "setmov_vm_block_latency_p99_seconds",
        "99th percentile of the issue-to-completion time of the VM's block requests completed over the newest interval (label direction), seen by eBPF.",
    ),
    counter(
        "setmov_vm_kvm_events_total",
        "KVM events of the VM's qemu process (labels event: the tracepoint, reason: the kernel's name), seen by eBPF.",
    ),
];

/// The counter families of one kind of network interface.
pub(super) struct InterfaceFamilies {
    pub(super) receive_bytes: &'static str,
    pub(super) transmit_bytes: &'static str,
    pub(super) receive_packets: &'static str,
    pub(super) transmit_packets: &'static str,
    pub(super) receive_errors: &'static str,
    pub(super) transmit_errors: &'static str,
    pub(super) receive_drops: &'static str,
    pub(super) transmit_drops: &'static str,
}

pub(super) const HOST_INTERFACE: InterfaceFamilies = InterfaceFamilies {
    receive_bytes: "setmov_host_interface_receive_bytes_total",
    transmit_bytes: "setmov_host_interface_transmit_bytes_total",
    receive_packets: "setmov_host_interface_receive_packets_total",
    transmit_packets: "setmov_host_interface_transmit_packets_total",
    receive_errors: "setmov_host_interface_receive_errors_total",
    transmit_errors: "setmov_host_interface_transmit_errors_total",
    receive_drops: "setmov_host_interface_receive_drops_total",
    transmit_drops: "setmov_host_interface_transmit_drops_total",
};

pub(super) const VM_NIC: InterfaceFamilies = InterfaceFamilies {
    receive_bytes: "setmov_vm_network_receive_bytes_total",
    transmit_bytes: "setmov_vm_network_transmit_bytes_total",
    receive_packets: "setmov_vm_network_receive_packets_total",
    transmit_packets: "setmov_vm_network_transmit_packets_total",
    receive_errors: "setmov_vm_network_receive_errors_total",
    transmit_errors: "setmov_vm_network_transmit_errors_total",
    receive_drops: "setmov_vm_network_receive_drops_total",
    transmit_drops: "setmov_vm_network_transmit_drops_total",
};

/// The family named `name`, if the exporter has one.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::prometheus::PrometheusExporter;
    use crate::export::prometheus::fixtures::{full_tick, value};

    #[test]
    fn a_full_tick_emits_every_family_with_its_type_and_help() {
        let counts = std::sync::Arc::new(crate::sampler::WriterCounts::default());
        let mut e = PrometheusExporter::counting_writes(counts);
        e.observe(&full_tick(1));
        e.observe(&full_tick(2));
        let text = e.render();
        let mut seen = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                seen.push(rest.split(' ').next().expect("a name").to_owned());
            }
        }
        let all: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(seen, all, "every family, once, in order");
        for f in FAMILIES {
            assert!(f.name.starts_with("setmov_"));
            assert_eq!(
                f.kind == MetricKind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert!(text.contains(&format!("# HELP {} ", f.name)));
        }
        // Partitions are left out; CPU seconds are summed over CPUs (2 × 30 % × 2 s, twice).
        assert!(!text.contains("sda1"));
        let user = value(
            &text,
            r#"setmov_host_cpu_seconds_total{host="hv-1",mode="user"}"#,
        )
        .expect("user");
        assert!((user - 2.4).abs() < 1e-12, "{user}");
        let vm = r#"host="hv-1",vm="desk-1",uuid="u-1""#;
        assert_eq!(
            value(
                &text,
                &format!(r#"setmov_vm_kvm_events_total{{{vm},event="kvm_exit",reason="HLT"}}"#)
            ),
            Some(60.0)
        );
        assert_eq!(
            value(
                &text,
                &format!(r#"setmov_vm_block_latency_p99_seconds{{{vm},direction="write"}}"#)
            ),
            Some(0.001)
        );
        // The block probe's pairing counts of both ticks (3 × seq collisions, seq unpaired).
        for (name, count) in [("collisions", 9.0), ("overflows", 0.0), ("unpaired", 3.0)] {
            assert_eq!(
                value(
                    &text,
                    &format!(r#"setmov_host_block_latency_{name}_total{{host="hv-1"}}"#)
                ),
                Some(count),
                "{name}"
            );
        }
        // 3 % of 1 vCPU over 2 s, twice.
        let ready =
            value(&text, &format!("setmov_vm_cpu_ready_seconds_total{{{vm}}}")).expect("ready");
        assert!((ready - 0.12).abs() < 1e-12, "{ready}");
    }

    /// Every `setmov_*` name in `expr`.
    fn metric_names(expr: &str) -> Vec<&str> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("setmov_") {
            // Only at the start of an identifier.
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
            if !before.is_some_and(is_name) {
                names.push(&tail[..end]);
            }
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../contrib/grafana/setmov-dashboard.json"
        ))
        .expect("the dashboard is JSON");
        let mut e = PrometheusExporter::new();
        e.observe(&full_tick(1));
        e.observe(&full_tick(2));
        let text = e.render();
        let emitted = |name: &str| text.contains(&format!("# TYPE {name} "));

        let mut exprs: Vec<String> = Vec::new();
        let panels = dashboard["panels"].as_array().expect("panels");
        for panel in panels.iter().filter(|p| p["type"] != "row") {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
            assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}");
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}");
                exprs.push(target["expr"].as_str().expect("expr").to_owned());
            }
        }
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("variables");
        let names: Vec<&str> = variables
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for wanted in ["DS_PROMETHEUS", "host", "vm"] {
            assert!(names.contains(&wanted), "no variable {wanted}");
        }
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            exprs.push(
                variable["query"]["query"]
                    .as_str()
                    .expect("query")
                    .to_owned(),
            );
        }
        let mut used = 0;
        for expr in &exprs {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} uses no SETMOV metric");
            for name in names {
                assert!(emitted(name), "{name} in {expr} is not exported");
                used += 1;
            }
        }
        assert!(used > 30, "{used}");
        assert_eq!(
            metric_names("rate(setmov_a_total[1m]) / xsetmov_b + setmov_c{x=\"1\"}"),
            ["setmov_a_total", "setmov_c"]
        );
    }
}
