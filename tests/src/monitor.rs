//! `setmov run` in the background, as an operator runs it, stopped with SIGINT or SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running monitor; killed on drop if the test ends before `stop`.
pub struct Monitor {
    child: Option<Child>,
}

impl Monitor {
    /// Starts `binary run --quiet --database DB ARGS...`.
    pub fn start(binary: &str, db: &Path, args: &[&str]) -> Monitor {
        let child = Command::new(binary)
            .args(["run", "--quiet", "--database"])
            .arg(db)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("setmov starts");
        Monitor { child: Some(child) }
    }

    /// Waits until it stops by itself (`--count`); panics unless it exits 0. Returns what it
    /// logged.
    pub fn wait(mut self) -> String {
        let child = self.child.take().expect("running");
        let out = child.wait_with_output().expect("wait for setmov");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "setmov failed: {log}");
        log
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
    fn signal(self, signal: &str) -> String {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let kill = Command::new("kill").args([signal, &pid]).status();
        assert!(
            kill.is_ok_and(|s| s.success()),
            "cannot signal setmov ({signal})"
        );
        self.wait()
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
