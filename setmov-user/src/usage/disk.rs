//! Equation (4): disk rates of one block device, and the host's disk total over the devices
//! the topology counts.

use super::{DISKSTATS_SECTOR_BYTES, counter_delta, positive_seconds};
use crate::host::snapshot::{DeviceKind, DiskCounters};

/// Equation (4) for one block device, split by direction, with IOPS.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskRates {
    pub name: String,
    pub partition: bool,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub read_iops: f64,
    pub write_iops: f64,
    /// Share of the interval the device had I/O in flight (iostat's %util).
    pub util_pct: f64,
    /// Mean time per completed read, `None` when none completed.
    pub read_await_ms: Option<f64>,
    /// Mean time per completed write, `None` when none completed.
    pub write_await_ms: Option<f64>,
}

impl DiskRates {
    /// (4) Δ(sectors read + sectors written) × 512 / Δt.
    pub fn bytes_per_sec(&self) -> f64 {
        self.read_bytes_per_sec + self.write_bytes_per_sec
    }
}

/// Equation (4) for one device. `None` on a reset or Δt ≤ 0: a reset is an I/O or sector
/// count going backwards (64-bit in diskstats, so a decrease is never a wrap) or a time field
/// going backwards by more than a 32-bit wrap explains. Time fields are subtracted modulo 2^32
/// (see [`diskstats_time_delta`]), so a wrap is not taken for a reset.
pub fn disk_rates(
    prev: &DiskCounters,
    now: &DiskCounters,
    kind: DeviceKind,
    dt_secs: f64,
) -> Option<DiskRates> {
    let dt = positive_seconds(dt_secs)?;
    let reads = counter_delta(prev.reads, now.reads)?;
    let writes = counter_delta(prev.writes, now.writes)?;
    let sectors_read = counter_delta(prev.sectors_read, now.sectors_read)?;
    let sectors_written = counter_delta(prev.sectors_written, now.sectors_written)?;
    let ms_reading = diskstats_time_delta(prev.ms_reading, now.ms_reading)?;
    let ms_writing = diskstats_time_delta(prev.ms_writing, now.ms_writing)?;
    let ms_doing_io = diskstats_time_delta(prev.ms_doing_io, now.ms_doing_io)?;
    let mean = |ms: u64, ops: u64| (ops > 0).then(|| ms as f64 / ops as f64);
    Some(DiskRates {
        name: now.name.clone(),
        partition: kind == DeviceKind::Partition,
        read_bytes_per_sec: (sectors_read * DISKSTATS_SECTOR_BYTES) as f64 / dt,
        write_bytes_per_sec: (sectors_written * DISKSTATS_SECTOR_BYTES) as f64 / dt,
        read_iops: reads as f64 / dt,
        write_iops: writes as f64 / dt,
        util_pct: (100.0 * ms_doing_io as f64 / (dt * 1000.0)).min(100.0),
        read_await_ms: mean(ms_reading, reads),
        write_await_ms: mean(ms_writing, writes),
    })
}

/// Δ of a diskstats time field (ms reading/writing, io_ticks, weighted). The kernel prints
/// them as 32-bit (`%u` of `jiffies_to_msecs` or a ms count cast to `unsigned int`), so they
/// wrap at 2^32 ms, about 49.7 days of single-queue time and a day and a half at queue depth
/// 32. A value lower than the last one is a wrap when both fit in 32 bits, as iostat reads it;
/// `None` when the old value does not fit in 32 bits (then it is no 32-bit field and went back).
fn diskstats_time_delta(prev: u64, now: u64) -> Option<u64> {
    const WRAP: u64 = 1 << 32;
    if now >= prev {
        return Some(now - prev);
    }
    (prev < WRAP).then(|| now + WRAP - prev)
}

/// Disk figures over several devices together: a host's whole disks (partitions would count
/// bytes twice), a VM's virtual disks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskTotals {
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub read_iops: f64,
    pub write_iops: f64,
}

impl DiskTotals {
    /// (4) for the host.
    pub fn bytes_per_sec(&self) -> f64 {
        self.read_bytes_per_sec + self.write_bytes_per_sec
    }
}

/// The host's disk total: the rates of the devices in `over` summed (the whole disks nothing
/// sits below, so no byte is counted twice). `None` when `over` is empty or any of its devices
/// has no whole-disk rate in `rates`, so a device without a rate never leaves a silently smaller
/// total. That covers a counter reset, a disk that disappeared (its I/O of the interval is
/// unknown) and one that appeared (no earlier reading); each blanks the total for that one
/// interval only, since the next interval has both readings again (or neither).
pub fn host_disk_total(over: &[String], rates: &[DiskRates]) -> Option<DiskTotals> {
    let counted = over
        .iter()
        .map(|name| rates.iter().find(|r| r.name == *name && !r.partition))
        .collect::<Option<Vec<&DiskRates>>>()?;
    (!counted.is_empty()).then(|| DiskTotals {
        read_bytes_per_sec: counted.iter().map(|d| d.read_bytes_per_sec).sum(),
        write_bytes_per_sec: counted.iter().map(|d| d.write_bytes_per_sec).sum(),
        read_iops: counted.iter().map(|d| d.read_iops).sum(),
        write_iops: counted.iter().map(|d| d.write_iops).sum(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn disk(sr: u64, sw: u64, r: u64, w: u64) -> DiskCounters {
        DiskCounters {
            name: "vda".into(),
            reads: r,
            writes: w,
            sectors_read: sr,
            sectors_written: sw,
            ms_reading: r * 2,
            ms_writing: w * 3,
            ms_doing_io: r + w,
            ..DiskCounters::default()
        }
    }

    #[test]
    fn disk_bytes_use_512_byte_sectors() {
        let r = disk_rates(
            &disk(0, 0, 0, 0),
            &disk(2048, 4096, 10, 20),
            DeviceKind::Disk,
            2.0,
        )
        .expect("rates");
        assert_eq!(r.read_bytes_per_sec, 524_288.0);
        assert_eq!(r.write_bytes_per_sec, 1_048_576.0);
        assert_eq!(r.bytes_per_sec(), 1_572_864.0);
        assert_eq!((r.read_iops, r.write_iops), (5.0, 10.0));
        assert_eq!((r.read_await_ms, r.write_await_ms), (Some(2.0), Some(3.0)));
        assert_eq!(r.util_pct, 1.5);
    }

    #[test]
    fn disk_reset_or_zero_interval_gives_no_rate() {
        let a = disk(100, 100, 10, 10);
        let b = disk(50, 200, 12, 12);
        assert_eq!(disk_rates(&a, &b, DeviceKind::Disk, 1.0), None);
        assert_eq!(disk_rates(&a, &a, DeviceKind::Disk, 0.0), None);
    }

    const WRAP: u64 = 1 << 32;

    #[test]
    fn a_32_bit_time_field_wrapping_is_subtracted_modulo_2_to_the_32() {
        assert_eq!(diskstats_time_delta(WRAP - 100, 400), Some(500));
        assert_eq!(diskstats_time_delta(u32::MAX.into(), 0), Some(1));
        assert_eq!(diskstats_time_delta(10, 15), Some(5));
        // Above 2^32 the field is no 32-bit one: going back is a reset.
        assert_eq!(diskstats_time_delta(WRAP + 5, 3), None);
    }

    #[test]
    fn util_await_stay_right_across_a_time_field_wrap() {
        let mut prev = disk(0, 0, 1000, 1000);
        prev.ms_reading = WRAP - 1000;
        prev.ms_writing = WRAP - 500;
        prev.ms_doing_io = WRAP - 200;
        // 2 s later: 100 reads took 1500 ms (wrapped), 50 writes 1000 ms, 1000 ms busy.
        let mut now = disk(2048, 4096, 1100, 1050);
        now.ms_reading = 500;
        now.ms_writing = 500;
        now.ms_doing_io = 800;
        let r = disk_rates(&prev, &now, DeviceKind::Disk, 2.0).expect("a wrap is no reset");
        assert_eq!((r.read_iops, r.write_iops), (50.0, 25.0));
        assert_eq!(
            (r.read_await_ms, r.write_await_ms),
            (Some(15.0), Some(20.0))
        );
        assert_eq!(r.util_pct, 50.0);
    }

    #[test]
    fn a_real_reset_near_the_wrap_still_gives_no_rate() {
        // The time field dropped like a wrap, but the 64-bit I/O count went back: a reset.
        let mut prev = disk(5000, 5000, 1000, 1000);
        prev.ms_doing_io = WRAP - 200;
        let mut now = disk(40, 40, 5, 5);
        now.ms_doing_io = 10;
        assert_eq!(disk_rates(&prev, &now, DeviceKind::Disk, 1.0), None);
    }
}
