//! The VM source: libvirt sampled on a thread of its own, with a deadline per tick.
//!
//! libvirt calls block, and a stuck libvirtd can block them for a long time. The collector
//! thread takes one request at a time; the async side waits for the answer only until the
//! tick's deadline. A tick without an answer reports the VMs last seen as missing (never
//! invented figures), and the host and eBPF sources go on unaffected.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::assemble::{Report, Source, VmReport};
use super::{SourceMessage, Tick};
use crate::store::VmSample;
use crate::usage::vm::vm_usage;
use crate::vm::libvirt::{LibvirtCollector, LibvirtError, VmSnapshot};
use crate::vm::stats::{DomainState, DomainStats};

/// The shortest wait for libvirt's answer, whatever the interval.
const MIN_DEADLINE: Duration = Duration::from_millis(250);

type Answer = (u64, Instant, Result<VmSnapshot, LibvirtError>);

/// The previous good sample of one domain run.
struct Previous {
    id: Option<u32>,
    at: Instant,
    stats: DomainStats,
    /// Samples since this one that libvirt cut short (see [`cut_short_by_a_job`]).
    cut_short: u32,
}

/// How many samples in a row may be cut short before one is taken as it is: a disk removed
/// for good would otherwise keep a VM unsampled.
const CUT_SHORT_AT_MOST: u32 = 3;

/// Whether libvirt left out the statistics that need the domain's job (block counters, the
/// balloon's guest figures and qemu's RSS), which it does under the NOWAIT flag while another
/// client (a `virsh dommemstat`, another monitor) holds the job: the disks `prev` had are gone,
/// or qemu's RSS, which libvirt gives whenever it has the job, is.
fn cut_short_by_a_job(prev: &DomainStats, now: &DomainStats) -> bool {
    (!prev.disks.is_empty() && now.disks.is_empty())
        || (prev.balloon.rss_kib.is_some() && now.balloon.rss_kib.is_none())
}

/// Turns libvirt snapshots into per-VM samples; pure apart from the clock readings it is given.
#[derive(Default)]
pub struct VmTracker {
    previous: HashMap<String, Previous>,
    /// VMs with a qemu process at the last good sample, for missing rows when libvirt is away.
    last_seen: Vec<(String, String)>,
    /// Every domain libvirt listed at the last good sample.
    listed: Vec<(String, String)>,
    /// Domains found gone by a sample whose report was never sent (it came too late).
    unreported_gone: Vec<(String, String)>,
}

impl VmTracker {
    /// Figures for every domain in `snapshot`, taken at `at`.
    pub fn sample(&mut self, at: Instant, snapshot: &VmSnapshot) -> VmReport {
        let mut samples = Vec::with_capacity(snapshot.domains.len());
        let mut previous = HashMap::with_capacity(snapshot.domains.len());
        let mut running = 0;
        for d in &snapshot.domains {
            let state = d.stats.state;
            if state.is_some_and(DomainState::is_running) {
                running += 1;
            }
            if !state.is_some_and(DomainState::has_process) {
                samples.push(VmSample::without_figures(&d.uuid, &d.name, state, None));
                continue;
            }
            // A new runtime id means the domain was started again: its counters restarted.
            let mut prev = self.previous.remove(&d.uuid).filter(|p| p.id == d.id);
            // NOWAIT gave only the state, or left out what needs the job: the domain is busy
            // with a job. Keep the old baseline so the next full sample spans the gap (its
            // rates cover both intervals, and nothing is lost).
            let busy = if d.stats.cpu_time_ns.is_none() {
                Some("libvirt reported only the state (a job holds the domain)")
            } else {
                prev.as_mut()
                    .filter(|p| {
                        p.cut_short < CUT_SHORT_AT_MOST && cut_short_by_a_job(&p.stats, &d.stats)
                    })
                    .map(|p| {
                        p.cut_short += 1;
                        "libvirt left out the block and balloon statistics (a job holds the \
                         domain)"
                    })
            };
            if let Some(reason) = busy {
                samples.push(VmSample {
                    qemu_pid: d.qemu.pid,
                    vcpu_tids: d.qemu.vcpu_tids.clone(),
                    ..VmSample::without_figures(&d.uuid, &d.name, state, Some(reason))
                });
                if let Some(p) = prev {
                    previous.insert(d.uuid.clone(), p);
                }
                continue;
            }
            let dt = prev.as_ref().map(|p| at.duration_since(p.at).as_secs_f64());
            let usage = vm_usage(
                prev.as_ref().map(|p| &p.stats),
                &d.stats,
                dt.unwrap_or(0.0),
                snapshot.node.cpus,
            );
            samples.push(VmSample {
                uuid: d.uuid.clone(),
                name: d.name.clone(),
                state,
                gone: false,
                qemu_pid: d.qemu.pid,
                vcpu_tids: d.qemu.vcpu_tids.clone(),
                missing: None,
                interval_secs: dt,
                usage: Some(usage),
                ebpf: None,
            });
            previous.insert(
                d.uuid.clone(),
                Previous {
                    id: d.id,
                    at,
                    stats: d.stats.clone(),
                    cut_short: 0,
                },
            );
        }
        // Domains listed last time and not now are gone (a transient domain destroyed, one
        // undefined): said once, so T3 stops showing them as running.
        let listed_now = |uuid: &String| snapshot.domains.iter().any(|d| &d.uuid == uuid);
        let mut gone = std::mem::take(&mut self.unreported_gone);
        gone.retain(|(uuid, _)| !listed_now(uuid));
        for (uuid, name) in &self.listed {
            if !listed_now(uuid) && !gone.iter().any(|(u, _)| u == uuid) {
                gone.push((uuid.clone(), name.clone()));
            }
        }
        for (uuid, name) in &gone {
            samples.push(VmSample {
                gone: true,
                ..VmSample::without_figures(uuid, name, None, None)
            });
        }
        self.listed = snapshot
            .domains
            .iter()
            .map(|d| (d.uuid.clone(), d.name.clone()))
            .collect();
        self.previous = previous;
        self.last_seen = samples
            .iter()
            .filter(|s| s.has_usage_row())
            .map(|s| (s.uuid.clone(), s.name.clone()))
            .collect();
        VmReport {
            vm_count: Some(running),
            node: Some(snapshot.node),
            samples,
        }
    }

    /// Takes `snapshot` as the new baseline without reporting its figures (their tick already
    /// went out as missing); the domains it found gone are reported by the next sample.
    pub fn baseline(&mut self, at: Instant, snapshot: &VmSnapshot) {
        self.unreported_gone = self
            .sample(at, snapshot)
            .samples
            .into_iter()
            .filter(|s| s.gone)
            .map(|s| (s.uuid, s.name))
            .collect();
    }

    /// No answer from libvirt this tick: the VMs seen last are marked missing.
    pub fn missing(&self, reason: &str) -> VmReport {
        VmReport {
            vm_count: None,
            node: None,
            samples: self
                .last_seen
                .iter()
                .map(|(uuid, name)| VmSample::without_figures(uuid, name, None, Some(reason)))
                .collect(),
        }
    }
}

/// Samples the VMs on every tick. When `vcpu_tids` is given, the vCPU threads of the VMs with
/// a qemu process are published on it after every sample (the eBPF source watches them).
pub(super) async fn vm_source(
    collector: LibvirtCollector,
    interval: Duration,
    mut ticks: watch::Receiver<Option<Tick>>,
    reports: mpsc::Sender<SourceMessage>,
    vcpu_tids: Option<watch::Sender<Vec<u32>>>,
) {
    // The baseline's deadline; each tick's follows its own interval.
    let mut deadline = interval.max(MIN_DEADLINE);
    let (request_tx, request_rx) = std::sync::mpsc::sync_channel::<u64>(1);
    // One request at a time (`busy`), so one answer at most waits.
    let (answer_tx, mut answers) = mpsc::channel::<Answer>(1);
    let spawned = std::thread::Builder::new()
        .name("setmov-libvirt".into())
        .spawn(move || {
            let mut collector = collector;
            while let Ok(seq) = request_rx.recv() {
                let at = Instant::now();
                let result = collector.sample();
                if answer_tx.blocking_send((seq, at, result)).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the libvirt thread: {e}; VMs are not sampled");
        let _ = reports.send(SourceMessage::Stopped(Source::Vm)).await;
        return;
    }
    let mut tracker = VmTracker::default();
    // Until when libvirt is known to be unreachable (the collector tries again a little later), and why.
    let mut unavailable: Option<(Instant, String)> = None;
    // The baseline, so the first tick already has rates.
    let mut busy = request_tx.send(0).is_ok();
    if busy
        && let Ok(Some((_, at, Ok(snapshot)))) =
            tokio::time::timeout(deadline, answers.recv()).await
    {
        tracker.baseline(at, &snapshot);
        busy = false;
    }
    while ticks.changed().await.is_ok() {
        let Some(tick) = *ticks.borrow_and_update() else {
            continue;
        };
        deadline = tick.period.max(MIN_DEADLINE);
        // An answer that came after its tick's deadline is still a true sample: use it as the
        // baseline (its figures were already reported missing).
        while let Ok((_, at, result)) = answers.try_recv() {
            busy = false;
            if let Ok(snapshot) = result {
                tracker.baseline(at, &snapshot);
            }
        }
        let report = if busy {
            tracker.missing("libvirt has not answered the previous request yet")
        } else if let Some((_, reason)) = unavailable.as_ref().filter(|(u, _)| Instant::now() < *u)
        {
            // The collector would only say "not yet": spare the thread hand-off.
            tracker.missing(reason)
        } else if request_tx.try_send(tick.seq).is_err() {
            tracker.missing("the libvirt thread stopped")
        } else {
            busy = true;
            match tokio::time::timeout(deadline, answers.recv()).await {
                Ok(Some((_, at, Ok(snapshot)))) => {
                    busy = false;
                    tracker.sample(at, &snapshot)
                }
                Ok(Some((_, _, Err(e)))) => {
                    busy = false;
                    let reason = e.to_string();
                    if let LibvirtError::Waiting { wait_ms, .. } = e {
                        let wait =
                            Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX));
                        unavailable = Some((Instant::now() + wait, reason.clone()));
                    }
                    tracker.missing(&reason)
                }
                Ok(None) => tracker.missing("the libvirt thread stopped"),
                Err(_) => tracker.missing(&format!(
                    "libvirt did not answer within {}",
                    humantime::format_duration(deadline)
                )),
            }
        };
        if let Some(tx) = &vcpu_tids {
            let mut tids: Vec<u32> = report
                .samples
                .iter()
                .flat_map(|s| s.vcpu_tids.iter().copied())
                .collect();
            tids.sort_unstable();
            tx.send_if_modified(|current| {
                let changed = *current != tids;
                if changed {
                    *current = tids;
                }
                changed
            });
        }
        let message = SourceMessage::Report {
            seq: tick.seq,
            time: tick.time,
            report: Report::Vm(report),
        };
        if reports.send(message).await.is_err() {
            return;
        }
    }
    let _ = reports.send(SourceMessage::Stopped(Source::Vm)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::libvirt::{DomainSample, NodeFacts};
    use crate::vm::runfiles::QemuProcess;
    use crate::vm::stats::VmDiskCounters;

    fn domain(uuid: &str, id: u32, state: DomainState, cpu_s: Option<f64>) -> DomainSample {
        DomainSample {
            uuid: uuid.into(),
            name: format!("vm-{uuid}"),
            id: Some(id),
            stats: DomainStats {
                state: Some(state),
                cpu_time_ns: cpu_s.map(|s| (s * 1e9) as u64),
                vcpus_current: Some(1),
                ..DomainStats::default()
            },
            qemu: QemuProcess::default(),
        }
    }

    fn snapshot(domains: Vec<DomainSample>) -> VmSnapshot {
        VmSnapshot {
            node: NodeFacts {
                cpus: 2,
                memory_bytes: None,
            },
            domains,
        }
    }

    #[test]
    fn rates_need_the_same_run_and_busy_domains_are_missing() {
        let mut t = VmTracker::default();
        let t0 = Instant::now();
        let first = t.sample(
            t0,
            &snapshot(vec![
                domain("a", 1, DomainState::Running, Some(1.0)),
                domain("b", 2, DomainState::Running, Some(1.0)),
                domain("c", 3, DomainState::Shutoff, None),
            ]),
        );
        assert_eq!(first.vm_count, Some(2));
        assert!(first.samples.iter().all(|s| s.interval_secs.is_none()));
        let second = t.sample(
            t0 + Duration::from_secs(1),
            &snapshot(vec![
                domain("a", 1, DomainState::Running, Some(1.5)),
                // b was destroyed and started again: a new id, counters from zero.
                domain("b", 7, DomainState::Running, Some(0.1)),
                domain("c", 3, DomainState::Paused, None),
            ]),
        );
        let by = |u: &str| second.samples.iter().find(|s| s.uuid == u).expect("sample");
        let cpu = |s: &VmSample| s.usage.as_ref().and_then(|u| u.cpu_vcpu_pct);
        assert_eq!(cpu(by("a")), Some(50.0));
        assert_eq!(cpu(by("b")), None);
        assert!(
            by("c").missing.is_some(),
            "a paused domain without counters"
        );
        assert_eq!(second.vm_count, Some(2));
    }

    #[test]
    fn a_sample_a_job_cut_short_is_missing_and_the_next_spans_both_intervals() {
        let with_disk = |cpu_s: f64, written_mib: u64, rss: Option<u64>| {
            let mut d = domain("a", 1, DomainState::Running, Some(cpu_s));
            if written_mib > 0 {
                d.stats.disks = vec![VmDiskCounters {
                    name: "vda".into(),
                    wr_reqs: written_mib,
                    wr_bytes: written_mib << 20,
                    ..VmDiskCounters::default()
                }];
            }
            d.stats.balloon.rss_kib = rss;
            d
        };
        let mut t = VmTracker::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.sample(at(0), &snapshot(vec![with_disk(1.0, 10, Some(1000))]));
        // Block counters left out (the disk without them is dropped by the parser).
        let cut = t.sample(at(1), &snapshot(vec![with_disk(1.5, 0, Some(1000))]));
        assert!(cut.samples[0].missing.is_some(), "{:?}", cut.samples[0]);
        assert!(cut.samples[0].usage.is_none());
        // The next full sample spans both seconds: 40 MiB in 2 s, 1 s of CPU in 2 s.
        let next = t.sample(at(2), &snapshot(vec![with_disk(2.0, 50, Some(1000))]));
        let s = &next.samples[0];
        assert_eq!(s.interval_secs, Some(2.0));
        let usage = s.usage.as_ref().expect("usage");
        assert_eq!(usage.cpu_vcpu_pct, Some(50.0));
        assert_eq!(
            usage.disk_total.map(|d| d.write_bytes_per_sec),
            Some(20.0 * 1_048_576.0)
        );
        // qemu's RSS left out: the balloon group was cut short.
        let cut = t.sample(at(3), &snapshot(vec![with_disk(2.5, 60, None)]));
        assert!(cut.samples[0].missing.is_some());
        // A disk removed for good: after a few samples the domain is sampled without it.
        let mut last = None;
        for s in 4..10 {
            last = Some(t.sample(at(s), &snapshot(vec![with_disk(s as f64, 0, Some(1000))])));
        }
        let last = last.expect("samples");
        assert!(last.samples[0].missing.is_none(), "{:?}", last.samples[0]);
        assert!(last.samples[0].usage.is_some());
    }

    #[test]
    fn an_outage_marks_the_vms_seen_last_as_missing() {
        let mut t = VmTracker::default();
        t.sample(
            Instant::now(),
            &snapshot(vec![
                domain("a", 1, DomainState::Running, Some(1.0)),
                domain("c", 3, DomainState::Shutoff, None),
            ]),
        );
        let report = t.missing("libvirt did not answer within 1s");
        assert_eq!(report.vm_count, None);
        assert_eq!(report.samples.len(), 1);
        assert_eq!(report.samples[0].uuid, "a");
        assert!(report.samples[0].has_usage_row() && report.samples[0].usage.is_none());
    }

    #[test]
    fn a_domain_gone_in_a_late_answer_is_reported_by_the_next_sample() {
        let mut t = VmTracker::default();
        let t0 = Instant::now();
        let a = || domain("a", 1, DomainState::Running, Some(1.0));
        let b = || domain("b", 2, DomainState::Running, Some(1.0));
        t.sample(t0, &snapshot(vec![a(), b()]));
        // b was destroyed; the answer that shows it came after its tick's deadline.
        t.baseline(t0 + Duration::from_secs(1), &snapshot(vec![a()]));
        let next = t.sample(t0 + Duration::from_secs(2), &snapshot(vec![a()]));
        let gone: Vec<&str> = next
            .samples
            .iter()
            .filter(|s| s.gone)
            .map(|s| s.uuid.as_str())
            .collect();
        assert_eq!(gone, ["b"]);
        // Said once only.
        let after = t.sample(t0 + Duration::from_secs(3), &snapshot(vec![a()]));
        assert!(after.samples.iter().all(|s| !s.gone));
    }
}
