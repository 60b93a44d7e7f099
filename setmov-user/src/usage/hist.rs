//! Interval figures from the kernel's cumulative log2 histograms ([`Log2Hist`]): the delta of
//! two readings, and percentiles of a delta.

use setmov_common::{LOG2_BUCKETS, Log2Hist};

/// What was added between two cumulative readings; `None` if any bucket went backwards (the
/// counters were reset: the map entry was removed and made again).
pub fn hist_delta(prev: &Log2Hist, now: &Log2Hist) -> Option<Log2Hist> {
    let mut delta = Log2Hist::default();
    for (d, (p, n)) in delta
        .buckets
        .iter_mut()
        .zip(prev.buckets.iter().zip(&now.buckets))
    {
        *d = n.checked_sub(*p)?;
    }
    Some(delta)
}

/// Values counted.
pub fn hist_count(hist: &Log2Hist) -> u64 {
    hist.buckets.iter().fold(0, |sum, c| sum.saturating_add(*c))
}

/// The `q`-quantile (0 < q ≤ 1) of a histogram, interpolated linearly inside its bucket
/// (bucket `i` spans `[2^i, 2^(i+1))`, bucket 0 spans `[0, 2)`). `None` when it is empty.
pub fn hist_quantile(hist: &Log2Hist, q: f64) -> Option<f64> {
    let total = hist_count(hist);
    if total == 0 || !(q > 0.0 && q <= 1.0) {
        return None;
    }
    // The rank of the value sought, 1-based: the smallest r with r >= q * total.
    let rank = (q * total as f64).ceil().max(1.0);
    let mut below = 0u64;
    for (index, &count) in hist.buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let low = if index == 0 {
                0.0
            } else {
                (1u64 << index) as f64
            };
            let high = (1u64 << (index + 1).min(LOG2_BUCKETS)) as f64;
            let within = (rank - below as f64) / count as f64;
            return Some(low + (high - low) * within);
        }
        below += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(entries: &[(usize, u64)]) -> Log2Hist {
        let mut h = Log2Hist::default();
        for &(bucket, count) in entries {
            h.buckets[bucket] = count;
        }
        h
    }

    #[test]
    fn deltas_subtract_and_resets_give_none() {
        let prev = hist(&[(3, 5), (10, 1)]);
        let now = hist(&[(3, 7), (10, 1), (12, 4)]);
        assert_eq!(hist_delta(&prev, &now), Some(hist(&[(3, 2), (12, 4)])));
        assert_eq!(hist_delta(&now, &prev), None);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 values in [1024, 2048): the median is halfway through the bucket.
        let h = hist(&[(10, 100)]);
        assert_eq!(hist_quantile(&h, 0.5), Some(1536.0));
        assert_eq!(hist_quantile(&h, 1.0), Some(2048.0));
        // 99 fast values and one slow one: p50 is fast, p99 still fast, max slow.
        let h = hist(&[(4, 99), (20, 1)]);
        assert!(hist_quantile(&h, 0.5).is_some_and(|v| (16.0..32.0).contains(&v)));
        assert!(hist_quantile(&h, 0.99).is_some_and(|v| v <= 32.0));
        assert!(hist_quantile(&h, 1.0).is_some_and(|v| v >= (1 << 20) as f64));
        assert_eq!(hist_quantile(&Log2Hist::default(), 0.5), None);
        assert_eq!(hist_quantile(&h, 0.0), None);
        assert_eq!(hist_count(&h), 100);
    }
}
