//! fio as the tests run it: to completion, with its JSON report read back.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, ensure};

/// A finished fio run.
pub struct FioRun {
    /// fio's pid: with `--thread` its jobs submit their I/O under it.
    pub pid: u32,
    /// Its `--output-format=json` report.
    pub report: serde_json::Value,
}

/// Runs `prefix` (empty, or a wrapper that execs its arguments, such as `chrt --fifo 10`),
/// then fio with `args`, writing its JSON report to `dir/fio.json`, and waits for it.
/// `Ok(Err(reason))` when fio or the wrapper is not installed: the caller skips.
pub fn run<S: AsRef<OsStr> + Debug>(
    dir: &Path,
    prefix: &[&str],
    args: &[S],
) -> anyhow::Result<Result<FioRun, String>> {
    if !installed("fio") {
        return Ok(Err("fio is missing: `cargo xtask setup` installs it".into()));
    }
    let report = dir.join("fio.json");
    let (program, wrapper_args) = match prefix.split_first() {
        Some((program, rest)) => (*program, rest),
        None => ("fio", &[][..]),
    };
    let mut command = Command::new(program);
    command.args(wrapper_args);
    if !prefix.is_empty() {
        command.arg("fio");
    }
    let mut child = match command
        .args(args)
        .arg("--output-format=json")
        .arg(format!("--output={}", report.display()))
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(format!(
                "{program} is missing: `cargo xtask setup` installs it"
            )));
        }
        Err(e) => return Err(e).with_context(|| format!("spawning {program}")),
    };
    let pid = child.id();
    let status = child.wait()?;
    ensure!(status.success(), "fio {args:?} failed ({status})");
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("reading fio's report {}", report.display()))?;
    let report = serde_json::from_str(&text)
        .with_context(|| format!("fio's report {} is not JSON", report.display()))?;
    Ok(Ok(FioRun { pid, report }))
}

/// Whether `program` is found on PATH.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}
