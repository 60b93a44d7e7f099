//! A tick as table rows: the one mapping from a [`TickRecord`] to the schema's tables, used by
//! the MySQL store and its spool (which keeps ticks as these rows while the server is away).
//!
//! The tables and columns come from [`tick_schema`], which also judges rows read back from a
//! spool file.
//!
//! Every data table has a primary key of owner and time, so writing the same rows twice changes
//! nothing: a replayed tick is ignored row by row.

use serde::{Deserialize, Serialize};

use super::tick_schema::{self, TableSchema};
use super::{HostSample, TickRecord, VmSample};
use crate::usage::ebpf::{HostEbpfFigures, VmEbpfFigures, VmNicTraffic, direction_name};
use crate::usage::host::NetRates;
use crate::vm::stats::DomainState;
use setmov_common::{DIR_READ, DIR_WRITE};

/// One SQL value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    /// Bytes, e.g. a rollup's stored distribution; no tick row carries one.
    Blob(Vec<u8>),
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        // NaN and infinities are not numbers a database keeps: they are "not computable".
        if v.is_finite() {
            Value::Real(v)
        } else {
            Value::Null
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Rows of one table, all with the same columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Empty rows of a table a tick writes: its names come only from [`tick_schema`].
    fn new(schema: &TableSchema) -> Self {
        Rows {
            table: schema.name.to_owned(),
            columns: schema.columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{}", self.table);
        self.rows.push(row);
    }
}

/// T1 as one tick knows it; `None` fields were not known this tick and keep the stored value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRow {
    pub host_ip: String,
    pub host_name: String,
    pub mac: Option<String>,
    pub vmc: Option<u32>,
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// A T3 row; state `unknown` (libvirt could not be asked) keeps the stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRow {
    pub uuid: String,
    pub host_ip: String,
    pub name: String,
    pub state: String,
}

/// Everything one tick writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TickRows {
    pub seq: u64,
    /// The tick's time as the back end writes it (each has its own time syntax).
    pub time: String,
    pub host: HostRow,
    pub vms: Vec<VmRow>,
    /// VMs running at this tick: their last connect time becomes `time`.
    pub running: Vec<String>,
    /// Data rows, parents before children (foreign keys).
    pub tables: Vec<Rows>,
}

impl TickRows {
    /// Rows of all data tables together.
    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

/// The rows of `tick`, with its time written as `time`.
pub fn tick_rows(tick: &TickRecord, time: &str) -> TickRows {
    let host_ip = tick.host.ip.as_str();
    let mut tables = Vec::new();
    if let Some(sample) = &tick.host_sample {
        host_sample_rows(host_ip, time, sample, &mut tables);
    }
    if let Some(ebpf) = &tick.ebpf {
        host_ebpf_rows(host_ip, time, ebpf, &mut tables);
    }
    vm_rows(time, &tick.vms, &mut tables);
    tables.retain(|t| !t.rows.is_empty());
    TickRows {
        seq: tick.seq,
        time: time.to_owned(),
        host: HostRow {
            host_ip: host_ip.to_owned(),
            host_name: tick.host.name.clone(),
            mac: tick.host.mac.clone(),
            vmc: tick.vm_count,
            cpus: tick.node.map(|n| n.cpus),
            memory_bytes: tick.node.and_then(|n| n.memory_bytes),
        },
        vms: tick
            .vms
            .iter()
            .map(|vm| VmRow {
                uuid: vm.uuid.clone(),
                host_ip: host_ip.to_owned(),
                name: vm.name.clone(),
                state: vm_state(vm).to_owned(),
            })
            .collect(),
        running: tick
            .vms
            .iter()
            .filter(|v| v.state.is_some_and(DomainState::is_running))
            .map(|v| v.uuid.clone())
            .collect(),
        tables,
    }
}

/// T3's state of a VM at this tick.
pub fn vm_state(vm: &VmSample) -> &'static str {
    match vm.state {
        Some(s) => s.name(),
        None if vm.gone => "gone",
        None => "unknown",
    }
}

fn host_sample_rows(host_ip: &str, time: &str, s: &HostSample, tables: &mut Vec<Rows>) {
    let u = &s.usage;
    let cpu = u.cpu.as_ref();
    let mem = u.mem.as_ref();
    let disk = u.disk_total.as_ref();
    let net = u.net_total.as_ref();
    let mut t2 = Rows::new(&tick_schema::HOST_USAGE);
    t2.push(vec![
        host_ip.into(),
        time.into(),
        s.interval_secs.into(),
        s.late_ms.into(),
        s.missed_ticks.into(),
        cpu.map(|c| c.busy_pct).into(),
        cpu.map(|c| c.user_pct).into(),
        cpu.map(|c| c.system_pct).into(),
        cpu.map(|c| c.iowait_pct).into(),
        cpu.map(|c| c.steal_pct).into(),
        cpu.map(|c| c.guest_pct).into(),
        cpu.map(|c| c.user_excl_guest_pct).into(),
        mem.map(|m| m.total_bytes).into(),
        mem.map(|m| m.used_pct).into(),
        mem.map(|m| m.used_bytes).into(),
        mem.map(|m| m.nonfree_pct).into(),
        mem.and_then(|m| m.noncache_pct).into(),
        mem.and_then(|m| m.unavailable_pct).into(),
        disk.map(|d| d.read_bytes_per_sec).into(),
        disk.map(|d| d.write_bytes_per_sec).into(),
        disk.map(|d| d.bytes_per_sec()).into(),
        disk.map(|d| d.read_iops).into(),
        disk.map(|d| d.write_iops).into(),
        net.map(|n| n.rx.pps).into(),
        net.map(|n| n.tx.pps).into(),
        net.map(|n| n.rx.bytes_per_sec).into(),
        net.map(|n| n.tx.bytes_per_sec).into(),
        net.and_then(|n| n.rx.avg_packet_bits).into(),
        net.and_then(|n| n.tx.avg_packet_bits).into(),
        net.map(|n| n.rx.bps).into(),
        net.map(|n| n.tx.bps).into(),
        (!s.problems.is_empty())
            .then(|| s.problems.join("; "))
            .into(),
    ]);
    tables.push(t2);

    let mut cpus = Rows::new(&tick_schema::HOST_CPU_USAGE);
    for (index, c) in u.per_cpu.iter().enumerate() {
        if let Some(c) = c {
            cpus.push(vec![
                host_ip.into(),
                time.into(),
                index.into(),
                c.busy_pct.into(),
                c.user_pct.into(),
                c.system_pct.into(),
                c.iowait_pct.into(),
                c.steal_pct.into(),
                c.guest_pct.into(),
            ]);
        }
    }
    tables.push(cpus);

    let mut disks = Rows::new(&tick_schema::HOST_DISK_USAGE);
    for d in &u.disks {
        disks.push(vec![
            host_ip.into(),
            time.into(),
            d.name.as_str().into(),
            d.partition.into(),
            d.read_bytes_per_sec.into(),
            d.write_bytes_per_sec.into(),
            d.read_iops.into(),
            d.write_iops.into(),
            d.util_pct.into(),
            d.read_await_ms.into(),
            d.write_await_ms.into(),
            u.disk_total_over.contains(&d.name).into(),
        ]);
    }
    tables.push(disks);
    let mut nets = Rows::new(&tick_schema::HOST_NET_USAGE);
    push_net_rows(&mut nets, host_ip, time, &u.nets, Some(&u.net_total_over));
    tables.push(nets);
}

/// Interface rows; `host_total_over` (the host's rows only) fills `in_host_total`.
fn push_net_rows(
    rows: &mut Rows,
    owner: &str,
    time: &str,
    nets: &[NetRates],
    host_total_over: Option<&[String]>,
) {
    for n in nets {
        let mut row: Vec<Value> = vec![
            owner.into(),
            time.into(),
            n.name.as_str().into(),
            n.rx.pps.into(),
            n.tx.pps.into(),
            n.rx.bytes_per_sec.into(),
            n.tx.bytes_per_sec.into(),
            n.rx.avg_packet_bits.into(),
            n.tx.avg_packet_bits.into(),
            n.rx.bps.into(),
            n.tx.bps.into(),
            n.rx_errs.into(),
            n.rx_drop.into(),
            n.tx_errs.into(),
            n.tx_drop.into(),
        ];
        if let Some(over) = host_total_over {
            row.push(over.contains(&n.name).into());
        }
        rows.push(row);
    }
}

fn host_ebpf_rows(host_ip: &str, time: &str, e: &HostEbpfFigures, tables: &mut Vec<Rows>) {
    let all = e.block_rates.as_ref();
    let other = e.unattributed_rates.as_ref();
    let mut usage = Rows::new(&tick_schema::HOST_EBPF_USAGE);
    usage.push(vec![
        host_ip.into(),
        time.into(),
        e.interval_secs.into(),
        all.map(|r| r.read_bytes_per_sec).into(),
        all.map(|r| r.write_bytes_per_sec).into(),
        all.map(|r| r.read_iops).into(),
        all.map(|r| r.write_iops).into(),
        other.map(|r| r.read_bytes_per_sec).into(),
        other.map(|r| r.write_bytes_per_sec).into(),
        other.map(|r| r.read_iops).into(),
        other.map(|r| r.write_iops).into(),
        e.pairing.collided.into(),
        e.pairing.overflowed.into(),
        e.pairing.unpaired.into(),
    ]);
    tables.push(usage);
    let mut latency = Rows::new(&tick_schema::HOST_DISK_LATENCY);
    for d in &e.devices {
        latency.push(vec![
            host_ip.into(),
            time.into(),
            d.device.as_str().into(),
            direction_name(d.direction).into(),
            d.summary.count.into(),
            d.summary.p50_us.into(),
            d.summary.p95_us.into(),
            d.summary.p99_us.into(),
        ]);
    }
    tables.push(latency);
    let mut programs = Rows::new(&tick_schema::EBPF_PROGRAM_STATS);
    for p in &e.programs {
        programs.push(vec![
            host_ip.into(),
            time.into(),
            p.program.as_str().into(),
            p.events_per_sec.into(),
            p.mean_ns.into(),
        ]);
    }
    tables.push(programs);
}

/// T4 and its detail for every VM with a usage row, table by table (parents first).
fn vm_rows(time: &str, vms: &[VmSample], tables: &mut Vec<Rows>) {
    let mut usage = Rows::new(&tick_schema::VM_USAGE);
    let mut disks = Rows::new(&tick_schema::VM_DISK_USAGE);
    let mut nics = Rows::new(&tick_schema::VM_NIC_USAGE);
    let mut ebpf = EbpfVmRows::new();
    for vm in vms.iter().filter(|vm| vm.has_usage_row()) {
        let uuid = vm.uuid.as_str();
        let u = vm.usage.as_ref();
        let m = u.map(|u| &u.mem);
        let disk = u.and_then(|u| u.disk_total.as_ref());
        let net = u.and_then(|u| u.net_total.as_ref());
        usage.push(vec![
            uuid.into(),
            time.into(),
            vm.interval_secs.into(),
            vm_state(vm).into(),
            vm.missing.clone().into(),
            vm.qemu_pid.into(),
            u.and_then(|u| u.vcpus).into(),
            u.and_then(|u| u.cpu_host_pct).into(),
            u.and_then(|u| u.cpu_vcpu_pct).into(),
            u.and_then(|u| u.steal_pct).into(),
            m.and_then(|m| m.allocated_bytes).into(),
            m.and_then(|m| m.max_bytes).into(),
            m.and_then(|m| m.used_bytes).into(),
            m.and_then(|m| m.used_pct).into(),
            m.map(|m| m.source.name()).into(),
            m.and_then(|m| m.actual_less_usable_bytes).into(),
            m.and_then(|m| m.unused_bytes).into(),
            m.and_then(|m| m.usable_bytes).into(),
            m.and_then(|m| m.available_bytes).into(),
            m.and_then(|m| m.rss_bytes).into(),
            m.and_then(|m| m.swap_in_bytes_per_sec).into(),
            m.and_then(|m| m.swap_out_bytes_per_sec).into(),
            m.and_then(|m| m.major_faults_per_sec).into(),
            m.and_then(|m| m.minor_faults_per_sec).into(),
            disk.map(|d| d.read_bytes_per_sec).into(),
            disk.map(|d| d.write_bytes_per_sec).into(),
            disk.map(|d| d.read_iops).into(),
            disk.map(|d| d.write_iops).into(),
            net.map(|n| n.rx.pps).into(),
            net.map(|n| n.tx.pps).into(),
            net.map(|n| n.rx.bytes_per_sec).into(),
            net.map(|n| n.tx.bytes_per_sec).into(),
            net.and_then(|n| n.rx.avg_packet_bits).into(),
            net.and_then(|n| n.tx.avg_packet_bits).into(),
            net.map(|n| n.rx.bps).into(),
            net.map(|n| n.tx.bps).into(),
            u.and_then(|u| u.cpu_vcpu_threads_pct).into(),
            m.and_then(|m| m.guest_cache_bytes).into(),
        ]);
        let Some(u) = u else {
            continue;
        };
        for d in &u.disks {
            disks.push(vec![
                uuid.into(),
                time.into(),
                d.name.as_str().into(),
                d.read_bytes_per_sec.into(),
                d.write_bytes_per_sec.into(),
                d.read_iops.into(),
                d.write_iops.into(),
                d.read_latency_ms.into(),
                d.write_latency_ms.into(),
            ]);
        }
        push_net_rows(&mut nics, uuid, time, &u.nics, None);
        if let Some(e) = &vm.ebpf {
            ebpf.push(uuid, time, e);
        }
    }
    tables.extend([usage, disks, nics]);
    tables.extend(ebpf.into_tables());
}

/// The eBPF tables of the VMs of one tick.
struct EbpfVmRows {
    usage: Rows,
    latency: Rows,
    kvm: Rows,
    sizes: Rows,
    drops: Rows,
}

impl EbpfVmRows {
    fn new() -> Self {
        EbpfVmRows {
            usage: Rows::new(&tick_schema::VM_EBPF_USAGE),
            latency: Rows::new(&tick_schema::VM_LATENCY_HIST),
            kvm: Rows::new(&tick_schema::VM_KVM_EVENTS),
            sizes: Rows::new(&tick_schema::VM_NIC_PACKET_SIZES),
            drops: Rows::new(&tick_schema::VM_NIC_DROPS),
        }
    }

    fn push(&mut self, uuid: &str, time: &str, e: &VmEbpfFigures) {
        let rates = e.block_rates.as_ref();
        let latency = |direction| {
            e.latency
                .iter()
                .find(|l| l.direction == direction)
                .map(|l| l.summary)
        };
        let (read, write) = (latency(DIR_READ), latency(DIR_WRITE));
        let per_sec = |count: u64| {
            crate::usage::positive_seconds(e.interval_secs).map(|dt| count as f64 / dt)
        };
        // Without a tap the VM's traffic is unknown rather than zero.
        let net = |f: &dyn Fn(&VmNicTraffic) -> u64| {
            (!e.nics.is_empty())
                .then(|| per_sec(e.nics.iter().map(f).sum()))
                .flatten()
        };
        self.usage.push(vec![
            uuid.into(),
            time.into(),
            e.interval_secs.into(),
            rates.map(|r| r.read_bytes_per_sec).into(),
            rates.map(|r| r.write_bytes_per_sec).into(),
            rates.map(|r| r.read_iops).into(),
            rates.map(|r| r.write_iops).into(),
            read.map(|s| s.p50_us).into(),
            read.map(|s| s.p95_us).into(),
            read.map(|s| s.p99_us).into(),
            write.map(|s| s.p50_us).into(),
            write.map(|s| s.p95_us).into(),
            write.map(|s| s.p99_us).into(),
            e.cpu_ready.as_ref().map(|r| r.pct).into(),
            e.cpu_ready.as_ref().and_then(|r| r.p99_us).into(),
            e.kvm_events_per_sec().into(),
            net(&|n| n.rx.packets).into(),
            net(&|n| n.tx.packets).into(),
            net(&|n| n.rx.bytes).into(),
            net(&|n| n.tx.bytes).into(),
            net(&|n| n.drops.iter().map(|d| d.1).sum()).into(),
        ]);
        for l in &e.latency {
            for (bucket, &requests) in l.hist.buckets.iter().enumerate() {
                if requests > 0 {
                    // The rows say what they count: [low_ns, high_ns), high_ns NULL for the
                    // last bucket (from 2^36 ns on).
                    self.latency.push(vec![
                        uuid.into(),
                        time.into(),
                        direction_name(l.direction).into(),
                        setmov_common::lat_bucket_low(bucket).into(),
                        setmov_common::lat_bucket_high(bucket).into(),
                        requests.into(),
                    ]);
                }
            }
        }
        for (event, reason, count) in &e.kvm_events {
            self.kvm.push(vec![
                uuid.into(),
                time.into(),
                event.as_str().into(),
                reason.as_str().into(),
                (*count).into(),
            ]);
        }
        for nic in &e.nics {
            for (direction, value) in [("rx", &nic.rx), ("tx", &nic.tx)] {
                for (bucket, &packets) in value.sizes.buckets.iter().enumerate() {
                    if packets > 0 {
                        self.sizes.push(vec![
                            uuid.into(),
                            time.into(),
                            nic.iface.as_str().into(),
                            direction.into(),
                            bucket.into(),
                            packets.into(),
                        ]);
                    }
                }
            }
            for (reason, packets) in &nic.drops {
                self.drops.push(vec![
                    uuid.into(),
                    time.into(),
                    nic.iface.as_str().into(),
                    reason.as_str().into(),
                    (*packets).into(),
                ]);
            }
        }
    }

    fn into_tables(self) -> [Rows; 5] {
        [self.usage, self.latency, self.kvm, self.sizes, self.drops]
    }
}
