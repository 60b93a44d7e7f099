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
/// Capacity of [`BLOCK_INFLIGHT_MAP`]: keys (device, direction, first sector), each holding up
/// to [`INFLIGHT_SLOTS`] requests; far above what a host keeps in flight. The map is
/// preallocated: 32768 × (16 B key + 128 B value + the kernel's ~50 B) ≈ 6 MiB.
pub const BLOCK_INFLIGHT_MAX_ENTRIES: u32 = 32768;
/// Name of the per-CPU hash of issue-to-completion latency per device and direction
/// (`DeviceKey` -> `LatHist` of nanoseconds).
pub const BLOCK_LATENCY_DEVICE_MAP: &str = "BLOCK_LATENCY_DEVICE";
/// Name of the per-CPU hash of the same latency per submitting process and direction
/// (`BlockKey` -> `LatHist` of nanoseconds); tgid 0 holds requests whose submitter is unknown.
pub const BLOCK_LATENCY_TGID_MAP: &str = "BLOCK_LATENCY_TGID";
/// Capacity of [`BLOCK_LATENCY_DEVICE_MAP`] (devices × 2 directions); each live key costs
/// 2184 bytes per CPU.
pub const BLOCK_LATENCY_DEVICE_MAX_ENTRIES: u32 = 1024;
/// Capacity of [`BLOCK_LATENCY_TGID_MAP`]; not preallocated, each live key costs 2184 bytes per
/// CPU (entries of exited processes are removed by the loader every 10 s).
pub const BLOCK_LATENCY_TGID_MAX_ENTRIES: u32 = 8192;
/// Name of the one-slot per-CPU array holding an all-zero `LatHist`, the value a new
/// histogram entry starts from (too big to build on the eBPF stack).
pub const ZERO_HIST_MAP: &str = "ZERO_HIST";
/// Name of the per-CPU hash of [`PairingCounters`] by device and direction (`DeviceKey`): how
/// requests and completions were paired, so that no latency is lost silently.
pub const BLOCK_PAIRING_MAP: &str = "BLOCK_PAIRING";
/// Capacity of [`BLOCK_PAIRING_MAP`] (devices × 2 directions; 24 bytes per CPU a key).
pub const BLOCK_PAIRING_MAX_ENTRIES: u32 = 1024;

/// Requests in flight: device, direction and first sector (what `block_rq_complete` reports
/// again). Several requests may be in flight under one key (the same block read again before
/// the first read completed): the value holds up to [`INFLIGHT_SLOTS`] of them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InflightKey {
    pub dev: u32,
    pub direction: u32,
    pub sector: u64,
}

/// Requests one [`InflightKey`] holds at most.
pub const INFLIGHT_SLOTS: usize = 8;
/// An [`InflightSlot`] holding no request.
pub const SLOT_EMPTY: u32 = 0;
/// An [`InflightSlot`] holding a request seen starting (`block_io_start`), not issued yet.
pub const SLOT_STARTED: u32 = 1;
/// An [`InflightSlot`] holding a request issued to the device (`block_rq_issue`).
pub const SLOT_ISSUED: u32 = 2;

/// One request in flight.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InflightSlot {
    /// `bpf_ktime_get_ns` at `block_rq_issue` ([`SLOT_ISSUED`]), or at `block_io_start` until
    /// then ([`SLOT_STARTED`]).
    pub stamp_ns: u64,
    /// Submitting process; 0 when unknown (the request was first seen at issue).
    pub tgid: u32,
    /// [`SLOT_EMPTY`], [`SLOT_STARTED`] or [`SLOT_ISSUED`].
    pub state: u32,
}

/// The requests in flight under one key, 128 bytes. A completion takes the newest issued
/// request (last in, first out). Which of two requests to one sector completed first is not
/// known, so either order gives one real latency per completion; the newest is taken because
/// the probe misses some completions (the kernel skips a BPF program that would run nested in
/// another on its CPU: 0.3-5 % of completions under load here), and a missed completion leaves
/// its request's slot behind: taken oldest first, that slot would hand its age to the next
/// request of the sector, and that one's to the next. Newest first, a left-over slot stays
/// aside until a full key evicts it (the oldest slot makes room).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InflightValue {
    pub slots: [InflightSlot; INFLIGHT_SLOTS],
}

/// What [`InflightValue::remember`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// In an empty slot; `collided`: other requests were in flight under the key.
    Kept { collided: bool },
    /// In place of the oldest request (every slot was taken): most likely one whose
    /// completion was missed; if not, that request's completion will take another's slot and
    /// the last one of the key be unpaired.
    Replaced,
}

impl InflightValue {
    /// A value holding `slot` alone.
    #[inline(always)]
    pub const fn one(slot: InflightSlot) -> Self {
        let mut value = InflightValue {
            slots: [InflightSlot {
                stamp_ns: 0,
                tgid: 0,
                state: SLOT_EMPTY,
            }; INFLIGHT_SLOTS],
        };
        value.slots[0] = slot;
        value
    }

    /// Whether no request is held.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.state == SLOT_EMPTY)
    }

    /// Adds a request (see [`Remembered`]).
    #[inline(always)]
    pub fn remember(&mut self, slot: InflightSlot) -> Remembered {
        let mut empty = INFLIGHT_SLOTS;
        let mut oldest = 0;
        let mut oldest_stamp = u64::MAX;
        let mut held = false;
        for (i, s) in self.slots.iter().enumerate() {
            if s.state == SLOT_EMPTY {
                if empty == INFLIGHT_SLOTS {
                    empty = i;
                }
            } else {
                held = true;
                if s.stamp_ns < oldest_stamp {
                    oldest_stamp = s.stamp_ns;
                    oldest = i;
                }
            }
        }
        if let Some(s) = self.slots.get_mut(empty) {
            *s = slot;
            return Remembered::Kept { collided: held };
        }
        if let Some(s) = self.slots.get_mut(oldest) {
            *s = slot;
        }
        Remembered::Replaced
    }

    /// Marks the oldest request not yet issued as issued at `now_ns`. With none, the newest
    /// issued request is issued again: a request the driver gave back (`block_rq_requeue`,
    /// e.g. virtio with its ring full) and the block layer issues anew, which is timed from its
    /// last issue, as the kernel's own I/O accounting does. False if the key holds no request
    /// at all (the request was not seen starting).
    #[inline(always)]
    pub fn issue(&mut self, now_ns: u64) -> bool {
        let i = match self.find(SLOT_STARTED, false) {
            Some(i) => i,
            None => match self.find(SLOT_ISSUED, true) {
                Some(i) => i,
                None => return false,
            },
        };
        match self.slots.get_mut(i) {
            Some(s) => {
                s.stamp_ns = now_ns;
                s.state = SLOT_ISSUED;
                true
            }
            None => false,
        }
    }

    /// Takes the request a completion ends: the newest issued one, else the newest started.
    #[inline(always)]
    pub fn complete(&mut self) -> Option<InflightSlot> {
        let i = match self.find(SLOT_ISSUED, true) {
            Some(i) => i,
            None => self.find(SLOT_STARTED, true)?,
        };
        let s = self.slots.get_mut(i)?;
        let taken = *s;
        s.state = SLOT_EMPTY;
        Some(taken)
    }

    /// Takes the newest request not yet issued: the one a bio merged in front of moves to a
    /// new first sector.
    #[inline(always)]
    pub fn take_newest_started(&mut self) -> Option<InflightSlot> {
        let i = self.find(SLOT_STARTED, true)?;
        let s = self.slots.get_mut(i)?;
        let taken = *s;
        s.state = SLOT_EMPTY;
        Some(taken)
    }

    /// The slot in `state` with the largest stamp (`newest`) or the smallest.
    #[inline(always)]
    fn find(&self, state: u32, newest: bool) -> Option<usize> {
        let mut found = None;
        let mut stamp = 0;
        for (i, s) in self.slots.iter().enumerate() {
            let better = match found {
                None => true,
                Some(_) if newest => s.stamp_ns >= stamp,
                Some(_) => s.stamp_ns < stamp,
            };
            if s.state == state && better {
                found = Some(i);
                stamp = s.stamp_ns;
            }
        }
        found
    }
}

/// Value of [`BLOCK_PAIRING_MAP`]: cumulative per CPU since load, of one device and direction.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairingCounters {
    /// Requests that started (or were first seen at issue) while another request was in
    /// flight under the same device, direction and first sector. Both are kept: no latency is
    /// lost to a collision while the key has a free slot.
    pub collided: u64,
    /// Requests that found all [`INFLIGHT_SLOTS`] of their key taken and replaced the oldest
    /// (see [`Remembered::Replaced`]).
    pub overflowed: u64,
    /// Completions that found no request to pair with, so added no latency: requests started
    /// before the programs were attached, replaced on overflow, evicted from the full LRU map,
    /// or the later parts of a request completed in parts.
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

    fn slot(stamp_ns: u64, tgid: u32, state: u32) -> InflightSlot {
        InflightSlot {
            stamp_ns,
            tgid,
            state,
        }
    }

    #[test]
    fn requests_under_one_key_are_issued_in_order_and_completed_newest_first() {
        let mut v = InflightValue::one(slot(10, 1, SLOT_STARTED));
        assert_eq!(
            v.remember(slot(20, 2, SLOT_STARTED)),
            Remembered::Kept { collided: true }
        );
        assert!(v.issue(30), "the oldest started is issued");
        assert!(v.issue(40));
        // Issued again after a requeue: the newest, timed from now.
        assert!(v.issue(50));
        assert_eq!(v.complete(), Some(slot(50, 2, SLOT_ISSUED)));
        assert!(!v.is_empty());
        assert_eq!(v.complete(), Some(slot(30, 1, SLOT_ISSUED)));
        assert!(v.is_empty());
        assert_eq!(v.complete(), None);
        assert!(
            !v.issue(60),
            "nothing to issue: remembered anew by the caller"
        );
    }

    #[test]
    fn a_request_whose_completion_was_missed_does_not_age_the_next_ones() {
        // Issued at 5, its completion never seen.
        let mut v = InflightValue::one(slot(5, 9, SLOT_ISSUED));
        for t in [100, 200, 300] {
            v.remember(slot(t, 1, SLOT_STARTED));
            assert!(v.issue(t + 10));
            assert_eq!(v.complete(), Some(slot(t + 10, 1, SLOT_ISSUED)));
        }
        // A full key makes room by the oldest slot.
        for t in 1..INFLIGHT_SLOTS as u64 {
            assert_eq!(
                v.remember(slot(1000 + t, 1, SLOT_ISSUED)),
                Remembered::Kept { collided: true }
            );
        }
        assert_eq!(v.remember(slot(2000, 4, SLOT_ISSUED)), Remembered::Replaced);
        assert!(!v.slots.contains(&slot(5, 9, SLOT_ISSUED)));
        assert_eq!(v.take_newest_started(), None);
        let mut m = InflightValue::one(slot(1, 1, SLOT_STARTED));
        m.remember(slot(2, 2, SLOT_STARTED));
        assert_eq!(m.take_newest_started(), Some(slot(2, 2, SLOT_STARTED)));
    }

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<BlockKey>(), 8);
        assert_eq!(size_of::<BlockValue>(), 16);
        assert_eq!(size_of::<BlockTpLayout>(), 16);
        assert_eq!(size_of::<InflightKey>(), 16);
        assert_eq!(size_of::<InflightSlot>(), 16);
        assert_eq!(size_of::<InflightValue>(), 16 * INFLIGHT_SLOTS);
        assert_eq!(size_of::<PairingCounters>(), 24);
        assert_eq!(size_of::<DeviceKey>(), 8);
        assert_eq!(size_of::<Log2Hist>(), 8 * LOG2_BUCKETS);
    }
}
