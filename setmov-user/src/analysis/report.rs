//! `setmov report`: per host and per VM, the mean, median, 95th and 99th percentiles and
//! maximum of each figure over a window.
//!
//! Only the ticks that had a figure count for it. The mean weighs each tick by its Δt (a
//! bucket by the seconds its ticks with the figure cover), so raw ticks and rollups give the
//! same mean. Over raw ticks the percentiles are exact (nearest rank); over rollups they come
//! from the buckets' merged distributions ([`Sketch`]), within [`crate::store::sketch::RELATIVE_ERROR`] of the
//! percentile over the raw ticks. Rollups written before those distributions were kept (before
//! SQLite schema 10 / MySQL schema 7) count as their mean repeated over their ticks; a figure
//! that read such a bucket is marked `approximate`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::rollup::{HOST_FIGURES, VM_FIGURES, nearest_rank};
use crate::store::sketch::Sketch;

/// One figure of one stored row as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureSample {
    /// A tick's value, or a bucket's mean.
    pub mean: f64,
    pub max: f64,
    /// How many ticks had the figure: 1 for a tick, a bucket's `<figure>_n`; `None` for a
    /// bucket from before the count was kept (then the bucket's tick count stands in).
    pub n: Option<u64>,
    /// The seconds it covers: a tick's Δt, a bucket's `<figure>_secs`; `None` when unknown.
    pub secs: Option<f64>,
    /// A bucket's stored distribution; `None` for a tick, or a bucket from before they were kept.
    pub sketch: Option<Vec<u8>>,
}

impl FigureSample {
    /// From the columns [`super::report_sql`] gives for a figure; `None` when the row has no
    /// value of it.
    pub fn from_columns(
        mean: Option<f64>,
        max: Option<f64>,
        n: Option<u64>,
        secs: Option<f64>,
        sketch: Option<Vec<u8>>,
    ) -> Option<FigureSample> {
        Some(FigureSample {
            mean: mean?,
            max: max?,
            n,
            secs,
            sketch,
        })
    }
}

/// One stored row as the report reads it: a tick or a rollup bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSample {
    /// Seconds since the epoch: the tick's time, or the bucket's start.
    pub time: i64,
    /// The host's IP, or the VM's name.
    pub owner: String,
    pub uuid: Option<String>,
    pub ticks: u64,
    /// Whether this is a rollup bucket rather than a tick.
    pub bucket: bool,
    /// Per figure (in the order of [`figures`]); `None` when not measured.
    pub values: Vec<Option<FigureSample>>,
}

/// The figures a report covers: the host's or the VMs' rollup figures.
pub fn figures(vms: bool) -> &'static [&'static str] {
    if vms { VM_FIGURES } else { HOST_FIGURES }
}

/// One figure over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FigureReport {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Ticks that had the figure.
    pub n: u64,
    /// Read (in part) from rollups that kept no distribution: the percentiles are estimates.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
}

/// A host or a VM over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerReport {
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Ticks the window holds for it.
    pub ticks: u64,
    /// By figure name; figures never measured in the window are left out.
    pub figures: BTreeMap<String, FigureReport>,
}

/// One figure of one owner while the window is read.
#[derive(Default)]
struct Acc {
    /// Σ value × Δt and Σ Δt over what had a Δt.
    weighted: f64,
    secs: f64,
    /// Σ value × ticks and Σ ticks over what had none: weighed by the mean Δt at the end.
    unweighted: f64,
    unweighted_ticks: f64,
    n: u64,
    max: Option<f64>,
    /// The ticks' values while only ticks were read; then the sketch of everything.
    exact: Vec<f64>,
    sketch: Option<Sketch>,
    approximate: bool,
}

/// One figure of one row, as [`ReportFold::figure`] takes it (see [`FigureSample`]).
#[derive(Debug, Clone, Copy)]
pub struct FigureRef<'a> {
    pub mean: f64,
    pub max: f64,
    pub n: Option<u64>,
    pub secs: Option<f64>,
    pub sketch: Option<&'a [u8]>,
}

impl FigureSample {
    fn as_ref(&self) -> FigureRef<'_> {
        FigureRef {
            mean: self.mean,
            max: self.max,
            n: self.n,
            secs: self.secs,
            sketch: self.sketch.as_deref(),
        }
    }
}

impl Acc {
    fn add(&mut self, sample: FigureRef<'_>, bucket: bool, bucket_ticks: u64, owner: &str) {
        let FigureRef {
            mean,
            max,
            n,
            secs,
            sketch,
        } = sample;
        if !mean.is_finite() || !max.is_finite() {
            return;
        }
        let n = n.unwrap_or(bucket_ticks).max(1);
        self.n += n;
        self.max = Some(self.max.map_or(max, |m| m.max(max)));
        match secs.filter(|s| s.is_finite() && *s > 0.0) {
            Some(secs) => {
                self.weighted += mean * secs;
                self.secs += secs;
            }
            None => {
                self.unweighted += mean * n as f64;
                self.unweighted_ticks += n as f64;
            }
        }
        if !bucket {
            match &mut self.sketch {
                Some(all) => all.add(mean),
                None => self.exact.push(mean),
            }
            return;
        }
        let all = self.sketch.get_or_insert_with(|| {
            let mut all = Sketch::new();
            self.exact.drain(..).for_each(|v| all.add(v));
            all
        });
        match sketch.map(|bytes| all.merge_encoded(bytes)) {
            Some(Ok(())) => {}
            unread => {
                if let Some(Err(e)) = unread {
                    tracing::warn!(owner, "a rollup's stored distribution is unreadable: {e}");
                }
                all.add_n(mean, n);
                self.approximate = true;
            }
        }
    }

    fn finish(mut self) -> Option<FigureReport> {
        let max = self.max?;
        // What had no Δt weighs the mean Δt of what had one (1 s when nothing had one).
        let total_ticks = self.n as f64 - self.unweighted_ticks;
        let mean_dt = if self.secs > 0.0 && total_ticks > 0.0 {
            self.secs / total_ticks
        } else {
            1.0
        };
        let mean = (self.weighted + self.unweighted * mean_dt)
            / (self.secs + self.unweighted_ticks * mean_dt);
        let mut exact = std::mem::take(&mut self.exact);
        let mut quantile = |q: f64| match &self.sketch {
            Some(sketch) => sketch.quantile(q),
            None => nearest_rank(&mut exact, q),
        };
        // A sketch reads a bucket back as a value up to 1 % above what it holds: never above the
        // largest tick, which is known exactly (seen in a run as p99 52.0 % over a max of 51.6 %).
        let mut percentile = |q: f64| quantile(q).map(|v| v.min(max));
        let (p50, p95, p99) = (percentile(0.5)?, percentile(0.95)?, percentile(0.99)?);
        Some(FigureReport {
            mean,
            p50,
            p95,
            p99,
            max,
            n: self.n,
            approximate: self.approximate,
        })
    }
}

/// Folds a window's rows into one report per owner as they are read: a month of rollups is
/// hundreds of thousands of rows with their distributions, not worth holding all at once.
pub struct ReportFold {
    names: &'static [&'static str],
    owners: BTreeMap<(String, Option<String>), (u64, Vec<Acc>)>,
    /// The row being added: its owner, ticks and whether it is a bucket.
    current: Option<((String, Option<String>), u64, bool)>,
}

impl ReportFold {
    pub fn new(vms: bool) -> ReportFold {
        ReportFold {
            names: figures(vms),
            owners: BTreeMap::new(),
            current: None,
        }
    }

    /// Starts a row of `owner` (and `uuid`) holding `ticks` ticks; its figures follow with
    /// [`ReportFold::figure`].
    pub fn row(&mut self, owner: &str, uuid: Option<&str>, ticks: u64, bucket: bool) {
        let key = (owner.to_owned(), uuid.map(str::to_owned));
        let names = self.names;
        let (total, _) = self
            .owners
            .entry(key.clone())
            .or_insert_with(|| (0, names.iter().map(|_| Acc::default()).collect()));
        *total += ticks;
        self.current = Some((key, ticks, bucket));
    }

    /// How many figures a row has.
    pub fn figure_count(&self) -> usize {
        self.names.len()
    }

    /// Figure `index` (in the order of [`figures`]) of the current row.
    pub fn figure(&mut self, index: usize, value: FigureRef<'_>) {
        let Some((key, ticks, bucket)) = &self.current else {
            return;
        };
        if let Some(acc) = self
            .owners
            .get_mut(key)
            .and_then(|(_, accs)| accs.get_mut(index))
        {
            acc.add(value, *bucket, *ticks, &key.0);
        }
    }

    /// The reports, sorted by owner.
    pub fn finish(self) -> Vec<OwnerReport> {
        let names = self.names;
        self.owners
            .into_iter()
            .map(|((owner, uuid), (ticks, accs))| OwnerReport {
                owner,
                uuid,
                ticks,
                figures: names
                    .iter()
                    .zip(accs)
                    .filter_map(|(name, acc)| Some(((*name).to_owned(), acc.finish()?)))
                    .collect(),
            })
            .collect()
    }
}

/// Folds the window's samples into one report per owner (sorted by owner).
pub fn report(vms: bool, samples: Vec<ReportSample>) -> Vec<OwnerReport> {
    let mut fold = ReportFold::new(vms);
    for sample in &samples {
        fold.row(
            &sample.owner,
            sample.uuid.as_deref(),
            sample.ticks,
            sample.bucket,
        );
        for (index, value) in sample.values.iter().enumerate() {
            if let Some(value) = value {
                fold.figure(index, value.as_ref());
            }
        }
    }
    fold.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rollup::{RawTick, rollup_rows};
    use crate::store::rows::Value;
    use crate::store::sketch::RELATIVE_ERROR;

    fn tick(owner: &str, cpu: f64) -> ReportSample {
        timed_tick(owner, cpu, Some(1.0))
    }

    fn timed_tick(owner: &str, cpu: f64, secs: Option<f64>) -> ReportSample {
        let mut values = vec![None; figures(false).len()];
        values[0] = Some(FigureSample {
            mean: cpu,
            max: cpu,
            n: Some(1),
            secs,
            sketch: None,
        });
        ReportSample {
            time: 0,
            owner: owner.into(),
            uuid: None,
            ticks: 1,
            bucket: false,
            values,
        }
    }

    /// The rollup of `ticks` (value, Δt) as one bucket of figure 0, through the rollup code.
    fn bucket(ticks: &[(Option<f64>, f64)]) -> ReportSample {
        let raw = ticks
            .iter()
            .map(|&(v, dt)| RawTick {
                owner: "h".into(),
                interval_s: Some(dt),
                values: vec![v],
            })
            .collect();
        let rows = rollup_rows("t", "host_ip", &["x"], "T", raw);
        let row = &rows.rows[0];
        let real = |v: &Value| match v {
            Value::Real(x) => Some(*x),
            _ => None,
        };
        let sample = match (&row[3], &row[6], &row[8]) {
            (Value::Real(mean), Value::Int(n), Value::Blob(sketch)) => Some(FigureSample {
                mean: *mean,
                max: real(&row[4]).expect("max"),
                n: u64::try_from(*n).ok(),
                secs: real(&row[7]),
                sketch: Some(sketch.clone()),
            }),
            _ => None,
        };
        let mut values = vec![None; figures(false).len()];
        values[0] = sample;
        ReportSample {
            time: 0,
            owner: "h".into(),
            uuid: None,
            ticks: ticks.len() as u64,
            bucket: true,
            values,
        }
    }

    fn within(read: f64, exact: f64) -> bool {
        ((read - exact) / exact).abs() <= RELATIVE_ERROR + 1e-12
    }

    #[test]
    fn ticks_give_exact_statistics() {
        let samples = (1..=100).map(|v| tick("h", f64::from(v))).collect();
        let r = report(false, samples);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ticks, 100);
        assert_eq!(
            r[0].figures["cpu_pct"],
            FigureReport {
                mean: 50.5,
                p50: 50.0,
                p95: 95.0,
                p99: 99.0,
                max: 100.0,
                n: 100,
                approximate: false,
            }
        );
        // Never measured: left out rather than shown as zero.
        assert!(!r[0].figures.contains_key("mem_used_pct"));
    }

    #[test]
    fn ticks_weigh_their_interval_and_one_without_weighs_the_mean_interval() {
        let r = report(
            false,
            vec![
                timed_tick("h", 10.0, Some(3.0)),
                timed_tick("h", 20.0, Some(1.0)),
                timed_tick("h", 40.0, None),
            ],
        );
        // The last weighs 2 s: (30 + 20 + 80) / 6.
        let mean = r[0].figures["cpu_pct"].mean;
        assert!((mean - 130.0 / 6.0).abs() < 1e-12, "{mean}");
    }

    /// Issue #15's first counterexample: one read tick at 10 ms in one bucket, sixty at 1 ms in
    /// another, many ticks without reads: the mean is over the 61 reads, not the buckets.
    #[test]
    fn an_intermittent_figure_is_averaged_over_the_ticks_that_had_it() {
        let mut first: Vec<(Option<f64>, f64)> = vec![(None, 1.0); 59];
        first.push((Some(10.0), 1.0));
        let second = vec![(Some(1.0), 1.0); 60];
        let r = report(false, vec![bucket(&first), bucket(&second)]);
        let f = r[0].figures["cpu_pct"];
        assert!((f.mean - 70.0 / 61.0).abs() < 1e-12, "{}", f.mean);
        assert_eq!((f.n, f.max, f.approximate), (61, 10.0, false));
        assert_eq!(r[0].ticks, 120);
    }

    /// Issue #15's second counterexample: 95 minutes each with 3 busy ticks of 60 and 5 fully
    /// busy minutes at 100. 95 of the bucket p95s are 0, so the p95 of bucket p95s (what the
    /// report read before) is 0. Over the 6,000 ticks the nearest-rank p95 is 60 (the 5,700th
    /// value, the last of the 285 at 60; the issue counts it as 100, one tick further), the p99
    /// 100 and the p50 0.
    #[test]
    fn percentiles_over_buckets_are_the_percentiles_of_their_ticks() {
        let mut samples = Vec::new();
        let mut all = Vec::new();
        for minute in 0..100 {
            let ticks: Vec<f64> = if minute < 95 {
                (0..60).map(|i| if i < 3 { 60.0 } else { 0.0 }).collect()
            } else {
                vec![100.0; 60]
            };
            all.extend(&ticks);
            let timed: Vec<_> = ticks.iter().map(|&v| (Some(v), 1.0)).collect();
            samples.push(bucket(&timed));
        }
        let f = report(false, samples).remove(0).figures["cpu_pct"];
        for (q, read) in [(0.5, f.p50), (0.95, f.p95), (0.99, f.p99)] {
            let exact = nearest_rank(&mut all, q).expect("ticks");
            assert!(
                read == exact || within(read, exact),
                "p{q}: {read} against {exact}"
            );
        }
        assert!(within(f.p95, 60.0), "{}", f.p95);
        assert!(
            within(f.p99, 100.0) && f.p99 <= f.max,
            "{} over max {}",
            f.p99,
            f.max
        );
        assert_eq!(f.p50, 0.0);
    }

    #[test]
    fn generated_series_read_from_buckets_match_the_raw_ticks() {
        // A day of 1 s ticks in minute buckets, a diurnal load with bursts and idle gaps.
        let mut state = 0x2545_f491_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut samples, mut raw, mut ticks) = (Vec::new(), Vec::new(), Vec::new());
        for minute in 0..1440 {
            let base = 5.0
                + 40.0
                    * (f64::from(minute) / 1440.0 * std::f64::consts::TAU)
                        .sin()
                        .abs();
            let bucket_ticks: Vec<(Option<f64>, f64)> = (0..60)
                .map(|_| {
                    let u = next();
                    let v = (u > 0.2).then(|| base * (1.0 + 3.0 * u.powi(8)));
                    (v, 1.0)
                })
                .collect();
            for &(v, dt) in &bucket_ticks {
                if let Some(v) = v {
                    raw.push(v);
                    ticks.push(timed_tick("h", v, Some(dt)));
                }
            }
            samples.push(bucket(&bucket_ticks));
        }
        let from_buckets = report(false, samples).remove(0).figures["cpu_pct"];
        let from_ticks = report(false, ticks).remove(0).figures["cpu_pct"];
        assert!((from_buckets.mean - from_ticks.mean).abs() < 1e-9 * from_ticks.mean);
        assert_eq!(from_buckets.max, from_ticks.max);
        assert_eq!(from_buckets.n, from_ticks.n);
        for (q, read) in [
            (0.5, from_buckets.p50),
            (0.95, from_buckets.p95),
            (0.99, from_buckets.p99),
        ] {
            let exact = nearest_rank(&mut raw, q).expect("ticks");
            assert!(within(read, exact), "p{q}: {read} against {exact}");
        }
    }

    #[test]
    fn a_bucket_without_a_distribution_is_read_as_its_mean_and_marked() {
        let mut old = bucket(&[(Some(10.0), 1.0), (Some(30.0), 1.0)]);
        if let Some(v) = &mut old.values[0] {
            v.sketch = None;
            v.n = None;
            v.secs = None;
        }
        let mut broken = bucket(&[(Some(50.0), 2.0)]);
        if let Some(v) = &mut broken.values[0] {
            v.sketch = Some(vec![1, 0x80]);
        }
        let f = report(false, vec![old, broken]).remove(0).figures["cpu_pct"];
        assert!(f.approximate);
        assert_eq!((f.n, f.max), (3, 50.0));
        // The old bucket's two ticks weigh the mean Δt (2 s) each: (20·4 + 50·2) / 6.
        assert!((f.mean - 30.0).abs() < 1e-12, "{}", f.mean);
    }

    #[test]
    fn each_owner_gets_its_own_report() {
        let r = report(false, vec![tick("b", 1.0), tick("a", 2.0), tick("b", 3.0)]);
        let owners: Vec<_> = r.iter().map(|o| (o.owner.as_str(), o.ticks)).collect();
        assert_eq!(owners, [("a", 1), ("b", 2)]);
    }
}
