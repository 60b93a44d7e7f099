//! Run-queue wait of watched threads (the vCPU threads of VMs: their "CPU ready").
//!
//! A watched thread starts waiting when it becomes runnable: woken (`sched_wakeup`,
//! `sched_wakeup_new`) or switched out while still runnable (`sched_switch`, preempted or
//! yielding). The wait ends when `sched_switch` switches it in; its length goes into
//! `RUNQ_WAIT`. User space chooses the threads (`RUNQ_WATCHED`); every other thread costs two
//! hash lookups per context switch and one per wakeup.
//!
//! User space creates a watched tid's entries in `RUNQ_SINCE` and `RUNQ_WAIT` before it adds
//! the tid to `RUNQ_WATCHED`: the programs only update values in place and never allocate on
//! the scheduler's path (nor build a 336-byte `RunqWait` on the 512-byte BPF stack).
//!
//! No atomics are needed (the BPF target has none in Rust's `core`): the kernel fires all three
//! tracepoints for a task with that task's run-queue lock held, so the programs never run
//! concurrently for one tid, and `RUNQ_WAIT` is only written when its tid is switched in. Plain
//! hash maps therefore do, at 1/ncpu the memory of per-CPU values. None is preallocated: memory
//! follows the watched set, and removed elements are freed only after an RCU grace period, so
//! a pointer from a lookup stays valid while user space unwatches a thread.

use aya_ebpf::{
    Global,
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use setmov_common::{
    lat_bucket,
    sched::{
        RUNQ_MAX_ENTRIES, RunqWait, SchedSwitchLayout, SchedWakeupLayout, prev_state_is_runnable,
    },
};

/// Watched tids (tid -> 1); written by user space only.
#[map]
static RUNQ_WATCHED: HashMap<u32, u32> =
    HashMap::with_max_entries(RUNQ_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// When each watched thread became runnable (`bpf_ktime_get_ns`), 0 while it runs or sleeps.
/// Entries are created (0) and removed by user space.
#[map]
static RUNQ_SINCE: HashMap<u32, u64> =
    HashMap::with_max_entries(RUNQ_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Cumulative waits per watched tid; entries are created (zero) and removed by user space.
#[map]
static RUNQ_WAIT: HashMap<u32, RunqWait> =
    HashMap::with_max_entries(RUNQ_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Events of watched threads not recorded for want of an entry (slot 0, per CPU).
#[map]
static RUNQ_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// Record layouts, set by the loader from the tracepoints' format files.
#[unsafe(no_mangle)]
static SCHED_SWITCH_LAYOUT: Global<SchedSwitchLayout> = Global::new(SchedSwitchLayout {
    prev_pid_offset: 0,
    prev_state_offset: 0,
    next_pid_offset: 0,
    prev_state_sleep_mask: 0,
});
#[unsafe(no_mangle)]
static SCHED_WAKEUP_LAYOUT: Global<SchedWakeupLayout> =
    Global::new(SchedWakeupLayout { pid_offset: 0 });
#[unsafe(no_mangle)]
static SCHED_WAKEUP_NEW_LAYOUT: Global<SchedWakeupLayout> =
    Global::new(SchedWakeupLayout { pid_offset: 0 });

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    match try_sched_switch(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = SCHED_SWITCH_LAYOUT.load();
    // Offset 0 is a common field, never next_pid: the loader did not set this layout.
    if layout.next_pid_offset == 0 {
        return Ok(0);
    }
    let prev: u32 = read(ctx, layout.prev_pid_offset)?;
    let next: u32 = read(ctx, layout.next_pid_offset)?;
    let prev_watched = is_watched(prev);
    let next_watched = is_watched(next);
    if !prev_watched && !next_watched {
        return Ok(0);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if prev_watched {
        let prev_state: u32 = read(ctx, layout.prev_state_offset)?;
        if prev_state_is_runnable(prev_state, layout.prev_state_sleep_mask) {
            // Overwrite: a wakeup that came while it was still running started nothing.
            mark_runnable(ctx, prev, now, Since::Now)?;
        } else if let Some(since) = RUNQ_SINCE.get_ptr_mut(prev) {
            // SAFETY: a live element, written only under this task's run-queue lock.
            unsafe { *since = 0 };
        }
    }
    if next_watched {
        switched_in(ctx, next, now)?;
    }
    Ok(0)
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    match woken(&ctx, SCHED_WAKEUP_LAYOUT.load()) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    match woken(&ctx, SCHED_WAKEUP_NEW_LAYOUT.load()) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

/// A thread was put on a run queue.
#[inline(always)]
fn woken(ctx: &TracePointContext, layout: SchedWakeupLayout) -> Result<u32, u32> {
    if layout.pid_offset == 0 {
        return Ok(0);
    }
    let tid: u32 = read(ctx, layout.pid_offset)?;
    if !is_watched(tid) {
        return Ok(0);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // A task preempted between setting a sleep state and calling schedule() is woken while it
    // waits in the run queue: its wait began at the preemption.
    mark_runnable(ctx, tid, now, Since::NowUnlessWaiting)
}

/// How `mark_runnable` treats a thread already marked as waiting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Since {
    Now,
    NowUnlessWaiting,
}

#[inline(always)]
fn is_watched(tid: u32) -> bool {
    // The idle tasks (tid 0) are never watched.
    RUNQ_WATCHED.get_ptr(tid).is_some()
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Result<T, u32> {
    // SAFETY: the offsets come from this kernel's format file for this tracepoint;
    // read_at goes through bpf_probe_read_kernel, which checks the access.
    unsafe { ctx.read_at(offset as usize) }.map_err(|_| 1u32)
}

#[inline(always)]
fn mark_runnable(ctx: &TracePointContext, tid: u32, now: u64, since: Since) -> Result<u32, u32> {
    let waiting_since = RUNQ_SINCE
        .get_ptr_mut(tid)
        .ok_or_else(|| record_lost(ctx, tid))?;
    // SAFETY: a live element, written only under this task's run-queue lock.
    unsafe {
        if since == Since::Now || *waiting_since == 0 {
            *waiting_since = now;
        }
    }
    Ok(0)
}

/// The thread gets a CPU: its wait, if one was seen starting, ends now.
#[inline(always)]
fn switched_in(ctx: &TracePointContext, tid: u32, now: u64) -> Result<u32, u32> {
    let waiting_since = RUNQ_SINCE
        .get_ptr_mut(tid)
        .ok_or_else(|| record_lost(ctx, tid))?;
    // SAFETY: a live element, written only under this task's run-queue lock.
    let since = unsafe { core::mem::replace(&mut *waiting_since, 0) };
    // 0: it became runnable before it was watched.
    if since == 0 {
        return Ok(0);
    }
    let wait = now.saturating_sub(since);
    // The verifier cannot follow `lat_bucket`'s bit operations to the bucket's range: a
    // volatile read hides the value so that the bounds check stays.
    let bucket = lat_bucket(wait);
    // SAFETY: a read of a local.
    let bucket = unsafe { core::ptr::read_volatile(&bucket) };
    let total = RUNQ_WAIT
        .get_ptr_mut(tid)
        .ok_or_else(|| record_lost(ctx, tid))?;
    // SAFETY: a live element, written only when its tid is switched in, which happens on one
    // CPU at a time.
    unsafe {
        (*total).wait_ns = (*total).wait_ns.wrapping_add(wait);
        (*total).waits = (*total).waits.wrapping_add(1);
        if let Some(count) = (*total).hist.buckets.get_mut(bucket) {
            *count = count.wrapping_add(1);
        }
    }
    Ok(0)
}

/// Counts an event of a watched thread whose `RUNQ_SINCE` or `RUNQ_WAIT` entry is missing: user
/// space creates both before it adds the tid to `RUNQ_WATCHED` (so a full map fails there), and
/// removes them after; this is a race with that, or a bug. Warns the first time on each CPU.
#[inline(always)]
fn record_lost(ctx: &TracePointContext, tid: u32) -> u32 {
    if let Some(lost) = RUNQ_LOST.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, and tracepoint programs do not nest on one CPU.
        let lost = unsafe {
            *lost += 1;
            *lost
        };
        if lost == 1 {
            warn!(
                ctx,
                "RUNQ_SINCE or RUNQ_WAIT has no entry for watched tid {} (said once per CPU)", tid
            );
        }
    }
    1
}
