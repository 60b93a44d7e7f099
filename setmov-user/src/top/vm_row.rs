//! A VM as `setmov top` shows it: its row (figures of the newest tick), the columns it can be
//! sorted by, and the history its detail pane draws; no I/O.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::escape::escape_control;
use crate::store::VmSample;
use crate::usage::disk::DiskTotals;
use crate::usage::host::NetTotals;
use crate::usage::vm::VmMemUsage;

use super::app::HISTORY_LEN;

/// A VM's memory as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VmMemory {
    /// The guest reports its use through the balloon driver.
    Used {
        used: u64,
        allocated: u64,
    },
    /// No balloon statistics: only what it was given.
    AllocationOnly(u64),
    Unknown,
}

impl VmMemory {
    pub(super) fn from_usage(mem: &VmMemUsage) -> VmMemory {
        match (mem.used_bytes, mem.allocated_bytes) {
            (Some(used), Some(allocated)) => VmMemory::Used { used, allocated },
            (None, Some(allocated)) => VmMemory::AllocationOnly(allocated),
            _ => VmMemory::Unknown,
        }
    }

    /// What sorting compares: use when known, else the allocation.
    fn sort_bytes(self) -> Option<f64> {
        match self {
            VmMemory::Used { used, .. } => Some(used as f64),
            VmMemory::AllocationOnly(allocated) => Some(allocated as f64),
            VmMemory::Unknown => None,
        }
    }
}

/// One line of the VM table: a VM's figures at one tick. `None` is "no figure this tick".
#[derive(Debug, Clone, PartialEq)]
pub struct VmRow {
    pub uuid: String,
    pub name: String,
    /// libvirt's state, or `missing` / `gone` / `unknown`.
    pub status: &'static str,
    /// Why libvirt gave no figures this tick.
    pub missing: Option<String>,
    pub vcpus: Option<u32>,
    /// virt-top's CPU %: ÷ host cores.
    pub cpu_pct: Option<f64>,
    /// ÷ the VM's vCPUs.
    pub vcpu_pct: Option<f64>,
    /// Each vCPU's busy share, in vCPU order; empty when unknown.
    pub each_vcpu_pct: Vec<Option<f64>>,
    pub steal_pct: Option<f64>,
    pub memory: VmMemory,
    pub rss_bytes: Option<u64>,
    pub disk: Option<DiskTotals>,
    pub net: Option<NetTotals>,
    /// The slower direction's p99 of the I/O its qemu process submitted (eBPF).
    pub latency_p99_us: Option<f64>,
    pub kvm_per_sec: Option<f64>,
    /// Run-queue wait of its vCPUs (eBPF).
    pub cpu_ready_pct: Option<f64>,
}

impl VmRow {
    pub fn from_sample(vm: &VmSample) -> VmRow {
        let usage = vm.usage.as_ref();
        let ebpf = vm.ebpf.as_ref();
        let status = if vm.gone {
            "gone"
        } else if vm.missing.is_some() {
            "missing"
        } else {
            vm.state.map_or("unknown", |s| s.name())
        };
        VmRow {
            uuid: vm.uuid.clone(),
            // Written out here, once: every view of the row (table, detail, filter) is safe.
            name: escape_control(&vm.name).into_owned(),
            status,
            missing: vm
                .missing
                .as_deref()
                .map(|m| escape_control(m).into_owned()),
            vcpus: usage.and_then(|u| u.vcpus),
            cpu_pct: usage.and_then(|u| u.cpu_host_pct),
            vcpu_pct: usage.and_then(|u| u.cpu_vcpu_pct),
            each_vcpu_pct: usage.map(|u| u.vcpu_pct.clone()).unwrap_or_default(),
            steal_pct: usage.and_then(|u| u.steal_pct),
            memory: usage.map_or(VmMemory::Unknown, |u| VmMemory::from_usage(&u.mem)),
            rss_bytes: usage.and_then(|u| u.mem.rss_bytes),
            disk: usage.and_then(|u| u.disk_total),
            net: usage.and_then(|u| u.net_total),
            latency_p99_us: ebpf.and_then(|e| {
                e.latency
                    .iter()
                    .map(|l| l.summary.p99_us)
                    .max_by(f64::total_cmp)
            }),
            kvm_per_sec: ebpf.and_then(|e| e.kvm_events_per_sec()),
            cpu_ready_pct: ebpf.and_then(|e| e.cpu_ready.as_ref().map(|c| c.pct)),
        }
    }

    pub fn disk_iops(&self) -> Option<f64> {
        self.disk.map(|d| d.read_iops + d.write_iops)
    }

    fn sort_value(&self, column: Column) -> SortValue<'_> {
        let number = SortValue::Number;
        match column {
            Column::Name => SortValue::Text(&self.name),
            Column::State => SortValue::Text(self.status),
            Column::Cpu => number(self.cpu_pct),
            Column::VcpuCpu => number(self.vcpu_pct),
            Column::Steal => number(self.steal_pct),
            Column::Memory => number(self.memory.sort_bytes()),
            Column::DiskRead => number(self.disk.map(|d| d.read_bytes_per_sec)),
            Column::DiskWrite => number(self.disk.map(|d| d.write_bytes_per_sec)),
            Column::Iops => number(self.disk_iops()),
            Column::Latency => number(self.latency_p99_us),
            Column::NetRx => number(self.net.map(|n| n.rx.bps)),
            Column::NetTx => number(self.net.map(|n| n.tx.bps)),
            Column::Kvm => number(self.kvm_per_sec),
        }
    }
}

enum SortValue<'a> {
    Text(&'a str),
    Number(Option<f64>),
}

/// The columns of the VM table, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Name,
    State,
    Cpu,
    VcpuCpu,
    Steal,
    Memory,
    DiskRead,
    DiskWrite,
    Iops,
    Latency,
    NetRx,
    NetTx,
    Kvm,
}

impl Column {
    pub const ALL: [Column; 13] = [
        Column::Name,
        Column::State,
        Column::Cpu,
        Column::VcpuCpu,
        Column::Steal,
        Column::Memory,
        Column::DiskRead,
        Column::DiskWrite,
        Column::Iops,
        Column::Latency,
        Column::NetRx,
        Column::NetTx,
        Column::Kvm,
    ];

    fn position(self) -> usize {
        Column::ALL.iter().position(|&c| c == self).unwrap_or(0)
    }

    pub(super) fn next(self) -> Column {
        let next = (self.position() + 1) % Column::ALL.len();
        Column::ALL.get(next).copied().unwrap_or(self)
    }

    pub(super) fn previous(self) -> Column {
        let previous = (self.position() + Column::ALL.len() - 1) % Column::ALL.len();
        Column::ALL.get(previous).copied().unwrap_or(self)
    }

    /// Names sort A to Z, figures largest first (as top does).
    fn ascending_by_default(self) -> bool {
        matches!(self, Column::Name | Column::State)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub column: Column,
    /// Against the column's natural order.
    pub reversed: bool,
}

impl Sort {
    pub fn ascending(self) -> bool {
        self.column.ascending_by_default() != self.reversed
    }

    /// Rows without a figure come last whichever the direction; ties go by name.
    pub(super) fn compare(self, a: &VmRow, b: &VmRow) -> Ordering {
        let order = match (a.sort_value(self.column), b.sort_value(self.column)) {
            (SortValue::Text(x), SortValue::Text(y)) => self.directed(x.cmp(y)),
            (SortValue::Number(Some(x)), SortValue::Number(Some(y))) => {
                self.directed(x.total_cmp(&y))
            }
            (SortValue::Number(Some(_)), SortValue::Number(None)) => Ordering::Less,
            (SortValue::Number(None), SortValue::Number(Some(_))) => Ordering::Greater,
            _ => Ordering::Equal,
        };
        order.then_with(|| a.name.cmp(&b.name))
    }

    fn directed(self, order: Ordering) -> Ordering {
        if self.ascending() {
            order
        } else {
            order.reverse()
        }
    }
}

/// The newest values of one figure, oldest first; `None` where the tick had none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series(VecDeque<Option<f64>>);

impl Series {
    pub(super) fn push(&mut self, value: Option<f64>) {
        if self.0.len() == HISTORY_LEN {
            self.0.pop_front();
        }
        self.0.push_back(value.filter(|v| v.is_finite()));
    }

    pub fn newest_first(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        self.0.iter().rev().copied()
    }

    pub fn latest(&self) -> Option<f64> {
        self.0.back().copied().flatten()
    }

    /// The largest of the newest `count` values.
    pub fn max_of_newest(&self, count: usize) -> Option<f64> {
        self.newest_first()
            .take(count)
            .flatten()
            .max_by(f64::total_cmp)
    }
}

/// What the detail pane plots of one VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmHistory {
    pub cpu_vcpu_pct: Series,
    pub disk_bytes_per_sec: Series,
    pub net_bits_per_sec: Series,
    pub latency_p99_us: Series,
}

impl VmHistory {
    pub(super) fn push(&mut self, row: &VmRow) {
        self.cpu_vcpu_pct.push(row.vcpu_pct);
        self.disk_bytes_per_sec
            .push(row.disk.map(|d| d.bytes_per_sec()));
        self.net_bits_per_sec
            .push(row.net.map(|n| n.rx.bps + n.tx.bps));
        self.latency_p99_us.push(row.latency_p99_us);
    }
}
