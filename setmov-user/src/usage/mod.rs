//! Usage computation (the paper's second module): counters at two instants to usage figures.
//!
//! Everything here is pure. Rules shared by every equation:
//! - Δx = x_now − x_prev. A counter that went backwards was reset (reboot, hot-plug, libvirtd
//!   restart) or wrapped: that interval gives no rate (`None`), never a negative or huge one.
//! - Δt is in seconds from a monotonic clock; Δt ≤ 0 gives no rate.

pub mod disk;
pub mod ebpf;
pub mod hist;
pub mod host;
pub mod host_cpu;
pub mod host_mem;
pub mod vm;

/// Bytes of Ethernet framing per packet that interface counters leave out: preamble (7),
/// start-of-frame delimiter (1) and inter-packet gap (12).
pub const ETHERNET_FRAMING_BYTES: u64 = 20;

/// Sector size of `/proc/diskstats`, fixed by the kernel whatever the device's own sector size.
pub const DISKSTATS_SECTOR_BYTES: u64 = 512;

/// Δ of a monotonically growing counter; `None` when it went backwards (a reset).
pub fn counter_delta(prev: u64, now: u64) -> Option<u64> {
    now.checked_sub(prev)
}

/// Δt in seconds, `None` unless strictly positive and finite.
pub fn positive_seconds(dt_secs: f64) -> Option<f64> {
    (dt_secs.is_finite() && dt_secs > 0.0).then_some(dt_secs)
}

/// Equations (5)–(7) for one direction of one interface over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacketRates {
    /// (5) packets per second.
    pub pps: f64,
    /// Payload bytes per second as the counters see them (no framing).
    pub bytes_per_sec: f64,
    /// (6) average packet size in bits, including the 20-byte Ethernet framing; `None` when
    /// no packet passed.
    pub avg_packet_bits: Option<f64>,
    /// (7) bits per second on the wire: PPS × average packet size (framing included).
    pub bps: f64,
}

/// Equations (5), (6) and (7) from packet and byte deltas.
pub fn packet_rates(d_packets: u64, d_bytes: u64, dt_secs: f64) -> Option<PacketRates> {
    let dt = positive_seconds(dt_secs)?;
    let pps = d_packets as f64 / dt;
    let bytes_per_sec = d_bytes as f64 / dt;
    let avg_packet_bits =
        (d_packets > 0).then(|| (bytes_per_sec * 8.0) / pps + (ETHERNET_FRAMING_BYTES * 8) as f64);
    let bps = avg_packet_bits.map_or(0.0, |bits| pps * bits);
    Some(PacketRates {
        pps,
        bytes_per_sec,
        avg_packet_bits,
        bps,
    })
}

/// 100 × part / whole, `None` when whole is 0.
pub fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| 100.0 * part / whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_goes_back_is_a_reset() {
        assert_eq!(counter_delta(10, 15), Some(5));
        assert_eq!(counter_delta(10, 10), Some(0));
        assert_eq!(counter_delta(10, 3), None);
    }

    #[test]
    fn zero_or_negative_interval_gives_no_rate() {
        assert_eq!(packet_rates(10, 1000, 0.0), None);
        assert_eq!(packet_rates(10, 1000, -1.0), None);
        assert_eq!(packet_rates(10, 1000, f64::NAN), None);
    }

    #[test]
    fn packet_equations_include_ethernet_framing() {
        // 100 packets of 1480 bytes in 2 s: 50 PPS, (1480 + 20) × 8 = 12000 bits each.
        let r = packet_rates(100, 148_000, 2.0).expect("rates");
        assert_eq!(r.pps, 50.0);
        assert_eq!(r.bytes_per_sec, 74_000.0);
        assert_eq!(r.avg_packet_bits, Some(12_000.0));
        assert_eq!(r.bps, 600_000.0);
    }

    #[test]
    fn no_packets_means_no_average_size_and_zero_bps() {
        let r = packet_rates(0, 0, 1.0).expect("rates");
        assert_eq!((r.pps, r.avg_packet_bits, r.bps), (0.0, None, 0.0));
    }
}
