//! A durable local spool of ticks that could not reach the database: one JSON file per tick,
//! named by the tick's time and sequence number so that the directory lists in tick order, even
//! across restarts of the monitor. Files are written to a new temporary name (never through a
//! link), synced and renamed, and the folder synced, so a crash leaves either a whole tick or
//! none ([`private_files::write_atomically`]). The folder and files are private (0700, 0600).
//!
//! What is read back is not trusted: the folder must be root's (or ours) and writable by its
//! owner only, or the spool is refused; a file that is not a regular file, not a tick, or names
//! a table or column this build does not write is reported, for the store to set aside in its
//! [`Quarantine`](super::quarantine::Quarantine), and never becomes SQL.
//!
//! The spool is bounded: past `max_bytes` the oldest ticks are dropped, and each drop is
//! logged with the tick's time. Files in the folder that are not ticks count against the
//! bound too; temporary files left by an interrupted write are removed at opening.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::private_files;
use super::rows::{Rows, TickRows};
use super::tick_schema;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool file {path} is not a tick: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// A file that must not become SQL: a link, not a regular file, or names this build does
    /// not write.
    #[error("spool file {path} is not trusted: {message}")]
    Untrusted { path: PathBuf, message: String },
    /// A folder others could write into: `what` is `spool` or `spool quarantine`.
    #[error("{what} {path}: {problem}")]
    UnsafeDir {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
}

impl SpoolError {
    /// Whether the error is the file's, which no retry changes (rather than the system's).
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            SpoolError::Corrupt { .. } | SpoolError::Untrusted { .. }
        )
    }
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (0700) if missing, and refuses it unless it is a folder that only root or we
/// can write into.
pub(super) fn open_private_dir(what: &'static str, dir: &Path) -> Result<(), SpoolError> {
    private_files::create_dir_all(dir).map_err(io_error(dir))?;
    match private_files::untrusted_dir(dir).map_err(io_error(dir))? {
        None => Ok(()),
        Some(problem) => Err(SpoolError::UnsafeDir {
            what,
            path: dir.to_owned(),
            problem,
        }),
    }
}

/// The spool directory and what it holds, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
    /// Bytes of the folder's files that are no ticks (left alone, but counted).
    other_bytes: u64,
    /// Ticks dropped because the spool was full, since it was opened.
    dropped: u64,
}

const EXTENSION: &str = "json";
/// Names of unexpected files logged at opening, at most.
const OTHERS_LOGGED: usize = 5;

impl Spool {
    /// Opens (creating) the spool in `dir`; the ticks already there are kept, in order.
    /// Refused when `dir` is a link, or others than root and us may write into it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        open_private_dir("spool", dir)?;
        let mut files = Vec::new();
        let (mut stale, mut stale_bytes) = (0u64, 0u64);
        let mut others: Vec<OsString> = Vec::new();
        let mut other_bytes = 0u64;
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            // Of the entry itself: a link is not followed.
            let meta = entry.metadata().map_err(io_error(&path))?;
            let name = entry.file_name();
            if private_files::is_temporary(&name)
                && !meta.is_dir()
                && fs::remove_file(&path).is_ok()
            {
                stale += 1;
                stale_bytes += meta.len();
            } else if path.extension().is_some_and(|e| e == EXTENSION) {
                // Whatever it is: reading it decides (a link or a FIFO is quarantined).
                files.push((path, meta.len()));
            } else {
                other_bytes += meta.len();
                others.push(name);
            }
        }
        if stale > 0 {
            private_files::sync_dir(dir).map_err(io_error(dir))?;
            tracing::warn!(
                "spool {}: removed {stale} temporary files ({stale_bytes} bytes) left by \
                 interrupted writes",
                dir.display()
            );
        }
        if !others.is_empty() {
            others.sort();
            tracing::warn!(
                "spool {}: {} entries that are not ticks ({other_bytes} bytes, counted against \
                 its bound) are left alone: {:?}{}",
                dir.display(),
                others.len(),
                others.iter().take(OTHERS_LOGGED).collect::<Vec<_>>(),
                if others.len() > OTHERS_LOGGED {
                    " …"
                } else {
                    ""
                }
            );
        }
        files.sort();
        let bytes = files.iter().map(|(_, size)| size).sum();
        Ok(Spool {
            dir: dir.to_owned(),
            max_bytes,
            files: files.into(),
            bytes,
            other_bytes,
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
        let text = serde_json::to_vec(rows).map_err(|e| SpoolError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        private_files::write_atomically(&self.dir, &name, &text).map_err(io_error(&path))?;
        let size = text.len() as u64;
        // A tick spooled twice (the same time and sequence) replaces its file.
        if let Some(existing) = self.files.iter().position(|(p, _)| *p == path)
            && let Some((_, old)) = self.files.remove(existing)
        {
            self.bytes -= old;
        }
        self.files.push_back((path, size));
        self.bytes += size;
        let mut removed = false;
        while self.bytes + self.other_bytes > self.max_bytes && self.files.len() > 1 {
            if let Some((oldest, size)) = self.files.pop_front() {
                fs::remove_file(&oldest).map_err(io_error(&oldest))?;
                removed = true;
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
        if removed {
            // Else a crash could bring dropped ticks back, past the bound.
            private_files::sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        }
        Ok(())
    }

    /// The oldest tick, read from its file and checked against the tables this build writes.
    pub fn front(&self) -> Option<Result<TickRows, SpoolError>> {
        let (path, _) = self.files.front()?;
        Some(read_tick(path))
    }

    /// The file of the oldest tick.
    pub fn front_path(&self) -> Option<&Path> {
        self.files.front().map(|(path, _)| path.as_path())
    }

    /// Removes the oldest tick (once it is in the database, or set aside). The folder is not
    /// synced: a tick that comes back after a crash is written again, which changes nothing.
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

    /// Passes over the oldest tick without removing its file (it could not be set aside): the
    /// next opening of the spool meets it again. Its bytes still count.
    pub fn skip_front(&mut self) {
        if let Some((_, size)) = self.files.pop_front() {
            self.bytes -= size;
            self.other_bytes += size;
        }
    }
}

fn read_tick(path: &Path) -> Result<TickRows, SpoolError> {
    let text = private_files::read_regular_file(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            SpoolError::Untrusted {
                path: path.to_owned(),
                message: e.to_string(),
            }
        } else {
            io_error(path)(e)
        }
    })?;
    let mut rows: TickRows = serde_json::from_slice(&text).map_err(|e| SpoolError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    for table in &mut rows.tables {
        log2_latency_rows_to_bounds(table);
    }
    for table in &rows.tables {
        tick_schema::check(table).map_err(|e| SpoolError::Untrusted {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(rows)
}
/// A tick spooled by a build whose `vm_latency_hist` rows named a log2 bucket b (column
/// `bucket`) gets the bounds this build stores instead, as the migration converts stored rows:
/// `low_ns` 2^b (0 for b = 0), `high_ns` 2^(b+1) (NULL for the last log2 bucket, 39). Rows
/// with anything but such a bucket are left as they are, for [`tick_schema::check`] to refuse.
fn log2_latency_rows_to_bounds(table: &mut Rows) {
    use super::rows::Value;
    if table.table != "vm_latency_hist" {
        return;
    }
    let Some(at) = table.columns.iter().position(|c| c == "bucket") else {
        return;
    };
    let bucket = |row: &[Value]| match row.get(at) {
        Some(Value::Int(b)) if (0..=39).contains(b) => Some(*b),
        _ => None,
    };
    if !table.rows.iter().all(|row| bucket(row).is_some()) {
        return;
    }
    table
        .columns
        .splice(at..=at, ["low_ns".to_owned(), "high_ns".to_owned()]);
    for row in &mut table.rows {
        let b = bucket(row).unwrap_or_default();
        let low = Value::Int(if b == 0 { 0 } else { 1 << b });
        let high = if b == 39 {
            Value::Null
        } else {
            Value::Int(1 << (b + 1))
        };
        row.splice(at..=at, [low, high]);
    }
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
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_tick_spooled_with_log2_latency_buckets_gets_their_bounds() {
        use crate::store::rows::Value;
        let old = |bucket: Value| Rows {
            table: "vm_latency_hist".into(),
            columns: ["uuid", "time", "direction", "bucket", "requests"]
                .map(String::from)
                .to_vec(),
            rows: vec![
                vec![
                    "u".into(),
                    "t".into(),
                    "read".into(),
                    Value::Int(0),
                    Value::Int(2),
                ],
                vec!["u".into(), "t".into(), "read".into(), bucket, Value::Int(5)],
            ],
        };
        let mut rows = old(Value::Int(17));
        log2_latency_rows_to_bounds(&mut rows);
        assert_eq!(tick_schema::check(&rows), Ok(()));
        assert_eq!(
            rows.rows[1][3..],
            [Value::Int(131_072), Value::Int(262_144), Value::Int(5)]
        );
        assert_eq!(rows.rows[0][3..5], [Value::Int(0), Value::Int(2)]);
        let mut last = old(Value::Int(39));
        log2_latency_rows_to_bounds(&mut last);
        assert_eq!(last.rows[1][4], Value::Null);
        // Not a log2 bucket: left for the check to refuse.
        let mut bad = old(Value::Text("x".into()));
        log2_latency_rows_to_bounds(&mut bad);
        assert!(tick_schema::check(&bad).is_err());
    }
    use crate::store::rows::{HostRow, Rows, Value};

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

    /// A spool file holding `rows`, written as an outsider could, under an early tick's name.
    fn plant(dir: &Path, rows: &TickRows) -> PathBuf {
        let path = dir.join(spool_file_name("2026-11-30 05:00:00.000", 1));
        fs::write(&path, serde_json::to_vec(rows).expect("json")).expect("write");
        path
    }

    fn crafted(table: &str, columns: &[&str]) -> TickRows {
        let mut tick = rows("2026-11-30 05:00:00.000", 1);
        tick.tables.push(Rows {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: vec![vec![Value::Int(1); columns.len()]],
        });
        tick
    }

    #[test]
    fn sql_in_a_table_or_column_name_is_untrusted_and_the_next_tick_goes_on() {
        for (tick, needle) in [
            (
                crafted("hosts; DROP TABLE hosts; --", &["host_ip"]),
                r#"table "hosts; DROP TABLE hosts; --" is not one a tick writes"#,
            ),
            (
                crafted("host_usage", &["host_ip", "x) VALUES (1); --"]),
                r#"table host_usage: column "x) VALUES (1); --" is not one of its columns"#,
            ),
            (
                crafted("host_usage", &["host_ip", "time", "host_ip"]),
                "table host_usage: column host_ip is named twice",
            ),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let planted = plant(dir.path(), &tick);
            let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
            spool
                .push(&rows("2026-11-30 06:00:01.000", 2))
                .expect("push");
            let err = spool.front().expect("a file").expect_err("untrusted");
            assert!(err.is_bad_file(), "{err}");
            assert_eq!(
                err.to_string(),
                format!("spool file {} is not trusted: {needle}", planted.display())
            );
            assert_eq!(spool.front_path(), Some(planted.as_path()));
            spool.pop_front().expect("set aside");
            assert_eq!(spool.front().expect("a tick").expect("readable").seq, 2);
        }
    }

    #[test]
    fn a_link_at_the_temporary_name_is_not_followed() {
        let top = tempfile::tempdir().expect("tempdir");
        let etc = top.path().join("etc");
        fs::create_dir(&etc).expect("etc");
        let target = etc.join("shadow");
        fs::write(&target, b"root:*:20000::::::\n").expect("target");
        let dir = top.path().join("spool");
        let mut spool = Spool::open(&dir, 1 << 20).expect("open");
        let tick = rows("2026-11-30 06:00:01.000", 7);
        let name = spool_file_name(&tick.time, tick.seq);
        std::os::unix::fs::symlink(&target, dir.join(format!(".{name}.tmp"))).expect("link");
        spool.push(&tick).expect("push");
        assert_eq!(fs::read(&target).expect("target"), b"root:*:20000::::::\n");
        let written = fs::symlink_metadata(dir.join(&name)).expect("tick file");
        assert!(written.is_file(), "{written:?}");
        assert_eq!(
            written.permissions().mode() & 0o777,
            private_files::FILE_MODE
        );
        assert_eq!(spool.front().expect("a tick").expect("readable"), tick);
        // The link was removed, not written through; no temporary file is left.
        assert_eq!(fs::read_dir(&dir).expect("dir").count(), 1);
    }

    #[test]
    fn a_link_or_a_fifo_in_place_of_a_tick_is_untrusted() {
        let top = tempfile::tempdir().expect("tempdir");
        let target = top.path().join("elsewhere.json");
        fs::write(
            &target,
            serde_json::to_vec(&rows("2026-11-30 06:00:01.000", 1)).expect("json"),
        )
        .expect("target");
        let dir = top.path().join("spool");
        private_files::create_dir_all(&dir).expect("dir");
        std::os::unix::fs::symlink(
            &target,
            dir.join(spool_file_name("2026-11-30 05:00:00.000", 1)),
        )
        .expect("link");
        nix::unistd::mkfifo(
            &dir.join(spool_file_name("2026-11-30 05:00:00.000", 2)),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .expect("fifo");
        let mut spool = Spool::open(&dir, 1 << 20).expect("open");
        for what in ["a symbolic link", "not a regular file"] {
            let err = spool.front().expect("a file").expect_err("untrusted");
            assert!(
                err.is_bad_file() && err.to_string().ends_with(what),
                "{err}"
            );
            spool.pop_front().expect("pop");
        }
        assert!(target.exists(), "removing the link leaves its target");
    }

    #[test]
    fn a_folder_others_may_write_into_is_refused() {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("spool");
        private_files::create_dir_all(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Spool::open(&dir, 1 << 20).expect_err("world-writable");
        assert_eq!(
            err.to_string(),
            format!(
                "spool {}: writable by others (mode 0777); chown root and chmod 700 it",
                dir.display()
            )
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o720)).expect("chmod");
        std::os::unix::fs::chown(&dir, Some(1000), None).expect("chown");
        let err = Spool::open(&dir, 1 << 20).expect_err("another owner");
        assert!(
            err.to_string().ends_with(
                "owned by uid 1000, writable by others (mode 0720); chown root and chmod 700 it"
            ),
            "{err}"
        );
        let link = top.path().join("link");
        let real = top.path().join("real");
        private_files::create_dir_all(&real).expect("dir");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        let err = Spool::open(&link, 1 << 20).expect_err("a link");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        Spool::open(&real, 1 << 20).expect("a private folder");
    }

    #[test]
    fn stale_temporary_files_are_removed_and_other_files_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = serde_json::to_vec(&rows("2026-11-30 06:00:01.000", 1))
            .expect("json")
            .len();
        for name in [".a.json.tmp", ".b.json.123-1.tmp"] {
            fs::write(dir.path().join(name), vec![b'x'; 10 * one]).expect("stale");
        }
        fs::write(dir.path().join("notes.txt"), vec![b'x'; one]).expect("other");
        let mut spool = Spool::open(dir.path(), 2 * one as u64).expect("open");
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["notes.txt"],
            "stale temporary files removed, others kept"
        );
        // With notes.txt counted, two ticks are past the bound.
        for seq in 1..=2 {
            spool
                .push(&rows(&format!("2026-11-30 06:00:0{seq}.000"), seq))
                .expect("push");
        }
        assert_eq!((spool.len(), spool.dropped()), (1, 1));
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
