//! A log-linear histogram of nanoseconds (block I/O latency, run-queue wait): each power of two
//! is split into [`LAT_SUB_BUCKETS`] linear sub-buckets, so that a bucket is at most 1/8 of its
//! lower bound wide and a value read off it (interpolated inside the bucket) is within 12.5 %
//! of the true one, where a plain log2 bucket allows −50 % / +100 %.
//!
//! Buckets (`v` in ns):
//! - `0 ≤ v < 8`: bucket `v`, exact;
//! - `2^e ≤ v < 2^(e+1)`, `3 ≤ e < 36`: bucket `8·(e−2) + s` with `s = (v >> (e−3)) & 7`, the
//!   range `[(8+s)·2^(e−3), (9+s)·2^(e−3))` (exact up to 15, width 1 there);
//! - `v ≥ 2^36` ns (68.7 s, [`LAT_MAX_NS`]): the last bucket, open-ended.
//!
//! 273 buckets of `u64`: 2184 bytes per histogram (per CPU in per-CPU maps). Packet sizes keep
//! their log2 [`crate::Log2Hist`]: a size's order of magnitude is all that is read off them.

/// Linear sub-buckets per power of two.
pub const LAT_SUB_BUCKETS: usize = 8;
/// log2 of [`LAT_SUB_BUCKETS`].
const SUB_BITS: u32 = 3;
/// log2 of [`LAT_MAX_NS`].
const MAX_EXP: u32 = 36;
/// Values at or above this (2^36 ns, 68.7 s) share the last, open-ended bucket.
pub const LAT_MAX_NS: u64 = 1 << MAX_EXP;
/// Buckets of a [`LatHist`]: 8 exact ones below 8, 8 per power of two from 2^3 to 2^35, and
/// the last one from [`LAT_MAX_NS`] up.
pub const LAT_BUCKETS: usize = LAT_SUB_BUCKETS * (MAX_EXP as usize - 2) + 1;

/// A log-linear histogram of nanoseconds, as kept in map values (per-CPU ones summed over CPUs
/// by the loader).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatHist {
    pub buckets: [u64; LAT_BUCKETS],
}

impl Default for LatHist {
    fn default() -> Self {
        LatHist {
            buckets: [0; LAT_BUCKETS],
        }
    }
}

/// The [`LatHist`] bucket of `ns`. No loop: a `leading_zeros`, shifts and a mask.
#[inline(always)]
pub const fn lat_bucket(ns: u64) -> usize {
    if ns < LAT_SUB_BUCKETS as u64 {
        return ns as usize;
    }
    let v = if ns > LAT_MAX_NS { LAT_MAX_NS } else { ns };
    // 3 ≤ e ≤ 36.
    let e = 63 - v.leading_zeros();
    let sub = ((v >> (e - SUB_BITS)) as usize) & (LAT_SUB_BUCKETS - 1);
    LAT_SUB_BUCKETS * (e as usize - 2) + sub
}

/// The lower bound (inclusive) of bucket `index`, in ns; `index` past the last is the last.
pub const fn lat_bucket_low(index: usize) -> u64 {
    let index = if index >= LAT_BUCKETS {
        LAT_BUCKETS - 1
    } else {
        index
    };
    if index < LAT_SUB_BUCKETS {
        return index as u64;
    }
    let e = (index / LAT_SUB_BUCKETS) as u32 + 2;
    let sub = (index % LAT_SUB_BUCKETS) as u64;
    (LAT_SUB_BUCKETS as u64 + sub) << (e - SUB_BITS)
}

/// The upper bound (exclusive) of bucket `index`, in ns; `None` for the last, open-ended one.
pub const fn lat_bucket_high(index: usize) -> Option<u64> {
    if index + 1 >= LAT_BUCKETS {
        return None;
    }
    Some(lat_bucket_low(index + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..16u64 {
            let b = lat_bucket(v);
            assert_eq!(b, v as usize);
            assert_eq!((lat_bucket_low(b), lat_bucket_high(b)), (v, Some(v + 1)));
        }
        assert_eq!(lat_bucket(7), 7);
        assert_eq!(lat_bucket(8), 8);
        assert_eq!(lat_bucket(15), 15);
        assert_eq!(lat_bucket(16), 16);
        // From 16 on, two values per bucket, then four, ...
        assert_eq!(lat_bucket(17), 16);
        assert_eq!(lat_bucket(18), 17);
        assert_eq!((lat_bucket_low(16), lat_bucket_high(16)), (16, Some(18)));
    }

    #[test]
    fn powers_of_two_start_a_bucket() {
        for e in 4..MAX_EXP {
            let p = 1u64 << e;
            let b = lat_bucket(p);
            assert_eq!(b, LAT_SUB_BUCKETS * (e as usize - 2), "2^{e}");
            assert_eq!(lat_bucket_low(b), p);
            assert_eq!(lat_bucket(p - 1), b - 1, "2^{e} - 1");
            assert_eq!(lat_bucket_high(b - 1), Some(p));
            assert_eq!(lat_bucket(p + 1), b, "2^{e} + 1");
        }
    }

    #[test]
    fn the_last_bucket_is_open_ended() {
        assert_eq!(LAT_BUCKETS, 273);
        assert_eq!(lat_bucket(LAT_MAX_NS - 1), LAT_BUCKETS - 2);
        assert_eq!(lat_bucket(LAT_MAX_NS), LAT_BUCKETS - 1);
        assert_eq!(lat_bucket(LAT_MAX_NS + 1), LAT_BUCKETS - 1);
        assert_eq!(lat_bucket(u64::MAX), LAT_BUCKETS - 1);
        assert_eq!(lat_bucket_low(LAT_BUCKETS - 1), LAT_MAX_NS);
        assert_eq!(lat_bucket_high(LAT_BUCKETS - 1), None);
        assert_eq!(lat_bucket_high(LAT_BUCKETS - 2), Some(LAT_MAX_NS));
        assert_eq!(lat_bucket_low(usize::MAX), LAT_MAX_NS);
    }

    #[test]
    fn every_value_is_in_its_bucket_and_buckets_are_at_most_an_eighth_wide() {
        let mut v = 0u64;
        while v < LAT_MAX_NS {
            let b = lat_bucket(v);
            let (low, high) = (lat_bucket_low(b), lat_bucket_high(b).expect("bounded"));
            assert!(low <= v && v < high, "{v} in [{low}, {high})");
            // Below 8 each value has its own bucket.
            assert!(low < 8 || (high - low) * 8 <= low, "[{low}, {high})");
            v = v * 9 / 8 + 1;
        }
        // Bounds are contiguous.
        for b in 0..LAT_BUCKETS - 1 {
            assert_eq!(lat_bucket_high(b), Some(lat_bucket_low(b + 1)));
            assert_eq!(lat_bucket(lat_bucket_low(b)), b);
        }
    }

    #[test]
    fn a_histogram_is_its_buckets() {
        assert_eq!(size_of::<LatHist>(), 8 * LAT_BUCKETS);
        assert_eq!(size_of::<LatHist>(), 2184);
    }
}
