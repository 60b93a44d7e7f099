//! `setmov report`: per host and per VM, the mean, median, 95th percentile and maximum of each
//! figure over a window.
//!
//! Over raw ticks the statistics are exact. Over rollups (the level a long window reads) each
//! bucket brings its tick count, mean, maximum and 95th percentile: the report's mean is the
//! mean of the bucket means weighted by their ticks, its maximum the largest bucket maximum, its
//! median the median of the bucket means, and its 95th percentile the 95th percentile of the
//! bucket 95th percentiles (an upper estimate: it never hides a busy bucket).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::rollup::{HOST_FIGURES, VM_FIGURES, nearest_rank};

/// One stored row as the report reads it: a tick (count 1, its value as mean, max and p95) or
/// a rollup bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSample {
    /// Seconds since the epoch: the tick's time, or the bucket's start.
    pub time: i64,
    /// The host's IP, or the VM's name.
    pub owner: String,
    pub uuid: Option<String>,
    pub ticks: u64,
    /// Per figure (in the order of [`figures`]): mean, max, p95 — `None` when not measured.
    pub values: Vec<Option<(f64, f64, f64)>>,
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
    pub max: f64,
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

/// Folds the window's samples into one report per owner (sorted by owner).
pub fn report(vms: bool, samples: Vec<ReportSample>) -> Vec<OwnerReport> {
    let names = figures(vms);
    /// Per figure: Σ mean × ticks, Σ ticks, the bucket means, the bucket p95s, the max.
    #[derive(Default)]
    struct Acc {
        weighted: f64,
        ticks: f64,
        means: Vec<f64>,
        p95s: Vec<f64>,
        max: f64,
    }
    let mut owners: BTreeMap<(String, Option<String>), (u64, Vec<Acc>)> = BTreeMap::new();
    for sample in samples {
        let (ticks, accs) = owners
            .entry((sample.owner, sample.uuid))
            .or_insert_with(|| (0, names.iter().map(|_| Acc::default()).collect()));
        *ticks += sample.ticks;
        for (acc, value) in accs.iter_mut().zip(sample.values) {
            let Some((mean, max, p95)) =
                value.filter(|(m, x, p)| m.is_finite() && x.is_finite() && p.is_finite())
            else {
                continue;
            };
            let weight = sample.ticks.max(1) as f64;
            acc.weighted += mean * weight;
            acc.ticks += weight;
            acc.means.push(mean);
            acc.p95s.push(p95);
            acc.max = if acc.means.len() == 1 {
                max
            } else {
                acc.max.max(max)
            };
        }
    }
    owners
        .into_iter()
        .map(|((owner, uuid), (ticks, accs))| OwnerReport {
            owner,
            uuid,
            ticks,
            figures: names
                .iter()
                .zip(accs)
                .filter_map(|(name, mut acc)| {
                    let p50 = nearest_rank(&mut acc.means, 0.5)?;
                    let p95 = nearest_rank(&mut acc.p95s, 0.95)?;
                    Some((
                        (*name).to_owned(),
                        FigureReport {
                            mean: acc.weighted / acc.ticks,
                            p50,
                            p95,
                            max: acc.max,
                        },
                    ))
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(owner: &str, cpu: f64) -> ReportSample {
        let mut values = vec![None; figures(false).len()];
        values[0] = Some((cpu, cpu, cpu));
        ReportSample {
            time: 0,
            owner: owner.into(),
            uuid: None,
            ticks: 1,
            values,
        }
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
                max: 100.0
            }
        );
        // Never measured: left out rather than shown as zero.
        assert!(!r[0].figures.contains_key("mem_used_pct"));
    }

    #[test]
    fn buckets_are_weighted_by_their_ticks_and_keep_their_peaks() {
        let bucket = |ticks, mean, max, p95| {
            let mut values = vec![None; figures(false).len()];
            values[0] = Some((mean, max, p95));
            ReportSample {
                time: 0,
                owner: "h".into(),
                uuid: None,
                ticks,
                values,
            }
        };
        // 59 quiet minutes and one with a 100 % peak.
        let mut samples: Vec<_> = (0..59).map(|_| bucket(60, 10.0, 12.0, 11.0)).collect();
        samples.push(bucket(30, 40.0, 100.0, 90.0));
        let r = report(false, samples);
        let cpu = r[0].figures["cpu_pct"];
        assert_eq!(r[0].ticks, 59 * 60 + 30);
        assert!((cpu.mean - (59.0 * 600.0 + 1200.0) / 3570.0).abs() < 1e-9);
        assert_eq!((cpu.p50, cpu.max), (10.0, 100.0));
        assert_eq!(cpu.p95, 11.0, "one bucket of 60 is under the 95th rank");
    }

    #[test]
    fn each_owner_gets_its_own_report() {
        let r = report(false, vec![tick("b", 1.0), tick("a", 2.0), tick("b", 3.0)]);
        let owners: Vec<_> = r.iter().map(|o| (o.owner.as_str(), o.ticks)).collect();
        assert_eq!(owners, [("a", 1), ("b", 2)]);
    }
}
