//! `setmov run` in the background, as an operator runs it, stopped with SIGINT.

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
    pub fn stop(mut self) -> String {
        let child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let kill = Command::new("kill").args(["-INT", &pid]).status();
        assert!(kill.is_ok_and(|s| s.success()), "cannot signal setmov");
        let out = child.wait_with_output().expect("wait for setmov");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "setmov failed: {log}");
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
