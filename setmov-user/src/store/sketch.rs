//! A small mergeable distribution of one figure over a rollup bucket, so that a report's
//! percentiles over any window of buckets are within [`RELATIVE_ERROR`] of the same
//! percentile over the raw ticks.
//!
//! It is a DDSketch-style log-linear histogram (Masson, Rim and Lee, VLDB 2019): a positive
//! value `v` falls in bucket `k = ⌈ln v / ln γ⌉`, which holds `(γ^(k-1), γ^k]`, and a bucket is
//! read back as `2γ^k / (γ + 1)`, within `α = (γ − 1)/(γ + 1)` of every value it holds.
//! Negative values mirror the positive ones and zero has a bucket of its own. Two sketches merge
//! by adding their bucket counts, so the sketch of a window is exactly the one of all its
//! ticks, whatever the buckets they were stored in, and a quantile of it is the bucket of the
//! nearest-rank value (as [`crate::store::rollup::nearest_rank`] picks it over the ticks).
//!
//! Stored as a BLOB: a version byte, the zero count, then the positive and the negative buckets,
//! each as an entry count and its buckets in ascending key order: the key (the first zigzagged,
//! the next ones as the step from the previous, less one) shifted left by one, with the low bit
//! set when the bucket's count (≥ 2) follows, else it holds one value; all LEB128 varints. A
//! minute of a figure that moves every tick takes ~60 bytes; a constant figure 7.

/// γ: consecutive bucket bounds differ by 2 %.
const GAMMA: f64 = 1.02;
/// The largest relative error of a quantile read from a sketch: (γ − 1)/(γ + 1), 0.990 %.
pub const RELATIVE_ERROR: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);
const FORMAT_VERSION: u8 = 1;

/// Why a stored sketch cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SketchError {
    #[error("the sketch is empty")]
    Empty,
    #[error("sketch format {0} is not one this SETMOV reads (it reads {FORMAT_VERSION})")]
    Version(u8),
    #[error("the sketch ends inside a number")]
    Truncated,
    #[error("a number in the sketch is too large")]
    Overflow,
    #[error("the sketch has a bucket with a count it would not write (0 or 1 written out)")]
    EmptyBucket,
    #[error("the sketch has {0} bytes after its end")]
    Trailing(usize),
}

/// Counts of values per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    zeros: u64,
    positive: Buckets,
    /// Keyed by the bucket of the value's magnitude.
    negative: Buckets,
    count: u64,
}

/// Every positive, finite f64 falls in a bucket within ±51,000 (ln of the smallest subnormal
/// is −744.4, of the largest f64 709.8); a stored key beyond is not one this code wrote.
const MAX_KEY: i32 = 51_000;

/// The bucket of a positive, finite magnitude.
fn key(magnitude: f64) -> i32 {
    ((magnitude.ln() / GAMMA.ln()).ceil() as i32).clamp(-MAX_KEY, MAX_KEY)
}

/// Counts of consecutive buckets from `first`: a month's report merges hundreds of thousands of
/// sketches, and adding into an array is several times faster than into a map. The span stays
/// small: a figure's values lie within a few decades, ~116 buckets each.
#[derive(Debug, Clone, Default)]
struct Buckets {
    first: i32,
    counts: Vec<u64>,
}

impl Buckets {
    fn add(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.first = key;
        } else if key < self.first {
            let grow = (self.first - key) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = key;
        }
        let at = (key - self.first) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        if let Some(slot) = self.counts.get_mut(at) {
            *slot = slot.saturating_add(n);
        }
    }

    /// Adds `n` to a bucket (`add`) or takes it off again, wrapping, so that the one undoes
    /// the other exactly.
    fn add_wrapping(&mut self, key: i32, n: u64, add: bool) {
        let within = !self.counts.is_empty()
            && usize::try_from(key - self.first).is_ok_and(|at| at < self.counts.len());
        if !within {
            self.add(key, 0);
        }
        if let Some(slot) = usize::try_from(key - self.first)
            .ok()
            .and_then(|at| self.counts.get_mut(at))
        {
            *slot = if add {
                slot.wrapping_add(n)
            } else {
                slot.wrapping_sub(n)
            };
        }
    }

    /// (key, count) of the buckets holding values, in ascending key order.
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        // Keys stay within ±MAX_KEY, so the index fits an i32.
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(at, n)| (self.first + at as i32, *n))
    }

    fn len(&self) -> usize {
        self.counts.iter().filter(|n| **n > 0).count()
    }
}

impl PartialEq for Buckets {
    fn eq(&self, other: &Buckets) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Buckets {}

/// The value a bucket reads back as.
fn representative(key: i32) -> f64 {
    2.0 * GAMMA.powi(key) / (GAMMA + 1.0)
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch::default()
    }

    /// Adds one value; values that are not finite are not figures and are left out.
    pub fn add(&mut self, value: f64) {
        self.add_n(value, 1);
    }

    /// Adds `n` values equal to `value`.
    pub fn add_n(&mut self, value: f64, n: u64) {
        if !value.is_finite() || n == 0 {
            return;
        }
        if value == 0.0 {
            self.zeros = self.zeros.saturating_add(n);
        } else {
            let store = if value > 0.0 {
                &mut self.positive
            } else {
                &mut self.negative
            };
            store.add(key(value.abs()), n);
        }
        self.count = self.count.saturating_add(n);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        self.zeros = self.zeros.saturating_add(other.zeros);
        for (mine, theirs) in [
            (&mut self.positive, &other.positive),
            (&mut self.negative, &other.negative),
        ] {
            for (k, n) in theirs.iter() {
                mine.add(k, n);
            }
        }
        self.count = self.count.saturating_add(other.count);
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank, within [`RELATIVE_ERROR`] of the value
    /// [`crate::store::rollup::nearest_rank`] gives over the same values; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        // Ascending values: the largest negative magnitudes first, then zero, then positives.
        for (k, n) in self.negative.iter().rev() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return Some(-representative(k));
            }
        }
        seen = seen.saturating_add(self.zeros);
        if seen >= rank {
            return Some(0.0);
        }
        for (k, n) in self.positive.iter() {
            seen = seen.saturating_add(n);
            if seen >= rank {
                return Some(representative(k));
            }
        }
        // Counts saturated: the largest bucket.
        self.positive
            .iter()
            .next_back()
            .map(|(k, _)| representative(k))
            .or(Some(0.0))
    }

    /// The stored form (see the module's documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION];
        put_varint(&mut out, self.zeros);
        for store in [&self.positive, &self.negative] {
            put_varint(&mut out, store.len() as u64);
            let mut previous: Option<i32> = None;
            for (k, n) in store.iter() {
                let step = match previous {
                    None => zigzag(k),
                    // Keys ascend strictly: the delta less one is ≥ 0.
                    Some(p) => (i64::from(k) - i64::from(p) - 1) as u64,
                };
                // Most buckets of a minute hold one value: a flag bit says when a count follows.
                put_varint(&mut out, (step << 1) | u64::from(n > 1));
                if n > 1 {
                    put_varint(&mut out, n);
                }
                previous = Some(k);
            }
        }
        out
    }

    /// Reads a stored sketch; anything malformed is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let mut sketch = Sketch::new();
        sketch.merge_encoded(bytes)?;
        Ok(sketch)
    }

    /// Adds every value of a stored sketch, read straight into this one's buckets (a month's
    /// report merges hundreds of thousands). A malformed one is an error and adds nothing: what
    /// was added before the fault is taken off again (the bucket counts wrap both ways, so
    /// that this restores them exactly).
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), SketchError> {
        let added = read_encoded(bytes, |negative, k, n| {
            self.buckets_mut(negative).add_wrapping(k, n, true);
        });
        match added {
            Ok(totals) => {
                self.zeros = self.zeros.saturating_add(totals.zeros);
                self.count = self.count.saturating_add(totals.count);
                Ok(())
            }
            Err(e) => {
                // The same bytes give the same buckets up to the same fault.
                let _ = read_encoded(bytes, |negative, k, n| {
                    self.buckets_mut(negative).add_wrapping(k, n, false);
                });
                Err(e)
            }
        }
    }

    fn buckets_mut(&mut self, negative: bool) -> &mut Buckets {
        if negative {
            &mut self.negative
        } else {
            &mut self.positive
        }
    }
}

/// A stored sketch's zero count and count of all values.
struct Totals {
    zeros: u64,
    count: u64,
}

/// Reads a stored sketch, calling `bucket(negative, key, count)` for each bucket in ascending
/// key order per sign; checks everything on the way.
fn read_encoded(
    bytes: &[u8],
    mut bucket: impl FnMut(bool, i32, u64),
) -> Result<Totals, SketchError> {
    let (&version, mut rest) = bytes.split_first().ok_or(SketchError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(SketchError::Version(version));
    }
    let zeros = take_varint(&mut rest)?;
    let mut count = zeros;
    for negative in [false, true] {
        let entries = take_varint(&mut rest)?;
        // Each entry takes at least a byte: a longer list is a lie.
        if entries > rest.len() as u64 {
            return Err(SketchError::Truncated);
        }
        let mut previous: Option<i64> = None;
        for _ in 0..entries {
            let packed = take_varint(&mut rest)?;
            let raw = packed >> 1;
            let k = match previous {
                None => unzigzag(raw),
                Some(p) => i64::try_from(raw)
                    .ok()
                    .and_then(|d| p.checked_add(d)?.checked_add(1))
                    .ok_or(SketchError::Overflow)?,
            };
            let k32 = i32::try_from(k)
                .ok()
                .filter(|k| (-MAX_KEY..=MAX_KEY).contains(k))
                .ok_or(SketchError::Overflow)?;
            let n = if packed & 1 == 1 {
                take_varint(&mut rest)?
            } else {
                1
            };
            if n < 2 && packed & 1 == 1 {
                return Err(SketchError::EmptyBucket);
            }
            bucket(negative, k32, n);
            count = count.checked_add(n).ok_or(SketchError::Overflow)?;
            previous = Some(k);
        }
    }
    if !rest.is_empty() {
        return Err(SketchError::Trailing(rest.len()));
    }
    Ok(Totals { zeros, count })
}

fn zigzag(k: i32) -> u64 {
    (((k << 1) ^ (k >> 31)) as u32).into()
}

fn unzigzag(raw: u64) -> i64 {
    let raw = raw as i64;
    (raw >> 1) ^ -(raw & 1)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, SketchError> {
    // Most numbers of a sketch take one byte.
    if let Some((&b, rest)) = bytes.split_first()
        && b < 0x80
    {
        *bytes = rest;
        return Ok(u64::from(b));
    }
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(SketchError::Truncated)?;
        *bytes = rest;
        let part = u64::from(b & 0x7f);
        if shift == 63 && part > 1 {
            return Err(SketchError::Overflow);
        }
        value |= part << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(SketchError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::nearest_rank;

    /// xorshift64*: reproducible series without a dependency.
    struct Series(u64);
    impl Series {
        fn next_unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn assert_close(q: f64, sketch: &Sketch, values: &mut [f64]) {
        let exact = nearest_rank(values, q).expect("values");
        let read = sketch.quantile(q).expect("values");
        let error = if exact == 0.0 {
            read.abs()
        } else {
            ((read - exact) / exact).abs()
        };
        assert!(
            error <= RELATIVE_ERROR + 1e-12,
            "q {q}: sketch {read}, exact {exact}, error {error}"
        );
    }

    #[test]
    fn quantiles_are_within_the_relative_error_of_the_nearest_rank() {
        let mut series = Series(0x5e7_0001);
        // Heavy-tailed, signed, with zeros and repeated values.
        let mut values: Vec<f64> = (0..5000)
            .map(|i| {
                let u = series.next_unit();
                match i % 7 {
                    0 => 0.0,
                    1 => -(1.0 + 100.0 * u),
                    2 => 42.0,
                    _ => 1e-3 * (1e9f64).powf(u),
                }
            })
            .collect();
        let mut sketch = Sketch::new();
        values.iter().for_each(|&v| sketch.add(v));
        for q in [
            0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
        ] {
            assert_close(q, &sketch, &mut values);
        }
    }

    #[test]
    fn merged_sketches_equal_the_sketch_of_all_values() {
        let mut series = Series(77);
        let mut all = Sketch::new();
        let mut merged = Sketch::new();
        for _ in 0..50 {
            let mut part = Sketch::new();
            for _ in 0..60 {
                let v = 100.0 * series.next_unit();
                part.add(v);
                all.add(v);
            }
            let stored = Sketch::decode(&part.encode()).expect("round trip");
            assert_eq!(stored, part);
            merged.merge(&stored);
        }
        assert_eq!(merged, all);
        assert_eq!(merged.count(), 3000);
    }

    #[test]
    fn a_constant_minute_is_a_few_bytes_and_a_busy_one_about_seventy() {
        let mut constant = Sketch::new();
        (0..60).for_each(|_| constant.add(4.0));
        assert_eq!(constant.encode().len(), 7);
        let mut series = Series(3);
        let mut busy = Sketch::new();
        (0..60).for_each(|_| busy.add(0.5 + 4.5 * series.next_unit()));
        let len = busy.encode().len();
        assert!((40..=90).contains(&len), "{len} bytes");
    }

    #[test]
    fn not_finite_values_are_left_out_and_the_empty_sketch_has_no_quantile() {
        let mut sketch = Sketch::new();
        sketch.add(f64::NAN);
        sketch.add(f64::INFINITY);
        assert_eq!(sketch.quantile(0.5), None);
        assert_eq!(Sketch::decode(&sketch.encode()), Ok(Sketch::new()));
    }

    #[test]
    fn malformed_sketches_are_errors() {
        assert_eq!(Sketch::decode(&[]), Err(SketchError::Empty));
        assert_eq!(Sketch::decode(&[9, 0, 0, 0]), Err(SketchError::Version(9)));
        assert_eq!(Sketch::decode(&[1, 0x80]), Err(SketchError::Truncated));
        // One positive entry claimed, none there.
        assert_eq!(Sketch::decode(&[1, 0, 1]), Err(SketchError::Truncated));
        // Key 1 with a count of 0, and of 1 written out.
        assert_eq!(
            Sketch::decode(&[1, 0, 1, 5, 0, 0]),
            Err(SketchError::EmptyBucket)
        );
        assert_eq!(
            Sketch::decode(&[1, 0, 1, 5, 1, 0]),
            Err(SketchError::EmptyBucket)
        );
        assert_eq!(
            Sketch::decode(&[1, 0, 1, 2, 0, 0]),
            Err(SketchError::Trailing(1))
        );
        assert_eq!(
            Sketch::decode(&[1, 0, 0, 0, 7]),
            Err(SketchError::Trailing(1))
        );
        let huge = [
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(Sketch::decode(&huge), Err(SketchError::Overflow));
        // A key past i32.
        let mut far = vec![1, 0, 1];
        put_varint(&mut far, (u64::from(u32::MAX) + 10) << 1);
        far.push(0);
        assert_eq!(Sketch::decode(&far), Err(SketchError::Overflow));
        // A key no finite value has: it would make the array of buckets huge.
        let mut beyond = vec![1, 0, 1];
        put_varint(&mut beyond, zigzag(MAX_KEY + 1) << 1);
        beyond.push(0);
        assert_eq!(Sketch::decode(&beyond), Err(SketchError::Overflow));
        let mut extremes = Sketch::new();
        extremes.add(f64::MAX);
        extremes.add(f64::from_bits(1));
        assert_eq!(Sketch::decode(&extremes.encode()), Ok(extremes));
        // A fault after a good bucket leaves the sketch merged into as it was, even when that
        // bucket's count wraps it.
        let mut before = Sketch::new();
        before.add(1.0);
        let mut merged = before.clone();
        let mut faulty = vec![1, 0, 1];
        put_varint(&mut faulty, (zigzag(key(1.0)) << 1) | 1);
        put_varint(&mut faulty, u64::MAX);
        faulty.extend([0, 9]);
        assert_eq!(merged.merge_encoded(&faulty), Err(SketchError::Trailing(1)));
        assert_eq!(merged, before);
        // Every prefix of a good sketch is an error, not a panic.
        let mut good = Sketch::new();
        [1.0, -2.0, 0.0, 3e9].iter().for_each(|&v| good.add(v));
        let bytes = good.encode();
        for end in 0..bytes.len() {
            assert!(Sketch::decode(&bytes[..end]).is_err(), "prefix {end}");
        }
    }
}
