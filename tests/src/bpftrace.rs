//! bpftrace as a reference: a script started for the duration of a test window, its output
//! (maps and `printf` lines, `-f json`) collected when it is stopped with SIGINT.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What bpftrace prints once every probe is attached when this variable is set (its own
/// runtime tests use it; "Attaching N probes..." comes before attaching). Version 0.17 prints
/// it on stderr, later versions on stdout: both are read.
const ATTACHED: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";

/// The keys a bpftrace map may hold: far more requests than a test keeps in flight.
/// bpftrace's default, 4096, fills with the requests whose completion is never traced, after
/// which it silently drops new ones.
const MAP_KEYS_MAX: u32 = 32768;

/// Pages per CPU of the buffer bpftrace's `printf` lines go through (default 64, 256 KiB):
/// a script printing one line per block request must not outrun bpftrace's reader while the
/// machine is busy (lost lines fail the test, see [`Bpftrace::finish`]).
const PERF_RB_PAGES: u32 = 1024;

/// How long bpftrace may take to compile and attach; about 1 to 3 s are needed.
const ATTACH_DEADLINE: Duration = Duration::from_secs(60);

/// A running bpftrace; killed and reaped when dropped.
pub struct Bpftrace {
    child: Child,
    messages: mpsc::Receiver<String>,
    output: PathBuf,
}

/// What a script printed: its `printf` lines and its maps (`@name` → JSON value).
#[derive(Debug, Default)]
pub struct Output {
    pub lines: Vec<String>,
    pub maps: serde_json::Map<String, serde_json::Value>,
}

/// Whether bpftrace can be run here.
pub fn installed() -> bool {
    Command::new("bpftrace")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a test of eBPF figures against bpftrace cannot run here, if it cannot (besides the
/// guests, which say for themselves).
pub fn why_unusable() -> Option<&'static str> {
    if !crate::is_root() {
        Some("the eBPF probes and bpftrace need root")
    } else if !installed() {
        Some("bpftrace is not installed")
    } else {
        None
    }
}

impl Bpftrace {
    /// Starts `script` with positional parameters `args` (`$1`...), writing into `dir`, and
    /// returns once every probe is attached.
    pub fn attach(script: &str, args: &[String], dir: &Path) -> Result<Bpftrace, String> {
        let output = dir.join(format!("bpftrace-{}.json", std::process::id()));
        let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
        let child = Command::new("bpftrace")
            .args(["-f", "json", "-o"])
            .arg(&output)
            .args(["-e", script])
            .args(args)
            .env(ATTACHED, "1")
            .env("BPFTRACE_MAP_KEYS_MAX", MAP_KEYS_MAX.to_string())
            .env("BPFTRACE_PERF_RB_PAGES", PERF_RB_PAGES.to_string())
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(|e| e.to_string())?)
            .stderr(writer)
            .spawn()
            .map_err(|e| format!("cannot run bpftrace: {e}"))?;
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut bpftrace = Bpftrace {
            child,
            messages,
            output,
        };
        let deadline = Instant::now() + ATTACH_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match bpftrace.messages.recv_timeout(left) {
                Ok(line) if line.trim() == ATTACHED => return Ok(bpftrace),
                // E.g. "couldn't set RLIMIT_MEMLOCK", which this kernel does not need.
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = bpftrace.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "bpftrace exited ({status}) before attaching: {seen:?}"
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("bpftrace did not attach in time: {seen:?}"));
                }
            }
        }
    }

    /// The ids of the eBPF programs bpftrace loaded.
    pub fn program_ids(&self) -> BTreeSet<u64> {
        crate::bpftool::program_ids(self.child.id())
    }

    /// Stops bpftrace (SIGINT: it prints its maps and exits) and returns what it printed.
    /// Panics when it fails or says it lost events.
    pub fn finish(mut self) -> Output {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT bpftrace");
        let status = self.child.wait().expect("wait for bpftrace");
        let messages: Vec<String> = self.messages.try_iter().collect();
        assert!(status.success(), "bpftrace failed ({status}): {messages:?}");
        let text = std::fs::read_to_string(&self.output)
            .unwrap_or_else(|e| panic!("{}: {e}", self.output.display()));
        let mut out = Output::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("bpftrace printed a line that is not JSON ({e}): {line}")
            });
            match record["type"].as_str() {
                Some("printf") => out.lines.extend(
                    record["data"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .map(str::to_owned),
                ),
                Some("map") => {
                    if let Some(data) = record["data"].as_object() {
                        out.maps.extend(data.clone());
                    }
                }
                // Events the perf buffer had no room for would make the reference short.
                Some(kind) if kind.contains("lost") => panic!("bpftrace lost events: {line}"),
                _ => {}
            }
        }
        assert!(
            !messages.iter().any(|m| m.contains("Lost")),
            "bpftrace lost events: {messages:?}"
        );
        out
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
