//! Gathers each source's report for a tick into one record.
//!
//! Sources handle ticks in order and may skip ticks when slow, so a tick is complete when
//! every source has either reported it or reported a later tick (or stopped). Complete ticks
//! leave in tick order; a source that skipped a tick leaves a gap in that tick, not a delay.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::store::{HostSample, VmSample};
use crate::usage::ebpf::EbpfInterval;
use crate::vm::libvirt::NodeFacts;

/// The independent collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Host,
    Vm,
    Ebpf,
}

/// One source's result for one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Host(Box<HostSample>),
    Vm(VmReport),
    /// `None` when the maps could not be read this tick.
    Ebpf(Option<Box<EbpfInterval>>),
}

impl Report {
    fn source(&self) -> Source {
        match self {
            Report::Host(_) => Source::Host,
            Report::Vm(_) => Source::Vm,
            Report::Ebpf(_) => Source::Ebpf,
        }
    }
}

/// The VM source's result for one tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VmReport {
    /// Running VMs (T1 VMC); `None` when libvirt could not be asked this tick.
    pub vm_count: Option<u32>,
    /// The host's capacity as libvirt reports it; `None` when it could not be asked.
    pub node: Option<NodeFacts>,
    pub samples: Vec<VmSample>,
}

/// What sources said about one tick. A `None` part is a source that did not report it.
#[derive(Debug, Clone, PartialEq)]
pub struct AssembledTick {
    pub seq: u64,
    pub time: OffsetDateTime,
    pub host: Option<HostSample>,
    pub vms: Option<VmReport>,
    pub ebpf: Option<Box<EbpfInterval>>,
    /// Whether the eBPF source reported this tick (it may report that reading failed).
    pub ebpf_reported: bool,
}

#[derive(Debug)]
struct SourceState {
    source: Source,
    /// Last tick it reported; `u64::MAX` once it stopped.
    last_seq: Option<u64>,
}

#[derive(Debug)]
pub struct Assembler {
    sources: Vec<SourceState>,
    pending: BTreeMap<u64, AssembledTick>,
}

impl Assembler {
    pub fn new(sources: &[Source]) -> Self {
        Assembler {
            sources: sources
                .iter()
                .map(|&source| SourceState {
                    source,
                    last_seq: None,
                })
                .collect(),
            pending: BTreeMap::new(),
        }
    }

    /// Adds a report; returns the ticks it completed, oldest first.
    pub fn push(&mut self, seq: u64, time: OffsetDateTime, report: Report) -> Vec<AssembledTick> {
        let source = report.source();
        let entry = self.pending.entry(seq).or_insert_with(|| AssembledTick {
            seq,
            time,
            host: None,
            vms: None,
            ebpf: None,
            ebpf_reported: false,
        });
        match report {
            Report::Host(sample) => entry.host = Some(*sample),
            Report::Vm(report) => entry.vms = Some(report),
            Report::Ebpf(figures) => {
                entry.ebpf = figures;
                entry.ebpf_reported = true;
            }
        }
        if let Some(state) = self.sources.iter_mut().find(|s| s.source == source) {
            state.last_seq = Some(state.last_seq.map_or(seq, |l| l.max(seq)));
        }
        self.take_complete()
    }

    /// A source stopped: it will report nothing more.
    pub fn source_stopped(&mut self, source: Source) -> Vec<AssembledTick> {
        if let Some(state) = self.sources.iter_mut().find(|s| s.source == source) {
            state.last_seq = Some(u64::MAX);
        }
        self.take_complete()
    }

    /// Everything still pending, oldest first (at shutdown).
    pub fn drain(&mut self) -> Vec<AssembledTick> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    fn take_complete(&mut self) -> Vec<AssembledTick> {
        let mut done = Vec::new();
        while let Some((&seq, tick)) = self.pending.first_key_value() {
            let complete = self.sources.iter().all(|s| {
                let reported = match s.source {
                    Source::Host => tick.host.is_some(),
                    Source::Vm => tick.vms.is_some(),
                    Source::Ebpf => tick.ebpf_reported,
                };
                reported || s.last_seq.is_some_and(|l| l > seq)
            });
            if !complete {
                break;
            }
            if let Some((_, tick)) = self.pending.pop_first() {
                done.push(tick);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    fn ebpf() -> Report {
        Report::Ebpf(None)
    }

    fn host() -> Report {
        Report::Host(Box::new(crate::sampler::tests::host_sample()))
    }

    #[test]
    fn a_tick_leaves_when_every_source_reported() {
        let mut a = Assembler::new(&[Source::Host, Source::Vm, Source::Ebpf]);
        assert!(a.push(1, T, host()).is_empty());
        assert!(a.push(1, T, ebpf()).is_empty());
        let done = a.push(1, T, Report::Vm(VmReport::default()));
        assert_eq!(done.len(), 1);
        assert!(done[0].host.is_some() && done[0].ebpf_reported && done[0].vms.is_some());
    }

    #[test]
    fn a_skipped_tick_leaves_with_a_gap_and_in_order() {
        let mut a = Assembler::new(&[Source::Host, Source::Ebpf]);
        assert!(a.push(1, T, host()).is_empty());
        assert!(a.push(2, T, host()).is_empty());
        // The eBPF source was slow and went straight to tick 2.
        let done = a.push(2, T, ebpf());
        let seqs: Vec<_> = done.iter().map(|t| (t.seq, t.ebpf_reported)).collect();
        assert_eq!(seqs, [(1, false), (2, true)]);
    }

    #[test]
    fn a_stopped_source_releases_waiting_ticks() {
        let mut a = Assembler::new(&[Source::Host, Source::Ebpf]);
        assert!(a.push(1, T, host()).is_empty());
        assert_eq!(a.source_stopped(Source::Ebpf).len(), 1);
        assert!(a.drain().is_empty());
    }
}
