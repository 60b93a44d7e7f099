//! Types shared by the kernel side (`setmov-ebpf`) and the loader (`setmov-user`).
//!
//! Everything here is `#[repr(C)]` plain data or a pure helper: no I/O, no allocation.
#![no_std]

/// Name of the per-CPU hash map holding the block I/O counters (`BlockKey` -> `BlockValue`).
pub const BLOCK_IO_MAP: &str = "BLOCK_IO";
/// Capacity of [`BLOCK_IO_MAP`]: two directions per process, so ~8000 live submitting
/// processes. The map is per-CPU and not preallocated: each live key costs 16 bytes per CPU.
pub const BLOCK_IO_MAX_ENTRIES: u32 = 16384;
/// Name of the per-CPU array of all processes' block I/O, indexed by direction
/// ([`DIR_READ`], [`DIR_WRITE`]) -> `BlockValue`: the whole host's figure in two lookups, and
/// complete even when the per-process map is full.
pub const BLOCK_IO_TOTAL_MAP: &str = "BLOCK_IO_TOTAL";
/// Name of the per-CPU array (one `u64`) counting events that found the counter map full.
pub const BLOCK_IO_LOST_MAP: &str = "BLOCK_IO_LOST";

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
    /// Byte offset of `unsigned int nr_sector` in the record.
    pub nr_sector_offset: u32,
    /// Byte offset of `char rwbs[]` in the record.
    pub rwbs_offset: u32,
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
    // SAFETY: all three are #[repr(C)], made only of integers, with no padding.
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::BlockValue {}
    unsafe impl aya::Pod for super::BlockTpLayout {}
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
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<BlockKey>(), 8);
        assert_eq!(size_of::<BlockValue>(), 16);
        assert_eq!(size_of::<BlockTpLayout>(), 8);
    }
}
