//! Types shared by the kernel side (`setmov-ebpf`) and the loader (`setmov-user`).
//!
//! Everything here is `#[repr(C)]` plain data or a pure helper: no I/O, no allocation.
#![no_std]

pub mod kvm;
pub mod lat_hist;
pub mod net;
pub mod sched;

pub use lat_hist::{
    LAT_BUCKETS, LAT_MAX_NS, LAT_SUB_BUCKETS, LatHist, lat_bucket, lat_bucket_high, lat_bucket_low,
};

/// Name of the per-CPU hash map holding the block I/O counters (`BlockIoKey` -> `BlockValue`):
/// per submitting process, disk and direction. The all-process figures per device are its sums
/// (plus what the loader kept of processes it forgot), so one lookup per event does both.
pub const BLOCK_IO_MAP: &str = "BLOCK_IO";
/// Capacity of [`BLOCK_IO_MAP`]: processes × disks × directions doing I/O within the loader's
/// clean-up period (10 s). Preallocated, so that counting never allocates: 8192 × 16 bytes per
/// CPU (256 KiB on 2 CPUs, 16 MiB on 128).
pub const BLOCK_IO_MAX_ENTRIES: u32 = 8192;
/// Name of the per-CPU array (one `u64`) counting events that found the counter map full.
pub const BLOCK_IO_LOST_MAP: &str = "BLOCK_IO_LOST";

/// Buckets of a [`Log2Hist`]: bucket `i` counts values `v` with `2^i <= v < 2^(i+1)` (bucket 0
/// also holds 0); the last bucket holds everything from `2^(LOG2_BUCKETS-1)` up. Used for
/// packet sizes only, whose order of magnitude is all that is read off them; latencies and
/// waits use the finer [`LatHist`].
pub const LOG2_BUCKETS: usize = 40;

/// A log2 histogram (of packet sizes), as kept in map values.
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

/// Who submitted block I/O, in which direction: the key of the per-process latency
/// histograms (`BLOCK_LATENCY_TGID`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Process id (the kernel's tgid) of the submitting task.
    pub tgid: u32,
    /// [`DIR_READ`] or [`DIR_WRITE`].
    pub direction: u32,
}

/// Key of [`BLOCK_IO_MAP`]: who submitted the I/O, to which disk, in which direction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockIoKey {
    /// Process id (the kernel's tgid) of the submitting task.
    pub tgid: u32,
    /// The disk's `dev_t` (`MAJOR << 20 | MINOR`; a partition's I/O goes under its disk).
    pub dev: u32,
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

/// Where the block programs find what they read in the kernel's structs: byte offsets from
/// this kernel's BTF, written by the loader into the programs' read-only global
/// `BLOCK_OFFSETS` (so the verifier knows them as constants and checks every read against the
/// struct's BTF). Struct layouts differ between kernels and builds: none is built in.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockOffsets {
    /// `struct request`: `q` (`struct request_queue *`).
    pub request_queue: u32,
    /// `struct request`: `cmd_flags` (`blk_opf_t`, 4 bytes).
    pub request_cmd_flags: u32,
    /// `struct request`: `__data_len` (bytes, 4).
    pub request_data_len: u32,
    /// `struct request_queue`: `disk` (`struct gendisk *`).
    pub queue_disk: u32,
    /// `struct gendisk`: `major` (int).
    pub disk_major: u32,
    /// `struct gendisk`: `first_minor` (int).
    pub disk_first_minor: u32,
    /// `struct bio`: `bi_bdev` (`struct block_device *`).
    pub bio_bdev: u32,
    /// `struct bio`: `bi_opf` (`blk_opf_t`).
    pub bio_opf: u32,
    /// `struct bio`: `bi_iter.bi_size` (bytes, 4).
    pub bio_size: u32,
    /// `struct block_device`: `bd_disk` (`struct gendisk *`).
    pub bdev_disk: u32,
}

/// The kernel's `REQ_OP_MASK`: the operation in the low 8 bits of a `blk_opf_t`.
pub const REQ_OP_MASK: u32 = 0xff;
/// `REQ_OP_READ` and `REQ_OP_WRITE`; the others (flush, discard, ...) carry no data we count.
const REQ_OP_READ: u32 = 0;
const REQ_OP_WRITE: u32 = 1;

/// Direction of a request or bio from its `blk_opf_t`; `None` for operations other than reads
/// and writes.
#[inline(always)]
pub const fn direction_from_opf(opf: u32) -> Option<u32> {
    match opf & REQ_OP_MASK {
        REQ_OP_READ => Some(DIR_READ),
        REQ_OP_WRITE => Some(DIR_WRITE),
        _ => None,
    }
}

/// The kernel-internal `dev_t` (`MKDEV`) of a disk's major and first minor.
#[inline(always)]
pub const fn disk_dev(major: u32, first_minor: u32) -> u32 {
    (major << 20) | (first_minor & ((1 << 20) - 1))
}

/// Name of the array of requests in flight (`u32` bucket -> [`InflightBucket`]), from
/// `block_io_start` (or `block_rq_issue`) to `block_rq_complete`, indexed by
/// [`inflight_bucket`] of the request's address. An array: its lookups are inlined by the
/// verifier (no hashing call, no lock, no allocation) and it needs no clean-up (see
/// [`InflightBucket`]).
pub const BLOCK_INFLIGHT_MAP: &str = "BLOCK_INFLIGHT";
/// log2 of the buckets of [`BLOCK_INFLIGHT_MAP`].
pub const INFLIGHT_BUCKET_BITS: u32 = 16;
/// Buckets of [`BLOCK_INFLIGHT_MAP`], two requests each: 65536 × 48 bytes = 3 MiB. With 3000
/// requests in flight a request finds both slots of its bucket taken about once in 1000.
pub const INFLIGHT_BUCKETS: u32 = 1 << INFLIGHT_BUCKET_BITS;
/// Name of the per-CPU hash of issue-to-completion latency per device and direction
/// (`DeviceKey` -> `LatHist` of nanoseconds).
pub const BLOCK_LATENCY_DEVICE_MAP: &str = "BLOCK_LATENCY_DEVICE";
/// Name of the per-CPU hash of the same latency per submitting process and direction
/// (`BlockKey` -> `LatHist` of nanoseconds); tgid 0 holds requests whose submitter is unknown.
pub const BLOCK_LATENCY_TGID_MAP: &str = "BLOCK_LATENCY_TGID";
/// Capacity of [`BLOCK_LATENCY_DEVICE_MAP`] (devices × 2 directions); each live key costs
/// 2184 bytes per CPU.
pub const BLOCK_LATENCY_DEVICE_MAX_ENTRIES: u32 = 1024;
/// Capacity of [`BLOCK_LATENCY_TGID_MAP`]; not preallocated (2184 bytes per CPU a key: a
/// preallocated map would take 17 MiB per CPU), each live key costs 2184 bytes per CPU
/// (entries of exited processes are removed by the loader every 10 s). A key is created once
/// per process and direction, so allocation is off the per-event path.
pub const BLOCK_LATENCY_TGID_MAX_ENTRIES: u32 = 8192;
/// Name of the one-slot per-CPU array holding an all-zero `LatHist`, the value a new
/// histogram entry starts from (too big to build on the eBPF stack).
pub const ZERO_HIST_MAP: &str = "ZERO_HIST";
/// Name of the per-CPU hash of [`PairingCounters`] by device and direction (`DeviceKey`): how
/// requests and completions were paired, so that no latency is lost silently.
pub const BLOCK_PAIRING_MAP: &str = "BLOCK_PAIRING";
/// Capacity of [`BLOCK_PAIRING_MAP`] (devices × 2 directions; 24 bytes per CPU a key).
pub const BLOCK_PAIRING_MAX_ENTRIES: u32 = 1024;

/// The [`BLOCK_INFLIGHT_MAP`] bucket of a request: its address in 64-byte units, modulo the
/// buckets. `struct request`s are cache-line aligned and lie side by side in their tag set's
/// pages, so the requests of one device use neighbouring buckets: the few pages they touch
/// stay in the caches and the TLB (a hash spreading them over the 3 MiB array cost a miss per
/// event).
#[inline(always)]
pub const fn inflight_bucket(request: u64) -> u32 {
    ((request >> 6) as u32) & (INFLIGHT_BUCKETS - 1)
}

/// One request in flight; all zero when the slot is free.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InflightSlot {
    /// The kernel's `struct request *`; 0 for a free slot.
    pub request: u64,
    /// `bpf_ktime_get_ns` at the request's (last) `block_rq_issue`; 0 until it is issued.
    pub issued_ns: u64,
    /// Submitting process; 0 when unknown (the request was first seen at issue).
    pub tgid: u32,
    /// The request's disk (`dev_t`).
    pub dev: u32,
}

/// What noting a request in its bucket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// In its own slot (the request's, or a free one).
    Kept,
    /// Both slots held other requests: it took the place of one of them, which will find
    /// nothing at its completion (counted unpaired). `issued`: that one had been issued (most
    /// likely a request whose completion was missed, whose slot was waiting to be reused).
    Displaced { issued: bool },
}

/// The two requests in flight a bucket of [`BLOCK_INFLIGHT_MAP`] can hold. Pairing is exact
/// (by the request's address), so requests to one sector never mix up. A request whose
/// completion was missed (the kernel skips a BPF program that would run nested in another on
/// its CPU) leaves its slot behind; the slot is taken again when that `struct request` starts
/// its next I/O (same address, same bucket), or by a request finding its bucket full: no
/// clean-up is needed and no stale age is handed on.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InflightBucket {
    pub slots: [InflightSlot; 2],
}

impl InflightBucket {
    /// Notes a request that starts (or is issued without having been seen starting): in its
    /// own slot if it has one, else a free one, else in place of the request issued longest
    /// ago (the most likely to be a left-over), or of the first.
    #[inline(always)]
    pub fn note(&mut self, slot: InflightSlot) -> Noted {
        let [first, second] = &mut self.slots;
        let own_or_free = |s: &InflightSlot| s.request == slot.request || s.request == 0;
        if own_or_free(first) {
            *first = slot;
            return Noted::Kept;
        }
        if own_or_free(second) {
            *second = slot;
            return Noted::Kept;
        }
        let second_is_older =
            second.issued_ns != 0 && (first.issued_ns == 0 || second.issued_ns < first.issued_ns);
        let displaced = if second_is_older { second } else { first };
        let issued = displaced.issued_ns != 0;
        *displaced = slot;
        Noted::Displaced { issued }
    }

    /// Marks `request` issued at `now_ns`; a request issued again after the driver gave it
    /// back (a requeue) is timed from its last issue, as the kernel's own accounting does.
    /// False if the bucket does not hold it (it was not seen starting, or was displaced).
    #[inline(always)]
    pub fn issue(&mut self, request: u64, now_ns: u64) -> bool {
        for s in self.slots.iter_mut() {
            if s.request == request {
                s.issued_ns = now_ns;
                return true;
            }
        }
        false
    }

    /// Takes `request` out at its completion; `None` if the bucket does not hold it, or holds
    /// it not issued (no latency to give).
    #[inline(always)]
    pub fn complete(&mut self, request: u64) -> Option<InflightSlot> {
        for s in self.slots.iter_mut() {
            if s.request == request {
                let taken = *s;
                *s = InflightSlot::default();
                return (taken.issued_ns != 0).then_some(taken);
            }
        }
        None
    }
}

/// Value of [`BLOCK_PAIRING_MAP`]: cumulative per CPU since load, of one device and direction
/// (those of the request that was noted or completed).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairingCounters {
    /// Requests that found both slots of their [`InflightBucket`] held by other requests and
    /// displaced one (see [`Noted::Displaced`]).
    pub collided: u64,
    /// Of those, the ones that displaced a request already issued: its latency is lost unless
    /// its completion had been missed anyway.
    pub overflowed: u64,
    /// Completions that found no request to pair with, so added no latency: requests started
    /// before the programs were attached, displaced ones, or the later parts of a request
    /// completed in parts.
    pub unpaired: u64,
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are #[repr(C)], made only of integers, with no padding.
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::BlockValue {}
    unsafe impl aya::Pod for super::BlockIoKey {}
    unsafe impl aya::Pod for super::BlockOffsets {}
    unsafe impl aya::Pod for super::Log2Hist {}
    unsafe impl aya::Pod for super::InflightBucket {}
    unsafe impl aya::Pod for super::InflightSlot {}
    unsafe impl aya::Pod for super::PairingCounters {}
    unsafe impl aya::Pod for super::LatHist {}
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
    fn directions_of_request_operations() {
        assert_eq!(direction_from_opf(0), Some(DIR_READ));
        // A write with REQ_SYNC | REQ_FUA (bits 11 and 17) set.
        assert_eq!(direction_from_opf(1 | 1 << 11 | 1 << 17), Some(DIR_WRITE));
        // Flush (2), discard (3), write zeroes (9): no data counted.
        assert_eq!(direction_from_opf(2), None);
        assert_eq!(direction_from_opf(3), None);
        assert_eq!(direction_from_opf(9), None);
    }

    #[test]
    fn disk_devices_as_the_kernel_packs_them() {
        assert_eq!(disk_dev(254, 16), (254 << 20) | 16);
        assert_eq!(dev_major_minor(disk_dev(7, 3)), (7, 3));
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

    fn started(request: u64, tgid: u32) -> InflightSlot {
        InflightSlot {
            request,
            issued_ns: 0,
            tgid,
            dev: 7,
        }
    }

    #[test]
    fn requests_pair_by_address_whatever_their_sector() {
        let mut bucket = InflightBucket::default();
        assert_eq!(bucket.note(started(0x1000, 1)), Noted::Kept);
        assert_eq!(bucket.note(started(0x2000, 2)), Noted::Kept);
        assert!(bucket.issue(0x2000, 30));
        assert!(bucket.issue(0x1000, 40));
        // Requeued and issued again: timed from the last issue.
        assert!(bucket.issue(0x1000, 50));
        assert!(!bucket.issue(0x3000, 60), "not seen starting");
        let done = bucket.complete(0x1000).map(|s| (s.tgid, s.issued_ns));
        assert_eq!(done, Some((1, 50)));
        assert_eq!(
            bucket.complete(0x1000),
            None,
            "completed in parts: paired once"
        );
        assert_eq!(bucket.complete(0x2000).map(|s| s.tgid), Some(2));
        assert_eq!(bucket, InflightBucket::default());
    }

    #[test]
    fn a_full_bucket_displaces_the_request_issued_longest_ago() {
        let mut bucket = InflightBucket::default();
        bucket.note(started(0x1000, 1));
        bucket.note(started(0x2000, 2));
        bucket.issue(0x1000, 90);
        bucket.issue(0x2000, 10);
        // Its completion was missed: its struct starts again, and takes its own slot back.
        assert_eq!(bucket.note(started(0x2000, 3)), Noted::Kept);
        bucket.issue(0x2000, 20);
        assert_eq!(
            bucket.note(started(0x3000, 4)),
            Noted::Displaced { issued: true }
        );
        assert_eq!(bucket.complete(0x2000), None, "displaced");
        assert_eq!(bucket.complete(0x1000).map(|s| s.tgid), Some(1));
        // Started, never issued: completes without a latency.
        assert_eq!(bucket.complete(0x3000), None);
        bucket.note(started(0x4000, 5));
        bucket.note(started(0x5000, 6));
        assert_eq!(
            bucket.note(started(0x6000, 7)),
            Noted::Displaced { issued: false }
        );
    }

    #[test]
    fn neighbouring_requests_take_neighbouring_buckets() {
        // 64 requests 384 bytes apart (a tag set's array of requests) land in 64 buckets 6
        // apart, within 25 KiB of the array.
        let buckets: [u32; 64] =
            core::array::from_fn(|i| inflight_bucket(0xffff_8880_0420_0000 + 384 * i as u64));
        assert!(buckets.windows(2).all(|w| w[1] == w[0] + 6));
        assert!(buckets.iter().all(|&b| b < INFLIGHT_BUCKETS));
        // The array spans 4 MiB of addresses, then starts again.
        let request = 0xffff_8880_0420_0040;
        assert_eq!(
            inflight_bucket(request + (4 << 20)),
            inflight_bucket(request)
        );
    }

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<BlockKey>(), 8);
        assert_eq!(size_of::<BlockValue>(), 16);
        assert_eq!(size_of::<BlockIoKey>(), 12);
        assert_eq!(size_of::<BlockOffsets>(), 40);
        assert_eq!(size_of::<InflightSlot>(), 24);
        assert_eq!(size_of::<InflightBucket>(), 48);
        assert_eq!(size_of::<PairingCounters>(), 24);
        assert_eq!(size_of::<DeviceKey>(), 8);
        assert_eq!(size_of::<Log2Hist>(), 8 * LOG2_BUCKETS);
    }
}
