//! What is kept beside the database: the ticks a run could not write before it stopped (the
//! next write writes them first) and the ticks the database refused (quarantined, with why).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SqliteStore;
use super::write::is_refusal;
use crate::store::quarantine::{self, Quarantine};
use crate::store::rows::{TickRows, tick_rows};
use crate::store::spool::Spool;
use crate::store::{StoreError, TickRecord, WriteOutcome, format_time};

/// Most disk the ticks kept at the end of a run may take (the oldest go first).
const KEPT_MAX_BYTES: u64 = 256 << 20;

/// The folders beside the database, opened when first needed: `<db>.kept` holds the ticks a
/// run could not write before it stopped (the next write writes them first), `<db>.quarantine`
/// the ticks the database refused, each with its error.
pub(super) struct KeptTicks {
    kept_dir: PathBuf,
    kept: Option<Spool>,
    /// Whether the folder was looked for: an earlier run's ticks are there when this run
    /// starts or never (a stat per tick is a syscall for nothing).
    looked: bool,
    quarantine_dir: PathBuf,
    quarantine: Option<Quarantine>,
}

impl KeptTicks {
    pub(super) fn new(db: &Path) -> Self {
        let beside = |suffix: &str| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        KeptTicks {
            kept_dir: beside(".kept"),
            kept: None,
            looked: false,
            quarantine_dir: beside(".quarantine"),
            quarantine: None,
        }
    }

    /// The kept ticks, if a run left some (or `create`).
    fn kept(&mut self, create: bool) -> Result<Option<&mut Spool>, StoreError> {
        if self.kept.is_none() && (create || !self.looked && self.kept_dir.exists()) {
            self.kept = Some(Spool::open(&self.kept_dir, KEPT_MAX_BYTES)?);
        }
        self.looked = true;
        Ok(self.kept.as_mut())
    }

    fn quarantine(&mut self) -> Result<&mut Quarantine, StoreError> {
        match &mut self.quarantine {
            Some(q) => Ok(q),
            slot => Ok(slot.insert(Quarantine::open(
                &self.quarantine_dir,
                quarantine::DEFAULT_MAX_BYTES,
            )?)),
        }
    }
}

impl SqliteStore {
    /// Writes one tick (the blocking half of [`Store::write_tick`]): first the ticks an earlier
    /// run kept, then this one. A tick the database refuses is written once more with its T1
    /// and T3 rows (someone may have deleted them), then quarantined.
    pub fn write_tick_blocking(&self, tick: &TickRecord) -> Result<WriteOutcome, StoreError> {
        self.write_kept()?;
        self.write_or_quarantine(&tick_rows(tick, &format_time(tick.time)))
    }

    fn write_or_quarantine(&self, rows: &TickRows) -> Result<WriteOutcome, StoreError> {
        let refusal = match self.write_rows_blocking(rows) {
            Ok(()) => return Ok(WriteOutcome::Stored),
            Err(e) if is_refusal(&e) => e,
            Err(e) => return Err(e),
        };
        self.forget_written()?;
        match self.write_rows_blocking(rows) {
            Ok(()) => {
                tracing::info!(
                    "tick {}: wrote the host and VM rows again ({refusal})",
                    rows.seq
                );
                return Ok(WriteOutcome::Stored);
            }
            Err(e) if is_refusal(&e) => {}
            Err(e) => return Err(e),
        }
        let mut kept = self.kept_lock()?;
        let quarantine = kept.quarantine()?;
        let file = quarantine.put_tick(rows, &refusal.to_string())?;
        tracing::error!(
            "database {} refused tick {} ({refusal}): set aside in {}",
            self.path.display(),
            rows.seq,
            file.display()
        );
        Ok(WriteOutcome::Quarantined)
    }

    /// Writes the ticks an earlier run kept, oldest first; each leaves the folder once stored
    /// or quarantined.
    fn write_kept(&self) -> Result<(), StoreError> {
        let mut written = 0;
        loop {
            // Not held while writing: a quarantine needs it.
            let front = match self.kept_lock()?.kept(false)? {
                Some(spool) => spool.front(),
                None => None,
            };
            let Some(front) = front else {
                break;
            };
            match front {
                Ok(rows) => {
                    self.write_or_quarantine(&rows)?;
                    written += 1;
                }
                // Unreadable or not to be trusted: set aside, never written.
                Err(e) => {
                    let mut kept = self.kept_lock()?;
                    let file = kept
                        .kept(false)?
                        .and_then(|spool| spool.front_path().map(Path::to_owned));
                    if let Some(file) = file {
                        let moved = kept.quarantine()?.put_file(&file, &e.to_string())?;
                        tracing::error!("{e}; set aside, never written, as {}", moved.display());
                    }
                }
            }
            if let Some(spool) = self.kept_lock()?.kept(false)? {
                spool.pop_front()?;
            }
        }
        if written > 0 {
            tracing::info!(
                "wrote {written} ticks kept by an earlier run into {}",
                self.path.display()
            );
        }
        Ok(())
    }

    pub(super) fn spill_blocking(&self, ticks: &[Arc<TickRecord>]) -> Result<PathBuf, StoreError> {
        let mut kept = self.kept_lock()?;
        let dir = kept.kept_dir.clone();
        if let Some(spool) = kept.kept(true)? {
            for tick in ticks {
                spool.push(&tick_rows(tick, &format_time(tick.time)))?;
            }
        }
        Ok(dir)
    }

    fn kept_lock(&self) -> Result<std::sync::MutexGuard<'_, KeptTicks>, StoreError> {
        self.kept
            .lock()
            .map_err(|_| StoreError::Worker("a database call panicked".into()))
    }
}
