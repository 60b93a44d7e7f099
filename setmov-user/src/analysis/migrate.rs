//! `setmov migrate-plan`: with several hosts in one database, moves from overloaded hosts to
//! hosts with room, preferring VMs whose load peaks when the target's does not.
//!
//! Load is CPU demand in host CPUs per time bucket of the window (a VM's share of its host's
//! CPUs × that host's CPU count), so VMs can be added across hosts of different sizes. A host
//! is overloaded when the 95th percentile of its load over the window is above the threshold
//! (a fraction of its CPUs), or its VMs' memory exceeds its own. The 95th percentile rather than
//! the peak keeps a short spike from causing a move.
//!
//! The plan is greedy and stops as soon as no host is overloaded, so it keeps the number of
//! moves small: each step takes, over every VM of the most overloaded host and every other host
//! with memory for it, the move that leaves the lower of the two hosts' 95th percentiles the
//! lowest; a target must stay under the threshold after the move. A VM whose CPU is volatile
//! (its standard deviation over its mean above [`VOLATILE`]) is never moved: where it runs next
//! hour is not where it ran this one, and moving it would only churn.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::rollup::nearest_rank;

/// Above this coefficient of variation a VM's CPU is volatile and the VM stays put.
pub const VOLATILE: f64 = 1.0;

/// A VM as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmLoad {
    pub name: String,
    pub host: String,
    pub memory_bytes: u64,
    /// Host CPUs used, per bucket of the window (the same buckets for every VM; `None` for a
    /// bucket without data, counted as 0).
    pub load: Vec<f64>,
}

/// A host as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLoad {
    pub name: String,
    pub cpus: u32,
    pub memory_bytes: u64,
}

/// One move and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The plan, and the hosts' p95 loads before and after it (fractions of their CPUs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationPlan {
    pub threshold: f64,
    pub moves: Vec<Move>,
    pub before: BTreeMap<String, f64>,
    pub after: BTreeMap<String, f64>,
    /// Hosts still overloaded after the plan, and why no move helps.
    pub unresolved: Vec<String>,
}

fn p95(values: &[f64]) -> f64 {
    nearest_rank(&mut values.to_vec(), 0.95).unwrap_or(0.0)
}

fn volatility(load: &[f64]) -> f64 {
    let n = load.len().max(1) as f64;
    let mean = load.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return 0.0;
    }
    let variance = load.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    variance.sqrt() / mean
}

/// Pearson correlation of two load curves (0 when either is flat).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let mean = |x: &[f64]| x.iter().take(n).sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (da, db) = (x - ma, y - mb);
        cov += da * db;
        va += da * da;
        vb += db * db;
    }
    if va <= 0.0 || vb <= 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

struct State<'a> {
    hosts: &'a [HostLoad],
    placement: Vec<usize>,
    vms: &'a [VmLoad],
    buckets: usize,
}

// Host and VM indexes here come from `0..hosts.len()` and `vms.iter().enumerate()`; the
// placement holds only such host indexes (or usize::MAX, never looked up).
#[allow(clippy::indexing_slicing)]
impl State<'_> {
    fn curve(&self, host: usize) -> Vec<f64> {
        let mut curve = vec![0.0; self.buckets];
        for (vm, &at) in self.vms.iter().zip(&self.placement) {
            if at == host {
                for (c, v) in curve.iter_mut().zip(&vm.load) {
                    *c += v;
                }
            }
        }
        curve
    }

    /// The host's p95 load as a fraction of its CPUs.
    fn level(&self, host: usize) -> f64 {
        p95(&self.curve(host)) / f64::from(self.hosts[host].cpus.max(1))
    }

    fn memory(&self, host: usize) -> u64 {
        self.vms
            .iter()
            .zip(&self.placement)
            .filter(|(_, at)| **at == host)
            .map(|(vm, _)| vm.memory_bytes)
            .sum()
    }

    fn overloaded(&self, host: usize, threshold: f64) -> bool {
        self.level(host) > threshold || self.memory(host) > self.hosts[host].memory_bytes
    }
}

/// The plan for `vms` on `hosts` with `threshold` (a fraction of a host's CPUs).
// Indexes as in `State`: `0..hosts.len()` and `vms.iter().enumerate()`, never from the data.
#[allow(clippy::indexing_slicing)]
pub fn plan(hosts: &[HostLoad], vms: &[VmLoad], threshold: f64) -> MigrationPlan {
    let buckets = vms.iter().map(|v| v.load.len()).max().unwrap_or(0);
    let index = |name: &str| hosts.iter().position(|h| h.name == name);
    let mut state = State {
        hosts,
        placement: vms
            .iter()
            .map(|v| index(&v.host).unwrap_or(usize::MAX))
            .collect(),
        vms,
        buckets,
    };
    let levels = |state: &State<'_>| -> BTreeMap<String, f64> {
        (0..hosts.len())
            .map(|h| (hosts[h].name.clone(), state.level(h)))
            .collect()
    };
    let before = levels(&state);
    let mut moves = Vec::new();
    let mut unresolved = Vec::new();
    // Each VM moves at most once: a plan that moved one twice would be two plans.
    let mut moved = vec![false; vms.len()];
    while let Some(source) = (0..hosts.len())
        .filter(|&h| state.overloaded(h, threshold))
        .max_by(|&a, &b| state.level(a).total_cmp(&state.level(b)))
    {
        let mut best: Option<(f64, usize, usize)> = None;
        for (v, vm) in vms.iter().enumerate() {
            if state.placement[v] != source || moved[v] || volatility(&vm.load) > VOLATILE {
                continue;
            }
            for target in (0..hosts.len()).filter(|&t| t != source) {
                if state.memory(target) + vm.memory_bytes > hosts[target].memory_bytes {
                    continue;
                }
                state.placement[v] = target;
                let (after_source, after_target) = (state.level(source), state.level(target));
                state.placement[v] = source;
                if after_target > threshold {
                    continue;
                }
                let worst = after_source.max(after_target);
                if best.is_none_or(|(b, _, _)| worst < b) {
                    best = Some((worst, v, target));
                }
            }
        }
        let Some((_, v, target)) = best else {
            unresolved.push(format!(
                "{}: p95 load {:.0} % of its CPUs, and no movable VM fits elsewhere",
                hosts[source].name,
                state.level(source) * 100.0
            ));
            break;
        };
        let target_curve = state.curve(target);
        let (source_before, target_before) = (state.level(source), state.level(target));
        state.placement[v] = target;
        moved[v] = true;
        let r = correlation(&vms[v].load, &target_curve);
        moves.push(Move {
            vm: vms[v].name.clone(),
            from: hosts[source].name.clone(),
            to: hosts[target].name.clone(),
            reason: format!(
                "{} p95 load {:.0} % → {:.0} %, {} {:.0} % → {:.0} %; its load and {}'s \
                 correlate at {r:+.2} ({})",
                hosts[source].name,
                source_before * 100.0,
                state.level(source) * 100.0,
                hosts[target].name,
                target_before * 100.0,
                state.level(target) * 100.0,
                hosts[target].name,
                if r < 0.0 {
                    "they peak at different times"
                } else {
                    "the target has room even at its peaks"
                }
            ),
        });
    }
    MigrationPlan {
        threshold,
        moves,
        before,
        after: levels(&state),
        unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// 24 hourly buckets: `base` CPUs, plus `peak` more during hours `from..to`.
    fn day(base: f64, peak: f64, from: usize, to: usize) -> Vec<f64> {
        (0..24)
            .map(|h| {
                if (from..to).contains(&h) {
                    base + peak
                } else {
                    base
                }
            })
            .collect()
    }

    fn vm(name: &str, host: &str, load: Vec<f64>) -> VmLoad {
        VmLoad {
            name: name.into(),
            host: host.into(),
            memory_bytes: 2 * GIB,
            load,
        }
    }

    fn hosts() -> Vec<HostLoad> {
        ["a", "b", "c"]
            .iter()
            .map(|n| HostLoad {
                name: (*n).into(),
                cpus: 8,
                memory_bytes: 32 * GIB,
            })
            .collect()
    }

    #[test]
    fn a_day_peaking_vm_goes_to_the_night_peaking_host() {
        let vms = [
            // a: two VMs busy in office hours: 8 of 8 CPUs at the peak.
            vm("office-1", "a", day(0.5, 3.5, 8, 18)),
            vm("office-2", "a", day(0.5, 3.5, 8, 18)),
            // b: busy at night (batch); c: busy in office hours too.
            vm("batch", "b", day(0.5, 4.0, 0, 6)),
            vm("office-3", "c", day(0.5, 3.0, 8, 18)),
        ];
        let plan = plan(&hosts(), &vms, 0.8);
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        let m = &plan.moves[0];
        assert_eq!((m.from.as_str(), m.to.as_str()), ("a", "b"), "{plan:?}");
        assert!(m.reason.contains("different times"), "{}", m.reason);
        assert!(plan.after.values().all(|level| *level <= 0.8), "{plan:?}");
        assert!(plan.unresolved.is_empty());
    }

    #[test]
    fn a_volatile_vm_stays_and_a_balanced_fleet_has_no_moves() {
        // Spiky: idle most hours, all CPUs for two.
        let spiky: Vec<f64> = (0..24)
            .map(|h| if h % 12 == 0 { 7.5 } else { 0.1 })
            .collect();
        assert!(volatility(&spiky) > VOLATILE);
        let vms = [
            vm("spiky", "a", spiky.clone()),
            vm("steady", "a", vec![7.0; 24]),
        ];
        let plan = plan(&hosts(), &vms, 0.8);
        assert!(plan.moves.iter().all(|m| m.vm != "spiky"), "{plan:?}");
        let calm = [vm("steady", "a", vec![2.0; 24]), vm("spiky", "b", spiky)];
        assert!(super::plan(&hosts(), &calm, 0.8).moves.is_empty());
    }

    #[test]
    fn memory_that_does_not_fit_is_not_moved_and_it_says_so() {
        let mut small = hosts();
        for h in &mut small[1..] {
            h.memory_bytes = GIB;
        }
        let vms = [vm("busy", "a", vec![7.5; 24])];
        let plan = plan(&small, &vms, 0.8);
        assert!(plan.moves.is_empty());
        assert_eq!(plan.unresolved.len(), 1, "{plan:?}");
    }
}
