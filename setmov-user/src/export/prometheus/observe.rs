//! Observing a tick: counters accumulate Σ rate × interval (Σ count where the tick gives a
//! count), gauges are the newest tick's figures. Here the tick itself, the primitives `set` and
//! `add`, and the eight counters of a network interface (a host's or a VM's NIC); the host's
//! figures are in `observe_host.rs`, a VM's in `observe_vm.rs`.

use super::families::{InterfaceFamilies, MetricKind, family};
use super::{Labels, Owner, PrometheusExporter};
use crate::sampler::WriterCounts;
use crate::store::TickRecord;
use crate::usage::host::NetRates;

impl PrometheusExporter {
    /// Takes one tick: adds its intervals to the counters and makes its figures the gauges.
    pub fn observe(&mut self, tick: &TickRecord) {
        self.gauges.clear();
        self.host = Some(tick.host.name.clone());
        let host = Owner::Host;
        self.add("setmov_ticks_total", &host, vec![], 1.0);
        if let Some(writer) = self.writer.clone() {
            let get = WriterCounts::get;
            for (name, count) in [
                ("setmov_ticks_stored_total", get(&writer.written)),
                ("setmov_ticks_quarantined_total", get(&writer.quarantined)),
                ("setmov_ticks_dropped_total", get(&writer.dropped)),
            ] {
                self.raise_to(name, &host, count as f64);
            }
        }
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

    pub(super) fn set(&mut self, name: &'static str, owner: &Owner, labels: Labels, value: f64) {
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

    /// Raises a counter kept elsewhere to its `total` (it never goes back).
    fn raise_to(&mut self, name: &'static str, owner: &Owner, total: f64) {
        let now = self
            .counters
            .get(name)
            .and_then(|series| series.get(&(owner.clone(), Vec::new())))
            .copied()
            .unwrap_or(0.0);
        self.add(name, owner, Vec::new(), (total - now).max(0.0));
    }

    /// Adds `increment` to a counter; a negative or non-finite increment is ignored (counters
    /// never go back).
    pub(super) fn add(
        &mut self,
        name: &'static str,
        owner: &Owner,
        labels: Labels,
        increment: f64,
    ) {
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
    pub(super) fn add_rate(
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
    pub(super) fn observe_interface(
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
}

#[cfg(test)]
mod tests {
    use crate::export::prometheus::PrometheusExporter;
    use crate::export::prometheus::fixtures::{tick, value, vm, vm_usage};
    use crate::usage::vm::VmDiskRates;

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
}
