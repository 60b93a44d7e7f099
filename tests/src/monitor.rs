//! `setmov run` in the background, as an operator runs it, stopped with SIGINT or SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running monitor; killed on drop if the test ends before `stop`. What it logs is collected
/// as it comes, so a test can wait for a line (the address it serves on, say).
pub struct Monitor {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts `binary run --quiet --database DB ARGS...`.
    pub fn start(binary: &str, db: &Path, args: &[&str]) -> Monitor {
        let mut child = crate::setmov_command(binary)
            .args(["run", "--quiet", "--database"])
            .arg(db)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("setmov starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let collected = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = collected.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        Monitor {
            child: Some(child),
            log,
            reader: Some(reader),
        }
    }

    /// Starts `binary run` storing into `db` every `interval`, without its eBPF probes: the
    /// figures of /proc and libvirt only.
    pub fn without_ebpf(binary: &str, db: &Path, interval: &str) -> Monitor {
        Monitor::start(binary, db, &["--no-ebpf", "--interval", interval])
    }

    /// The process ID of the running monitor (to stop and continue it, say).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The first line logged so far, or within `timeout`, that contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            let found = self
                .log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            if found.is_some() || Instant::now() >= until {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until it stops by itself (`--count`); panics unless it exits 0. Returns what it
    /// logged.
    pub fn wait(mut self) -> String {
        self.finish()
    }

    /// SIGINT, then waits; panics unless it exits 0. Returns what it logged.
    pub fn stop(self) -> String {
        self.signal("-INT")
    }

    /// SIGTERM (what systemd sends), then waits; panics unless it exits 0. Returns what it
    /// logged.
    pub fn terminate(self) -> String {
        self.signal("-TERM")
    }

    /// Sends `signal` (`kill`'s spelling, e.g. `-INT`), then waits as [`Monitor::wait`] does.
    fn signal(mut self, signal: &str) -> String {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let kill = Command::new("kill").args([signal, &pid]).status();
        assert!(
            kill.is_ok_and(|s| s.success()),
            "cannot signal setmov ({signal})"
        );
        self.finish()
    }

    /// Waits for the exit and the end of the log; panics unless it exited 0.
    fn finish(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait for setmov");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(status.success(), "setmov failed ({status}): {log}");
        log
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a run logs as it ends: `stopped after N ticks: W written, L lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    pub ticks: u64,
    pub written: u64,
    pub lost: u64,
}

impl RunSummary {
    /// The summary in a run's log; panics when there is none.
    pub fn from_log(log: &str) -> RunSummary {
        let numbers: Option<Vec<u64>> = log
            .lines()
            .find_map(|line| line.split_once("stopped after "))
            .map(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .filter(|n| !n.is_empty())
                    .map(|n| n.parse().expect("digits"))
                    .collect()
            });
        match numbers.as_deref() {
            Some(&[ticks, written, lost]) => RunSummary {
                ticks,
                written,
                lost,
            },
            _ => panic!("no `stopped after N ticks: W written, L lost` in the log: {log}"),
        }
    }
}
