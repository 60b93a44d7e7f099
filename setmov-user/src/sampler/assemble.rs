//! Gathers each source's report for a tick into one record.
//!
//! Sources handle ticks in order and may skip ticks when slow, so a tick is complete when
//! every source has either reported it or reported a later tick (or stopped). Complete ticks
//! leave in tick order; a source that skipped a tick leaves a gap in that tick, not a delay.

use std::collections::BTreeMap;

use crate::store::HostSample;
use crate::usage::ebpf::BlockFigures;

/// The independent collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Host,
    Ebpf,
}

/// One source's result for one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Host(Box<HostSample>),
    /// `None` when the maps could not be read this tick.
    Ebpf(Option<BlockFigures>),
}

impl Report {
    fn source(&self) -> Source {
        match self {
            Report::Host(_) => Source::Host,
            Report::Ebpf(_) => Source::Ebpf,
        }
    }
}

/// What sources said about one tick. A `None` part is a source that did not report it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssembledTick {
    pub seq: u64,
    pub host: Option<HostSample>,
    pub ebpf: Option<BlockFigures>,
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
    pub fn push(&mut self, seq: u64, report: Report) -> Vec<AssembledTick> {
        let source = report.source();
        let entry = self.pending.entry(seq).or_insert_with(|| AssembledTick {
            seq,
            ..AssembledTick::default()
        });
        match report {
            Report::Host(sample) => entry.host = Some(*sample),
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

    fn ebpf() -> Report {
        Report::Ebpf(None)
    }

    fn host(seq: u64) -> Report {
        Report::Host(Box::new(crate::sampler::tests::host_sample(seq)))
    }

    #[test]
    fn a_tick_leaves_when_every_source_reported() {
        let mut a = Assembler::new(&[Source::Host, Source::Ebpf]);
        assert!(a.push(1, host(1)).is_empty());
        let done = a.push(1, ebpf());
        assert_eq!(done.len(), 1);
        assert!(done[0].host.is_some() && done[0].ebpf_reported);
    }

    #[test]
    fn a_skipped_tick_leaves_with_a_gap_and_in_order() {
        let mut a = Assembler::new(&[Source::Host, Source::Ebpf]);
        assert!(a.push(1, host(1)).is_empty());
        assert!(a.push(2, host(2)).is_empty());
        // The eBPF source was slow and went straight to tick 2.
        let done = a.push(2, ebpf());
        let seqs: Vec<_> = done.iter().map(|t| (t.seq, t.ebpf_reported)).collect();
        assert_eq!(seqs, [(1, false), (2, true)]);
    }

    #[test]
    fn a_stopped_source_releases_waiting_ticks() {
        let mut a = Assembler::new(&[Source::Host, Source::Ebpf]);
        assert!(a.push(1, host(1)).is_empty());
        assert_eq!(a.source_stopped(Source::Ebpf).len(), 1);
        assert!(a.drain().is_empty());
    }
}
