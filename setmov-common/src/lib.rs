//! Types shared by the kernel side (`setmov-ebpf`) and the loader (`setmov-user`).
//!
//! Everything here is `#[repr(C)]` plain data or a pure helper: no I/O, no allocation.
#![no_std]

pub mod kvm;
pub mod net;
pub mod sched;

/// Name of the per-CPU hash map holding the block I/O counters (`BlockKey` -> `BlockValue`).
pub const BLOCK_IO_MAP: &str = "BLOCK_IO";
/// Capacity of [`BLOCK_IO_MAP`]: two directions per process, so ~8000 live submitting
/// processes. The map is per-CPU and not preallocated: each live key costs 16 bytes per CPU.
pub const BLOCK_IO_MAX_ENTRIES: u32 = 16384;
/// Name of the per-CPU hash of all processes' block I/O by device and direction
/// (`DeviceKey` -> `BlockValue`): complete even when the per-process map is full, and per
/// device so that the host total can count the same devices as /proc/diskstats' (the disks
/// nothing sits below; a loop device's requests reach the disk under its file again).
pub const BLOCK_IO_TOTAL_MAP: &str = "BLOCK_IO_TOTAL";
/// Capacity of [`BLOCK_IO_TOTAL_MAP`]: two keys per block device that ever did I/O.
pub const BLOCK_IO_TOTAL_MAX_ENTRIES: u32 = 1024;
/// Name of the per-CPU array (one `u64`) counting events that found the counter map full.
pub const BLOCK_IO_LOST_MAP: &str = "BLOCK_IO_LOST";

/// Buckets of a [`Log2Hist`]: bucket `i` counts values `v` with `2^i <= v < 2^(i+1)` (bucket 0
/// also holds 0); the last bucket holds everything from `2^(LOG2_BUCKETS-1)` up. 40 buckets
/// reach 2^39 ns (9 minutes) for latencies and far past any packet size.
pub const LOG2_BUCKETS: usize = 40;

/// A log2 histogram, as kept in per-CPU map values (summed over CPUs by the loader).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log2Hist {
    pub buckets: [u64; LOG2_BUCKETS],
}

impl Default for Log2Hist {
    fn default() -> Self {
        Log2Hist {
            buckets: [0; LOG2_BUCKETS],
        }
    }
}

/// The [`Log2Hist`] bucket of `value`: `floor(log2(value))`, 0 for 0 and 1, capped at the last.
#[inline(always)]
pub const fn log2_bucket(value: u64) -> usize {
    if value == 0 {
        return 0;
    }
    let log = (63 - value.leading_zeros()) as usize;
    if log >= LOG2_BUCKETS {
        LOG2_BUCKETS - 1
    } else {
        log
    }
}

/// Direction of a block I/O: data read from the device.
pub const DIR_READ: u32 = 0;
/// Direction of a block I/O: data written to the device.
pub const DIR_WRITE: u32 = 1;

/// Key of [`BLOCK_IO_MAP`]: who submitted the I/O and in which direction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Process id (the kernel's tgid) of the submitting task.
    pub tgid: u32,
    /// [`DIR_READ`] or [`DIR_WRITE`].
    pub direction: u32,
}

/// Value of [`BLOCK_IO_MAP`]: cumulative counters since the program was loaded.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockValue {
    /// Requests started (on the `block_bio_queue` fallback: bios queued).
    pub ops: u64,
    /// Bytes of those requests, including bios merged into them later.
    pub bytes: u64,
}

/// Where a program finds its inputs in its tracepoint's record. The loader fills one in per
/// program (global variable `<PROGRAM>_LAYOUT`) from the tracepoint's `format` file, because
/// record layouts differ between kernels. All zeroes means "not set": the program counts nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockTpLayout {
    /// Byte offset of `dev_t dev` (4 bytes, the kernel's `MAJOR << 20 | MINOR`).
    pub dev_offset: u32,
    /// Byte offset of `sector_t sector` (8 bytes).
    pub sector_offset: u32,
    /// Byte offset of `unsigned int nr_sector` in the record.
    pub nr_sector_offset: u32,
    /// Byte offset of `char rwbs[]` in the record.
    pub rwbs_offset: u32,
}

/// Name of the LRU hash of requests in flight (`InflightKey` -> `InflightValue`): from
/// `block_io_start` (or `block_rq_issue`) to `block_rq_complete`. LRU so that a request whose
/// completion is never seen cannot fill it.
pub const BLOCK_INFLIGHT_MAP: &str = "BLOCK_INFLIGHT";
/// Capacity of [`BLOCK_INFLIGHT_MAP`]: far above the requests a host keeps in flight.
pub const BLOCK_INFLIGHT_MAX_ENTRIES: u32 = 65536;
/// Name of the per-CPU hash of issue-to-completion latency per device and direction
/// (`DeviceKey` -> `Log2Hist` of nanoseconds).
pub const BLOCK_LATENCY_DEVICE_MAP: &str = "BLOCK_LATENCY_DEVICE";
/// Name of the per-CPU hash of the same latency per submitting process and direction
/// (`BlockKey` -> `Log2Hist` of nanoseconds); tgid 0 holds requests whose submitter is unknown.
pub const BLOCK_LATENCY_TGID_MAP: &str = "BLOCK_LATENCY_TGID";
/// Capacity of [`BLOCK_LATENCY_DEVICE_MAP`] (devices × 2 directions).
pub const BLOCK_LATENCY_DEVICE_MAX_ENTRIES: u32 = 1024;
/// Capacity of [`BLOCK_LATENCY_TGID_MAP`]; each live key costs 320 bytes per CPU.
pub const BLOCK_LATENCY_TGID_MAX_ENTRIES: u32 = 8192;
/// Name of the one-slot per-CPU array holding an all-zero `Log2Hist`, the value a new
/// histogram entry starts from (too big to build on the eBPF stack).
pub const ZERO_HIST_MAP: &str = "ZERO_HIST";

/// A request in flight: device, direction and its first sector (what `block_rq_complete`
/// reports again).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InflightKey {
    pub dev: u32,
    pub direction: u32,
    pub sector: u64,
}

/// Who submitted a request in flight and when it was issued to the device.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InflightValue {
    /// `bpf_ktime_get_ns` at `block_rq_issue` (at `block_io_start` until then).
    pub issue_ns: u64,
    /// Submitting process; 0 when unknown (the request was first seen at issue).
    pub tgid: u64,
}

/// Key of [`BLOCK_LATENCY_DEVICE_MAP`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    /// The kernel's `dev_t`: `MAJOR << 20 | MINOR`.
    pub dev: u32,
    pub direction: u32,
}

/// Major and minor number of a kernel-internal `dev_t` (as block tracepoints report it).
pub const fn dev_major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// Direction of a block I/O from the first two bytes of a tracepoint's `rwbs` string.
///
/// The kernel writes an optional `F` (pre-flush) and then one operation letter: `R` read,
/// `W` write, `D` discard, `F` flush, `N` other, followed by flag letters. Only reads and
/// writes carry data the way we count it; everything else yields `None`.
pub const fn direction_from_rwbs(rwbs: [u8; 2]) -> Option<u32> {
    let op = if rwbs[0] == b'F' { rwbs[1] } else { rwbs[0] };
    match op {
        b'R' => Some(DIR_READ),
        b'W' => Some(DIR_WRITE),
        _ => None,
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are #[repr(C)], made only of integers, with no padding.
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::BlockValue {}
    unsafe impl aya::Pod for super::BlockTpLayout {}
    unsafe impl aya::Pod for super::Log2Hist {}
    unsafe impl aya::Pod for super::InflightKey {}
    unsafe impl aya::Pod for super::InflightValue {}
    unsafe impl aya::Pod for super::DeviceKey {}
    unsafe impl aya::Pod for super::kvm::KvmKey {}
    unsafe impl aya::Pod for super::kvm::KvmExitLayout {}
    unsafe impl aya::Pod for super::kvm::KvmUserspaceExitLayout {}
    unsafe impl aya::Pod for super::kvm::KvmFieldLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rwbs_directions() {
        assert_eq!(direction_from_rwbs(*b"R\0"), Some(DIR_READ));
        assert_eq!(direction_from_rwbs(*b"RA"), Some(DIR_READ));
        assert_eq!(direction_from_rwbs(*b"WS"), Some(DIR_WRITE));
        // Pre-flush then write (fsync with FUA: "FWFS").
        assert_eq!(direction_from_rwbs(*b"FW"), Some(DIR_WRITE));
        // A flush alone, with the sync flag or nothing after it.
        assert_eq!(direction_from_rwbs(*b"FS"), None);
        assert_eq!(direction_from_rwbs(*b"F\0"), None);
        assert_eq!(direction_from_rwbs(*b"FN"), None);
        assert_eq!(direction_from_rwbs(*b"DS"), None);
        assert_eq!(direction_from_rwbs(*b"N\0"), None);
        assert_eq!(direction_from_rwbs([0, 0]), None);
    }

    #[test]
    fn device_numbers() {
        // 254:16 is /dev/vdb on virtio.
        assert_eq!(dev_major_minor((254 << 20) | 16), (254, 16));
        assert_eq!(dev_major_minor(0), (0, 0));
    }

    #[test]
    fn log2_buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(1500), 10);
        assert_eq!(log2_bucket((1 << 39) - 1), 38);
        assert_eq!(log2_bucket(1 << 39), 39);
        assert_eq!(log2_bucket(u64::MAX), LOG2_BUCKETS - 1);
    }

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<BlockKey>(), 8);
        assert_eq!(size_of::<BlockValue>(), 16);
        assert_eq!(size_of::<BlockTpLayout>(), 16);
        assert_eq!(size_of::<InflightKey>(), 16);
        assert_eq!(size_of::<InflightValue>(), 16);
        assert_eq!(size_of::<DeviceKey>(), 8);
        assert_eq!(size_of::<Log2Hist>(), 8 * LOG2_BUCKETS);
    }
}
