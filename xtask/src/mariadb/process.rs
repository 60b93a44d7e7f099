//! Which mariadbd is ours (its command line holds our data directory), and stopping it: only
//! such a process is ever signalled.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::layout::Layout;
use super::{STOP_TIMEOUT, say};
use crate::guests::poll;

/// Sends SIGTERM, waits for the process to exit, kills it after `STOP_TIMEOUT`.
pub(super) fn stop_pid(pid: u32, layout: &Layout) -> anyhow::Result<()> {
    let target = Pid::from_raw(pid as i32);
    kill(target, Signal::SIGTERM).with_context(|| format!("cannot stop mariadbd {pid}"))?;
    if !poll(STOP_TIMEOUT, || !is_ours_pid(pid, layout)) {
        say(&format!(
            "xtask: mariadbd {pid} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it"
        ));
        kill(target, Signal::SIGKILL).with_context(|| format!("cannot kill mariadbd {pid}"))?;
        if !poll(Duration::from_secs(10), || !is_ours_pid(pid, layout)) {
            bail!("mariadbd {pid} survives SIGKILL");
        }
    }
    Ok(())
}

/// The running mariadbd of ours: the PID file's when it is ours, else any process whose command
/// line is ours (its PID file lost).
pub(super) fn running_pid(layout: &Layout) -> Option<u32> {
    if let Some(pid) = pid_from_file(&layout.pid_file())
        && is_ours_pid(pid, layout)
    {
        return Some(pid);
    }
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| is_ours_pid(pid, layout))
}

pub(super) fn pid_from_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(super) fn is_ours_pid(pid: u32, layout: &Layout) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| is_ours(&cmdline, &layout.datadir()))
}

/// Whether a `/proc/PID/cmdline` (arguments separated by NUL) is a mariadbd on `datadir`. A
/// zombie's is empty, so an exited server is never ours.
fn is_ours(cmdline: &[u8], datadir: &Path) -> bool {
    let args = split_cmdline(cmdline);
    let Some((program, rest)) = args.split_first() else {
        return false;
    };
    let wanted = format!("--datadir={}", datadir.display());
    Path::new(program)
        .file_name()
        .is_some_and(|name| name == "mariadbd")
        && rest.contains(&wanted)
}

fn split_cmdline(cmdline: &[u8]) -> Vec<String> {
    cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

pub(super) fn argv(pid: u32) -> Option<Vec<String>> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|c| split_cmdline(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mariadb::PROGRAM;
    use crate::mariadb::layout::{server_args, test_layout};

    #[test]
    fn only_a_mariadbd_on_our_data_directory_is_ours() {
        let datadir = test_layout().datadir();
        let cmdline = |args: &[&str]| args.join("\0").into_bytes();
        let ours = std::iter::once(PROGRAM.to_owned())
            .chain(server_args(&test_layout()))
            .collect::<Vec<_>>()
            .join("\0")
            + "\0";
        assert!(is_ours(ours.as_bytes(), &datadir));
        assert!(is_ours(
            &cmdline(&["mariadbd", "--datadir=/var/lib/setmov-mariadb/data"]),
            &datadir
        ));
        // The system's server, another data directory, another program, a zombie.
        assert!(!is_ours(
            &cmdline(&["/usr/sbin/mariadbd", "--datadir=/var/lib/mysql"]),
            &datadir
        ));
        assert!(!is_ours(&cmdline(&["/usr/sbin/mariadbd"]), &datadir));
        assert!(!is_ours(
            &cmdline(&["/bin/sh", "--datadir=/var/lib/setmov-mariadb/data"]),
            &datadir
        ));
        assert!(!is_ours(
            &cmdline(&["mariadbd", "--datadir=/var/lib/setmov-mariadb/data2"]),
            &datadir
        ));
        assert!(!is_ours(b"", &datadir));
    }
}
