//! A durable local spool of ticks that could not reach the database: one JSON file per tick,
//! named by the tick's time and sequence number so that the directory lists in tick order, even
//! across restarts of the monitor. Files are written to a temporary name, synced and renamed,
//! so a crash leaves either a whole tick or none. The folder and files are private (0700,
//! 0600) when the spool creates them.
//!
//! The spool is bounded: past `max_bytes` the oldest ticks are dropped, and each drop is
//! logged with the tick's time.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::private_files;
use super::rows::TickRows;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool file {path} is not a tick: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The spool directory and what it holds, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    /// Ticks dropped because the spool was full, since it was opened.
    dropped: u64,
}

const EXTENSION: &str = "json";

impl Spool {
    /// Opens (creating) the spool in `dir`; the ticks already there are kept, in order.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        private_files::create_dir_all(dir).map_err(io_error(dir))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == EXTENSION) {
                let size = entry.metadata().map_err(io_error(&path))?.len();
                files.push((path, size));
            }
        }
        files.sort();
        let bytes = files.iter().map(|(_, size)| size).sum();
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            files: files.into(),
            bytes,
            dropped: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ticks waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Ticks dropped because the spool was full since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Adds a tick at the end, durably; drops the oldest ticks if it grows past its bound.
    pub fn push(&mut self, rows: &TickRows) -> Result<(), SpoolError> {
        let name = spool_file_name(&rows.time, rows.seq);
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let text = serde_json::to_vec(rows).map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut file = private_files::create_file(&temporary).map_err(io_error(&temporary))?;
        file.write_all(&text).map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
        fs::rename(&temporary, &path).map_err(io_error(&path))?;
        let size = text.len() as u64;
        // A tick spooled twice (the same time and sequence) replaces its file.
        if let Some(existing) = self.files.iter().position(|(p, _)| *p == path)
            && let Some((_, old)) = self.files.remove(existing)
        {
            self.bytes -= old;
        }
        self.files.push_back((path, size));
        self.bytes += size;
        while self.bytes > self.max_bytes && self.files.len() > 1 {
            if let Some((oldest, size)) = self.files.pop_front() {
                fs::remove_file(&oldest).map_err(io_error(&oldest))?;
                self.bytes -= size;
                self.dropped += 1;
                tracing::error!(
                    "spool {} is full ({} bytes allowed): dropped the oldest tick {} ({} so far)",
                    self.dir.display(),
                    self.max_bytes,
                    oldest.file_stem().unwrap_or_default().to_string_lossy(),
                    self.dropped
                );
            }
        }
        Ok(())
    }

    /// The oldest tick, read from its file.
    pub fn front(&self) -> Option<Result<TickRows, SpoolError>> {
        let (path, _) = self.files.front()?;
        Some(read_tick(path))
    }

    /// Removes the oldest tick (once it is in the database, or unreadable and set aside).
    pub fn pop_front(&mut self) -> Result<(), SpoolError> {
        if let Some((path, size)) = self.files.pop_front() {
            self.bytes -= size;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Ok(())
    }
}

fn read_tick(path: &Path) -> Result<TickRows, SpoolError> {
    let text = fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&text).map_err(|e| SpoolError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `2026-11-30 06:00:00.123` and seq 42 → `20261130T060000.123-00000000000000000042.json`:
/// names sort as the ticks' times, then sequence numbers.
fn spool_file_name(time: &str, seq: u64) -> String {
    let compact: String = time
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (date_time, millis) = compact.split_once('.').unwrap_or((&compact, "000"));
    let (date, clock) = date_time.split_at(date_time.len().min(8));
    format!("{date}T{clock}.{millis:0<3}-{seq:020}.{EXTENSION}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::HostRow;

    fn rows(time: &str, seq: u64) -> TickRows {
        TickRows {
            seq,
            time: time.to_owned(),
            host: HostRow {
                host_ip: "192.0.2.2".into(),
                host_name: "hv1".into(),
                mac: None,
                vmc: Some(0),
                cpus: None,
                memory_bytes: None,
            },
            vms: Vec::new(),
            running: Vec::new(),
            tables: Vec::new(),
        }
    }

    #[test]
    fn names_sort_by_time_then_sequence() {
        assert_eq!(
            spool_file_name("2026-11-30 06:00:00.123", 42),
            "20261130T060000.123-00000000000000000042.json"
        );
        let mut names = [
            spool_file_name("2026-11-30 06:00:10.000", 1),
            spool_file_name("2026-11-30 06:00:09.500", 900),
            spool_file_name("2026-11-30 06:00:09.500", 12),
        ];
        names.sort();
        assert!(names[0].ends_with("12.json") && names[2].contains("T060010"));
    }

    #[test]
    fn ticks_survive_reopening_in_order_and_leave_once_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for (seq, time) in [
            (2, "2026-11-30 06:00:02.000"),
            (1, "2026-11-30 06:00:01.000"),
        ] {
            spool.push(&rows(time, seq)).expect("push");
        }
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.len(), 2);
        let first = spool.front().expect("a tick").expect("readable");
        assert_eq!(first.seq, 1, "oldest first, whatever the order of pushing");
        spool.pop_front().expect("pop");
        assert_eq!(spool.front().expect("a tick").expect("readable").seq, 2);
        spool.pop_front().expect("pop");
        assert!(spool.is_empty() && spool.front().is_none());
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = serde_json::to_vec(&rows("2026-11-30 06:00:01.000", 1))
            .expect("json")
            .len() as u64;
        let mut spool = Spool::open(dir.path(), one * 2).expect("open");
        for seq in 1..=3 {
            spool
                .push(&rows(&format!("2026-11-30 06:00:0{seq}.000"), seq))
                .expect("push");
        }
        assert_eq!((spool.len(), spool.dropped()), (2, 1));
        assert_eq!(spool.front().expect("a tick").expect("readable").seq, 2);
    }

    #[test]
    fn a_damaged_file_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("20261130T060000.000-1.json"), b"{ not json").expect("write");
        let spool = Spool::open(dir.path(), 1 << 20).expect("open");
        let err = spool.front().expect("a file").expect_err("corrupt");
        assert!(err.to_string().contains("is not a tick"), "{err}");
    }
}
