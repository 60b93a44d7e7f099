//! A VM's series: state, CPU, memory, virtual disks and NICs, and its eBPF figures; a VM
//! libvirt no longer lists is forgotten.

use super::families::VM_NIC;
use super::{Owner, PrometheusExporter};
use crate::store::VmSample;
use crate::usage::ebpf::{VmEbpfFigures, direction_name};

impl PrometheusExporter {
    pub(super) fn forget_vm(&mut self, uuid: &str) {
        for series in self.counters.values_mut().chain(self.gauges.values_mut()) {
            series.retain(|(owner, _), _| !matches!(owner, Owner::Vm(u) if u == uuid));
        }
        self.vm_names.remove(uuid);
    }

    pub(super) fn observe_vm(&mut self, vm: &VmSample, host_cpus: Option<u32>) {
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

#[cfg(test)]
mod tests {
    use crate::export::prometheus::PrometheusExporter;
    use crate::export::prometheus::fixtures::{tick, value, vm, vm_usage};
    use crate::store::VmSample;

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
}
