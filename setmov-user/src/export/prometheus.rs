//! Prometheus text exposition (format 0.0.4) of the sampled ticks, served on `/metrics`.
//!
//! [`PrometheusExporter`] is pure: [`PrometheusExporter::observe`] takes each tick,
//! [`PrometheusExporter::render`] writes the exposition. [`MetricsServer`] serves it over HTTP
//! (axum) and feeds it the ticks the sampler hands to its subscribers.
//!
//! Conventions:
//! - Every name starts with `setmov_`; units are base units (bytes, seconds) and shares are
//!   ratios from 0 to 1 (`_ratio`), never percentages.
//! - Every series carries `host` (the host's name); a VM's also carry `vm` (its name) and `uuid`.
//!   The host's address is in `setmov_host_info`, not on every series.
//! - Counters (`_total`) are accumulated here as Σ rate × interval of each tick (Σ count where
//!   the tick gives a count): they start when the exporter starts, never go back, and an
//!   interval without a rate (a reset, the first sight of a VM) adds nothing.
//! - Gauges are the newest tick's figures only. A VM that a tick lists without figures, or
//!   does not list, keeps its counters but has no gauges (but `setmov_vm_up`) until it is
//!   sampled again; a figure the tick does not have is absent, never 0. A VM libvirt no longer
//!   lists ("gone") is removed altogether.
//! - Host disks are whole disks only (partitions would count their bytes again). The host's
//!   network totals (`setmov_host_network_*`) are those stored: the interfaces not left out by
//!   `--net-total-exclude`; every interface is in `setmov_host_interface_*`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio::sync::mpsc;

use crate::store::{HostSample, TickRecord, VmSample};
use crate::usage::ebpf::{HostEbpfFigures, VmEbpfFigures, direction_name};
use crate::usage::host::NetRates;

/// Where `--prometheus` without an address serves: loopback only.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9739";

/// The media type of the text exposition format 0.0.4.
pub const CONTENT_TYPE_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    fn name(self) -> &'static str {
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
        "Busy share of all the host's CPUs over the newest interval, top's way: all but idle and iowait.",
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
        "(MemTotal - MemFree - Buffers - Cached) / MemTotal: top's used memory.",
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

/// The family named `name`, if the exporter has one.
/// The counter families of one kind of network interface.
struct InterfaceFamilies {
    receive_bytes: &'static str,
    transmit_bytes: &'static str,
    receive_packets: &'static str,
    transmit_packets: &'static str,
    receive_errors: &'static str,
    transmit_errors: &'static str,
    receive_drops: &'static str,
    transmit_drops: &'static str,
}

const HOST_INTERFACE: InterfaceFamilies = InterfaceFamilies {
    receive_bytes: "setmov_host_interface_receive_bytes_total",
    transmit_bytes: "setmov_host_interface_transmit_bytes_total",
    receive_packets: "setmov_host_interface_receive_packets_total",
    transmit_packets: "setmov_host_interface_transmit_packets_total",
    receive_errors: "setmov_host_interface_receive_errors_total",
    transmit_errors: "setmov_host_interface_transmit_errors_total",
    receive_drops: "setmov_host_interface_receive_drops_total",
    transmit_drops: "setmov_host_interface_transmit_drops_total",
};

const VM_NIC: InterfaceFamilies = InterfaceFamilies {
    receive_bytes: "setmov_vm_network_receive_bytes_total",
    transmit_bytes: "setmov_vm_network_transmit_bytes_total",
    receive_packets: "setmov_vm_network_receive_packets_total",
    transmit_packets: "setmov_vm_network_transmit_packets_total",
    receive_errors: "setmov_vm_network_receive_errors_total",
    transmit_errors: "setmov_vm_network_transmit_errors_total",
    receive_drops: "setmov_vm_network_receive_drops_total",
    transmit_drops: "setmov_vm_network_transmit_drops_total",
};

pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// Whose series: the exporter's own, the host's, or a VM's (by UUID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Exporter,
    Host,
    Vm(String),
}

type Labels = Vec<(&'static str, String)>;
type Series = BTreeMap<(Owner, Labels), f64>;

/// The modes of `setmov_host_cpu_seconds_total`.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Turns ticks into the Prometheus text exposition; see the module's conventions.
#[derive(Debug, Default)]
pub struct PrometheusExporter {
    /// The newest tick's host name.
    host: Option<String>,
    /// The newest name of each VM with series.
    vm_names: HashMap<String, String>,
    counters: BTreeMap<&'static str, Series>,
    gauges: BTreeMap<&'static str, Series>,
}

impl PrometheusExporter {
    pub fn new() -> PrometheusExporter {
        PrometheusExporter::default()
    }

    /// Takes one tick: adds its intervals to the counters and makes its figures the gauges.
    pub fn observe(&mut self, tick: &TickRecord) {
        self.gauges.clear();
        self.host = Some(tick.host.name.clone());
        let host = Owner::Host;
        self.add("setmov_ticks_total", &host, vec![], 1.0);
        self.set(
            "setmov_last_tick_timestamp_seconds",
            &host,
            vec![],
            tick.time.unix_timestamp_nanos() as f64 / 1e9,
        );
        let mut info = vec![("host_ip", tick.host.ip.clone())];
        if let Some(mac) = &tick.host.mac {
            info.push(("mac", mac.clone()));
        }
        self.set("setmov_host_info", &host, info, 1.0);
        if let Some(count) = tick.vm_count {
            self.set("setmov_host_running_vms", &host, vec![], f64::from(count));
        }
        if let Some(node) = &tick.node {
            self.set("setmov_host_cpus", &host, vec![], f64::from(node.cpus));
        }
        if let Some(sample) = &tick.host_sample {
            self.observe_host(sample);
        }
        if let Some(ebpf) = &tick.ebpf {
            self.observe_host_ebpf(ebpf);
        }
        let host_cpus = tick.node.map(|n| n.cpus);
        for vm in &tick.vms {
            if vm.gone {
                self.forget_vm(&vm.uuid);
            } else {
                self.observe_vm(vm, host_cpus);
            }
        }
    }

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

    fn set(&mut self, name: &'static str, owner: &Owner, labels: Labels, value: f64) {
        debug_assert!(
            family(name).is_some_and(|f| f.kind == MetricKind::Gauge),
            "{name} is not a gauge family"
        );
        if value.is_finite() {
            self.gauges
                .entry(name)
                .or_default()
                .insert((owner.clone(), labels), value);
        }
    }

    /// Adds `increment` to a counter; a negative or non-finite increment is ignored (counters
    /// never go back).
    fn add(&mut self, name: &'static str, owner: &Owner, labels: Labels, increment: f64) {
        debug_assert!(
            family(name).is_some_and(|f| f.kind == MetricKind::Counter),
            "{name} is not a counter family"
        );
        if increment.is_finite() && increment >= 0.0 {
            *self
                .counters
                .entry(name)
                .or_default()
                .entry((owner.clone(), labels))
                .or_insert(0.0) += increment;
        }
    }

    /// Adds `rate × dt` when both are known.
    fn add_rate(
        &mut self,
        name: &'static str,
        owner: &Owner,
        labels: Labels,
        rate: Option<f64>,
        dt: Option<f64>,
    ) {
        if let (Some(rate), Some(dt)) = (rate, dt) {
            self.add(name, owner, labels, rate * dt);
        }
    }

    /// One network interface's counters (a host interface or a VM's NIC).
    fn observe_interface(
        &mut self,
        families: &InterfaceFamilies,
        owner: &Owner,
        net: &NetRates,
        dt: Option<f64>,
    ) {
        let device = || vec![("device", net.name.clone())];
        let rates = [
            (families.receive_bytes, net.rx.bytes_per_sec),
            (families.transmit_bytes, net.tx.bytes_per_sec),
            (families.receive_packets, net.rx.pps),
            (families.transmit_packets, net.tx.pps),
        ];
        for (name, rate) in rates {
            self.add_rate(name, owner, device(), Some(rate), dt);
        }
        let counts = [
            (families.receive_errors, net.rx_errs),
            (families.transmit_errors, net.tx_errs),
            (families.receive_drops, net.rx_drop),
            (families.transmit_drops, net.tx_drop),
        ];
        for (name, count) in counts {
            self.add(name, owner, device(), count as f64);
        }
    }

    fn observe_host(&mut self, sample: &HostSample) {
        let host = Owner::Host;
        let dt = crate::usage::positive_seconds(sample.interval_secs);
        self.add(
            "setmov_missed_ticks_total",
            &host,
            vec![],
            sample.missed_ticks as f64,
        );
        self.set(
            "setmov_tick_interval_seconds",
            &host,
            vec![],
            sample.interval_secs,
        );
        self.set(
            "setmov_tick_late_seconds",
            &host,
            vec![],
            sample.late_ms / 1e3,
        );
        let usage = &sample.usage;
        if let Some(cpu) = &usage.cpu {
            self.set(
                "setmov_host_cpu_usage_ratio",
                &host,
                vec![],
                cpu.busy_pct / 100.0,
            );
            self.set(
                "setmov_host_cpu_iowait_ratio",
                &host,
                vec![],
                cpu.iowait_pct / 100.0,
            );
            self.set(
                "setmov_host_cpu_steal_ratio",
                &host,
                vec![],
                cpu.steal_pct / 100.0,
            );
        }
        // CPU seconds from each CPU's shares: each CPU line covers the interval once.
        if let Some(dt) = dt {
            let mut seconds = [0.0; CPU_MODES.len()];
            let mut guest = 0.0;
            let mut any = false;
            for cpu in usage.per_cpu.iter().flatten() {
                any = true;
                let shares = [
                    cpu.user_pct,
                    cpu.nice_pct,
                    cpu.system_pct,
                    cpu.idle_pct,
                    cpu.iowait_pct,
                    cpu.irq_pct,
                    cpu.softirq_pct,
                    cpu.steal_pct,
                ];
                for (total, pct) in seconds.iter_mut().zip(shares) {
                    *total += pct / 100.0 * dt;
                }
                guest += cpu.guest_pct / 100.0 * dt;
            }
            if any {
                for (mode, value) in CPU_MODES.iter().zip(seconds) {
                    self.add(
                        "setmov_host_cpu_seconds_total",
                        &host,
                        vec![("mode", (*mode).to_owned())],
                        value,
                    );
                }
                self.add("setmov_host_cpu_guest_seconds_total", &host, vec![], guest);
            }
        }
        if let Some(mem) = &usage.mem {
            self.set(
                "setmov_host_memory_total_bytes",
                &host,
                vec![],
                mem.total_bytes as f64,
            );
            self.set(
                "setmov_host_memory_used_ratio",
                &host,
                vec![],
                mem.used_pct / 100.0,
            );
            self.set(
                "setmov_host_memory_nonfree_ratio",
                &host,
                vec![],
                mem.nonfree_pct / 100.0,
            );
            if let Some(pct) = mem.unavailable_pct {
                self.set(
                    "setmov_host_memory_unavailable_ratio",
                    &host,
                    vec![],
                    pct / 100.0,
                );
            }
        }
        for disk in usage.disks.iter().filter(|d| !d.partition) {
            let device = || vec![("device", disk.name.clone())];
            let rates = [
                (
                    "setmov_host_disk_read_bytes_total",
                    Some(disk.read_bytes_per_sec),
                ),
                (
                    "setmov_host_disk_write_bytes_total",
                    Some(disk.write_bytes_per_sec),
                ),
                ("setmov_host_disk_reads_total", Some(disk.read_iops)),
                ("setmov_host_disk_writes_total", Some(disk.write_iops)),
                (
                    "setmov_host_disk_read_time_seconds_total",
                    Some(disk.read_await_ms.unwrap_or(0.0) / 1e3 * disk.read_iops),
                ),
                (
                    "setmov_host_disk_write_time_seconds_total",
                    Some(disk.write_await_ms.unwrap_or(0.0) / 1e3 * disk.write_iops),
                ),
                (
                    "setmov_host_disk_io_time_seconds_total",
                    Some(disk.util_pct / 100.0),
                ),
            ];
            for (name, rate) in rates {
                self.add_rate(name, &host, device(), rate, dt);
            }
        }
        if let Some(total) = &usage.net_total {
            let rates = [
                (
                    "setmov_host_network_receive_bytes_total",
                    total.rx.bytes_per_sec,
                ),
                (
                    "setmov_host_network_transmit_bytes_total",
                    total.tx.bytes_per_sec,
                ),
                ("setmov_host_network_receive_packets_total", total.rx.pps),
                ("setmov_host_network_transmit_packets_total", total.tx.pps),
            ];
            for (name, rate) in rates {
                self.add_rate(name, &host, vec![], Some(rate), dt);
            }
        }
        for net in &usage.nets {
            self.observe_interface(&HOST_INTERFACE, &host, net, dt);
        }
    }

    fn observe_host_ebpf(&mut self, ebpf: &HostEbpfFigures) {
        let host = Owner::Host;
        let counts = [
            ("setmov_host_block_read_bytes_total", ebpf.block.read_bytes),
            (
                "setmov_host_block_write_bytes_total",
                ebpf.block.write_bytes,
            ),
            ("setmov_host_block_reads_total", ebpf.block.read_ops),
            ("setmov_host_block_writes_total", ebpf.block.write_ops),
            (
                "setmov_host_block_unattributed_read_bytes_total",
                ebpf.unattributed.read_bytes,
            ),
            (
                "setmov_host_block_unattributed_write_bytes_total",
                ebpf.unattributed.write_bytes,
            ),
        ];
        for (name, count) in counts {
            self.add(name, &host, vec![], count as f64);
        }
        for device in &ebpf.devices {
            self.set(
                "setmov_host_block_latency_p99_seconds",
                &host,
                vec![
                    ("device", device.device.clone()),
                    ("direction", direction_name(device.direction).to_owned()),
                ],
                device.summary.p99_us / 1e6,
            );
        }
    }

    fn forget_vm(&mut self, uuid: &str) {
        for series in self.counters.values_mut().chain(self.gauges.values_mut()) {
            series.retain(|(owner, _), _| !matches!(owner, Owner::Vm(u) if u == uuid));
        }
        self.vm_names.remove(uuid);
    }

    fn observe_vm(&mut self, vm: &VmSample, host_cpus: Option<u32>) {
        let owner = Owner::Vm(vm.uuid.clone());
        self.vm_names.insert(vm.uuid.clone(), vm.name.clone());
        self.set(
            "setmov_vm_up",
            &owner,
            vec![],
            if vm.usage.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(state) = vm.state {
            self.set(
                "setmov_vm_state",
                &owner,
                vec![("state", state.name().to_owned())],
                1.0,
            );
        }
        if let Some(usage) = &vm.usage {
            let dt = vm.interval_secs.and_then(crate::usage::positive_seconds);
            if let Some(vcpus) = usage.vcpus {
                self.set("setmov_vm_vcpus", &owner, vec![], f64::from(vcpus));
            }
            let pct = |p: Option<f64>| p.map(|p| p / 100.0);
            // CPU seconds per second: the per-vCPU share × vCPUs, or the host share × host CPUs.
            let cpu_rate = pct(usage.cpu_vcpu_pct)
                .zip(usage.vcpus)
                .map(|(r, v)| r * f64::from(v))
                .or_else(|| {
                    pct(usage.cpu_host_pct)
                        .zip(host_cpus)
                        .map(|(r, c)| r * f64::from(c))
                });
            self.add_rate("setmov_vm_cpu_seconds_total", &owner, vec![], cpu_rate, dt);
            if let Some(r) = pct(usage.cpu_vcpu_pct) {
                self.set("setmov_vm_cpu_usage_ratio", &owner, vec![], r);
            }
            if let Some(r) = pct(usage.cpu_host_pct) {
                self.set("setmov_vm_cpu_host_ratio", &owner, vec![], r);
            }
            for (n, share) in usage.vcpu_pct.iter().enumerate() {
                let Some(r) = pct(*share) else { continue };
                let vcpu = || vec![("vcpu", n.to_string())];
                self.set("setmov_vm_vcpu_usage_ratio", &owner, vcpu(), r);
                self.add_rate("setmov_vm_vcpu_seconds_total", &owner, vcpu(), Some(r), dt);
            }
            if let Some(r) = pct(usage.steal_pct) {
                self.set("setmov_vm_steal_ratio", &owner, vec![], r);
                let rate = usage.vcpus.map(|v| r * f64::from(v));
                self.add_rate("setmov_vm_steal_seconds_total", &owner, vec![], rate, dt);
            }
            let mem = &usage.mem;
            let levels = [
                ("setmov_vm_memory_allocated_bytes", mem.allocated_bytes),
                ("setmov_vm_memory_max_bytes", mem.max_bytes),
                ("setmov_vm_memory_used_bytes", mem.used_bytes),
                ("setmov_vm_memory_rss_bytes", mem.rss_bytes),
            ];
            for (name, bytes) in levels {
                if let Some(bytes) = bytes {
                    self.set(name, &owner, vec![], bytes as f64);
                }
            }
            if let Some(r) = pct(mem.used_pct) {
                self.set("setmov_vm_memory_used_ratio", &owner, vec![], r);
            }
            let rates = [
                (
                    "setmov_vm_memory_swap_in_bytes_total",
                    mem.swap_in_bytes_per_sec,
                ),
                (
                    "setmov_vm_memory_swap_out_bytes_total",
                    mem.swap_out_bytes_per_sec,
                ),
                (
                    "setmov_vm_memory_major_faults_total",
                    mem.major_faults_per_sec,
                ),
                (
                    "setmov_vm_memory_minor_faults_total",
                    mem.minor_faults_per_sec,
                ),
            ];
            for (name, rate) in rates {
                self.add_rate(name, &owner, vec![], rate, dt);
            }
            for disk in &usage.disks {
                let device = || vec![("device", disk.name.clone())];
                let rates = [
                    ("setmov_vm_disk_read_bytes_total", disk.read_bytes_per_sec),
                    ("setmov_vm_disk_write_bytes_total", disk.write_bytes_per_sec),
                    ("setmov_vm_disk_reads_total", disk.read_iops),
                    ("setmov_vm_disk_writes_total", disk.write_iops),
                    (
                        "setmov_vm_disk_read_time_seconds_total",
                        disk.read_latency_ms.unwrap_or(0.0) / 1e3 * disk.read_iops,
                    ),
                    (
                        "setmov_vm_disk_write_time_seconds_total",
                        disk.write_latency_ms.unwrap_or(0.0) / 1e3 * disk.write_iops,
                    ),
                ];
                for (name, rate) in rates {
                    self.add_rate(name, &owner, device(), Some(rate), dt);
                }
            }
            for nic in &usage.nics {
                self.observe_interface(&VM_NIC, &owner, nic, dt);
            }
        }
        if let Some(ebpf) = &vm.ebpf {
            self.observe_vm_ebpf(&owner, ebpf, vm.vcpu_tids.len());
        }
    }

    fn observe_vm_ebpf(&mut self, owner: &Owner, ebpf: &VmEbpfFigures, vcpu_threads: usize) {
        let counts = [
            ("setmov_vm_block_read_bytes_total", ebpf.block.read_bytes),
            ("setmov_vm_block_write_bytes_total", ebpf.block.write_bytes),
            ("setmov_vm_block_reads_total", ebpf.block.read_ops),
            ("setmov_vm_block_writes_total", ebpf.block.write_ops),
        ];
        for (name, count) in counts {
            self.add(name, owner, vec![], count as f64);
        }
        for latency in &ebpf.latency {
            self.set(
                "setmov_vm_block_latency_p99_seconds",
                owner,
                vec![("direction", direction_name(latency.direction).to_owned())],
                latency.summary.p99_us / 1e6,
            );
        }
        if let Some(ready) = &ebpf.cpu_ready {
            let ratio = ready.pct / 100.0;
            self.set("setmov_vm_cpu_ready_ratio", owner, vec![], ratio);
            // The ratio's denominator is the vCPU threads × the interval.
            self.add_rate(
                "setmov_vm_cpu_ready_seconds_total",
                owner,
                vec![],
                Some(ratio * vcpu_threads as f64),
                crate::usage::positive_seconds(ebpf.interval_secs),
            );
        }
        for (event, reason, count) in &ebpf.kvm_events {
            self.add(
                "setmov_vm_kvm_events_total",
                owner,
                vec![("event", event.clone()), ("reason", reason.clone())],
                *count as f64,
            );
        }
        for nic in &ebpf.nics {
            for (reason, count) in &nic.drops {
                self.add(
                    "setmov_vm_network_kernel_drops_total",
                    owner,
                    vec![("device", nic.iface.clone()), ("reason", reason.clone())],
                    *count as f64,
                );
            }
        }
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

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The cause is the error's source (shown after it by `{:#}`).
    #[error("cannot serve Prometheus metrics on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

type Shared = Arc<Mutex<PrometheusExporter>>;

/// The HTTP side: `/metrics` (the exposition) and `/` (a page that links to it).
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` now, so that a port in use is an error at start. A non-loopback address
    /// is logged with a warning: the metrics are served to anyone who reaches it.
    pub async fn bind(addr: SocketAddr) -> Result<MetricsServer, ExportError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ExportError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ExportError::Bind { addr, source })?;
        if addr.ip().is_loopback() {
            tracing::info!("Prometheus metrics on http://{addr}/metrics");
        } else {
            tracing::warn!(
                "Prometheus metrics on http://{addr}/metrics, not a loopback address: anyone who \
                 can reach it reads them, without authentication"
            );
        }
        Ok(MetricsServer { listener, addr })
    }

    /// The address bound (with the port chosen when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Feeds every tick of `ticks` to the exporter and serves it until `ticks` closes (the
    /// sampler stopped) and the open requests are answered.
    pub async fn serve(self, mut ticks: mpsc::UnboundedReceiver<Arc<TickRecord>>) {
        let exporter: Shared = Arc::default();
        let app = Router::new()
            .route("/", get(index))
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&exporter));
        let feed = async move {
            while let Some(tick) = ticks.recv().await {
                exporter
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .observe(&tick);
            }
        };
        let addr = self.addr;
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(feed)
            .await
        {
            tracing::error!("the Prometheus endpoint on {addr} stopped: {e}");
        }
    }
}

async fn metrics(State(exporter): State<Shared>) -> impl IntoResponse {
    let text = exporter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .render();
    ([(CONTENT_TYPE, CONTENT_TYPE_0_0_4)], text)
}

async fn index() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html>\n<html><head><title>SETMOV</title></head><body>\n\
         <h1>SETMOV</h1>\n<p><a href=\"/metrics\">Metrics</a> (Prometheus text format)</p>\n\
         </body></html>\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::BlockTotals;
    use crate::host::identity::HostIdentity;
    use crate::usage::PacketRates;
    use crate::usage::ebpf::VmNicTraffic;
    use crate::usage::ebpf::{CpuReady, DeviceLatency, DirectionLatency, LatencySummary};
    use crate::usage::host::{CpuUsage, DiskRates, HostUsage, MemUsage, NetRates, NetTotals};
    use crate::usage::vm::{MemSource, VmDiskRates, VmMemUsage, VmUsage};
    use crate::vm::libvirt::NodeFacts;
    use crate::vm::stats::DomainState;
    use setmov_common::{DIR_READ, DIR_WRITE, Log2Hist};

    const VERSION: &str = env!("CARGO_PKG_VERSION");

    fn identity() -> HostIdentity {
        HostIdentity {
            name: "hv-1".into(),
            ip: "192.0.2.2".into(),
            mac: None,
            interface: None,
        }
    }

    fn tick(seq: u64, host_sample: Option<HostSample>, vms: Vec<VmSample>) -> TickRecord {
        TickRecord {
            seq,
            time: time::macros::datetime!(2026-11-30 06:45:22 UTC)
                + time::Duration::seconds(seq as i64),
            host: identity(),
            vm_count: Some(vms.iter().filter(|v| v.usage.is_some()).count() as u32),
            node: None,
            host_sample,
            vms,
            ebpf: None,
        }
    }

    fn host_sample(usage: HostUsage) -> HostSample {
        HostSample {
            interval_secs: 2.0,
            late_ms: 0.0,
            missed_ticks: 0,
            usage,
            problems: Vec::new(),
        }
    }

    fn no_mem() -> VmMemUsage {
        VmMemUsage {
            allocated_bytes: None,
            max_bytes: None,
            used_bytes: None,
            used_pct: None,
            source: MemSource::AllocationOnly,
            unused_bytes: None,
            usable_bytes: None,
            available_bytes: None,
            rss_bytes: None,
            swap_in_bytes_per_sec: None,
            swap_out_bytes_per_sec: None,
            major_faults_per_sec: None,
            minor_faults_per_sec: None,
        }
    }

    fn vm_usage(cpu_vcpu_pct: f64) -> VmUsage {
        VmUsage {
            cpu_host_pct: Some(cpu_vcpu_pct / 2.0),
            cpu_vcpu_pct: Some(cpu_vcpu_pct),
            steal_pct: None,
            vcpu_pct: Vec::new(),
            vcpus: Some(1),
            mem: no_mem(),
            disks: Vec::new(),
            disk_total: None,
            nics: Vec::new(),
            net_total: None,
        }
    }

    fn vm(uuid: &str, name: &str, usage: Option<VmUsage>) -> VmSample {
        VmSample {
            interval_secs: usage.as_ref().map(|_| 2.0),
            usage,
            ..VmSample::without_figures(uuid, name, Some(DomainState::Running), None)
        }
    }

    fn mem(used_pct: f64) -> MemUsage {
        MemUsage {
            total_bytes: 8 << 30,
            used_pct,
            nonfree_pct: 50.0,
            unavailable_pct: None,
        }
    }

    /// The value of the one sample line starting with `series` (its name and labels).
    fn value(text: &str, series: &str) -> Option<f64> {
        let mut found = text
            .lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse::<f64>().expect("a number"));
        let v = found.next();
        assert!(found.next().is_none(), "{series} twice");
        v
    }

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
# HELP setmov_host_memory_used_ratio (MemTotal - MemFree - Buffers - Cached) / MemTotal: top's used memory.
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
    fn counters_accumulate_rate_times_interval_and_never_go_back() {
        let mut e = PrometheusExporter::new();
        let disk = |bytes_per_sec: f64| VmDiskRates {
            name: "vda".into(),
            read_bytes_per_sec: bytes_per_sec,
            write_bytes_per_sec: 0.0,
            read_iops: bytes_per_sec / 4096.0,
            write_iops: 0.0,
            read_latency_ms: Some(2.0),
            write_latency_ms: None,
        };
        let series = r#"{host="hv-1",vm="desk-1",uuid="u-1"}"#;
        let disk_series = r#"{host="hv-1",vm="desk-1",uuid="u-1",device="vda"}"#;
        let mut last = 0.0;
        for (seq, (cpu, read)) in [(50.0, 4096.0), (100.0, 0.0), (25.0, 8192.0)]
            .into_iter()
            .enumerate()
        {
            let mut usage = vm_usage(cpu);
            usage.disks.push(disk(read));
            e.observe(&tick(
                seq as u64,
                None,
                vec![vm("u-1", "desk-1", Some(usage))],
            ));
            let text = e.render();
            let cpu_seconds =
                value(&text, &format!("setmov_vm_cpu_seconds_total{series}")).expect("cpu seconds");
            assert!(cpu_seconds >= last, "{cpu_seconds} after {last}");
            last = cpu_seconds;
        }
        // Σ share × vCPUs × 2 s: 1 + 2 + 0.5 CPU seconds; 8 KiB + 0 + 16 KiB read.
        let text = e.render();
        assert_eq!(
            value(&text, &format!("setmov_vm_cpu_seconds_total{series}")),
            Some(3.5)
        );
        let read = format!("setmov_vm_disk_read_bytes_total{disk_series}");
        assert_eq!(value(&text, &read), Some(24_576.0));
        assert_eq!(
            value(&text, &format!("setmov_vm_disk_reads_total{disk_series}")),
            Some(6.0)
        );
        // 6 reads of 2 ms.
        let time = value(
            &text,
            &format!("setmov_vm_disk_read_time_seconds_total{disk_series}"),
        )
        .expect("read time");
        assert!((time - 0.012).abs() < 1e-12, "{time}");

        // A tick without rates (the VM restarted) adds nothing and takes nothing away.
        let mut restarted = vm("u-1", "desk-1", Some(vm_usage(0.0)));
        restarted.interval_secs = None;
        e.observe(&tick(9, None, vec![restarted]));
        let text = e.render();
        assert_eq!(
            value(&text, &format!("setmov_vm_cpu_seconds_total{series}")),
            Some(3.5)
        );
        assert_eq!(value(&text, &read), Some(24_576.0));
        assert_eq!(value(&text, "setmov_ticks_total{host=\"hv-1\"}"), Some(4.0));
    }

    #[test]
    fn a_missing_vm_keeps_its_counters_but_has_no_gauges() {
        let mut e = PrometheusExporter::new();
        e.observe(&tick(
            1,
            None,
            vec![vm("u-1", "desk-1", Some(vm_usage(50.0)))],
        ));
        let missing = VmSample::without_figures(
            "u-1",
            "desk-1",
            None,
            Some("libvirt did not answer in time"),
        );
        e.observe(&tick(2, None, vec![missing]));
        let text = e.render();
        let series = r#"{host="hv-1",vm="desk-1",uuid="u-1"}"#;
        assert_eq!(
            value(&text, &format!("setmov_vm_cpu_seconds_total{series}")),
            Some(1.0)
        );
        assert_eq!(value(&text, &format!("setmov_vm_up{series}")), Some(0.0));
        for gauge in [
            "setmov_vm_cpu_usage_ratio",
            "setmov_vm_vcpus",
            "setmov_vm_state",
        ] {
            assert!(!text.contains(gauge), "{gauge} in\n{text}");
        }

        // Not listed at all (the VM source did not report): counters stay, no gauge at all.
        e.observe(&tick(3, None, Vec::new()));
        let text = e.render();
        assert_eq!(
            value(&text, &format!("setmov_vm_cpu_seconds_total{series}")),
            Some(1.0)
        );
        assert!(!text.contains("setmov_vm_up"), "{text}");

        // Sampled again: the gauges are back and the counter goes on.
        e.observe(&tick(
            4,
            None,
            vec![vm("u-1", "desk-1", Some(vm_usage(100.0)))],
        ));
        let text = e.render();
        assert_eq!(
            value(&text, &format!("setmov_vm_cpu_seconds_total{series}")),
            Some(3.0)
        );
        assert_eq!(
            value(&text, &format!("setmov_vm_cpu_usage_ratio{series}")),
            Some(1.0)
        );
    }

    #[test]
    fn a_gone_vm_is_removed() {
        let mut e = PrometheusExporter::new();
        e.observe(&tick(
            1,
            None,
            vec![
                vm("u-1", "desk-1", Some(vm_usage(50.0))),
                vm("u-2", "desk-2", Some(vm_usage(50.0))),
            ],
        ));
        let mut gone = VmSample::without_figures("u-1", "desk-1", None, None);
        gone.gone = true;
        e.observe(&tick(
            2,
            None,
            vec![gone, vm("u-2", "desk-2", Some(vm_usage(50.0)))],
        ));
        let text = e.render();
        assert!(!text.contains("u-1"), "{text}");
        assert!(
            text.contains(r#"setmov_vm_cpu_seconds_total{host="hv-1",vm="desk-2",uuid="u-2"} 2"#)
        );
    }

    #[test]
    fn a_missing_host_sample_keeps_host_counters_and_drops_host_gauges() {
        let mut e = PrometheusExporter::new();
        let cpu = CpuUsage {
            busy_pct: 40.0,
            user_pct: 30.0,
            nice_pct: 0.0,
            system_pct: 10.0,
            idle_pct: 60.0,
            iowait_pct: 0.0,
            irq_pct: 0.0,
            softirq_pct: 0.0,
            steal_pct: 0.0,
            guest_pct: 20.0,
        };
        let usage = HostUsage {
            cpu: Some(cpu),
            per_cpu: vec![Some(cpu), Some(cpu)],
            mem: Some(mem(10.0)),
            ..HostUsage::default()
        };
        e.observe(&tick(1, Some(host_sample(usage)), Vec::new()));
        e.observe(&tick(2, None, Vec::new()));
        let text = e.render();
        // Two CPUs × 30 % × 2 s.
        let user = value(
            &text,
            r#"setmov_host_cpu_seconds_total{host="hv-1",mode="user"}"#,
        )
        .expect("user seconds");
        assert!((user - 1.2).abs() < 1e-12, "{user}");
        assert!(!text.contains("setmov_host_cpu_usage_ratio"), "{text}");
        assert!(!text.contains("setmov_host_memory_used_ratio"), "{text}");
        // What every tick has is still there.
        assert!(text.contains("setmov_last_tick_timestamp_seconds{host=\"hv-1\"}"));
    }

    /// A tick with every figure the exporter knows, for the tests of the whole exposition.
    pub(crate) fn full_tick(seq: u64) -> TickRecord {
        let cpu = CpuUsage {
            busy_pct: 40.0,
            user_pct: 30.0,
            nice_pct: 1.0,
            system_pct: 9.0,
            idle_pct: 55.0,
            iowait_pct: 5.0,
            irq_pct: 0.0,
            softirq_pct: 0.0,
            steal_pct: 0.0,
            guest_pct: 20.0,
        };
        let rates = |bytes_per_sec: f64, pps: f64| PacketRates {
            pps,
            bytes_per_sec,
            avg_packet_bits: Some(bytes_per_sec * 8.0 / pps + 160.0),
            bps: bytes_per_sec * 8.0 + pps * 160.0,
        };
        let net = |name: &str| NetRates {
            name: name.into(),
            rx: rates(1000.0, 10.0),
            tx: rates(2000.0, 20.0),
            rx_errs: 1,
            rx_drop: 2,
            tx_errs: 0,
            tx_drop: 0,
        };
        let usage = HostUsage {
            cpu: Some(cpu),
            per_cpu: vec![Some(cpu), Some(cpu)],
            mem: Some(MemUsage {
                unavailable_pct: Some(30.0),
                ..mem(25.0)
            }),
            disks: vec![
                DiskRates {
                    name: "sda".into(),
                    partition: false,
                    read_bytes_per_sec: 4096.0,
                    write_bytes_per_sec: 8192.0,
                    read_iops: 1.0,
                    write_iops: 2.0,
                    util_pct: 10.0,
                    read_await_ms: Some(1.0),
                    write_await_ms: Some(3.0),
                },
                DiskRates {
                    name: "sda1".into(),
                    partition: true,
                    read_bytes_per_sec: 4096.0,
                    write_bytes_per_sec: 8192.0,
                    read_iops: 1.0,
                    write_iops: 2.0,
                    util_pct: 10.0,
                    read_await_ms: Some(1.0),
                    write_await_ms: Some(3.0),
                },
            ],
            disk_total: None,
            nets: vec![net("eth0"), net("vnet0")],
            net_total: Some(NetTotals {
                rx: rates(1000.0, 10.0),
                tx: rates(2000.0, 20.0),
            }),
        };
        let mut vm_usage = vm_usage(50.0);
        vm_usage.steal_pct = Some(2.0);
        vm_usage.vcpu_pct = vec![Some(50.0)];
        vm_usage.mem = VmMemUsage {
            allocated_bytes: Some(1 << 30),
            max_bytes: Some(2 << 30),
            used_bytes: Some(256 << 20),
            used_pct: Some(25.0),
            source: MemSource::BalloonUsable,
            rss_bytes: Some(600 << 20),
            swap_in_bytes_per_sec: Some(0.0),
            swap_out_bytes_per_sec: Some(0.0),
            major_faults_per_sec: Some(1.0),
            minor_faults_per_sec: Some(100.0),
            ..no_mem()
        };
        vm_usage.disks = vec![VmDiskRates {
            name: "vda".into(),
            read_bytes_per_sec: 4096.0,
            write_bytes_per_sec: 1024.0,
            read_iops: 1.0,
            write_iops: 1.0,
            read_latency_ms: Some(1.0),
            write_latency_ms: Some(2.0),
        }];
        vm_usage.nics = vec![net("vnet0")];
        let summary = LatencySummary {
            count: 10,
            p50_us: 100.0,
            p95_us: 400.0,
            p99_us: 1000.0,
        };
        let block = BlockTotals {
            read_ops: 2,
            read_bytes: 8192,
            write_ops: 2,
            write_bytes: 2048,
        };
        let ebpf = VmEbpfFigures {
            interval_secs: 2.0,
            block,
            block_rates: None,
            latency: vec![
                DirectionLatency {
                    direction: DIR_READ,
                    hist: Log2Hist::default(),
                    summary,
                },
                DirectionLatency {
                    direction: DIR_WRITE,
                    hist: Log2Hist::default(),
                    summary,
                },
            ],
            cpu_ready: Some(CpuReady {
                pct: 3.0,
                p99_us: Some(50.0),
                waits: 10,
            }),
            kvm_events: vec![
                ("kvm_exit".into(), "HLT".into(), 30),
                ("kvm_exit".into(), "EPT_VIOLATION".into(), 5),
            ],
            nics: vec![VmNicTraffic {
                iface: "vnet0".into(),
                rx: Default::default(),
                tx: Default::default(),
                drops: vec![("NO_SOCKET".into(), 1)],
            }],
        };
        let mut sampled = vm("u-1", "desk-1", Some(vm_usage));
        sampled.vcpu_tids = vec![4242];
        sampled.qemu_pid = Some(4240);
        sampled.ebpf = Some(ebpf);
        let mut t = tick(seq, Some(host_sample(usage)), vec![sampled]);
        t.host.mac = Some("52:54:00:12:34:56".into());
        t.node = Some(NodeFacts {
            cpus: 2,
            memory_bytes: Some(8 << 30),
        });
        t.ebpf = Some(HostEbpfFigures {
            interval_secs: 2.0,
            block,
            unattributed: BlockTotals::default(),
            block_rates: None,
            unattributed_rates: None,
            devices: vec![DeviceLatency {
                device: "sda".into(),
                direction: DIR_WRITE,
                summary,
            }],
            programs: Vec::new(),
        });
        t
    }

    #[test]
    fn a_full_tick_emits_every_family_with_its_type_and_help() {
        let mut e = PrometheusExporter::new();
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
        // 3 % of 1 vCPU over 2 s, twice.
        let ready =
            value(&text, &format!("setmov_vm_cpu_ready_seconds_total{{{vm}}}")).expect("ready");
        assert!((ready - 0.12).abs() < 1e-12, "{ready}");
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
            "../../../contrib/grafana/setmov-dashboard.json"
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

    #[tokio::test]
    async fn the_server_serves_the_exposition_and_a_busy_port_is_an_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = server.local_addr();
        let busy = MetricsServer::bind(addr).await;
        assert!(
            matches!(busy, Err(ExportError::Bind { .. })),
            "a second bind must fail"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let served = tokio::spawn(server.serve(rx));
        tx.send(Arc::new(full_tick(1))).expect("send");
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        let mut metrics = get("/metrics").await;
        // The tick may not be observed yet on the first request.
        for _ in 0..50 {
            if metrics.contains("setmov_vm_up") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            metrics = get("/metrics").await;
        }
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{metrics}"
        );
        assert!(metrics.contains("setmov_vm_up{host=\"hv-1\",vm=\"desk-1\",uuid=\"u-1\"} 1"));
        let index = get("/").await;
        assert!(index.contains("href=\"/metrics\""), "{index}");
        assert!(get("/nothing").await.starts_with("HTTP/1.1 404"));
        // The sampler stops: the server stops too.
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(5), served)
            .await
            .expect("stops")
            .expect("no panic");
    }
}
