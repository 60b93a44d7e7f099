//! Least privilege after start-up. Once `setmov run` has attached its eBPF programs, connected
//! to libvirt, opened its store and bound its exporter, every thread gives up every capability
//! outside [`KEPT`] (effective, permitted, inheritable, bounding and ambient sets) and sets
//! no_new_privs. The monitor stays uid 0, so the files it owns stay its own. What it does after
//! start needs no capability on Linux 6.18 (README, "Privileges"): /proc of the host and
//! /proc/<pid> directories are world-readable, VM figures come over libvirt's read-only socket
//! (mode 0777), and the eBPF maps and programs are read through file descriptors it holds,
//! which the kernel checks at open only.

mod set;
mod thread;

use std::path::Path;
use std::time::{Duration, Instant};

pub use set::{CapabilitySet, ThreadPrivileges};

/// What the monitor keeps after start-up: nothing.
pub const KEPT: CapabilitySet = CapabilitySet::EMPTY;

/// How long the other threads get to run the drop's signal handler.
const THREADS_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no capability lines the monitor can read")]
    Unparsable { path: String },
    #[error("the monitor runs without capabilities to give up ({0})")]
    Unprivileged(ThreadPrivileges),
    #[error("cannot give up the capabilities: {0}")]
    Drop(String),
    #[error("threads {tids:?} still hold capabilities after {THREADS_DEADLINE:?}")]
    ThreadsLeft { tids: Vec<i32> },
}

/// Drops every capability outside [`KEPT`] in every thread of the process; returns what the
/// threads hold now and how many there were.
pub fn drop_capabilities() -> Result<(ThreadPrivileges, usize), PrivilegeError> {
    let before = read_privileges(Path::new("/proc/thread-self/status"))?;
    let keep = KEPT.intersection(before.permitted);
    // Without CAP_SETPCAP the bounding set cannot shrink (a unit that gives only what start-up
    // needs): no_new_privs then keeps an execve from gaining what is left there.
    let bounding = before.effective.contains(set::CAP_SETPCAP);
    if before.permitted == keep && before.ambient.is_empty() && !bounding {
        return Err(PrivilegeError::Unprivileged(before));
    }
    let plan = thread::Plan {
        keep,
        last_cap: last_cap()?,
        bounding,
    };
    thread::drop_in_calling_thread(plan)
        .map_err(|failure| PrivilegeError::Drop(failure.to_string()))?;
    let target = read_privileges(Path::new("/proc/thread-self/status"))?;
    thread::install_handler(plan)
        .map_err(|e| PrivilegeError::Drop(format!("cannot install the signal handler: {e}")))?;
    let threads = drop_in_other_threads(&target);
    // Whatever came of it, no later signal may run the handler.
    let removed = thread::remove_handler();
    let threads = threads?;
    if let Err(e) = removed {
        tracing::warn!("cannot remove the capability drop's signal handler: {e}");
    }
    Ok((target, threads))
}

/// Signals every other thread until each holds `target`, as the calling thread does. Threads
/// started meanwhile by a thread that still held its capabilities are caught on a later round.
/// Returns the number of threads, the calling one included.
fn drop_in_other_threads(target: &ThreadPrivileges) -> Result<usize, PrivilegeError> {
    let own = thread::own_tid();
    let deadline = Instant::now() + THREADS_DEADLINE;
    let mut signalled = Vec::new();
    loop {
        let tids = thread_ids()?;
        let left: Vec<i32> = tids
            .iter()
            .copied()
            .filter(|&tid| tid != own)
            .filter(|&tid| {
                // A thread gone since the listing holds nothing.
                let path = format!("/proc/self/task/{tid}/status");
                read_privileges(Path::new(&path)).is_ok_and(|held| held != *target)
            })
            .collect();
        if let Some(failure) = thread::handler_failure() {
            return Err(PrivilegeError::Drop(failure.to_string()));
        }
        if left.is_empty() {
            return Ok(tids.len());
        }
        if Instant::now() >= deadline {
            return Err(PrivilegeError::ThreadsLeft { tids: left });
        }
        for tid in left {
            if signalled.contains(&tid) {
                continue;
            }
            thread::signal_thread(tid)
                .map_err(|e| PrivilegeError::Drop(format!("cannot signal thread {tid}: {e}")))?;
            signalled.push(tid);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The ids of this process's threads.
fn thread_ids() -> Result<Vec<i32>, PrivilegeError> {
    let path = "/proc/self/task";
    let read_error = |source| PrivilegeError::Read {
        path: path.to_owned(),
        source,
    };
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// The highest capability number this kernel knows.
fn last_cap() -> Result<u32, PrivilegeError> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.trim().parse().map_err(|_| PrivilegeError::Unparsable {
        path: path.to_owned(),
    })
}

fn read_privileges(path: &Path) -> Result<ThreadPrivileges, PrivilegeError> {
    let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    ThreadPrivileges::parse(&text).ok_or_else(|| PrivilegeError::Unparsable {
        path: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a thread of its own (capabilities are per thread, so the test's other threads keep
    /// theirs): the drop leaves exactly what it keeps, no ambient set and no_new_privs.
    #[test]
    fn a_thread_drops_to_what_it_keeps() {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        let before = ThreadPrivileges::parse(&status).expect("parses");
        if !before.effective.contains(set::CAP_SETPCAP) {
            eprintln!("SKIP: needs CAP_SETPCAP (run as root)");
            return;
        }
        // CAP_SYS_PTRACE kept, to see that a kept capability stays in every set but inheritable.
        let keep = CapabilitySet(1 << 19);
        let plan = thread::Plan {
            keep,
            last_cap: last_cap().expect("cap_last_cap"),
            bounding: true,
        };
        let after = std::thread::spawn(move || {
            thread::drop_in_calling_thread(plan).expect("drops");
            let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
            ThreadPrivileges::parse(&status).expect("parses")
        })
        .join()
        .expect("thread");
        assert_eq!(
            after,
            ThreadPrivileges {
                inheritable: CapabilitySet::EMPTY,
                permitted: keep,
                effective: keep,
                bounding: keep,
                ambient: CapabilitySet::EMPTY,
                no_new_privs: true,
            }
        );
        // The test's own thread is untouched.
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        assert_eq!(ThreadPrivileges::parse(&status), Some(before));
    }
}
