//! libvirtd and virtlogd without systemd: started when no process of that name runs, recorded
//! in `/run/setmov-guests/started.json`, and only those stopped again.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{URI, one_line, poll, remove_file_if_present, say};

const STATE_DIR: &str = "/run/setmov-guests";

/// Daemons in start order (a domain does not start without virtlogd); stopped in reverse.
const DAEMONS: [&str; 2] = ["virtlogd", "libvirtd"];

/// Starts virtlogd and libvirtd unless a process of that name already runs, and records the
/// ones it starts in the state file.
pub(super) fn start_daemons() -> anyhow::Result<()> {
    for dir in [
        "/run/libvirt",
        "/var/lib/libvirt/dnsmasq",
        "/var/log/libvirt/qemu",
        STATE_DIR,
    ] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
    }
    // The default network NATs to the outside world: it must never start.
    remove_file_if_present(Path::new(
        "/etc/libvirt/qemu/networks/autostart/default.xml",
    ))?;
    grant_kvm_group()?;
    // Forget the daemons of ours that have died since.
    let mut started: BTreeMap<String, u32> = read_state()?
        .into_iter()
        .filter_map(|(name, pid)| Some((name.clone(), our_pid(&name, pid)?)))
        .collect();
    write_state(&started)?;
    for daemon in DAEMONS {
        if started.contains_key(daemon) || running(daemon) {
            continue;
        }
        let pid = start_daemon(daemon)?;
        eprintln!("xtask: started {daemon} (pid {pid})");
        started.insert(daemon.to_owned(), pid);
        // Written at once so that `down` stops it even if a later step fails.
        write_state(&started)?;
    }
    wait_for_libvirt()
}

/// Gives /dev/kvm the owner and mode udev gives it on Debian (root:kvm 0660; qemu's user is
/// in group kvm). Without udev it stays root-only, and libvirt then finds its cached qemu
/// capabilities ("KVM enabled") outdated at every look-up and re-probes qemu some 25 times
/// per domain start: about 50 s instead of 0.5 s.
fn grant_kvm_group() -> anyhow::Result<()> {
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return Ok(());
    }
    let group = nix::unistd::Group::from_name("kvm")
        .context("cannot look up group kvm")?
        .context("no group kvm (package libvirt-daemon-system creates it)")?;
    std::os::unix::fs::chown(kvm, None, Some(group.gid.as_raw()))
        .context("cannot chgrp kvm /dev/kvm")?;
    fs::set_permissions(kvm, fs::Permissions::from_mode(0o660))
        .context("cannot chmod 0660 /dev/kvm")
}

fn start_daemon(daemon: &str) -> anyhow::Result<u32> {
    let pid_file = pid_file(daemon);
    remove_file_if_present(&pid_file)?;
    let log = format!("/var/log/libvirt/{daemon}.log");
    let out = Command::new(daemon)
        .arg("--daemon")
        .arg("--pid-file")
        .arg(&pid_file)
        // Not cargo's environment (LD_LIBRARY_PATH and the like): qemu would inherit it.
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // Without systemd or syslog its messages would be lost; warnings and errors go here.
        .env("LIBVIRT_LOG_OUTPUTS", format!("3:file:{log}"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {daemon}"))?;
    if !out.status.success() {
        bail!(
            "{daemon} --daemon failed ({}): {} (see {log})",
            out.status,
            one_line(&out.stderr)
        );
    }
    let mut pid = None;
    poll(Duration::from_secs(10), || {
        pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    pid.with_context(|| format!("{daemon} wrote no pid to {}", pid_file.display()))
}

fn wait_for_libvirt() -> anyhow::Result<()> {
    // The first start re-probes qemu's capabilities: about 8 s here.
    if !poll(Duration::from_secs(60), libvirt_answers) {
        bail!("libvirtd does not answer on {URI} (see /var/log/libvirt/libvirtd.log)");
    }
    Ok(())
}

pub(super) fn libvirt_answers() -> bool {
    Command::new("virsh")
        .args(["-c", URI, "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops the daemons recorded in the state file (SIGTERM, then SIGKILL after 10 s) and
/// removes the file.
pub(super) fn stop_daemons() -> anyhow::Result<()> {
    let started = read_state()?;
    for daemon in DAEMONS.iter().rev() {
        let Some(pid) = started.get(*daemon).and_then(|&pid| our_pid(daemon, pid)) else {
            continue;
        };
        let target = Pid::from_raw(pid as i32);
        kill(target, Signal::SIGTERM).with_context(|| format!("cannot stop {daemon} {pid}"))?;
        if !poll(Duration::from_secs(10), || !alive(pid, daemon)) {
            say(&format!(
                "xtask: {daemon} {pid} ignored SIGTERM; killing it"
            ));
            kill(target, Signal::SIGKILL).with_context(|| format!("cannot kill {daemon} {pid}"))?;
            poll(Duration::from_secs(5), || !alive(pid, daemon));
        }
        say(&format!("xtask: stopped {daemon} (pid {pid})"));
    }
    if Path::new(STATE_DIR).exists() {
        fs::remove_dir_all(STATE_DIR).with_context(|| format!("cannot remove {STATE_DIR}"))?;
    }
    Ok(())
}

fn pid_file(daemon: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{daemon}.pid"))
}

/// The running process of a daemon this tool started: the recorded pid, or the one in its pid
/// file when it was restarted with its own command line (as a test of libvirtd restarts does).
fn our_pid(daemon: &str, recorded: u32) -> Option<u32> {
    if alive(recorded, daemon) {
        return Some(recorded);
    }
    let pid = fs::read_to_string(pid_file(daemon))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid, daemon).then_some(pid)
}

fn state_file() -> PathBuf {
    Path::new(STATE_DIR).join("started.json")
}

fn read_state() -> anyhow::Result<BTreeMap<String, u32>> {
    let path = state_file();
    match fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a daemon-to-pid map", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_state(started: &BTreeMap<String, u32>) -> anyhow::Result<()> {
    let path = state_file();
    fs::write(&path, serde_json::to_string_pretty(started)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Whether process `pid` exists, is named `name` (not a reused pid) and is not a zombie.
fn alive(pid: u32, name: &str) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) state ...`; comm may hold spaces or parentheses, so split at the last ')'.
    match stat.rsplit_once(')') {
        Some((head, tail)) => {
            head.ends_with(&format!("({name}")) && !tail.trim_start().starts_with('Z')
        }
        None => false,
    }
}

/// Whether any process named `name` runs (ours or not).
fn running(name: &str) -> bool {
    fs::read_dir("/proc").is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .any(|pid| alive(pid, name))
    })
}
