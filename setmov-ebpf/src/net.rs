//! Network devices: packets, bytes and a packet-size histogram per device name and direction,
//! and drops per device (ifindex) and reason, aggregated in the kernel.
//!
//! `net:netif_receive_skb` is a packet the host received on a device (it fires in
//! `__netif_receive_skb_core`, whatever the entry path); `net:net_dev_xmit` one the host handed
//! to a device's driver, counted as sent when the driver accepted it (rc 0). `skb:kfree_skb`
//! fires for dropped packets only (packets consumed normally go through `consume_skb`) and
//! carries the kernel's reason but no device: the device comes from `skb->dev->ifindex`, at
//! offsets the loader read from BTF, while the buffer is still alive.
//!
//! A packet the driver refused (rc neither 0 nor busy) counts once: a driver that frees it
//! first (a tap whose ring is full: `kfree_skb` with reason `FULL_RING`, then rc
//! `NET_XMIT_DROP`) has had it counted by `kfree_skb`, found by the buffer's address in
//! `NET_LAST_FREED`; otherwise it is counted in `NET_XMIT_FAILED` under the tracepoint's own
//! device name, never through the buffer, which may be freed by then.

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use setmov_common::{
    Log2Hist, log2_bucket,
    net::{
        IFNAMSIZ, KfreeSkbTpLayout, NET_DEVICE_MAX_ENTRIES, NET_DROP_MAX_ENTRIES, NET_LOST_DEVICE,
        NET_LOST_DROP, NET_RX, NET_TX, NET_XMIT_FAILED_MAX_ENTRIES, NetDevTpLayout, NetDeviceKey,
        NetDeviceValue, NetDropKey, SkbDevLayout, data_loc_offset, xmit_failed,
    },
};

use crate::EEXIST;

/// Per-CPU, not preallocated: see `BLOCK_IO` in main.rs.
#[map]
static NET_DEVICE: PerCpuHashMap<NetDeviceKey, NetDeviceValue> =
    PerCpuHashMap::with_max_entries(NET_DEVICE_MAX_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
static NET_DROP: PerCpuHashMap<NetDropKey, u64> =
    PerCpuHashMap::with_max_entries(NET_DROP_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Packets a driver refused that no `kfree_skb` counted, by device name (direction tx).
#[map]
static NET_XMIT_FAILED: PerCpuHashMap<NetDeviceKey, u64> =
    PerCpuHashMap::with_max_entries(NET_XMIT_FAILED_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// The last buffer `kfree_skb` counted on this CPU (slot 0).
#[map]
static NET_LAST_FREED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events not counted because a map was full, per CPU: slot `NET_LOST_DEVICE` or `NET_LOST_DROP`.
#[map]
static NET_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// The values new entries start from, as named statics. `NET_DEVICE`'s would take most of
/// the 512-byte eBPF stack; and a plain `&0` must not be used: LLVM may point such a constant
/// at any all-zero static, including a `Global` the loader overrides with non-zero values.
static NET_DROP_ZERO: u64 = 0;
static NET_DEVICE_ZERO: NetDeviceValue = NetDeviceValue {
    packets: 0,
    bytes: 0,
    sizes: Log2Hist {
        buckets: [0; setmov_common::LOG2_BUCKETS],
    },
};

const NET_DEV_LAYOUT_UNSET: NetDevTpLayout = NetDevTpLayout {
    len_offset: 0,
    name_offset: 0,
    rc_offset: 0,
    skbaddr_offset: 0,
};

// Record layouts, one per program, set by the loader from the tracepoints' format files, and
// the `sk_buff`/`net_device` offsets it read from the kernel's BTF.
#[unsafe(no_mangle)]
static NETIF_RECEIVE_SKB_LAYOUT: Global<NetDevTpLayout> = Global::new(NET_DEV_LAYOUT_UNSET);
#[unsafe(no_mangle)]
static NET_DEV_XMIT_LAYOUT: Global<NetDevTpLayout> = Global::new(NET_DEV_LAYOUT_UNSET);
#[unsafe(no_mangle)]
static KFREE_SKB_LAYOUT: Global<KfreeSkbTpLayout> = Global::new(KfreeSkbTpLayout {
    skbaddr_offset: 0,
    reason_offset: 0,
});
#[unsafe(no_mangle)]
static SKB_DEV_LAYOUT: Global<SkbDevLayout> = Global::new(SkbDevLayout {
    known: 0,
    skb_dev_offset: 0,
    dev_ifindex_offset: 0,
});

#[tracepoint]
pub fn netif_receive_skb(ctx: TracePointContext) -> u32 {
    match try_netif_receive_skb(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_netif_receive_skb(ctx: &TracePointContext) -> Result<u32, u32> {
    count_packet(ctx, NETIF_RECEIVE_SKB_LAYOUT.load(), NET_RX)
}

#[tracepoint]
pub fn net_dev_xmit(ctx: TracePointContext) -> u32 {
    match try_net_dev_xmit(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_net_dev_xmit(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = NET_DEV_XMIT_LAYOUT.load();
    // Offset 0 is a common field, never rc: the loader did not set this layout.
    if layout.rc_offset == 0 {
        return Ok(0);
    }
    // SAFETY: offsets from this kernel's format file; read_at checks the access.
    let rc: i32 = unsafe { ctx.read_at(layout.rc_offset as usize) }.map_err(|_| 1u32)?;
    if rc == 0 {
        return count_packet(ctx, layout, NET_TX);
    }
    if !xmit_failed(rc) {
        // Busy: the kernel hands the same packet over again.
        return Ok(0);
    }
    // SAFETY: as above. The address is only compared, never followed.
    let skb: u64 = unsafe { ctx.read_at(layout.skbaddr_offset as usize) }.map_err(|_| 1u32)?;
    if let Some(last) = NET_LAST_FREED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; tracepoint programs do not nest on one CPU.
        unsafe {
            if *last == skb {
                // Counted by kfree_skb, with the kernel's reason.
                *last = 0;
                return Ok(0);
            }
        }
    }
    let key = NetDeviceKey {
        name: record_device_name(ctx, layout)?,
        direction: NET_TX,
    };
    let Some(count) = entry(&NET_XMIT_FAILED, &key, &NET_DROP_ZERO) else {
        return Err(record_lost(ctx, NET_LOST_DROP));
    };
    // SAFETY: as in count_packet.
    unsafe { *count += 1 };
    Ok(0)
}

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    match try_kfree_skb(&ctx) {
        Ok(ret) => ret,
        Err(ret) => ret,
    }
}

fn try_kfree_skb(ctx: &TracePointContext) -> Result<u32, u32> {
    let layout = KFREE_SKB_LAYOUT.load();
    if layout.reason_offset == 0 {
        return Ok(0);
    }
    // SAFETY: offsets from this kernel's format file; read_at checks the access.
    let reason: u32 = unsafe { ctx.read_at(layout.reason_offset as usize) }.map_err(|_| 1u32)?;
    // SAFETY: as above.
    let skb: u64 = unsafe { ctx.read_at(layout.skbaddr_offset as usize) }.map_err(|_| 1u32)?;
    let key = NetDropKey {
        ifindex: ifindex_of(skb),
        reason,
    };
    if let Some(last) = NET_LAST_FREED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; tracepoint programs do not nest on one CPU.
        unsafe { *last = skb };
    }
    count_drop(ctx, key)
}

/// Adds one packet of the record's device and `len` to `NET_DEVICE`.
#[inline(always)]
fn count_packet(
    ctx: &TracePointContext,
    layout: NetDevTpLayout,
    direction: u32,
) -> Result<u32, u32> {
    if layout.len_offset == 0 {
        return Ok(0);
    }
    // SAFETY: offsets from this kernel's format file; read_at checks the access.
    let len: u32 = unsafe { ctx.read_at(layout.len_offset as usize) }.map_err(|_| 1u32)?;
    let key = NetDeviceKey {
        name: record_device_name(ctx, layout)?,
        direction,
    };
    let Some(value) = entry(&NET_DEVICE, &key, &NET_DEVICE_ZERO) else {
        return Err(record_lost(ctx, NET_LOST_DEVICE));
    };
    let len = u64::from(len);
    // Sizes stay in log2 buckets (their order of magnitude is what is read off them);
    // latencies use the finer log-linear `LatHist`.
    // LLVM knows the bucket of a u32 is below 32 and drops the bounds check, but the verifier
    // cannot follow that proof: a volatile read hides the value so the check stays.
    let bucket = log2_bucket(len);
    // SAFETY: a read of a local.
    let bucket = unsafe { core::ptr::read_volatile(&bucket) };
    // SAFETY: this CPU's slot of a live element; tracepoint programs do not nest on one CPU.
    unsafe {
        (*value).packets += 1;
        (*value).bytes += len;
        if let Some(count) = (*value).sizes.buckets.get_mut(bucket) {
            *count += 1;
        }
    }
    Ok(0)
}

/// The record's device name, NUL-padded.
#[inline(always)]
fn record_device_name(
    ctx: &TracePointContext,
    layout: NetDevTpLayout,
) -> Result<[u8; IFNAMSIZ], u32> {
    // SAFETY: offset from this kernel's format file; read_at checks the access.
    let name_loc: u32 = unsafe { ctx.read_at(layout.name_offset as usize) }.map_err(|_| 1u32)?;
    let mut name = [0; IFNAMSIZ];
    // SAFETY: the __data_loc offset points into this record; the helper stops at the NUL or
    // after IFNAMSIZ bytes and leaves the rest of the zeroed name as it was, so equal names
    // make equal keys.
    unsafe {
        let at = (ctx.as_ptr() as *const u8).add(data_loc_offset(name_loc));
        bpf_probe_read_kernel_str_bytes(at, &mut name).map_err(|_| 1u32)?;
    }
    Ok(name)
}

/// Adds one drop to `NET_DROP`.
#[inline(always)]
fn count_drop(ctx: &TracePointContext, key: NetDropKey) -> Result<u32, u32> {
    let Some(count) = entry(&NET_DROP, &key, &NET_DROP_ZERO) else {
        return Err(record_lost(ctx, NET_LOST_DROP));
    };
    // SAFETY: as in count_packet.
    unsafe { *count += 1 };
    Ok(0)
}

/// This CPU's slot of `key` in `map`, created from `zero` when missing; None when the map is
/// full. Creating with `BPF_NOEXIST` never overwrites an entry another CPU has just created.
#[inline(always)]
fn entry<K, V>(map: &PerCpuHashMap<K, V>, key: &K, zero: &V) -> Option<*mut V> {
    if let Some(value) = map.get_ptr_mut(key) {
        return Some(value);
    }
    match map.insert(key, zero, u64::from(BPF_NOEXIST)) {
        Ok(()) => map.get_ptr_mut(key),
        Err(err) if err == -EEXIST => map.get_ptr_mut(key),
        Err(_) => None,
    }
}

/// `skb->dev->ifindex`, or 0 when the buffer has no device or the offsets are unknown. The
/// `dev` field shares a union with scratch data some protocols keep in queued buffers: a value
/// that is no readable pointer fails the read and gives 0.
#[inline(always)]
fn ifindex_of(skb: u64) -> u32 {
    let layout = SKB_DEV_LAYOUT.load();
    if layout.known == 0 || skb == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the access and fails on a bad address.
    let dev: u64 =
        unsafe { bpf_probe_read_kernel((skb + u64::from(layout.skb_dev_offset)) as *const u64) }
            .unwrap_or(0);
    if dev == 0 {
        return 0;
    }
    // SAFETY: as above.
    let ifindex: i32 = unsafe {
        bpf_probe_read_kernel((dev + u64::from(layout.dev_ifindex_offset)) as *const i32)
    }
    .unwrap_or(0);
    ifindex as u32
}

/// Counts an event a map had no room for; warns the first time on each CPU.
#[inline(always)]
fn record_lost(ctx: &TracePointContext, slot: u32) -> u32 {
    if let Some(lost) = NET_LOST.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, and tracepoint programs do not nest on one CPU.
        let lost = unsafe {
            *lost += 1;
            *lost
        };
        if lost == 1 {
            warn!(
                ctx,
                "network map full (NET_LOST slot {}): packets not counted (said once per CPU)",
                slot
            );
        }
    }
    1
}
