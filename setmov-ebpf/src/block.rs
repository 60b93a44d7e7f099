//! Block I/O per submitting process, and request latency per device and per process.
//!
//! I/O is credited where it enters the block layer, in the submitting task's context (it
//! completes in interrupt context, where `current` is unrelated). On kernels with
//! `block:block_io_start` (6.5+) that tracepoint counts each new request, and
//! `block_bio_backmerge`/`block_bio_frontmerge` add the bytes of bios merged into an existing
//! request, which `block_io_start` never sees. Older kernels use `block:block_bio_queue`, one
//! event per bio.
//!
//! Latency: a request is remembered in `BLOCK_INFLIGHT` from `block_io_start` (with the
//! submitter) under its device, direction and first sector, stamped again at
//! `block_rq_issue`, and paired at `block_rq_complete`, which adds issue-to-completion time to
//! the device's and the submitter's log-linear histograms. Several requests may be in flight
//! under one key (a block read again before its first read completed): each key holds up to
//! `INFLIGHT_SLOTS` of them, the newest issued taken first (see `InflightValue`);
//! `BLOCK_PAIRING` counts such collisions, requests that found every slot taken, and
//! completions with no request to pair, so that no latency is lost silently. One map lookup
//! per event on the common path.
//!
//! The slots of a key are read and written without a lock: a start and a completion of the
//! same key on two CPUs at the same instant may lose a slot, which then shows as an unpaired
//! completion (counted), never as a wrong latency.

use aya_ebpf::{
    Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;

use crate::EEXIST;
use setmov_common::{
    BLOCK_INFLIGHT_MAX_ENTRIES, BLOCK_IO_MAX_ENTRIES, BLOCK_IO_TOTAL_MAX_ENTRIES,
    BLOCK_LATENCY_DEVICE_MAX_ENTRIES, BLOCK_LATENCY_TGID_MAX_ENTRIES, BLOCK_PAIRING_MAX_ENTRIES,
    BlockKey, BlockTpLayout, BlockValue, DeviceKey, InflightKey, InflightSlot, InflightValue,
    LatHist, PairingCounters, Remembered, SLOT_ISSUED, SLOT_STARTED, direction_from_rwbs,
    lat_bucket,
};

/// `nr_sector` counts 512-byte sectors whatever the device's block size.
const SECTOR_BYTES: u64 = 512;

/// Per-CPU values need no atomic add (the BPF target has none in Rust's `core`): tracepoint
/// programs do not nest on one CPU, so a plain `+=` on this CPU's slot is safe. No
/// preallocation: memory follows the number of live keys, not the map's capacity.
#[map]
static BLOCK_IO: PerCpuHashMap<BlockKey, BlockValue> =
    PerCpuHashMap::with_max_entries(BLOCK_IO_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// All processes together, by device and direction (see `BLOCK_IO_TOTAL_MAP`).
#[map]
static BLOCK_IO_TOTAL: PerCpuHashMap<DeviceKey, BlockValue> =
    PerCpuHashMap::with_max_entries(BLOCK_IO_TOTAL_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Events not counted because `BLOCK_IO` was full (slot 0, per CPU).
#[map]
static BLOCK_IO_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Requests between start (or issue) and completion; see `BLOCK_INFLIGHT_MAP`.
#[map]
static BLOCK_INFLIGHT: LruHashMap<InflightKey, InflightValue> =
    LruHashMap::with_max_entries(BLOCK_INFLIGHT_MAX_ENTRIES, 0);

/// Issue-to-completion nanoseconds per device and direction.
#[map]
static BLOCK_LATENCY_DEVICE: PerCpuHashMap<DeviceKey, LatHist> =
    PerCpuHashMap::with_max_entries(BLOCK_LATENCY_DEVICE_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Issue-to-completion nanoseconds per submitting process and direction.
#[map]
static BLOCK_LATENCY_TGID: PerCpuHashMap<BlockKey, LatHist> =
    PerCpuHashMap::with_max_entries(BLOCK_LATENCY_TGID_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Never written: the zeroed value new histogram entries are inserted from.
#[map]
static ZERO_HIST: PerCpuArray<LatHist> = PerCpuArray::with_max_entries(1, 0);

/// How requests and completions were paired per device and direction (see
/// `BLOCK_PAIRING_MAP`); touched only on a collision or an unpaired completion.
#[map]
static BLOCK_PAIRING: PerCpuHashMap<DeviceKey, PairingCounters> =
    PerCpuHashMap::with_max_entries(BLOCK_PAIRING_MAX_ENTRIES, BPF_F_NO_PREALLOC);

const LAYOUT_UNSET: BlockTpLayout = BlockTpLayout {
    dev_offset: 0,
    sector_offset: 0,
    nr_sector_offset: 0,
    rwbs_offset: 0,
};

// Record layouts, one per program, set by the loader from the tracepoints' format files.
#[unsafe(no_mangle)]
static BLOCK_IO_START_LAYOUT: Global<BlockTpLayout> = Global::new(LAYOUT_UNSET);
#[unsafe(no_mangle)]
static BLOCK_BIO_QUEUE_LAYOUT: Global<BlockTpLayout> = Global::new(LAYOUT_UNSET);
#[unsafe(no_mangle)]
static BLOCK_BIO_BACKMERGE_LAYOUT: Global<BlockTpLayout> = Global::new(LAYOUT_UNSET);
#[unsafe(no_mangle)]
static BLOCK_BIO_FRONTMERGE_LAYOUT: Global<BlockTpLayout> = Global::new(LAYOUT_UNSET);
#[unsafe(no_mangle)]
static BLOCK_RQ_ISSUE_LAYOUT: Global<BlockTpLayout> = Global::new(LAYOUT_UNSET);
#[unsafe(no_mangle)]
static BLOCK_RQ_COMPLETE_LAYOUT: Global<BlockTpLayout> = Global::new(LAYOUT_UNSET);

#[tracepoint]
pub fn block_io_start(ctx: TracePointContext) -> u32 {
    match try_block_io_start(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_block_io_start(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = BLOCK_IO_START_LAYOUT.load();
    let counted = count(ctx, layout, 1);
    // A new request: remember its submitter until it completes.
    if let Some(key) = inflight_key(ctx, layout)? {
        let slot = InflightSlot {
            // SAFETY: a helper without preconditions.
            stamp_ns: unsafe { bpf_ktime_get_ns() },
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            state: SLOT_STARTED,
        };
        remember(&key, slot);
    }
    counted
}

#[tracepoint]
pub fn block_bio_queue(ctx: TracePointContext) -> u32 {
    match try_block_bio_queue(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_block_bio_queue(ctx: &TracePointContext) -> Result<u32, u32> {
    count(ctx, BLOCK_BIO_QUEUE_LAYOUT.load(), 1)
}

#[tracepoint]
pub fn block_bio_backmerge(ctx: TracePointContext) -> u32 {
    match try_block_bio_backmerge(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// A merged bio joins a request already counted as one op: it adds bytes only.
fn try_block_bio_backmerge(ctx: &TracePointContext) -> Result<u32, u32> {
    count(ctx, BLOCK_BIO_BACKMERGE_LAYOUT.load(), 0)
}

#[tracepoint]
pub fn block_bio_frontmerge(ctx: TracePointContext) -> u32 {
    match try_block_bio_frontmerge(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// A bio merged in front of a request adds bytes only (the request was counted as one op),
/// and moves the request's first sector back to its own: the request in flight is found
/// under its old first sector (just past this bio) and moved to the new one.
fn try_block_bio_frontmerge(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = BLOCK_BIO_FRONTMERGE_LAYOUT.load();
    let counted = count(ctx, layout, 0);
    if let Some(new_key) = inflight_key(ctx, layout)? {
        // SAFETY: offset from this kernel's format file, read through bpf_probe_read_kernel.
        let nr_sector: u32 =
            unsafe { ctx.read_at(layout.nr_sector_offset as usize) }.map_err(|_| 1u32)?;
        let old_key = InflightKey {
            sector: new_key.sector.wrapping_add(u64::from(nr_sector)),
            ..new_key
        };
        if let Some(value) = BLOCK_INFLIGHT.get_ptr_mut(old_key) {
            // SAFETY: a live element (see the module's note on races).
            let value = unsafe { &mut *value };
            if let Some(slot) = value.take_newest_started() {
                if value.is_empty() {
                    let _ = BLOCK_INFLIGHT.remove(old_key);
                }
                remember(&new_key, slot);
            }
        }
    }
    counted
}

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    match try_block_rq_issue(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// The request goes to the device: latency is measured from here. A request issued again
/// after the driver gave it back (a requeue) is timed from its last issue (see
/// `InflightValue::issue`). A request not seen at start (started before the programs were
/// attached, or a kernel without `block_io_start`) is remembered now with an unknown
/// submitter (tgid 0).
fn try_block_rq_issue(ctx: &TracePointContext) -> Result<u32, u32> {
    let Some(key) = inflight_key(ctx, BLOCK_RQ_ISSUE_LAYOUT.load())? else {
        return Ok(0);
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(value) = BLOCK_INFLIGHT.get_ptr_mut(key) {
        // SAFETY: a live element (see the module's note on races).
        if unsafe { (*value).issue(now) } {
            return Ok(0);
        }
    }
    let slot = InflightSlot {
        stamp_ns: now,
        tgid: 0,
        state: SLOT_ISSUED,
    };
    remember(&key, slot);
    Ok(0)
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    match try_block_rq_complete(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// Pairs the completion with its request (the newest issued under its key) and adds the
/// issue-to-completion time to the device's and the submitter's histograms. A request
/// completed in parts is paired at its first part (later parts report a sector further on and
/// find nothing, counted unpaired): one latency per request, as one op was counted per request.
fn try_block_rq_complete(ctx: &TracePointContext) -> Result<u32, u32> {
    let Some(key) = inflight_key(ctx, BLOCK_RQ_COMPLETE_LAYOUT.load())? else {
        return Ok(0);
    };
    let slot = match BLOCK_INFLIGHT.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: a live element (see the module's note on races).
            let value = unsafe { &mut *value };
            let slot = value.complete();
            if value.is_empty() {
                let _ = BLOCK_INFLIGHT.remove(key);
            }
            slot
        }
        None => None,
    };
    let Some(slot) = slot else {
        count_pairing(&key, |c| c.unpaired += 1);
        return Ok(0);
    };
    // SAFETY: a helper without preconditions.
    let latency_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(slot.stamp_ns);
    let bucket = lat_bucket(latency_ns);
    let device = DeviceKey {
        dev: key.dev,
        direction: key.direction,
    };
    add_to_histogram(&BLOCK_LATENCY_DEVICE, &device, bucket)?;
    let submitter = BlockKey {
        tgid: slot.tgid,
        direction: key.direction,
    };
    add_to_histogram(&BLOCK_LATENCY_TGID, &submitter, bucket)?;
    Ok(0)
}

/// Adds a request to those in flight under `key`, counting collisions and overflows.
#[inline(always)]
fn remember(key: &InflightKey, slot: InflightSlot) {
    let remembered = match BLOCK_INFLIGHT.get_ptr_mut(key) {
        // SAFETY: a live element (see the module's note on races).
        Some(value) => unsafe { (*value).remember(slot) },
        None => {
            match BLOCK_INFLIGHT.insert(key, InflightValue::one(slot), u64::from(BPF_NOEXIST)) {
                Ok(()) => Remembered::Kept { collided: false },
                // Another CPU remembered a request under this key meanwhile.
                Err(err) if err == -EEXIST => match BLOCK_INFLIGHT.get_ptr_mut(key) {
                    // SAFETY: as above.
                    Some(value) => unsafe { (*value).remember(slot) },
                    None => Remembered::Replaced,
                },
                // Not seen in an LRU map (it evicts), but counted as an overflow if it happens.
                Err(_) => Remembered::Replaced,
            }
        }
    };
    match remembered {
        Remembered::Kept { collided: false } => {}
        Remembered::Kept { collided: true } => count_pairing(key, |c| c.collided += 1),
        Remembered::Replaced => count_pairing(key, |c| {
            c.collided += 1;
            c.overflowed += 1;
        }),
    }
}

/// Applies `f` to this CPU's pairing counters of `key`'s device and direction, creating them
/// if needed.
#[inline(always)]
fn count_pairing(key: &InflightKey, f: impl FnOnce(&mut PairingCounters)) {
    let device = DeviceKey {
        dev: key.dev,
        direction: key.direction,
    };
    if BLOCK_PAIRING.get_ptr_mut(device).is_none() {
        // BPF_NOEXIST: another CPU may have created it meanwhile, which is just as good.
        let _ = BLOCK_PAIRING.insert(device, PairingCounters::default(), u64::from(BPF_NOEXIST));
    }
    if let Some(counters) = BLOCK_PAIRING.get_ptr_mut(device) {
        // SAFETY: this CPU's slot of a live element; tracepoint programs do not nest on a CPU.
        f(unsafe { &mut *counters });
    }
}

/// Adds one event of the current process to `BLOCK_IO`. Flushes, discards and other
/// operations without read/write data are ignored.
#[inline(always)]
fn count(ctx: &TracePointContext, layout: BlockTpLayout, ops: u64) -> Result<u32, u32> {
    // Offset 0 is a common field, never nr_sector: the loader did not set this layout.
    if layout.nr_sector_offset == 0 {
        return Ok(0);
    }
    // SAFETY: the offsets come from this kernel's format file for this tracepoint;
    // read_at goes through bpf_probe_read_kernel, which checks the access.
    let rwbs: [u8; 2] = unsafe { ctx.read_at(layout.rwbs_offset as usize) }.map_err(|_| 1u32)?;
    let Some(direction) = direction_from_rwbs(rwbs) else {
        return Ok(0);
    };
    // SAFETY: as above.
    let nr_sector: u32 =
        unsafe { ctx.read_at(layout.nr_sector_offset as usize) }.map_err(|_| 1u32)?;
    let bytes = u64::from(nr_sector) * SECTOR_BYTES;
    // SAFETY: as above.
    let dev: u32 = unsafe { ctx.read_at(layout.dev_offset as usize) }.map_err(|_| 1u32)?;
    add_to_total(DeviceKey { dev, direction }, ops, bytes);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = BlockKey { tgid, direction };

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

/// Adds to the device's entry of `BLOCK_IO_TOTAL`, creating it if needed; a full map (more
/// than 512 devices) counts the event as lost.
#[inline(always)]
fn add_to_total(key: DeviceKey, ops: u64, bytes: u64) {
    if let Some(value) = BLOCK_IO_TOTAL.get_ptr_mut(key) {
        add(value, ops, bytes);
        return;
    }
    match BLOCK_IO_TOTAL.insert(key, BlockValue { ops, bytes }, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU created the entry between our lookup and insert; it zeroed our slot.
        Err(err) if err == -EEXIST => {
            if let Some(value) = BLOCK_IO_TOTAL.get_ptr_mut(key) {
                add(value, ops, bytes);
            }
        }
        Err(_) => {
            if let Some(lost) = BLOCK_IO_LOST.get_ptr_mut(0) {
                // SAFETY: a per-CPU slot, and tracepoint programs do not nest on one CPU.
                unsafe { *lost += 1 };
            }
        }
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
fn record_lost(ctx: &TracePointContext, tgid: u32) -> u32 {
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

/// The in-flight key of this record: device, direction, first sector. `None` for requests
/// without read/write data (flushes, discards) and when the loader set no layout (offset 0
/// is a common field, never `dev`).
#[inline(always)]
fn inflight_key(
    ctx: &TracePointContext,
    layout: BlockTpLayout,
) -> Result<Option<InflightKey>, u32> {
    if layout.dev_offset == 0 || layout.sector_offset == 0 {
        return Ok(None);
    }
    // SAFETY: offsets from this kernel's format file, read through bpf_probe_read_kernel.
    let rwbs: [u8; 2] = unsafe { ctx.read_at(layout.rwbs_offset as usize) }.map_err(|_| 1u32)?;
    let Some(direction) = direction_from_rwbs(rwbs) else {
        return Ok(None);
    };
    // SAFETY: as above.
    let dev: u32 = unsafe { ctx.read_at(layout.dev_offset as usize) }.map_err(|_| 1u32)?;
    // SAFETY: as above.
    let sector: u64 = unsafe { ctx.read_at(layout.sector_offset as usize) }.map_err(|_| 1u32)?;
    Ok(Some(InflightKey {
        dev,
        direction,
        sector,
    }))
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
