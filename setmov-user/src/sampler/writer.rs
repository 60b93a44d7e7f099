//! The writer task: owns the store and writes ticks in order, without ever holding up sampling.
//!
//! What happens when the store is slow or away:
//! - The channel from the sampler is bounded ([`QUEUE`]) and the writer keeps draining it while a
//!   write is in progress, so the sampler never waits on the database.
//! - Ticks wait in memory, oldest first, up to [`BACKLOG_BYTES`] (estimated); past it the oldest
//!   tick is dropped, counted and logged. The MySQL store spools ticks to disk itself when its
//!   server is away, so its backlog stays short; a locked or full SQLite file fills it.
//! - A failed write is tried again every [`RETRY_EVERY`] (the store has its own timeouts).
//! - At the end of a run the writer goes on for at most [`FLUSH_BUDGET`] (nothing, on a second
//!   signal); what is still unwritten then is handed to [`Store::spill`], which keeps it on disk
//!   for the next start to write first (the MySQL spool, the SQLite store's recovery folder).
//!
//! A tick the store refuses for what it holds is quarantined by the store and counted; it never
//! blocks the ticks after it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Stop;
use crate::store::rollup::Retention;
use crate::store::{Store, TickRecord, WriteOutcome};

/// Ticks the sampler may hand over before the writer takes them (it takes them at once).
pub(super) const QUEUE: usize = 256;
/// Memory the ticks waiting for the store may take (estimated); the oldest go first past it.
/// At 1 s and a few KiB a tick (no VMs) that is hours; with 100 VMs, minutes.
const BACKLOG_BYTES: usize = 32 << 20;
/// How often a write that failed is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long the writer goes on writing once sampling has stopped: with systemd's stop timeout
/// (90 s by default, and many units set 10 s) the process must be gone well before.
const FLUSH_BUDGET: Duration = Duration::from_secs(5);

/// The writer's counts, readable while it runs (by the exporter, and by the run when the writer
/// dies).
#[derive(Debug, Default)]
pub struct WriterCounts {
    pub written: AtomicU64,
    /// Refused by the store for what they hold, and set aside in its quarantine.
    pub quarantined: AtomicU64,
    /// Dropped because the backlog was full.
    pub dropped: AtomicU64,
    /// Still unwritten at the end of the run and kept on disk for the next start.
    pub spilled: AtomicU64,
    /// Still unwritten at the end of the run and not kept (the spill failed).
    pub unwritten: AtomicU64,
}

impl WriterCounts {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The ticks waiting for the store, oldest first, within a memory budget.
struct Backlog {
    ticks: VecDeque<(Arc<TickRecord>, usize)>,
    bytes: usize,
    budget: usize,
}

impl Backlog {
    fn new(budget: usize) -> Self {
        Backlog {
            ticks: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Adds `tick` at the end; returns how many of the oldest were dropped to make room.
    fn push(&mut self, tick: Arc<TickRecord>) -> u64 {
        let size = approximate_bytes(&tick);
        self.ticks.push_back((tick, size));
        self.bytes += size;
        let mut dropped = 0;
        while self.bytes > self.budget && self.ticks.len() > 1 {
            if let Some((_, size)) = self.ticks.pop_front() {
                self.bytes -= size;
                dropped += 1;
            }
        }
        dropped
    }

    fn front(&self) -> Option<Arc<TickRecord>> {
        self.ticks.front().map(|(tick, _)| Arc::clone(tick))
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.ticks.pop_front() {
            self.bytes -= size;
        }
    }

    fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }

    fn take_all(&mut self) -> Vec<Arc<TickRecord>> {
        self.bytes = 0;
        self.ticks.drain(..).map(|(tick, _)| tick).collect()
    }
}

/// A rough size of a tick in memory: its structures and the vectors they own.
fn approximate_bytes(tick: &TickRecord) -> usize {
    use std::mem::size_of_val;
    let host = tick.host_sample.as_ref().map_or(0, |s| {
        size_of_val(s)
            + s.usage.per_cpu.len() * 64
            + s.usage.disks.len() * 256
            + s.usage.nets.len() * 256
            + s.problems.iter().map(String::len).sum::<usize>()
    });
    let vms: usize = tick
        .vms
        .iter()
        .map(|vm| {
            size_of_val(vm)
                + vm.name.len()
                + vm.uuid.len()
                + vm.vcpu_tids.len() * 4
                + vm.usage.as_ref().map_or(0, |u| {
                    size_of_val(u) + u.vcpu_pct.len() * 16 + (u.disks.len() + u.nics.len()) * 256
                })
                + vm.ebpf.as_ref().map_or(0, |e| {
                    size_of_val(e)
                        + e.latency.len() * 512
                        + e.kvm_events.len() * 64
                        + e.nics.len() * 128
                })
        })
        .sum();
    let ebpf = tick.ebpf.as_ref().map_or(0, |e| {
        size_of_val(e) + e.devices.len() * 512 + e.programs.len() * 128
    });
    size_of_val(tick) + host + vms + ebpf
}

/// Writes the ticks of `records` in order until it closes, then spills what is left; see the
/// module's documentation for the policy.
pub(super) async fn write_records<S: Store>(
    mut store: S,
    mut records: mpsc::Receiver<Arc<TickRecord>>,
    retention: Retention,
    counts: Arc<WriterCounts>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut backlog = Backlog::new(BACKLOG_BYTES);
    let mut receiving = true;
    let mut deadline: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    let mut failing = false;
    let mut upkeep_failing = false;
    // A stop channel whose sender is gone can no longer ask for haste.
    let mut stop_open = true;
    #[cfg(feature = "test-panic-in-run")]
    let panic_wanted = super::tasks::test_panic_wanted("writer");
    loop {
        if receiving {
            receiving = take_waiting(&mut records, &mut backlog, &counts);
        }
        if !receiving && deadline.is_none() {
            deadline = Some(Instant::now() + FLUSH_BUDGET);
        }
        let hurry = *stop.borrow() == Stop::Now;
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if !receiving && (backlog.is_empty() || hurry || out_of_time) {
            break;
        }
        let Some(record) = backlog.front() else {
            // Nothing to write: wait for the next tick.
            match records.recv().await {
                Some(record) => accept(&mut backlog, record, &counts),
                None => receiving = false,
            }
            continue;
        };
        if let Some(at) = retry_at.filter(|at| Instant::now() < *at) {
            let until = deadline.map_or(at, |d| d.min(at));
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                received = records.recv(), if receiving => match received {
                    Some(record) => accept(&mut backlog, record, &counts),
                    None => receiving = false,
                },
                changed = stop.changed(), if stop_open => stop_open = changed.is_ok(),
            }
            continue;
        }
        #[cfg(feature = "test-panic-in-run")]
        assert!(
            !(panic_wanted && record.seq >= 3),
            "a test panic (SETMOV_TEST_PANIC_IN_RUN=writer)"
        );
        // The write goes on while new ticks are taken in; at the deadline, or on a second
        // signal, it is given up (a write the store finishes anyway is harmless: writing a tick
        // twice changes nothing).
        let outcome = {
            let write = store.write_tick(&record);
            tokio::pin!(write);
            loop {
                let give_up = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    outcome = &mut write => break Some(outcome),
                    received = records.recv(), if receiving => match received {
                        Some(record) => accept(&mut backlog, record, &counts),
                        None => {
                            receiving = false;
                            deadline = Some(Instant::now() + FLUSH_BUDGET);
                        }
                    },
                    () = give_up => break None,
                    changed = stop.changed(), if stop_open => {
                        stop_open = changed.is_ok();
                        if *stop.borrow() == Stop::Now {
                            break None;
                        }
                    }
                }
            }
        };
        match outcome {
            None => continue,
            Some(Ok(written)) => {
                backlog.pop_front();
                match written {
                    WriteOutcome::Stored => WriterCounts::bump(&counts.written, 1),
                    WriteOutcome::Quarantined => WriterCounts::bump(&counts.quarantined, 1),
                }
                retry_at = None;
                if failing {
                    tracing::info!("database writes work again");
                    failing = false;
                }
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::error!("cannot write tick {}: {e}; keeping it to retry", record.seq);
                    failing = true;
                }
                retry_at = Some(Instant::now() + RETRY_EVERY);
            }
        }
        // Rollups and purges once everything up to this tick is stored.
        if backlog.is_empty() && receiving {
            match store
                .maintain(&record.host.ip, record.time, &retention)
                .await
            {
                Ok(()) if upkeep_failing => {
                    tracing::info!("rollups and purges work again");
                    upkeep_failing = false;
                }
                Ok(()) => {}
                Err(e) if !upkeep_failing => {
                    tracing::warn!("cannot roll up or purge old rows: {e}; retrying next tick");
                    upkeep_failing = true;
                }
                Err(_) => {}
            }
        }
    }
    spill(&mut store, backlog.take_all(), &counts);
}

/// Takes every tick already waiting in the channel; `false` once it is closed.
fn take_waiting(
    records: &mut mpsc::Receiver<Arc<TickRecord>>,
    backlog: &mut Backlog,
    counts: &WriterCounts,
) -> bool {
    loop {
        match records.try_recv() {
            Ok(record) => accept(backlog, record, counts),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

fn accept(backlog: &mut Backlog, record: Arc<TickRecord>, counts: &WriterCounts) {
    let dropped = backlog.push(record);
    if dropped > 0 {
        WriterCounts::bump(&counts.dropped, dropped);
        let total = WriterCounts::get(&counts.dropped);
        // One line per 100 drops: a long outage must not flood the journal.
        if total == dropped || total / 100 != (total - dropped) / 100 {
            tracing::error!(
                "the database is behind by more than {} MiB of ticks: dropped the oldest \
                 ({total} so far)",
                BACKLOG_BYTES >> 20
            );
        }
    }
}

/// Hands the ticks still unwritten to the store to keep on disk.
fn spill<S: Store>(store: &mut S, ticks: Vec<Arc<TickRecord>>, counts: &WriterCounts) {
    if ticks.is_empty() {
        return;
    }
    let total = ticks.len() as u64;
    match store.spill(&ticks) {
        Ok(place) => {
            WriterCounts::bump(&counts.spilled, total);
            tracing::warn!(
                "{total} ticks not yet written are kept in {}; the next start writes them",
                place.display()
            );
        }
        Err(e) => {
            WriterCounts::bump(&counts.unwritten, total);
            tracing::error!("{total} ticks could not be written nor kept: {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use time::OffsetDateTime;

    use super::*;
    use crate::host::identity::HostIdentity;
    use crate::store::StoreError;

    /// Fails its first `failures` writes, refuses ticks whose seq is in `refused`, and can hang
    /// every write (a locked database).
    #[derive(Default)]
    pub(crate) struct FlakyStore {
        pub failures: u32,
        pub refused: Vec<u64>,
        pub hang: bool,
        pub panic_at: Option<u64>,
        pub written: Arc<Mutex<Vec<u64>>>,
        pub spilled: Arc<Mutex<Vec<u64>>>,
    }

    impl Store for FlakyStore {
        async fn write_tick(&mut self, tick: &TickRecord) -> Result<WriteOutcome, StoreError> {
            if self
                .panic_at
                .is_some_and(|at| self.written.lock().map_or(0, |w| w.len()) + 1 >= at as usize)
            {
                panic!("Could not retrieve a value");
            }
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.failures > 0 {
                self.failures -= 1;
                return Err(StoreError::Worker("database away".into()));
            }
            if self.refused.contains(&tick.seq) {
                return Ok(WriteOutcome::Quarantined);
            }
            self.written
                .lock()
                .map_err(|_| StoreError::Worker("poisoned".into()))?
                .push(tick.seq);
            Ok(WriteOutcome::Stored)
        }

        fn spill(&mut self, ticks: &[Arc<TickRecord>]) -> Result<PathBuf, StoreError> {
            self.spilled
                .lock()
                .map_err(|_| StoreError::Worker("poisoned".into()))?
                .extend(ticks.iter().map(|t| t.seq));
            Ok(PathBuf::from("/spill"))
        }

        crate::store::tests::no_reads!();
    }

    pub(crate) fn record(seq: u64) -> Arc<TickRecord> {
        Arc::new(TickRecord {
            seq,
            time: OffsetDateTime::UNIX_EPOCH,
            host: HostIdentity {
                name: "hv1".into(),
                ip: "192.0.2.2".into(),
                mac: None,
                interface: None,
            },
            vm_count: Some(0),
            node: None,
            host_sample: Some(super::super::tests::host_sample()),
            vms: Vec::new(),
            ebpf: None,
        })
    }

    fn start(
        store: FlakyStore,
    ) -> (
        mpsc::Sender<Arc<TickRecord>>,
        watch::Sender<Stop>,
        Arc<WriterCounts>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let counts = Arc::new(WriterCounts::default());
        let writer = tokio::spawn(write_records(
            store,
            rx,
            Retention::default(),
            Arc::clone(&counts),
            stop_rx,
        ));
        (tx, stop_tx, counts, writer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_loses_nothing_and_keeps_order() {
        let written = Arc::default();
        let store = FlakyStore {
            failures: 3,
            written: Arc::clone(&written),
            ..FlakyStore::default()
        };
        let (tx, _stop, counts, writer) = start(store);
        for seq in 1..=5 {
            tx.send(record(seq)).await.expect("send");
        }
        drop(tx);
        writer.await.expect("writer");
        assert_eq!(*written.lock().expect("lock"), [1, 2, 3, 4, 5]);
        assert_eq!(WriterCounts::get(&counts.written), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_tick_is_counted_and_the_next_ones_are_written() {
        let written = Arc::default();
        let store = FlakyStore {
            refused: vec![2],
            written: Arc::clone(&written),
            ..FlakyStore::default()
        };
        let (tx, _stop, counts, writer) = start(store);
        for seq in 1..=4 {
            tx.send(record(seq)).await.expect("send");
        }
        drop(tx);
        writer.await.expect("writer");
        assert_eq!(*written.lock().expect("lock"), [1, 3, 4]);
        assert_eq!(WriterCounts::get(&counts.quarantined), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_store_is_given_up_after_the_flush_budget_and_everything_is_spilled() {
        let spilled = Arc::default();
        let store = FlakyStore {
            hang: true,
            spilled: Arc::clone(&spilled),
            ..FlakyStore::default()
        };
        let (tx, _stop, counts, writer) = start(store);
        for seq in 1..=1000 {
            tx.send(record(seq)).await.expect("send");
        }
        let closed = Instant::now();
        drop(tx);
        writer.await.expect("writer");
        assert_eq!(closed.elapsed(), FLUSH_BUDGET);
        assert_eq!(spilled.lock().expect("lock").len(), 1000);
        assert_eq!(WriterCounts::get(&counts.spilled), 1000);
        assert_eq!(WriterCounts::get(&counts.dropped), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_spills_at_once() {
        let spilled = Arc::default();
        let store = FlakyStore {
            hang: true,
            spilled: Arc::clone(&spilled),
            ..FlakyStore::default()
        };
        let (tx, stop, _counts, writer) = start(store);
        for seq in 1..=3 {
            tx.send(record(seq)).await.expect("send");
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = Instant::now();
        stop.send_replace(Stop::Now);
        writer.await.expect("writer");
        assert!(asked.elapsed() < Duration::from_millis(10));
        assert_eq!(*spilled.lock().expect("lock"), [1, 2, 3]);
    }

    #[test]
    fn a_full_backlog_drops_the_oldest() {
        let one = approximate_bytes(&record(1));
        let mut backlog = Backlog::new(one * 3);
        let dropped: u64 = (1..=5).map(|seq| backlog.push(record(seq))).sum();
        assert_eq!(dropped, 2);
        assert_eq!(backlog.front().map(|t| t.seq), Some(3));
        assert_eq!(backlog.take_all().len(), 3);
    }
}
