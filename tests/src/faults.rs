//! What the fault tests (tests/faults_*.rs) inflict and read back: a small file system of
//! their own to fill up, a SQLite database read without writing to it, and the figures each
//! fault test prints (nextest shows them: see .config/nextest.toml).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// A tmpfs of a few MiB mounted on a fresh folder, unmounted on drop.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB; `Err(reason)` when it cannot (not root, no mount
    /// permission): callers pass it to `crate::skip`.
    pub fn mount(mib: u32) -> Result<SmallFs, String> {
        if !crate::is_root() {
            return Err("mounting a small file system needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
            .arg("setmov-faults")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs on {}: {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallFs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` in 64 KiB blocks until the file system has no room left (ENOSPC);
    /// returns its path and how many bytes it took. Panics on any other error.
    pub fn fill(&self, name: &str) -> (PathBuf, u64) {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let block = vec![0x5a_u8; 64 << 10];
        let mut bytes = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
                Err(e) => panic!("writing {}: {e}", path.display()),
            }
        }
        (path, bytes)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.path()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Something still has a file open there (a monitor killed late): detach it.
            let lazy = Command::new("umount").arg("-l").arg(self.path()).status();
            if !lazy.is_ok_and(|s| s.success()) {
                eprintln!("cannot unmount {}", self.path().display());
            }
        }
    }
}

/// The monitor's SQLite database opened read-only: reading it after a crash recovers the
/// WAL's committed transactions without changing the files.
pub fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("cannot open {} read-only: {e}", db.display()))
}

/// The host ticks stored (T2 rows); 0 before the monitor has made the database.
pub fn stored_ticks(db: &Path) -> u64 {
    if !db.exists() {
        return 0;
    }
    read_only(db)
        .query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0))
        // Until the monitor has made its tables there is nothing to count.
        .unwrap_or(0)
}

/// `PRAGMA integrity_check`'s answer, one line per problem ("ok" when there is none).
pub fn integrity_check(db: &Path) -> String {
    let conn = read_only(db);
    let mut stmt = conn.prepare("PRAGMA integrity_check").expect("pragma");
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("integrity_check")
        .collect::<Result<_, _>>()
        .expect("integrity_check rows");
    lines.join("\n")
}

/// The largest gap between two consecutive stored host ticks, in seconds.
pub fn largest_gap_s(db: &Path) -> f64 {
    let conn = read_only(db);
    let mut stmt = conn
        .prepare("SELECT time FROM host_usage ORDER BY time")
        .expect("sql");
    let times: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("times")
        .collect::<Result<_, _>>()
        .expect("rows");
    times
        .windows(2)
        .map(|w| crate::stored::seconds_between(&w[0], &w[1]))
        .fold(0.0, f64::max)
}

/// What a fault test prints: the ticks the run took, stored and lost, the largest gap
/// between stored ticks and how long the product took to recover once the fault ended.
#[derive(Debug)]
pub struct FaultFigures<'a> {
    pub fault: &'a str,
    pub taken: u64,
    pub stored: u64,
    pub lost: u64,
    pub largest_gap_s: f64,
    pub recovery: Option<Duration>,
}

impl FaultFigures<'_> {
    /// Prints the figures on one line (stderr: nextest shows it).
    pub fn print(&self) {
        let recovery = self
            .recovery
            .map_or("-".to_owned(), |r| format!("{:.2} s", r.as_secs_f64()));
        eprintln!(
            "FAULT {}: {} ticks taken, {} stored, {} lost, largest gap {:.3} s, recovery {recovery}",
            self.fault, self.taken, self.stored, self.lost, self.largest_gap_s
        );
    }
}

/// The lines of a monitor's log that contain any of `needles`, without colours: what a fault
/// test prints as the product's own account of the fault.
pub fn log_lines(log: &str, needles: &[&str]) -> String {
    log.lines()
        .filter(|line| needles.iter().any(|n| line.contains(n)))
        .map(without_colours)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Up to and including the sequence's final letter.
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The text of every file in a quarantine folder; none when it was never created.
pub fn quarantined_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}
