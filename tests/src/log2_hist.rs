//! The product's log2 histograms (of latencies and run-queue waits) against the exact values a
//! reference (bpftrace) measured: buckets, nearest-rank percentiles, and how closely the two
//! may agree when both time the same events.

use std::collections::BTreeMap;

/// The log2 bucket of `ns` as the product's histograms have it: [2^b, 2^(b+1)).
pub fn bucket(ns: u64) -> u32 {
    ns.max(1).ilog2()
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

/// Whether `stored_us`, a percentile the product read off a log2 histogram of the same values
/// (linear within the bucket), lies in the bucket holding `exact_ns`: a log2 histogram knows a
/// value to within its bucket, [2^b, 2^(b+1)], no better. (Either neighbour counts when the
/// exact value is within [`SAME_REQUEST_SLACK_NS`] of the boundary.)
pub fn in_bucket_of(stored_us: f64, exact_ns: u64) -> bool {
    let low = bucket(exact_ns.saturating_sub(SAME_REQUEST_SLACK_NS));
    let high = bucket(exact_ns + SAME_REQUEST_SLACK_NS);
    let (low, high) = (
        (1u64 << low) as f64 / 1e3,
        (1u64 << (high + 1)) as f64 / 1e3,
    );
    // The stored value went through a float division and SQLite's REAL.
    (low * (1.0 - 1e-9)..=high * (1.0 + 1e-9)).contains(&stored_us)
}

/// Why the stored log2 histogram `stored` is not that of bpftrace's `values`, if it is not:
/// the same number of requests, and below each bucket boundary 2^b as many as bpftrace has,
/// give or take its requests within [`SAME_REQUEST_SLACK_NS`] of 2^b.
pub fn histogram_differs(stored: &BTreeMap<u32, u64>, values: &[u64]) -> Option<String> {
    let total: u64 = stored.values().sum();
    if total != values.len() as u64 {
        return Some(format!(
            "{total} requests stored, bpftrace {}",
            values.len()
        ));
    }
    for b in 0..64u32 {
        let boundary = 1u64 << b;
        let stored_below: u64 = stored.range(..b).map(|(_, n)| n).sum();
        let theirs_below = values.iter().filter(|v| **v < boundary).count() as u64;
        let ambiguous = values
            .iter()
            .filter(|v| v.abs_diff(boundary) <= SAME_REQUEST_SLACK_NS)
            .count() as u64;
        if stored_below.abs_diff(theirs_below) > ambiguous {
            return Some(format!(
                "below {boundary} ns: {stored_below} stored, bpftrace {theirs_below} \
                 ({ambiguous} within {SAME_REQUEST_SLACK_NS} ns of it)"
            ));
        }
        if ambiguous > 0 && stored_below != theirs_below {
            eprintln!(
                "below {boundary} ns: {stored_below} stored, bpftrace {theirs_below}; its \
                 requests that close: {:?} ns",
                values
                    .iter()
                    .filter(|v| v.abs_diff(boundary) <= SAME_REQUEST_SLACK_NS)
                    .collect::<Vec<_>>()
            );
        }
    }
    None
}

/// The log2 histogram of `values` (ns): requests per bucket.
pub fn histogram(values: &[u64]) -> BTreeMap<u32, u64> {
    let mut h = BTreeMap::new();
    for ns in values {
        *h.entry(bucket(*ns)).or_default() += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_and_ranks_are_nearest() {
        assert_eq!(
            [0, 1, 2, 3, 4, 1023, 1024].map(bucket),
            [0, 0, 1, 1, 2, 9, 10]
        );
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&values, 0.5), 50);
        assert_eq!(nearest_rank(&values, 0.95), 95);
        assert_eq!(nearest_rank(&values, 0.991), 100);
        assert_eq!(nearest_rank(&[7], 0.01), 7);
    }

    #[test]
    fn a_percentile_is_right_anywhere_in_the_exact_values_bucket_only() {
        // 100 µs is in [65.536, 131.072) µs.
        assert!(in_bucket_of(65.6, 100_000));
        assert!(in_bucket_of(131.0, 100_000));
        assert!(!in_bucket_of(140.0, 100_000));
        assert!(!in_bucket_of(60.0, 100_000));
        // 130 µs is within 10 µs of 131.072 µs: the next bucket counts too.
        assert!(in_bucket_of(200.0, 130_000));
        assert!(!in_bucket_of(270.0, 130_000));
    }

    #[test]
    fn histograms_differ_by_more_than_the_requests_near_a_boundary() {
        let stored = BTreeMap::from([(16, 2), (17, 1)]);
        assert_eq!(
            histogram_differs(&stored, &[70_000, 100_000, 140_000]),
            None
        );
        // 131 µs is within 10 µs of 2^17 ns: it may be stored in either bucket.
        assert_eq!(
            histogram_differs(&stored, &[70_000, 100_000, 131_000]),
            None
        );
        assert!(
            histogram_differs(&stored, &[70_000, 150_000, 160_000])
                .is_some_and(|why| why.contains("below 131072 ns"))
        );
        assert!(
            histogram_differs(&stored, &[70_000])
                .is_some_and(|why| why.contains("3 requests stored, bpftrace 1"))
        );
    }
}
