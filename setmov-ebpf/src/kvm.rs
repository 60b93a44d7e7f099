//! KVM events counted per qemu process (tgid), by event kind and reason.
//!
//! The KVM tracepoints run in the vCPU thread that caused the event, so the current tgid is
//! the VM's qemu process. Each program reads one or two fields at offsets the loader took from
//! the tracepoint's format file, and adds one to `KVM_EVENTS[{tgid, kind, reason}]`.

use aya_ebpf::{
    Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use setmov_common::kvm::{
    KVM_EVENTS_MAX_ENTRIES, KvmEvent, KvmExitLayout, KvmFieldLayout, KvmKey, KvmUserspaceExitLayout,
};

use crate::EEXIST;

/// Per-CPU, not preallocated: see `BLOCK_IO` for why a plain `+=` is safe.
#[map]
static KVM_EVENTS: PerCpuHashMap<KvmKey, u64> =
    PerCpuHashMap::with_max_entries(KVM_EVENTS_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Events not counted because `KVM_EVENTS` was full (slot 0, per CPU).
#[map]
static KVM_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// Record layouts, set by the loader from the tracepoints' format files.
#[unsafe(no_mangle)]
static KVM_EXIT_LAYOUT: Global<KvmExitLayout> = Global::new(KvmExitLayout {
    exit_reason_offset: 0,
    isa_offset: 0,
    first_table_isa: 0,
});
#[unsafe(no_mangle)]
static KVM_USERSPACE_EXIT_LAYOUT: Global<KvmUserspaceExitLayout> =
    Global::new(KvmUserspaceExitLayout {
        reason_offset: 0,
        errno_offset: 0,
    });
#[unsafe(no_mangle)]
static KVM_PIO_LAYOUT: Global<KvmFieldLayout> = Global::new(FIELD_UNSET);
#[unsafe(no_mangle)]
static KVM_MMIO_LAYOUT: Global<KvmFieldLayout> = Global::new(FIELD_UNSET);
#[unsafe(no_mangle)]
static KVM_HALT_POLL_NS_LAYOUT: Global<KvmFieldLayout> = Global::new(FIELD_UNSET);
#[unsafe(no_mangle)]
static KVM_VCPU_WAKEUP_LAYOUT: Global<KvmFieldLayout> = Global::new(FIELD_UNSET);

/// Offset 0 is a common field, never one of ours: the loader did not set the layout.
const FIELD_UNSET: KvmFieldLayout = KvmFieldLayout { offset: 0 };

#[tracepoint]
pub fn kvm_exit(ctx: TracePointContext) -> u32 {
    match try_kvm_exit(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kvm_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KVM_EXIT_LAYOUT.load();
    if layout.exit_reason_offset == 0 {
        return Ok(0);
    }
    // SAFETY (every read_at here): the offsets and sizes come from this kernel's format file
    // for this tracepoint; read_at goes through bpf_probe_read_kernel, which checks the access.
    let exit_reason: u32 =
        unsafe { ctx.read_at(layout.exit_reason_offset as usize) }.map_err(|_| 1u32)?;
    let mut event = KvmEvent::Exit;
    if layout.isa_offset != 0 {
        let isa: u32 = unsafe { ctx.read_at(layout.isa_offset as usize) }.map_err(|_| 1u32)?;
        if isa != layout.first_table_isa {
            event = KvmEvent::ExitOtherIsa;
        }
    }
    count(ctx, event, exit_reason)
}

#[tracepoint]
pub fn kvm_userspace_exit(ctx: TracePointContext) -> u32 {
    match try_kvm_userspace_exit(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kvm_userspace_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KVM_USERSPACE_EXIT_LAYOUT.load();
    if layout.reason_offset == 0 {
        return Ok(0);
    }
    let errno: i32 = unsafe { ctx.read_at(layout.errno_offset as usize) }.map_err(|_| 1u32)?;
    // A failed KVM_RUN leaves a stale exit reason behind: count the errno instead.
    if errno < 0 {
        return count(ctx, KvmEvent::UserspaceExitErrno, errno.unsigned_abs());
    }
    let reason: u32 = unsafe { ctx.read_at(layout.reason_offset as usize) }.map_err(|_| 1u32)?;
    count(ctx, KvmEvent::UserspaceExit, reason)
}

#[tracepoint]
pub fn kvm_pio(ctx: TracePointContext) -> u32 {
    match try_kvm_pio(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kvm_pio(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KVM_PIO_LAYOUT.load();
    if layout.offset == 0 {
        return Ok(0);
    }
    let rw: u32 = unsafe { ctx.read_at(layout.offset as usize) }.map_err(|_| 1u32)?;
    // The print fmt reads any non-zero `rw` as a write (KVM_PIO_OUT).
    count(ctx, KvmEvent::Pio, u32::from(rw != 0))
}

#[tracepoint]
pub fn kvm_mmio(ctx: TracePointContext) -> u32 {
    match try_kvm_mmio(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kvm_mmio(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KVM_MMIO_LAYOUT.load();
    if layout.offset == 0 {
        return Ok(0);
    }
    let mmio_type: u32 = unsafe { ctx.read_at(layout.offset as usize) }.map_err(|_| 1u32)?;
    count(ctx, KvmEvent::Mmio, mmio_type)
}

#[tracepoint]
pub fn kvm_halt_poll_ns(ctx: TracePointContext) -> u32 {
    match try_kvm_halt_poll_ns(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kvm_halt_poll_ns(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KVM_HALT_POLL_NS_LAYOUT.load();
    if layout.offset == 0 {
        return Ok(0);
    }
    let grow: u8 = unsafe { ctx.read_at(layout.offset as usize) }.map_err(|_| 1u32)?;
    count(ctx, KvmEvent::HaltPollNs, u32::from(grow != 0))
}

#[tracepoint]
pub fn kvm_vcpu_wakeup(ctx: TracePointContext) -> u32 {
    match try_kvm_vcpu_wakeup(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kvm_vcpu_wakeup(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KVM_VCPU_WAKEUP_LAYOUT.load();
    if layout.offset == 0 {
        return Ok(0);
    }
    let waited: u8 = unsafe { ctx.read_at(layout.offset as usize) }.map_err(|_| 1u32)?;
    count(ctx, KvmEvent::VcpuWakeup, u32::from(waited != 0))
}

/// Adds one event of the current process to `KVM_EVENTS`.
#[inline(always)]
fn count(ctx: &TracePointContext, event: KvmEvent, reason: u32) -> Result<u32, u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = KvmKey {
        tgid,
        event: event as u32,
        reason,
    };
    if let Some(count) = KVM_EVENTS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a live map element (see KVM_EVENTS).
        unsafe { *count += 1 };
        return Ok(0);
    }
    match KVM_EVENTS.insert(key, 1u64, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(0),
        // Another CPU created the entry between our lookup and insert; it zeroed our slot.
        Err(err) if err == -EEXIST => match KVM_EVENTS.get_ptr_mut(key) {
            Some(count) => {
                // SAFETY: as above.
                unsafe { *count += 1 };
                Ok(0)
            }
            None => Err(record_lost(ctx, tgid)),
        },
        Err(_) => Err(record_lost(ctx, tgid)),
    }
}

/// Counts an event `KVM_EVENTS` had no room for; warns the first time on each CPU.
#[inline(always)]
fn record_lost(ctx: &TracePointContext, tgid: u32) -> u32 {
    if let Some(lost) = KVM_EVENTS_LOST.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, and tracepoint programs do not nest on one CPU.
        let lost = unsafe {
            *lost += 1;
            *lost
        };
        if lost == 1 {
            warn!(
                ctx,
                "KVM_EVENTS map full: KVM events of tgid {} not counted (said once per CPU)", tgid
            );
        }
    }
    1
}
