//! `setmov run` in the background, as an operator runs it, stopped with SIGINT.

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
    pub fn stop(mut self) -> String {
        let child = self.child.as_ref().expect("running");
        let pid = child.id().to_string();
        let kill = Command::new("kill").args(["-INT", &pid]).status();
        assert!(kill.is_ok_and(|s| s.success()), "cannot signal setmov");
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
