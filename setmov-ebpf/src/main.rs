//! SETMOV's kernel side: block I/O counted per submitting process, aggregated in the kernel.
//!
//! I/O is credited where it enters the block layer, in the submitting task's context (it
//! completes in interrupt context, where `current` is unrelated). On kernels with
//! `block:block_io_start` (6.5+) that tracepoint counts each new request, and
//! `block_bio_backmerge`/`block_bio_frontmerge` add the bytes of bios merged into an existing
//! request, which `block_io_start` never sees. Older kernels use `block:block_bio_queue`, one
//! event per bio. Nothing is sent to user space per event: the loader reads `BLOCK_IO`.
//!
//! Built for the host too (as a normal binary) only so that `cargo check`/`clippy` cover it.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

mod sched;

use aya_ebpf::{
    Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use setmov_common::{
    BLOCK_IO_MAX_ENTRIES, BlockKey, BlockTpLayout, BlockValue, direction_from_rwbs,
};

/// `nr_sector` counts 512-byte sectors whatever the device's block size.
const SECTOR_BYTES: u64 = 512;
/// `bpf_map_update_elem` returns `-EEXIST` when `BPF_NOEXIST` finds the key already there.
const EEXIST: i32 = 17;

/// Per-CPU values need no atomic add (the BPF target has none in Rust's `core`): tracepoint
/// programs do not nest on one CPU, so a plain `+=` on this CPU's slot is safe. No
/// preallocation: memory follows the number of live keys, not the map's capacity.
#[map]
static BLOCK_IO: PerCpuHashMap<BlockKey, BlockValue> =
    PerCpuHashMap::with_max_entries(BLOCK_IO_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// All processes together, by direction (see `BLOCK_IO_TOTAL_MAP`).
#[map]
static BLOCK_IO_TOTAL: PerCpuArray<BlockValue> = PerCpuArray::with_max_entries(2, 0);

/// Events not counted because `BLOCK_IO` was full (slot 0, per CPU).
#[map]
static BLOCK_IO_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const LAYOUT_UNSET: BlockTpLayout = BlockTpLayout {
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

#[tracepoint]
pub fn block_io_start(ctx: TracePointContext) -> u32 {
    match try_block_io_start(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_block_io_start(ctx: &TracePointContext) -> Result<u32, u32> {
    count(ctx, BLOCK_IO_START_LAYOUT.load(), 1)
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

fn try_block_bio_frontmerge(ctx: &TracePointContext) -> Result<u32, u32> {
    count(ctx, BLOCK_BIO_FRONTMERGE_LAYOUT.load(), 0)
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
    if let Some(total) = BLOCK_IO_TOTAL.get_ptr_mut(direction) {
        add(total, ops, bytes);
    }
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

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "setmov-ebpf is an eBPF object built by setmov-user's build script and loaded by setmov"
    );
    std::process::exit(2);
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
