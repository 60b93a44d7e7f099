//! The sampling loop: a ticker, one task per source, an assembler and a writer.
//!
//! The ticker publishes ticks on a watch channel. Each source (host, VMs, eBPF) runs on its own
//! task, reads when a tick arrives and reports to the assembler; a slow source simply sees the
//! newest tick next (its missed ticks are counted), so it never holds up the others. The
//! assembler joins reports per tick and hands records to the writer task ([`writer`]), which owns
//! the store; the writer keeps a backlog when the store fails, so sampling never waits on the
//! database.
//!
//! Every queue is bounded. Sources wait for the assembler (it only joins reports). The writer
//! and the outputs are offered each tick without waiting: the writer takes them at once (its
//! policy for a slow store is in [`writer`]); an output that is behind by [`OUTPUT_QUEUE`] ticks
//! (a stream's reader that does not read) misses ticks, counted and logged.

pub mod assemble;
mod ebpf_source;
pub mod summary;
mod tasks;
pub mod vm_source;
mod writer;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::ebpf::Probes;
use crate::host::identity::HostIdentity;
use crate::host::read::HostReader;
use crate::host::snapshot::HostSnapshot;
use crate::store::rollup::Retention;
use crate::store::{HostSample, Store, TickRecord};
use crate::usage::ebpf::{VmOwnership, host_ebpf_figures, vm_ebpf_figures};
use crate::usage::host::host_usage;
use crate::vm::libvirt::LibvirtCollector;
use assemble::{AssembledTick, Assembler, Report, Source};
pub use summary::summary_line;
use tasks::{Tasks, panic_message};
pub use writer::WriterCounts;

/// Reports the sources may have sent before the assembler takes them.
const REPORT_QUEUE: usize = 64;
/// Ticks an output (stream, exporter, live view) may be behind before it misses some.
pub const OUTPUT_QUEUE: usize = 64;

/// Whether sampling should go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Run,
    /// Finish the current tick, write what is waiting (for a few seconds at most) and stop.
    Finish,
    /// Stop writing at once: what is unwritten is kept on disk for the next start, or counted.
    Now,
}

/// A receiver of every tick, fed without waiting: when it is [`OUTPUT_QUEUE`] ticks behind, it
/// misses the newest ones (counted, and logged now and then). Dropped once its receiver is.
pub struct Subscriber {
    name: &'static str,
    tx: mpsc::Sender<Arc<TickRecord>>,
    missed: u64,
}

impl Subscriber {
    /// A subscriber named `name` in log lines, and the receiving end to read ticks from.
    pub fn new(name: &'static str) -> (Subscriber, mpsc::Receiver<Arc<TickRecord>>) {
        let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
        let subscriber = Subscriber {
            name,
            tx,
            missed: 0,
        };
        (subscriber, rx)
    }

    /// Offers `tick`; `false` once the receiver is gone.
    fn offer(&mut self, tick: &Arc<TickRecord>) -> bool {
        match self.tx.try_send(Arc::clone(tick)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.missed += 1;
                if self.missed.is_power_of_two() {
                    tracing::warn!(
                        "the {} is {OUTPUT_QUEUE} ticks behind: it missed tick {} ({} so far)",
                        self.name,
                        tick.seq,
                        self.missed
                    );
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub interval: Duration,
    /// Stop after this many ticks; `None` runs until shutdown.
    pub count: Option<u64>,
    /// Print a summary line per tick on stdout.
    pub print_summary: bool,
    /// Interface name prefixes left out of the host network total.
    pub net_total_excluded: Vec<String>,
    /// How long raw rows and rollups are kept.
    pub retention: Retention,
}

/// One scheduled sampling instant.
#[derive(Debug, Clone, Copy)]
struct Tick {
    /// Slot number since start: a gap between two ticks a source sees is ticks it missed.
    seq: u64,
    scheduled: Instant,
    time: OffsetDateTime,
    /// The sampling interval this tick was scheduled with (it can change while running).
    period: Duration,
}

/// Where ticks go besides the store, and what may change while sampling.
#[derive(Default)]
pub struct Outputs {
    /// Each receives every assembled tick, in order (stream output, exporter, live view). A
    /// closed receiver is dropped from the list; sampling goes on.
    pub subscribers: Vec<Subscriber>,
    /// New sampling intervals; the next tick follows the new one.
    pub interval: Option<watch::Receiver<Duration>>,
    /// The writer's counts, for whoever reports them while the run goes on (the exporter).
    pub writer_counts: Arc<WriterCounts>,
}

/// What a run did, for the caller's last message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub ticks: u64,
    pub written: u64,
    /// Refused by the store for what they hold, and set aside in its quarantine.
    pub quarantined: u64,
    /// Unwritten at the end and kept on disk, for the next start to write first.
    pub kept: u64,
    /// Dropped because the backlog was full, or unwritten at exit and not kept.
    pub lost: u64,
    /// Why the database writer ended before the run did (it panicked): the run stopped then,
    /// and every tick it had not written is counted lost.
    pub writer_failure: Option<String>,
    /// Which other task (the ticker, a source) panicked: the run stopped then, after the
    /// writer stored what had been assembled.
    pub task_failure: Option<String>,
}

/// The collectors to run; the host is always sampled, VMs and eBPF when available.
pub struct Sources {
    pub host: HostReader,
    pub libvirt: Option<LibvirtCollector>,
    pub ebpf: Option<Probes>,
}

/// Samples until `stop` says so or `config.count` ticks were taken, writing every tick to
/// `store` (when there is one) and handing it to `outputs`.
pub async fn run<S: Store>(
    config: SamplerConfig,
    identity: HostIdentity,
    collectors: Sources,
    store: Option<S>,
    outputs: Outputs,
    stop: watch::Receiver<Stop>,
) -> RunReport {
    let Outputs {
        mut subscribers,
        interval: interval_changes,
        writer_counts: counts,
    } = outputs;
    let Sources {
        host: reader,
        libvirt,
        ebpf: probe,
    } = collectors;
    let (tick_tx, tick_rx) = watch::channel(None::<Tick>);
    let (report_tx, mut report_rx) = mpsc::channel::<SourceMessage>(REPORT_QUEUE);
    let (record_tx, record_rx) = mpsc::channel::<Arc<TickRecord>>(writer::QUEUE);

    let mut sources = vec![Source::Host];
    let mut tasks = Tasks::default();
    // Baselines are read before the first tick so tick 1 already has rates.
    let host_baseline = read_host(&reader);
    tasks.spawn(
        "host source",
        host_source(
            reader,
            host_baseline,
            config.net_total_excluded.clone(),
            tick_rx.clone(),
            report_tx.clone(),
        ),
    );
    // The VM source tells the eBPF source which threads are vCPUs (for their run-queue wait).
    let (vcpu_tids_tx, vcpu_tids_rx) = match (&libvirt, &probe) {
        (Some(_), Some(_)) => {
            let (tx, rx) = watch::channel(Vec::new());
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    if let Some(collector) = libvirt {
        sources.push(Source::Vm);
        tasks.spawn(
            "VM source",
            vm_source::vm_source(
                collector,
                config.interval,
                tick_rx.clone(),
                report_tx.clone(),
                vcpu_tids_tx,
            ),
        );
    }
    if let Some(probe) = probe {
        sources.push(Source::Ebpf);
        tasks.spawn(
            "eBPF source",
            ebpf_source::ebpf_source(probe, tick_rx, report_tx, vcpu_tids_rx),
        );
    } else {
        drop(report_tx);
    }
    let had_store = store.is_some();
    let mut writer = store.map(|store| {
        tokio::spawn(writer::write_records(
            store,
            record_rx,
            config.retention,
            Arc::clone(&counts),
            stop.clone(),
        ))
    });
    tasks.spawn(
        "ticker",
        ticker(
            config.interval,
            interval_changes,
            config.count,
            tick_tx,
            stop,
        ),
    );

    let mut assembler = Assembler::new(&sources);
    let mut ticks = 0u64;
    let mut emit = |done: Vec<AssembledTick>| {
        for tick in done {
            ticks += 1;
            if config.print_summary {
                // A closed stdout (say, piped to `head`) must not stop the sampling.
                let line = summary_line(&identity, &tick, config.interval);
                crate::progress::suspend(|| {
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                });
            }
            let (vm_count, node, mut vms) = tick.vms.map_or((None, None, Vec::new()), |v| {
                (v.vm_count, v.node, v.samples)
            });
            // The eBPF figures split by owner: each sampled VM its qemu process's, the host
            // the whole and what no VM did.
            let ebpf = tick.ebpf.map(|interval| {
                for vm in vms.iter_mut() {
                    let (Some(usage), Some(qemu_pid)) = (&vm.usage, vm.qemu_pid) else {
                        continue;
                    };
                    let taps: Vec<&str> = usage.nics.iter().map(|n| n.name.as_str()).collect();
                    let owner = VmOwnership {
                        qemu_pid,
                        vcpu_tids: &vm.vcpu_tids,
                        taps: &taps,
                    };
                    vm.ebpf = Some(vm_ebpf_figures(&interval, owner));
                }
                let vm_tgids = vms.iter().filter_map(|vm| vm.qemu_pid).collect();
                // The host's block total over the disks its procfs total counts.
                let disks = tick
                    .host
                    .as_ref()
                    .map(|h| h.usage.disk_total_over.as_slice());
                host_ebpf_figures(&interval, &vm_tgids, disks)
            });
            let record = Arc::new(TickRecord {
                seq: tick.seq,
                time: tick.time,
                host: identity.clone(),
                vm_count,
                node,
                host_sample: tick.host,
                vms,
                ebpf,
            });
            subscribers.retain_mut(|s| s.offer(&record));
            // Without a store nobody receives; with one, the writer outlives this loop and takes
            // ticks as they come, so the queue is full only if it is stuck: the tick is lost.
            if let Err(mpsc::error::TrySendError::Full(record)) = record_tx.try_send(record) {
                tracing::error!("the database writer is stuck: tick {} is lost", record.seq);
                counts
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    let (mut writer_failure, mut task_failure) = (None, None);
    loop {
        let message = tokio::select! {
            message = report_rx.recv() => message,
            // The writer ends only when `record_tx` closes: ending before is a failure, and
            // sampling on with nothing stored would hide it.
            ended = writer_ended(&mut writer) => {
                let failure = describe_writer_end(ended);
                tracing::error!("the database writer stopped: {failure}; stopping the run");
                writer_failure = Some(failure);
                tasks.abort_all();
                break;
            }
            // What was assembled is still written: the writer is fine.
            failure = tasks.panicked() => {
                tracing::error!("{failure}; stopping the run");
                task_failure = Some(failure);
                tasks.abort_all();
                break;
            }
        };
        match message {
            Some(SourceMessage::Report { seq, time, report }) => {
                emit(assembler.push(seq, time, report));
            }
            Some(SourceMessage::Stopped(source)) => emit(assembler.source_stopped(source)),
            None => {
                if let Some(failure) = tasks.stop().await {
                    tracing::error!("{failure}; stopping the run");
                    task_failure = Some(failure);
                }
                break;
            }
        }
    }
    if writer_failure.is_none() {
        emit(assembler.drain());
    }
    drop(record_tx);
    for subscriber in &subscribers {
        if subscriber.missed > 0 {
            tracing::warn!(
                "the {} missed {} ticks: it read them too slowly",
                subscriber.name,
                subscriber.missed
            );
        }
    }
    if let Some(writer) = writer
        && let Err(e) = writer.await
    {
        let failure = describe_writer_end(Err(e));
        tracing::error!("the database writer stopped: {failure}");
        writer_failure = Some(failure);
    }
    let get = WriterCounts::get;
    let (written, quarantined, kept) = (
        get(&counts.written),
        get(&counts.quarantined),
        get(&counts.spilled),
    );
    // Without a store nothing is written, and nothing lost; with one, every tick taken is
    // written, quarantined, kept for the next start, or lost.
    let lost = if had_store {
        ticks.saturating_sub(written + quarantined + kept)
    } else {
        0
    };
    RunReport {
        ticks,
        written,
        quarantined,
        kept,
        lost,
        writer_failure,
        task_failure,
    }
}

type WriterOutcome = Result<(), tokio::task::JoinError>;

/// Resolves when the writer task ends (and forgets it); never without one.
async fn writer_ended(writer: &mut Option<tokio::task::JoinHandle<()>>) -> WriterOutcome {
    let Some(handle) = writer.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = handle.await;
    *writer = None;
    outcome
}

fn describe_writer_end(outcome: WriterOutcome) -> String {
    match outcome {
        Ok(_) => "it ended while ticks were still coming".to_owned(),
        Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
        Err(e) => e.to_string(),
    }
}

enum SourceMessage {
    Report {
        seq: u64,
        time: OffsetDateTime,
        report: Report,
    },
    Stopped(Source),
}

async fn ticker(
    mut period: Duration,
    mut changes: Option<watch::Receiver<Duration>>,
    count: Option<u64>,
    tx: watch::Sender<Option<Tick>>,
    mut stop: watch::Receiver<Stop>,
) {
    let stopped = async move {
        // A sender gone (nobody can ask any more) means run on.
        if stop.wait_for(|s| *s != Stop::Run).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stopped);
    // Slots count from `start` in steps of `period`, after the `base` slots of earlier periods.
    let (mut start, mut base) = (Instant::now(), 0u64);
    let mut interval = schedule(start, period);
    let mut emitted = 0u64;
    let mut last_seq = 0u64;
    while count.is_none_or(|c| emitted < c) {
        let scheduled = tokio::select! {
            at = interval.tick() => at,
            () = &mut stopped => break,
            new = next_interval(&mut changes) => {
                if new != period {
                    (start, base, period) = (Instant::now(), last_seq, new);
                    interval = schedule(start, period);
                }
                continue;
            }
        };
        // A tick read a whole period or more after its instant (the process was stopped, the
        // machine suspended) stands for the latest instant that has passed, not the first
        // missed one: the instants between are the missed ticks, and the interval this tick
        // closes spans them. The next one is then on schedule (the interval skips to the next
        // instant after now), with none missed.
        let period_ns = period.as_nanos().max(1);
        let passed = Instant::now()
            .saturating_duration_since(scheduled)
            .as_nanos()
            / period_ns;
        let scheduled = scheduled
            .checked_add(period.saturating_mul(u32::try_from(passed).unwrap_or(u32::MAX)))
            .unwrap_or(scheduled);
        let slot = scheduled.duration_since(start).as_nanos() / period_ns;
        last_seq = base.saturating_add(u64::try_from(slot).unwrap_or(u64::MAX));
        tx.send_replace(Some(Tick {
            seq: last_seq,
            scheduled,
            time: OffsetDateTime::now_utc(),
            period,
        }));
        emitted += 1;
    }
}

fn schedule(start: Instant, period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(start + period, period);
    // After a stall, resume on the schedule rather than firing the missed ticks in a burst;
    // the gap shows up as missed ticks and a longer Δt.
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    interval
}

/// The next requested interval; pending forever when nobody can change it.
async fn next_interval(changes: &mut Option<watch::Receiver<Duration>>) -> Duration {
    if let Some(rx) = changes {
        if rx.changed().await.is_ok() {
            return *rx.borrow_and_update();
        }
        // Nobody can change it any more.
        *changes = None;
    }
    std::future::pending().await
}

/// Reads the host files in place: they are made from in-memory kernel counters and never wait
/// on a device, and a hand-off to a blocking thread would cost more than the read (~75 µs).
fn read_host(reader: &HostReader) -> (Instant, HostSnapshot) {
    (Instant::now(), reader.read())
}

async fn host_source(
    reader: HostReader,
    baseline: (Instant, HostSnapshot),
    net_total_excluded: Vec<String>,
    mut ticks: watch::Receiver<Option<Tick>>,
    reports: mpsc::Sender<SourceMessage>,
) {
    let (mut prev_at, mut prev) = baseline;
    let mut prev_seq = 0;
    let mut logged_problems: Vec<String> = Vec::new();
    #[cfg(feature = "test-panic-in-run")]
    let panic_wanted = tasks::test_panic_wanted("host");
    while ticks.changed().await.is_ok() {
        let Some(tick) = *ticks.borrow_and_update() else {
            continue;
        };
        #[cfg(feature = "test-panic-in-run")]
        assert!(
            !(panic_wanted && tick.seq >= 3),
            "a test panic (SETMOV_TEST_PANIC_IN_RUN=host)"
        );
        let (at, now) = read_host(&reader);
        for problem in &now.problems {
            if !logged_problems.contains(problem) {
                tracing::warn!("host: {problem}");
                logged_problems.push(problem.clone());
            }
        }
        let dt = at.duration_since(prev_at).as_secs_f64();
        let sample = HostSample {
            interval_secs: dt,
            late_ms: at.saturating_duration_since(tick.scheduled).as_secs_f64() * 1e3,
            missed_ticks: tick.seq.saturating_sub(prev_seq + 1),
            usage: host_usage(&prev, &now, dt, &net_total_excluded),
            problems: now.problems.clone(),
        };
        (prev_at, prev, prev_seq) = (at, now, tick.seq);
        let message = SourceMessage::Report {
            seq: tick.seq,
            time: tick.time,
            report: Report::Host(Box::new(sample)),
        };
        if reports.send(message).await.is_err() {
            return;
        }
    }
    let _ = reports.send(SourceMessage::Stopped(Source::Host)).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::usage::host::HostUsage;

    pub(crate) fn host_sample() -> HostSample {
        HostSample {
            interval_secs: 1.0,
            late_ms: 0.0,
            missed_ticks: 0,
            usage: HostUsage {
                disk_total_over: Vec::new(),
                net_total_over: Vec::new(),
                cpu: None,
                per_cpu: Vec::new(),
                mem: None,
                disks: Vec::new(),
                disk_total: None,
                nets: Vec::new(),
                net_total: None,
            },
            problems: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_output_that_does_not_read_misses_ticks_and_one_gone_is_dropped() {
        let (mut subscriber, mut rx) = Subscriber::new("stream output");
        let tick = writer::tests::record(1);
        for _ in 0..OUTPUT_QUEUE + 10 {
            assert!(subscriber.offer(&tick));
        }
        assert_eq!(subscriber.missed, 10);
        assert!(rx.recv().await.is_some());
        assert!(subscriber.offer(&tick), "room again");
        assert_eq!(subscriber.missed, 10);
        drop(rx);
        assert!(!subscriber.offer(&tick));
    }

    #[tokio::test]
    async fn a_writer_that_dies_stops_the_run_at_once_and_the_counts_stay_true() {
        let written = Arc::default();
        let store = writer::tests::FlakyStore {
            panic_at: Some(3),
            written: Arc::clone(&written),
            ..Default::default()
        };
        let config = SamplerConfig {
            interval: Duration::from_millis(10),
            count: Some(1000),
            print_summary: false,
            net_total_excluded: Vec::new(),
            retention: Retention::default(),
        };
        let identity = HostIdentity {
            name: "hv1".into(),
            ip: "192.0.2.2".into(),
            mac: None,
            interface: None,
        };
        let sources = Sources {
            host: HostReader::new("/proc", Vec::new()).expect("/proc"),
            libvirt: None,
            ebpf: None,
        };
        let report = run(
            config,
            identity,
            sources,
            Some(store),
            Outputs::default(),
            watch::channel(Stop::Run).1,
        )
        .await;
        let failure = report
            .writer_failure
            .expect("the writer's death is reported");
        assert!(
            failure.contains("panicked: Could not retrieve"),
            "{failure}"
        );
        assert_eq!(report.written, 2);
        assert_eq!(written.lock().expect("lock").len(), 2);
        assert_eq!(report.lost, report.ticks - 2);
        // Stopped at once, not after the 1000 ticks asked for.
        assert!(report.ticks < 100, "{} ticks", report.ticks);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_tick_is_late_and_the_ticks_it_hid_are_missed() {
        let period = Duration::from_millis(100);
        let (tx, mut rx) = watch::channel(None);
        let start = Instant::now();
        tokio::spawn(ticker(
            period,
            None,
            Some(3),
            tx,
            watch::channel(Stop::Run).1,
        ));
        rx.changed().await.expect("tick 1");
        let first = rx.borrow_and_update().expect("tick");
        assert_eq!((first.seq, first.scheduled - start), (1, period));
        // The runtime is stuck for 2.5 periods, until 350 ms: the tick read then stands for the
        // latest instant passed (300 ms) and is 50 ms late; the one at 200 ms is missed, and
        // the interval this tick closes (100 to 350 ms) spans it...
        tokio::time::advance(period * 5 / 2).await;
        rx.changed().await.expect("tick 3");
        let late = rx.borrow_and_update().expect("tick");
        let late_ms = Instant::now().duration_since(late.scheduled).as_secs_f64() * 1e3;
        assert_eq!((late.seq, late_ms), (3, 50.0));
        let missed = late.seq - first.seq - 1;
        assert_eq!(missed, 1);
        assert!(summary::is_late(late_ms, missed, period));
        // ...and the schedule resumes at 400 ms, none missed, not fired in a burst.
        rx.changed().await.expect("tick 4");
        let resumed = rx.borrow_and_update().expect("tick");
        assert_eq!((resumed.seq, resumed.scheduled - start), (4, period * 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_a_little_late_keeps_its_slot() {
        let period = Duration::from_millis(100);
        let (tx, mut rx) = watch::channel(None);
        let start = Instant::now();
        tokio::spawn(ticker(
            period,
            None,
            Some(3),
            tx,
            watch::channel(Stop::Run).1,
        ));
        rx.changed().await.expect("tick 1");
        let _ = rx.borrow_and_update();
        // Stuck until 290 ms: the 200 ms tick is read 90 ms late, the next is at 300 ms.
        tokio::time::advance(Duration::from_millis(190)).await;
        rx.changed().await.expect("tick 2");
        let late = rx.borrow_and_update().expect("tick");
        assert_eq!((late.seq, late.scheduled - start), (2, period * 2));
        rx.changed().await.expect("tick 3");
        let next = rx.borrow_and_update().expect("tick");
        assert_eq!((next.seq, next.scheduled - start), (3, period * 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_interval_takes_effect_at_once_and_slots_keep_counting() {
        let (tx, mut rx) = watch::channel(None);
        let (interval_tx, interval_rx) = watch::channel(Duration::from_secs(1));
        tokio::spawn(ticker(
            Duration::from_secs(1),
            Some(interval_rx),
            Some(4),
            tx,
            watch::channel(Stop::Run).1,
        ));
        let mut next = async || {
            rx.changed().await.expect("tick");
            rx.borrow_and_update().expect("tick")
        };
        let (one, two) = (next().await, next().await);
        assert_eq!((one.seq, two.seq), (1, 2));
        let changed_at = Instant::now();
        interval_tx.send(Duration::from_millis(100)).expect("send");
        let (three, four) = (next().await, next().await);
        assert_eq!((three.seq, four.seq), (3, 4));
        assert_eq!(three.period, Duration::from_millis(100));
        assert_eq!(four.scheduled - changed_at, Duration::from_millis(200));
    }
}
