//! The product's log-linear histograms (of latencies and run-queue waits, see
//! setmov-common/src/lat_hist.rs) against the exact values a reference (bpftrace) measured:
//! buckets, nearest-rank percentiles, and how closely the two may agree when both time the
//! same events.

use std::collections::BTreeMap;

use setmov_common::{LAT_BUCKETS, lat_bucket, lat_bucket_high, lat_bucket_low};

/// The bucket of `ns` as the product's histograms have it, by its lower bound in ns (what
/// `vm_latency_hist.low_ns` stores).
pub fn bucket_low(ns: u64) -> u64 {
    lat_bucket_low(lat_bucket(ns))
}

/// The upper bound (exclusive) of the bucket of `ns`; `u64::MAX` for the open-ended last one.
pub fn bucket_high(ns: u64) -> u64 {
    lat_bucket_high(lat_bucket(ns)).unwrap_or(u64::MAX)
}

/// The value of rank ⌈q·n⌉ (nearest rank, as the product ranks) of sorted `values`.
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

/// How far apart the product and bpftrace may time one request: each stamps it with
/// `bpf_ktime_get_ns` in its own program on the same tracepoints, one program after the other,
/// microseconds apart at most. A request that close to a bucket boundary may land on either
/// side of it.
pub const SAME_REQUEST_SLACK_NS: u64 = 10_000;

/// Whether `stored_us`, a percentile the product read off its histogram of the same values
/// (linear within the bucket), lies in the bucket holding `exact_ns`: the histogram knows a
/// value to within its bucket, [low, high] with high − low ≤ low / 8, no better. (Any bucket
/// within [`SAME_REQUEST_SLACK_NS`] of the exact value counts.)
pub fn in_bucket_of(stored_us: f64, exact_ns: u64) -> bool {
    let low = bucket_low(exact_ns.saturating_sub(SAME_REQUEST_SLACK_NS)) as f64 / 1e3;
    let high = bucket_high(exact_ns.saturating_add(SAME_REQUEST_SLACK_NS)) as f64 / 1e3;
    // The stored value went through a float division and SQLite's REAL.
    (low * (1.0 - 1e-9)..=high * (1.0 + 1e-9)).contains(&stored_us)
}

/// Why the stored histogram `stored` (requests by bucket lower bound, ns) is not that of
/// bpftrace's `values`, if it is not: the same number of requests, and below each bucket
/// boundary as many as bpftrace has, give or take its requests within
/// [`SAME_REQUEST_SLACK_NS`] of that boundary.
pub fn histogram_differs(stored: &BTreeMap<u64, u64>, values: &[u64]) -> Option<String> {
    let total: u64 = stored.values().sum();
    if total != values.len() as u64 {
        return Some(format!(
            "{total} requests stored, bpftrace {}",
            values.len()
        ));
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let below = |boundary: u64| sorted.partition_point(|v| *v < boundary) as u64;
    for b in 1..LAT_BUCKETS {
        let boundary = lat_bucket_low(b);
        let stored_below: u64 = stored.range(..boundary).map(|(_, n)| n).sum();
        let theirs_below = below(boundary);
        let ambiguous = below(boundary.saturating_add(SAME_REQUEST_SLACK_NS + 1))
            - below(boundary.saturating_sub(SAME_REQUEST_SLACK_NS));
        if stored_below.abs_diff(theirs_below) > ambiguous {
            return Some(format!(
                "below {boundary} ns: {stored_below} stored, bpftrace {theirs_below} \
                 ({ambiguous} within {SAME_REQUEST_SLACK_NS} ns of it)"
            ));
        }
    }
    None
}

/// The histogram of `values` (ns) as the product keeps it: requests by bucket lower bound.
pub fn histogram(values: &[u64]) -> BTreeMap<u64, u64> {
    let mut h = BTreeMap::new();
    for ns in values {
        *h.entry(bucket_low(*ns)).or_default() += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_an_eighth_of_a_power_of_two_and_ranks_are_nearest() {
        assert_eq!(
            [0, 1, 7, 8, 15, 16, 17, 1023, 1024].map(bucket_low),
            [0, 1, 7, 8, 15, 16, 16, 960, 1024]
        );
        assert_eq!(bucket_high(1024), 1152);
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 0.5), 50);
        assert_eq!(nearest_rank(&values, 0.95), 95);
        assert_eq!(nearest_rank(&values, 0.991), 100);
        assert_eq!(nearest_rank(&[7], 0.01), 7);
    }

    #[test]
    fn a_percentile_is_right_anywhere_in_the_exact_values_bucket_only() {
        // 1 ms is in [983.04, 1048.576) µs; 10 µs either side reaches no further bucket.
        assert!(in_bucket_of(983.1, 1_000_000));
        assert!(in_bucket_of(1048.5, 1_000_000));
        assert!(!in_bucket_of(1100.0, 1_000_000));
        assert!(!in_bucket_of(950.0, 1_000_000));
        // 1.045 ms is within 10 µs of 1048.576 µs: the next bucket counts too.
        assert!(in_bucket_of(1100.0, 1_045_000));
        assert!(!in_bucket_of(1200.0, 1_045_000));
    }

    #[test]
    fn histograms_differ_by_more_than_the_requests_near_a_boundary() {
        let stored = histogram(&[500_000, 700_000, 1_000_000]);
        assert_eq!(
            histogram_differs(&stored, &[500_000, 700_000, 1_000_000]),
            None
        );
        // 982 µs is within 10 µs of the boundary at 983.04 µs: either side.
        assert_eq!(
            histogram_differs(&stored, &[500_000, 700_000, 982_000]),
            None
        );
        assert!(
            histogram_differs(&stored, &[500_000, 800_000, 1_000_000])
                .is_some_and(|why| why.contains("below 720896 ns"))
        );
        assert!(
            histogram_differs(&stored, &[70_000])
                .is_some_and(|why| why.contains("3 requests stored, bpftrace 1"))
        );
    }
}
