//! Raw host counters at one instant, as read from procfs.

/// One line of the cpu section of `/proc/stat`, in clock ticks.
///
/// Fields a kernel does not report (very old kernels) read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    /// Already counted inside `user` by the kernel.
    pub guest: u64,
    /// Already counted inside `nice` by the kernel.
    pub guest_nice: u64,
}

impl CpuTimes {
    /// All time the CPU(s) accounted for. `guest` and `guest_nice` are left out because the
    /// kernel already adds them to `user` and `nice`; counting them again would inflate the total.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

impl From<&procfs::CpuTime> for CpuTimes {
    fn from(t: &procfs::CpuTime) -> Self {
        CpuTimes {
            user: t.user,
            nice: t.nice,
            system: t.system,
            idle: t.idle,
            iowait: t.iowait.unwrap_or(0),
            irq: t.irq.unwrap_or(0),
            softirq: t.softirq.unwrap_or(0),
            steal: t.steal.unwrap_or(0),
            guest: t.guest.unwrap_or(0),
            guest_nice: t.guest_nice.unwrap_or(0),
        }
    }
}

/// The `/proc/meminfo` fields the usage equations need, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub buffers: u64,
    pub cached: u64,
    /// `MemAvailable`, absent before Linux 3.14.
    pub available: Option<u64>,
    /// `SReclaimable`, the slab the kernel can reclaim (procps 3.3 counts it as cache);
    /// absent before Linux 2.6.19.
    pub s_reclaimable: Option<u64>,
}

/// Whether a block device is a whole disk or a partition of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Disk,
    Partition,
}

/// One device line of `/proc/diskstats`. Sectors are always 512 bytes there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub name: String,
    pub reads: u64,
    pub reads_merged: u64,
    pub sectors_read: u64,
    pub ms_reading: u64,
    pub writes: u64,
    pub writes_merged: u64,
    pub sectors_written: u64,
    pub ms_writing: u64,
    /// A gauge, not a counter.
    pub in_progress: u64,
    pub ms_doing_io: u64,
    pub weighted_ms_doing_io: u64,
}

/// A block device with its counters and what `/proc/partitions` says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub kind: DeviceKind,
    /// Size from `/proc/partitions`, when listed there.
    pub size_bytes: Option<u64>,
    pub counters: DiskCounters,
}

/// One interface line of `/proc/net/dev`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

/// Everything read from procfs at one instant. A section whose file could not be read or
/// parsed is `None` (or empty), and the reason is in `problems`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    /// The aggregate `cpu` line.
    pub cpu: Option<CpuTimes>,
    /// The `cpuN` lines, in file order.
    pub cpus: Vec<CpuTimes>,
    pub mem: Option<MemInfo>,
    pub disks: Vec<Disk>,
    pub nets: Vec<NetCounters>,
    /// The whole disks of `disks` the host disk total counts: those nothing sits below (see
    /// [`super::topology`]).
    pub disk_total_over: Vec<String>,
    /// The interfaces of `nets` the host network total counts: the NICs on a bus.
    pub net_total_over: Vec<String>,
    /// Files that could not be read or lines that were skipped, one sentence each.
    pub problems: Vec<String>,
}
