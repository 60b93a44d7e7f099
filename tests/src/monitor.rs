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

    /// The address a monitor started with `--prometheus 127.0.0.1:0` serves on, as it logs it:
    /// the kernel picks a free port at bind time, so no other process can take it in between.
    pub fn prometheus_address(&self) -> String {
        let line = self
            .wait_for_log("Prometheus metrics on http://", Duration::from_secs(60))
            .expect("the monitor says where it serves");
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned()
    }

    /// Sends `signal` (`kill`'s spelling, e.g. `-TERM`) and returns at once.
    pub fn send(&self, signal: &str) {
        let pid = self.pid().to_string();
        let kill = Command::new("kill").args([signal, &pid]).status();
        assert!(
            kill.is_ok_and(|s| s.success()),
            "cannot signal setmov ({signal})"
        );
    }

    /// Its resident memory now (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the monitor's status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .expect("VmRSS")
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

    /// SIGKILL, as a crash or the OOM killer ends it: no shutdown, no summary. Panics unless it
    /// dies of that signal. Returns what it logged.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL to setmov");
        let status = child.wait().expect("wait for setmov");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "setmov ended otherwise ({status}): {log}"
        );
        log
    }

    /// Sends `signal` (`kill`'s spelling, e.g. `-INT`), then waits as [`Monitor::wait`] does.
    pub fn signal(mut self, signal: &str) -> String {
        self.send(signal);
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

/// What a run logs as it ends:
/// `stopped after N ticks: W written, Q quarantined, K kept for the next start, L lost`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub ticks: u64,
    pub written: u64,
    /// Refused by the database and set aside.
    pub quarantined: u64,
    /// Unwritten at the end, kept on disk for the next start.
    pub kept: u64,
    pub lost: u64,
}

impl RunSummary {
    /// The summary in a run's log; panics when there is none.
    pub fn from_log(log: &str) -> RunSummary {
        let Some((_, rest)) = log
            .lines()
            .find_map(|line| line.split_once("stopped after "))
        else {
            panic!("no `stopped after N ticks: ...` in the log: {log}");
        };
        let words: Vec<&str> = rest
            .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
            .filter(|w| !w.is_empty())
            .collect();
        let count = |name: &str| {
            words
                .windows(2)
                .find(|pair| pair[1] == name)
                .and_then(|pair| pair[0].parse().ok())
                .unwrap_or_else(|| panic!("no count of `{name}` in `stopped after {rest}`"))
        };
        RunSummary {
            ticks: count("ticks"),
            written: count("written"),
            quarantined: count("quarantined"),
            kept: count("kept"),
            lost: count("lost"),
        }
    }
}
