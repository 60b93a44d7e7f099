//! Block I/O per submitting process, disk and direction, and request latency per device and
//! per process.
//!
//! BTF tracepoints (`tp_btf`): each program gets the kernel's `struct request *` (or
//! `struct bio *`) and reads the fields it needs from it directly, at the byte offsets the
//! loader found in this kernel's BTF (`BLOCK_OFFSETS`, read-only: the verifier knows them as
//! constants and checks every read against the struct's BTF). No record is copied and no
//! helper reads memory.
//!
//! I/O is credited where it enters the block layer, in the submitting task's context (it
//! completes in interrupt context, where `current` is unrelated). On kernels with
//! `block_io_start` (6.5+) that tracepoint counts each new request, and
//! `block_bio_backmerge`/`block_bio_frontmerge` add the bytes of bios merged into an existing
//! request, which `block_io_start` never sees. Older kernels count each bio at
//! `block_bio_queue`. Counting is one lookup in `BLOCK_IO` per event.
//!
//! Latency: a request is noted in `BLOCK_INFLIGHT` (an array indexed by a hash of its address,
//! see `InflightBucket`) at `block_io_start` with its submitter, stamped at `block_rq_issue`,
//! and taken out at `block_rq_complete`, which adds issue-to-completion time to the device's
//! and the submitter's log-linear histograms. Pairing is exact: by the request itself.
//! `BLOCK_PAIRING` counts requests displaced from a full bucket and completions with no
//! request to pair, so that no latency is lost silently.
//!
//! Slots are read and written without a lock: two requests of one bucket starting and
//! completing on two CPUs at the same instant may lose a slot, which then shows as an unpaired
//! completion (counted), never as a wrong latency.

use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use aya_log_ebpf::warn;

use crate::EEXIST;
use setmov_common::{
    BLOCK_IO_MAX_ENTRIES, BLOCK_LATENCY_DEVICE_MAX_ENTRIES, BLOCK_LATENCY_TGID_MAX_ENTRIES,
    BLOCK_PAIRING_MAX_ENTRIES, BlockIoKey, BlockKey, BlockOffsets, BlockValue, DeviceKey,
    INFLIGHT_BUCKETS, InflightBucket, InflightSlot, LatHist, Noted, PairingCounters,
    direction_from_opf, disk_dev, inflight_bucket, lat_bucket,
};

/// Per-CPU values need no atomic add (the BPF target has none in Rust's `core`): tracing
/// programs do not nest on one CPU, so a plain `+=` on this CPU's slot is safe. Preallocated:
/// a new key never allocates in the I/O path.
#[map]
static BLOCK_IO: PerCpuHashMap<BlockIoKey, BlockValue> =
    PerCpuHashMap::with_max_entries(BLOCK_IO_MAX_ENTRIES, 0);

/// Events not counted because `BLOCK_IO` was full (slot 0, per CPU).
#[map]
static BLOCK_IO_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Requests between start (or issue) and completion; see `BLOCK_INFLIGHT_MAP`.
#[map]
static BLOCK_INFLIGHT: Array<InflightBucket> = Array::with_max_entries(INFLIGHT_BUCKETS, 0);

/// Issue-to-completion nanoseconds per device and direction. Not preallocated (2 KiB a key
/// per CPU); a key is created once per device.
#[map]
static BLOCK_LATENCY_DEVICE: PerCpuHashMap<DeviceKey, LatHist> = PerCpuHashMap::with_max_entries(
    BLOCK_LATENCY_DEVICE_MAX_ENTRIES,
    aya_ebpf::bindings::BPF_F_NO_PREALLOC,
);

/// Issue-to-completion nanoseconds per submitting process and direction; see
/// `BLOCK_LATENCY_TGID_MAX_ENTRIES`.
#[map]
static BLOCK_LATENCY_TGID: PerCpuHashMap<BlockKey, LatHist> = PerCpuHashMap::with_max_entries(
    BLOCK_LATENCY_TGID_MAX_ENTRIES,
    aya_ebpf::bindings::BPF_F_NO_PREALLOC,
);

/// Where a request's address is turned into a number (see `address_of`), per CPU.
#[map]
static ADDRESS_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Never written: the zeroed value new histogram entries are inserted from.
#[map]
static ZERO_HIST: PerCpuArray<LatHist> = PerCpuArray::with_max_entries(1, 0);

/// How requests and completions were paired per device and direction (see
/// `BLOCK_PAIRING_MAP`); touched only when a bucket is full or a completion is unpaired.
#[map]
static BLOCK_PAIRING: PerCpuHashMap<DeviceKey, PairingCounters> = PerCpuHashMap::with_max_entries(
    BLOCK_PAIRING_MAX_ENTRIES,
    aya_ebpf::bindings::BPF_F_NO_PREALLOC,
);

/// Struct member offsets, set by the loader from this kernel's BTF. The programs are loaded
/// only once it has: the verifier would refuse reads at these zeroes.
#[unsafe(no_mangle)]
static BLOCK_OFFSETS: Global<BlockOffsets> = Global::new(BlockOffsets {
    request_queue: 0,
    request_cmd_flags: 0,
    request_data_len: 0,
    queue_disk: 0,
    disk_major: 0,
    disk_first_minor: 0,
    bio_bdev: 0,
    bio_opf: 0,
    bio_size: 0,
    bdev_disk: 0,
});

/// The value of type `T` at `offset` bytes into the kernel struct at `base`.
///
/// # Safety
/// `base` is a BTF-typed pointer of a `tp_btf` program (or one read through it) and `offset` a
/// member of `T`'s size of its struct: the verifier checks both, and turns a read through a
/// null or bad pointer into a zero instead of a fault.
#[inline(always)]
unsafe fn member<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: see above.
    unsafe { base.add(offset as usize).cast::<T>().read() }
}

/// The address of a kernel struct as a number, to hash. The verifier allows no arithmetic but
/// adding and subtracting on a BTF pointer, but a pointer stored in map memory reads back as a
/// number (volatile, so that the compiler does not forward the pointer itself).
#[inline(always)]
fn address_of(pointer: *const u8) -> Result<u64, u32> {
    let scratch = ADDRESS_SCRATCH.get_ptr_mut(0).ok_or(1u32)?;
    // SAFETY: this CPU's slot of a live element; tracing programs do not nest on a CPU.
    unsafe {
        core::ptr::write_volatile(scratch, pointer as u64);
        Ok(core::ptr::read_volatile(scratch))
    }
}

/// The `dev_t` of a disk (`struct gendisk *`).
#[inline(always)]
fn disk_of(disk: *const u8, offsets: &BlockOffsets) -> u32 {
    // SAFETY: a BTF pointer and members of `struct gendisk`.
    let (major, first_minor): (u32, u32) = unsafe {
        (
            member(disk, offsets.disk_major),
            member(disk, offsets.disk_first_minor),
        )
    };
    disk_dev(major, first_minor)
}

/// A request's disk and direction; `None` for requests without read/write data (flushes,
/// discards).
#[inline(always)]
fn request_target(request: *const u8, offsets: &BlockOffsets) -> Option<DeviceKey> {
    // SAFETY: a BTF pointer and members of `struct request` and `struct request_queue`.
    let (opf, disk) = unsafe {
        let queue: *const u8 = member(request, offsets.request_queue);
        let disk: *const u8 = member(queue, offsets.queue_disk);
        (member::<u32>(request, offsets.request_cmd_flags), disk)
    };
    let direction = direction_from_opf(opf)?;
    Some(DeviceKey {
        dev: disk_of(disk, offsets),
        direction,
    })
}

#[btf_tracepoint(function = "block_io_start")]
pub fn block_io_start(ctx: BtfTracePointContext) -> u32 {
    match try_block_io_start(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// A new request: counted for its submitter, and noted until it completes.
fn try_block_io_start(ctx: &BtfTracePointContext) -> Result<u32, u32> {
    let offsets = BLOCK_OFFSETS.load();
    let request: *const u8 = ctx.arg(0);
    let Some(target) = request_target(request, &offsets) else {
        return Ok(0);
    };
    // SAFETY: a BTF pointer and a member of `struct request`.
    let bytes: u32 = unsafe { member(request, offsets.request_data_len) };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let counted = count(ctx, tgid, target, 1, u64::from(bytes));
    if bytes == 0 {
        // A pre-flush with no data (an fsync's): the disk's statistics count it as a write,
        // but the flush machinery issues a flush request in its place and ends it unissued,
        // so it has no issue-to-completion time.
        return counted;
    }
    let slot = InflightSlot {
        request: address_of(request)?,
        issued_ns: 0,
        tgid,
        dev: target.dev,
    };
    note(slot, target.direction);
    counted
}

#[btf_tracepoint(function = "block_bio_queue")]
pub fn block_bio_queue(ctx: BtfTracePointContext) -> u32 {
    match count_bio(&ctx, 1) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// A merged bio joins a request already counted as one op: it adds bytes only.
#[btf_tracepoint(function = "block_bio_backmerge")]
pub fn block_bio_backmerge(ctx: BtfTracePointContext) -> u32 {
    match count_bio(&ctx, 0) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// As a back merge; the request keeps its address, so nothing in flight moves.
#[btf_tracepoint(function = "block_bio_frontmerge")]
pub fn block_bio_frontmerge(ctx: BtfTracePointContext) -> u32 {
    match count_bio(&ctx, 0) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// Counts a bio (the tracepoint's `struct bio *`) for the current process under its disk.
#[inline(always)]
fn count_bio(ctx: &BtfTracePointContext, ops: u64) -> Result<u32, u32> {
    let offsets = BLOCK_OFFSETS.load();
    let bio: *const u8 = ctx.arg(0);
    // SAFETY: a BTF pointer and members of `struct bio` and `struct block_device`.
    let (opf, bytes, disk) = unsafe {
        let bdev: *const u8 = member(bio, offsets.bio_bdev);
        (
            member::<u32>(bio, offsets.bio_opf),
            member::<u32>(bio, offsets.bio_size),
            member::<*const u8>(bdev, offsets.bdev_disk),
        )
    };
    let Some(direction) = direction_from_opf(opf) else {
        return Ok(0);
    };
    let target = DeviceKey {
        dev: disk_of(disk, &offsets),
        direction,
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    count(ctx, tgid, target, ops, u64::from(bytes))
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> u32 {
    match try_block_rq_issue(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// The request goes to the device: latency is measured from here. A request not seen at
/// start (started before the programs were attached, or a kernel without `block_io_start`) is
/// noted now with an unknown submitter (tgid 0).
fn try_block_rq_issue(ctx: &BtfTracePointContext) -> Result<u32, u32> {
    let offsets = BLOCK_OFFSETS.load();
    let request: *const u8 = ctx.arg(0);
    // SAFETY: a BTF pointer and a member of `struct request`.
    let opf: u32 = unsafe { member(request, offsets.request_cmd_flags) };
    if direction_from_opf(opf).is_none() {
        return Ok(0);
    }
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let address = address_of(request)?;
    let bucket = BLOCK_INFLIGHT
        .get_ptr_mut(inflight_bucket(address))
        .ok_or(1u32)?;
    // SAFETY: a live element (see the module's note on races).
    if unsafe { (*bucket).issue(address, now) } {
        return Ok(0);
    }
    // Not seen starting: its disk is read only now.
    let Some(target) = request_target(request, &offsets) else {
        return Ok(0);
    };
    let slot = InflightSlot {
        request: address,
        issued_ns: now,
        tgid: 0,
        dev: target.dev,
    };
    note(slot, target.direction);
    Ok(0)
}

#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete(ctx: BtfTracePointContext) -> u32 {
    match try_block_rq_complete(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// Pairs the completion with its request and adds the issue-to-completion time to the
/// device's and the submitter's histograms. A request completed in parts is paired at its
/// first part (later parts find nothing, counted unpaired): one latency per request, as one op
/// was counted per request. A completion with no data left is not a transfer: a pre-flush
/// without data, or the flush machinery ending a write whose data completed (and was paired)
/// before.
fn try_block_rq_complete(ctx: &BtfTracePointContext) -> Result<u32, u32> {
    let offsets = BLOCK_OFFSETS.load();
    let request: *const u8 = ctx.arg(0);
    // SAFETY: a BTF pointer and members of `struct request`.
    let (opf, bytes) = unsafe {
        (
            member::<u32>(request, offsets.request_cmd_flags),
            member::<u32>(request, offsets.request_data_len),
        )
    };
    let Some(direction) = direction_from_opf(opf).filter(|_| bytes != 0) else {
        return Ok(0);
    };
    let address = address_of(request)?;
    let bucket = BLOCK_INFLIGHT
        .get_ptr_mut(inflight_bucket(address))
        .ok_or(1u32)?;
    // SAFETY: a live element (see the module's note on races).
    let Some(slot) = (unsafe { (*bucket).complete(address) }) else {
        if let Some(target) = request_target(request, &offsets) {
            count_pairing(target, |c| c.unpaired += 1);
        }
        return Ok(0);
    };
    // SAFETY: a helper without preconditions.
    let latency_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(slot.issued_ns);
    let bucket = lat_bucket(latency_ns);
    let device = DeviceKey {
        dev: slot.dev,
        direction,
    };
    add_to_histogram(&BLOCK_LATENCY_DEVICE, &device, bucket)?;
    let submitter = BlockKey {
        tgid: slot.tgid,
        direction,
    };
    add_to_histogram(&BLOCK_LATENCY_TGID, &submitter, bucket)?;
    Ok(0)
}

/// Notes a request in its bucket, counting it when it displaced another.
#[inline(always)]
fn note(slot: InflightSlot, direction: u32) {
    let Some(bucket) = BLOCK_INFLIGHT.get_ptr_mut(inflight_bucket(slot.request)) else {
        return;
    };
    // SAFETY: a live element (see the module's note on races).
    if let Noted::Displaced { issued } = unsafe { (*bucket).note(slot) } {
        let device = DeviceKey {
            dev: slot.dev,
            direction,
        };
        count_pairing(device, |c| {
            c.collided += 1;
            if issued {
                c.overflowed += 1;
            }
        });
    }
}

/// Applies `f` to this CPU's pairing counters of `device`, creating them if needed.
#[inline(always)]
fn count_pairing(device: DeviceKey, f: impl FnOnce(&mut PairingCounters)) {
    if BLOCK_PAIRING.get_ptr_mut(device).is_none() {
        // BPF_NOEXIST: another CPU may have created it meanwhile, which is just as good.
        let _ = BLOCK_PAIRING.insert(device, PairingCounters::default(), u64::from(BPF_NOEXIST));
    }
    if let Some(counters) = BLOCK_PAIRING.get_ptr_mut(device) {
        // SAFETY: this CPU's slot of a live element; tracing programs do not nest on a CPU.
        f(unsafe { &mut *counters });
    }
}

/// Adds one event of process `tgid` to `BLOCK_IO`.
#[inline(always)]
fn count(
    ctx: &BtfTracePointContext,
    tgid: u32,
    target: DeviceKey,
    ops: u64,
    bytes: u64,
) -> Result<u32, u32> {
    let key = BlockIoKey {
        tgid,
        dev: target.dev,
        direction: target.direction,
    };
    if let Some(value) = BLOCK_IO.get_ptr_mut(key) {
        add(value, ops, bytes);
        return Ok(0);
    }
    match BLOCK_IO.insert(key, BlockValue { ops, bytes }, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(0),
        // Another CPU created the entry between our lookup and insert; it zeroed our slot.
        Err(err) if err == -EEXIST => match BLOCK_IO.get_ptr_mut(key) {
            Some(value) => {
                add(value, ops, bytes);
                Ok(0)
            }
            None => Err(record_lost(ctx, tgid)),
        },
        Err(_) => Err(record_lost(ctx, tgid)),
    }
}

#[inline(always)]
fn add(value: *mut BlockValue, ops: u64, bytes: u64) {
    // SAFETY: `value` is this CPU's slot of a live map element (see BLOCK_IO).
    unsafe {
        (*value).ops += ops;
        (*value).bytes += bytes;
    }
}

/// Counts an event `BLOCK_IO` had no room for; warns the first time on each CPU.
#[inline(always)]
fn record_lost(ctx: &BtfTracePointContext, tgid: u32) -> u32 {
    if let Some(lost) = BLOCK_IO_LOST.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, and tracepoint programs do not nest on one CPU.
        let lost = unsafe {
            *lost += 1;
            *lost
        };
        if lost == 1 {
            warn!(
                ctx,
                "BLOCK_IO map full: I/O of tgid {} not counted (said once per CPU)", tgid
            );
        }
    }
    1
}

/// Adds one value in `bucket` to this CPU's histogram under `key`, creating it if needed.
#[inline(always)]
fn add_to_histogram<K>(map: &PerCpuHashMap<K, LatHist>, key: &K, bucket: usize) -> Result<(), u32> {
    if map.get_ptr_mut(key).is_none() {
        let zero = ZERO_HIST.get(0).ok_or(1u32)?;
        // BPF_NOEXIST: another CPU may have created it meanwhile, which is just as good.
        let _ = map.insert(key, zero, u64::from(BPF_NOEXIST));
    }
    let hist = map.get_ptr_mut(key).ok_or(1u32)?;
    // LLVM may prove the bucket in range and drop the bounds check, which the verifier cannot
    // follow through `lat_bucket`'s bit operations: a volatile read hides the value.
    // SAFETY: a read of a local.
    let bucket = unsafe { core::ptr::read_volatile(&bucket) };
    // SAFETY: this CPU's slot of a live element; tracepoint programs do not nest on a CPU.
    if let Some(count) = unsafe { (*hist).buckets.get_mut(bucket) } {
        *count += 1;
    }
    Ok(())
}
