//! Where ticks no store may write are set aside, with why, for an operator to look at: spool
//! files that are not trusted (not a regular file, not a tick, or naming tables or columns this
//! build does not write) and ticks a database refused. Nothing here is ever replayed.
//!
//! The folder sits beside the spool's ([`beside`]), with the same checks (root's or ours,
//! writable by its owner only), and is bounded: past its bound the oldest entries are dropped,
//! counted and logged. Entries are named by the time they were set aside, so the folder lists
//! oldest first.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::private_files;
use super::rows::TickRows;
use super::spool::{SpoolError, io_error, open_private_dir};

/// The quarantine's bound unless told otherwise: set-aside ticks are rare, and a few tens of
/// thousands of them are more than anyone studies, yet little beside the spool's 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// The suffix of the text file beside a file set aside that says why.
const ERROR_SUFFIX: &str = ".error";

/// A tick set aside by [`Quarantine::put_tick`], as its file holds it.
#[derive(Serialize)]
struct QuarantinedTick<'a> {
    error: &'a str,
    quarantined_at: String,
    tick: &'a TickRows,
}

/// One entry: a file and, for [`Quarantine::put_file`], its `.error` sibling.
#[derive(Debug)]
struct Entry {
    paths: Vec<PathBuf>,
    bytes: u64,
}

/// The quarantine folder and what it holds, oldest first.
#[derive(Debug)]
pub struct Quarantine {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
    added: u64,
    dropped: u64,
    /// Tells apart entries set aside within one millisecond.
    sequence: u64,
}

impl Quarantine {
    /// Opens (creating 0700) the quarantine folder `dir`; bounded by `max_bytes` (oldest files
    /// dropped, counted, logged).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Quarantine, SpoolError> {
        open_private_dir("spool quarantine", dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let (path, name) = (entry.path(), entry.file_name());
            let meta = entry.metadata().map_err(io_error(&path))?;
            // Left by an interrupted write.
            if private_files::is_temporary(&name)
                && !meta.is_dir()
                && fs::remove_file(&path).is_ok()
            {
                continue;
            }
            found.push((path, meta.len()));
        }
        found.sort();
        let mut entries: VecDeque<Entry> = VecDeque::new();
        for (path, bytes) in found {
            let is_error_of_last = entries.back().is_some_and(|last: &Entry| {
                last.paths.first().is_some_and(|first| {
                    path.as_os_str().to_string_lossy()
                        == format!("{}{ERROR_SUFFIX}", first.display())
                })
            });
            match entries.back_mut() {
                Some(last) if is_error_of_last => {
                    last.paths.push(path);
                    last.bytes += bytes;
                }
                _ => entries.push_back(Entry {
                    paths: vec![path],
                    bytes,
                }),
            }
        }
        let bytes = entries.iter().map(|e| e.bytes).sum();
        Ok(Quarantine {
            dir: dir.to_owned(),
            max_bytes,
            entries,
            bytes,
            added: 0,
            dropped: 0,
            sequence: 0,
        })
    }

    /// Sets aside a tick a store refused, with why: one JSON file {"error": ...,
    /// "quarantined_at": ..., "tick": TickRows}, 0600, created O_EXCL|O_NOFOLLOW, synced,
    /// renamed, dir fsynced.
    pub fn put_tick(&mut self, rows: &TickRows, error: &str) -> Result<PathBuf, SpoolError> {
        let now = OffsetDateTime::now_utc();
        let name = self.fresh_name(now, &format!("tick-{}.json", rows.seq));
        let path = self.dir.join(&name);
        let text = serde_json::to_vec_pretty(&QuarantinedTick {
            error,
            quarantined_at: super::utc_millis(now, 'T', "Z"),
            tick: rows,
        })
        .map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        private_files::write_atomically(&self.dir, &name, &text).map_err(io_error(&path))?;
        self.count_in(Entry {
            paths: vec![path.clone()],
            bytes: text.len() as u64,
        })?;
        Ok(path)
    }

    /// Moves an untrusted spool file here (rename within the same file system when possible,
    /// else copy+remove), with its error in a sibling `.error` text file.
    pub fn put_file(&mut self, file: &Path, error: &str) -> Result<PathBuf, SpoolError> {
        let original = file
            .file_name()
            .unwrap_or(OsStr::new("file"))
            .to_string_lossy();
        let name = self.fresh_name(OffsetDateTime::now_utc(), &original);
        let path = self.dir.join(&name);
        let bytes = move_file(file, &path)?;
        private_files::sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        if let Some(from) = file.parent() {
            // The file must not come back to the spool after a crash.
            private_files::sync_dir(from).map_err(io_error(from))?;
        }
        let why = format!("{}: {error}\n", file.display());
        let error_file = private_files::write_atomically(
            &self.dir,
            &format!("{name}{ERROR_SUFFIX}"),
            why.as_bytes(),
        )
        .map_err(io_error(&self.dir))?;
        self.count_in(Entry {
            paths: vec![path.clone(), error_file],
            bytes: bytes + why.len() as u64,
        })?;
        Ok(path)
    }

    /// Files set aside since opened.
    pub fn added(&self) -> u64 {
        self.added
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `20261130T060000.123Z-<pid>-<n>-<what>`: names list in the order entries came.
    fn fresh_name(&mut self, now: OffsetDateTime, what: &str) -> String {
        self.sequence += 1;
        let time: String = super::utc_millis(now, 'T', "Z")
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        format!("{time}-{}-{}-{what}", std::process::id(), self.sequence)
    }

    /// Counts `entry` in, then drops the oldest entries past the bound (never the newest).
    fn count_in(&mut self, entry: Entry) -> Result<(), SpoolError> {
        self.bytes += entry.bytes;
        self.entries.push_back(entry);
        self.added += 1;
        let mut removed = false;
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            for path in &oldest.paths {
                match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(path)(e)),
                }
            }
            removed = true;
            self.bytes -= oldest.bytes;
            self.dropped += 1;
            tracing::error!(
                "spool quarantine {} is full ({} bytes allowed): dropped the oldest entry {} \
                 ({} so far)",
                self.dir.display(),
                self.max_bytes,
                oldest
                    .paths
                    .first()
                    .and_then(|p| p.file_name())
                    .unwrap_or_default()
                    .to_string_lossy(),
                self.dropped
            );
        }
        if removed {
            private_files::sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        }
        Ok(())
    }
}

/// Where the quarantine of a spool directory lives: its sibling `<spool dir name>.quarantine`.
pub fn beside(spool_dir: &Path) -> PathBuf {
    match spool_dir.file_name() {
        Some(name) => {
            let mut sibling = name.to_owned();
            sibling.push(".quarantine");
            spool_dir.with_file_name(sibling)
        }
        None => spool_dir.join("quarantine"),
    }
}

/// Moves `from` to `to` (a new name), by rename, or across file systems by copy and removal;
/// returns the bytes it takes. A link is moved as a link, never followed.
fn move_file(from: &Path, to: &Path) -> Result<u64, SpoolError> {
    let meta = fs::symlink_metadata(from).map_err(io_error(from))?;
    match fs::rename(from, to) {
        Ok(()) => return Ok(meta.len()),
        Err(e) if e.kind() != std::io::ErrorKind::CrossesDevices => {
            return Err(io_error(from)(e));
        }
        Err(_) => {}
    }
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(from).map_err(io_error(from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io_error(to))?;
    } else {
        let bytes = private_files::read_regular_file(from).map_err(io_error(from))?;
        let (Some(dir), Some(name)) = (to.parent(), to.file_name()) else {
            return Err(io_error(to)(std::io::ErrorKind::InvalidInput.into()));
        };
        private_files::write_atomically(dir, &name.to_string_lossy(), &bytes)
            .map_err(io_error(to))?;
    }
    fs::remove_file(from).map_err(io_error(from))?;
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;
    use crate::store::rows::HostRow;

    fn rows(seq: u64) -> TickRows {
        TickRows {
            seq,
            time: "2026-11-30 06:00:00.000".to_owned(),
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

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn it_lives_beside_the_spool() {
        assert_eq!(
            beside(Path::new("/var/lib/setmov/spool/db-3306-fleet")),
            Path::new("/var/lib/setmov/spool/db-3306-fleet.quarantine")
        );
        assert_eq!(
            beside(Path::new("/srv/spool/")),
            Path::new("/srv/spool.quarantine")
        );
    }

    #[test]
    fn a_refused_tick_is_kept_with_why_privately() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("q");
        let mut quarantine = Quarantine::open(&dir, DEFAULT_MAX_BYTES).expect("open");
        assert_eq!(
            fs::metadata(&dir).expect("dir").permissions().mode() & 0o777,
            private_files::DIR_MODE
        );
        let path = quarantine
            .put_tick(&rows(42), "Data too long for column 'name'")
            .expect("put");
        assert_eq!(quarantine.added(), 1);
        let meta = fs::symlink_metadata(&path).expect("file");
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, private_files::FILE_MODE);
        let kept: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
        assert_eq!(kept["error"], "Data too long for column 'name'");
        assert!(
            kept["quarantined_at"]
                .as_str()
                .expect("time")
                .ends_with('Z')
        );
        let tick: TickRows = serde_json::from_value(kept["tick"].clone()).expect("a tick");
        assert_eq!(tick, rows(42));
        assert_eq!(names(&dir).len(), 1, "no temporary file left");
    }

    #[test]
    fn a_spool_file_is_moved_with_its_error_beside_it() {
        let top = tempfile::tempdir().expect("tempdir");
        let spool = top.path().join("spool");
        private_files::create_dir_all(&spool).expect("spool");
        let file = spool.join("20261130T050000.000-00000000000000000001.json");
        fs::write(&file, b"{ not json").expect("file");
        let mut quarantine = Quarantine::open(&beside(&spool), DEFAULT_MAX_BYTES).expect("open");
        let moved = quarantine.put_file(&file, "not a tick").expect("put");
        assert!(!file.exists());
        assert_eq!(fs::read(&moved).expect("moved"), b"{ not json");
        let error = fs::read_to_string(format!("{}{ERROR_SUFFIX}", moved.display())).expect("why");
        assert_eq!(error, format!("{}: not a tick\n", file.display()));
        assert_eq!(names(quarantine.dir()).len(), 2);
    }

    #[test]
    fn a_file_on_another_file_system_is_copied_and_removed() {
        let here = tempfile::tempdir().expect("tempdir");
        let Ok(there) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("SKIP: no /dev/shm to move a file across file systems");
            return;
        };
        let dev = |p: &Path| fs::metadata(p).expect("metadata").dev();
        if dev(here.path()) == dev(there.path()) {
            eprintln!("SKIP: /dev/shm is on the file system of the temporary folder");
            return;
        }
        let file = there.path().join("a.json");
        fs::write(&file, b"{}").expect("file");
        let link = there.path().join("b.json");
        std::os::unix::fs::symlink("/etc/hostname", &link).expect("link");
        let mut quarantine = Quarantine::open(&here.path().join("q"), 1 << 20).expect("open");
        let moved = quarantine.put_file(&file, "why").expect("copied");
        assert_eq!(fs::read(&moved).expect("copy"), b"{}");
        assert!(!file.exists());
        let moved = quarantine.put_file(&link, "a link").expect("link copied");
        assert_eq!(
            fs::read_link(&moved).expect("a link"),
            Path::new("/etc/hostname")
        );
        assert!(fs::symlink_metadata(&link).is_err());
    }

    #[test]
    fn past_its_bound_the_oldest_entries_go_and_reopening_counts_the_rest() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("q");
        let one = {
            let mut probe = Quarantine::open(&top.path().join("probe"), u64::MAX).expect("open");
            let path = probe.put_tick(&rows(1), "e").expect("put");
            fs::metadata(path).expect("size").len()
        };
        let mut quarantine = Quarantine::open(&dir, 2 * one + one / 2).expect("open");
        for seq in 1..=4 {
            quarantine.put_tick(&rows(seq), "e").expect("put");
        }
        assert_eq!((quarantine.added(), quarantine.dropped), (4, 2));
        let left = names(&dir);
        assert!(
            left.len() == 2 && left[0].ends_with("tick-3.json") && left[1].ends_with("tick-4.json"),
            "{left:?}"
        );
        // A file and its `.error` sibling are one entry, dropped together.
        fs::write(dir.join(".x.json.tmp"), b"{").expect("stale");
        fs::write(top.path().join("x.json"), b"{}").expect("file");
        quarantine
            .put_file(&top.path().join("x.json"), "why")
            .expect("put");
        drop(quarantine);
        let reopened = Quarantine::open(&dir, u64::MAX).expect("reopen");
        assert_eq!(reopened.entries.len(), 3, "{:?}", reopened.entries);
        assert_eq!(reopened.entries.back().expect("entry").paths.len(), 2);
        assert!(
            !dir.join(".x.json.tmp").exists(),
            "a stale temporary file is removed"
        );
    }

    #[test]
    fn a_folder_others_may_write_into_is_refused() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("q");
        private_files::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).expect("chmod");
        let err = Quarantine::open(&dir, 1 << 20).expect_err("group-writable");
        assert_eq!(
            err.to_string(),
            format!(
                "spool quarantine {}: writable by others (mode 0775); chown root and chmod 700 it",
                dir.display()
            )
        );
    }
}
