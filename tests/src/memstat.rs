//! A guest's memory as libvirt and the host tell it, read by the tests beside the monitor:
//! `virsh dommemstat` (the guest's balloon report and qemu's RSS) and the qemu process's VmRSS,
//! polled through a run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::guests::Guest;

/// `virsh dommemstat NAME` as field → KiB.
pub fn dommemstat(name: &str) -> BTreeMap<String, u64> {
    crate::guests::virsh(&["dommemstat", name])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// One reading of the test's references: `virsh dommemstat` (KiB) and the qemu process's
/// VmRSS (KiB), taken between the instants `from` and `to` (stored-time syntax).
pub struct MemPoll {
    pub from: String,
    pub to: String,
    pub stat: BTreeMap<String, u64>,
    pub vm_rss_kib: u64,
}

impl MemPoll {
    /// dommemstat's `key`, if the reading has it.
    pub fn field(&self, key: &str) -> Option<u64> {
        self.stat.get(key).copied()
    }
}

/// Reads the references every 200 ms in a thread, from `start` to `stop`.
pub struct MemPoller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<MemPoll>>,
}

impl MemPoller {
    pub fn start(guest: &Guest) -> MemPoller {
        let (name, pid) = (guest.name().to_owned(), guest.qemu_pid().expect("qemu pid"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut polls = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let from = crate::stored::now();
                let stat = dommemstat(&name);
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .expect("the qemu process's status");
                let vm_rss_kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .expect("VmRSS");
                polls.push(MemPoll {
                    from,
                    to: crate::stored::now(),
                    stat,
                    vm_rss_kib,
                });
                std::thread::sleep(Duration::from_millis(200));
            }
            polls
        });
        MemPoller { stop, thread }
    }

    pub fn stop(self) -> Vec<MemPoll> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("poller")
    }
}
