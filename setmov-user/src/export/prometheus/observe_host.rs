//! The host's series: tick timing, CPU, memory, whole disks, network totals and interfaces,
//! and its eBPF block figures.

use super::families::HOST_INTERFACE;
use super::{Owner, PrometheusExporter};
use crate::store::HostSample;
use crate::usage::ebpf::{HostEbpfFigures, direction_name};

/// The modes of `setmov_host_cpu_seconds_total`.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

impl PrometheusExporter {
    pub(super) fn observe_host(&mut self, sample: &HostSample) {
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

    pub(super) fn observe_host_ebpf(&mut self, ebpf: &HostEbpfFigures) {
        let host = Owner::Host;
        // Without the host's list of disks this tick the totals are unknown: the counters do
        // not move rather than count stacked devices twice.
        if let (Some(block), Some(unattributed)) = (&ebpf.block, &ebpf.unattributed) {
            let counts = [
                ("setmov_host_block_read_bytes_total", block.read_bytes),
                ("setmov_host_block_write_bytes_total", block.write_bytes),
                ("setmov_host_block_reads_total", block.read_ops),
                ("setmov_host_block_writes_total", block.write_ops),
                (
                    "setmov_host_block_unattributed_read_bytes_total",
                    unattributed.read_bytes,
                ),
                (
                    "setmov_host_block_unattributed_write_bytes_total",
                    unattributed.write_bytes,
                ),
            ];
            for (name, count) in counts {
                self.add(name, &host, vec![], count as f64);
            }
        }
        let pairing = [
            (
                "setmov_host_block_latency_collisions_total",
                ebpf.pairing.collided,
            ),
            (
                "setmov_host_block_latency_overflows_total",
                ebpf.pairing.overflowed,
            ),
            (
                "setmov_host_block_latency_unpaired_total",
                ebpf.pairing.unpaired,
            ),
        ];
        for (name, count) in pairing {
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
}

#[cfg(test)]
mod tests {
    use crate::export::prometheus::PrometheusExporter;
    use crate::export::prometheus::fixtures::{host_sample, mem, tick, value};
    use crate::usage::host::{CpuUsage, HostUsage};

    #[test]
    fn a_missing_host_sample_keeps_host_counters_and_drops_host_gauges() {
        let mut e = PrometheusExporter::new();
        let cpu = CpuUsage {
            busy_pct: 40.0,
            user_pct: 30.0,
            user_excl_guest_pct: 10.0,
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
}
