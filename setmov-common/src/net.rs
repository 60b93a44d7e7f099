//! Network devices: packets, bytes and packet sizes per device and direction, and dropped
//! packets per device and drop reason.
//!
//! Directions are the host device's: [`NET_RX`] is what the host received on the device,
//! [`NET_TX`] what it transmitted on it. On a VM's tap device the guest sees the opposite.

use crate::Log2Hist;

/// Name of the per-CPU hash map of device counters (`NetDeviceKey` -> `NetDeviceValue`).
pub const NET_DEVICE_MAP: &str = "NET_DEVICE";
/// Capacity of [`NET_DEVICE_MAP`]: two directions per device, so 2048 devices. Not
/// preallocated: each live key costs one `NetDeviceValue` (336 bytes) per CPU.
pub const NET_DEVICE_MAX_ENTRIES: u32 = 4096;
/// Name of the per-CPU hash map of drops (`NetDropKey` -> `u64` packets).
pub const NET_DROP_MAP: &str = "NET_DROP";
/// Capacity of [`NET_DROP_MAP`]: pairs of device and reason seen since load.
pub const NET_DROP_MAX_ENTRIES: u32 = 4096;
/// Name of the per-CPU hash map of packets a driver did not accept and that no `kfree_skb`
/// counted (`NetDeviceKey` with [`NET_TX`] -> `u64` packets): keyed by the tracepoint's own
/// device name, since the buffer may already be freed.
pub const NET_XMIT_FAILED_MAP: &str = "NET_XMIT_FAILED";
/// Capacity of [`NET_XMIT_FAILED_MAP`]: devices whose driver refused a packet since load.
pub const NET_XMIT_FAILED_MAX_ENTRIES: u32 = 2048;
/// Name of the per-CPU array (one `u64`) holding the address of the last socket buffer
/// `skb:kfree_skb` counted on this CPU: a driver that frees a packet it refuses (a tap whose
/// ring is full) fires `kfree_skb` and then `net_dev_xmit` with rc != 0 for the same buffer,
/// which must count once.
pub const NET_LAST_FREED_MAP: &str = "NET_LAST_FREED";
/// Name of the per-CPU array counting events not counted because a map was full, indexed by
/// [`NET_LOST_DEVICE`] and [`NET_LOST_DROP`].
pub const NET_LOST_MAP: &str = "NET_LOST";
/// Slot of [`NET_LOST_MAP`] for packets [`NET_DEVICE_MAP`] had no room for.
pub const NET_LOST_DEVICE: u32 = 0;
/// Slot of [`NET_LOST_MAP`] for drops [`NET_DROP_MAP`] or [`NET_XMIT_FAILED_MAP`] had no room
/// for.
pub const NET_LOST_DROP: u32 = 1;

/// Longest network device name with its terminating NUL (the kernel's `IFNAMSIZ`).
pub const IFNAMSIZ: usize = 16;

/// Direction of a packet: received by the host on the device (`net:netif_receive_skb`).
pub const NET_RX: u32 = 0;
/// Direction of a packet: transmitted by the host on the device (`net:net_dev_xmit`, rc 0).
pub const NET_TX: u32 = 1;

/// `net:net_dev_xmit`'s rc when the driver is busy: the kernel keeps the packet and hands it
/// over again, so it is neither sent nor dropped yet.
pub const NETDEV_TX_BUSY: i32 = 0x10;

/// Whether `net:net_dev_xmit`'s `rc` means the driver did not take the packet and it is gone:
/// anything but sent (0) and busy ([`NETDEV_TX_BUSY`]), i.e. `NET_XMIT_DROP`, `NET_XMIT_CN`
/// or a negative errno.
pub const fn xmit_failed(rc: i32) -> bool {
    rc != 0 && rc != NETDEV_TX_BUSY
}

/// Key of [`NET_DEVICE_MAP`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetDeviceKey {
    /// Device name as the tracepoint gives it, NUL-padded (see [`device_name`]).
    pub name: [u8; IFNAMSIZ],
    /// [`NET_RX`] or [`NET_TX`].
    pub direction: u32,
}

/// Value of [`NET_DEVICE_MAP`]: cumulative counters since the program was loaded.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDeviceValue {
    /// Packets, one per socket buffer: a GSO/GRO buffer holding several wire packets counts
    /// once, as in /proc/net/dev for virtual devices.
    pub packets: u64,
    /// The tracepoint's `len` (`skb->len`) summed: on receive the link-layer header has already
    /// been pulled (14 bytes less per packet than /proc/net/dev on Ethernet); on transmit it is
    /// included.
    pub bytes: u64,
    /// Packets by `len`, log2 buckets: a size's order of magnitude is enough here (latencies
    /// use the finer [`crate::LatHist`]).
    pub sizes: Log2Hist,
}

/// Key of [`NET_DROP_MAP`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetDropKey {
    /// `skb->dev->ifindex` when the packet was dropped; 0 when the packet had no device or the
    /// loader could not find the kernel's structure offsets.
    pub ifindex: u32,
    /// The kernel's `enum skb_drop_reason`, or [`DROP_REASON_XMIT_FAILED`].
    pub reason: u32,
}

/// Where `net:netif_receive_skb` and `net:net_dev_xmit` programs find their inputs, from the
/// tracepoint's `format` file. All zeroes means "not set": the program counts nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDevTpLayout {
    /// Byte offset of `unsigned int len`.
    pub len_offset: u32,
    /// Byte offset of `__data_loc char[] name` (see [`data_loc_offset`]).
    pub name_offset: u32,
    /// Byte offset of `int rc` (`net_dev_xmit` only; 0 on receive).
    pub rc_offset: u32,
    /// Byte offset of `void *skbaddr` (`net_dev_xmit` only, for the device of a failed
    /// transmission; 0 on receive).
    pub skbaddr_offset: u32,
}

/// Where the `skb:kfree_skb` program finds its inputs. All zeroes means "not set".
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KfreeSkbTpLayout {
    /// Byte offset of `void *skbaddr`.
    pub skbaddr_offset: u32,
    /// Byte offset of `enum skb_drop_reason reason`.
    pub reason_offset: u32,
}

/// Offsets in kernel structures, from the kernel's BTF, that lead from a socket buffer to its
/// device's ifindex: `skb->dev->ifindex`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkbDevLayout {
    /// 1 when the offsets below are this kernel's; 0 when unknown (drops get ifindex 0).
    pub known: u32,
    /// Byte offset of `struct net_device *dev` in `struct sk_buff`.
    pub skb_dev_offset: u32,
    /// Byte offset of `int ifindex` in `struct net_device`.
    pub dev_ifindex_offset: u32,
}

/// The offset into the record of a `__data_loc` field's data, from the field's `u32` value
/// (the low 16 bits; the high 16 bits are the data's length).
#[inline(always)]
pub const fn data_loc_offset(data_loc: u32) -> usize {
    (data_loc & 0xffff) as usize
}

/// The device name of a [`NetDeviceKey`]: its bytes up to the first NUL.
pub fn device_name(name: &[u8; IFNAMSIZ]) -> &[u8] {
    let end = name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    &name[..end]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are #[repr(C)], made only of integers, with no padding.
    unsafe impl aya::Pod for super::NetDeviceKey {}
    unsafe impl aya::Pod for super::NetDeviceValue {}
    unsafe impl aya::Pod for super::NetDropKey {}
    unsafe impl aya::Pod for super::NetDevTpLayout {}
    unsafe impl aya::Pod for super::KfreeSkbTpLayout {}
    unsafe impl aya::Pod for super::SkbDevLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_loc_offsets() {
        // netif_receive_skb of "lo": 3 bytes ("lo\0") at offset 24 of the record.
        assert_eq!(data_loc_offset(3 << 16 | 24), 24);
        assert_eq!(data_loc_offset(0xffff_ffff), 0xffff);
        assert_eq!(data_loc_offset(0), 0);
    }

    #[test]
    fn refused_packets_are_those_neither_sent_nor_busy() {
        assert!(!xmit_failed(0));
        assert!(!xmit_failed(NETDEV_TX_BUSY));
        // NET_XMIT_DROP, NET_XMIT_CN, -ENOBUFS.
        assert!(xmit_failed(1));
        assert!(xmit_failed(2));
        assert!(xmit_failed(-105));
    }

    #[test]
    fn device_names() {
        assert_eq!(device_name(b"vnet3\0\0\0\0\0\0\0\0\0\0\0"), b"vnet3");
        assert_eq!(device_name(b"abcdefghijklmnop"), b"abcdefghijklmnop");
        assert_eq!(device_name(&[0; IFNAMSIZ]), b"");
    }

    #[test]
    fn net_map_types_have_no_padding() {
        assert_eq!(size_of::<NetDeviceKey>(), IFNAMSIZ + 4);
        assert_eq!(size_of::<NetDeviceValue>(), 16 + size_of::<Log2Hist>());
        assert_eq!(size_of::<NetDropKey>(), 8);
        assert_eq!(size_of::<NetDevTpLayout>(), 16);
        assert_eq!(size_of::<KfreeSkbTpLayout>(), 8);
        assert_eq!(size_of::<SkbDevLayout>(), 12);
    }
}
