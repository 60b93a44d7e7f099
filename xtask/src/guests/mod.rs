//! Real test guests: tiny TCG virtual machines under libvirt, on a bridge that never leaves
//! the machine, each running a finite workload and reporting its progress on a serial console.
//!
//! `prepare` (what `cargo xtask test` needs) installs the packages, starts virtlogd and
//! libvirtd when they are not running (without systemd), defines and starts the isolated
//! network and builds the guest assets once. `up` adds three standard guests for demos; `down`
//! undoes everything, stopping only the daemons this tool started.
//!
//! Files, all readable by the `libvirt-qemu` user that qemu runs as:
//! - `/var/lib/setmov-guests/vmlinuz`, `initrd.img`: Debian's cloud kernel and a busybox
//!   initramfs whose `/init` is `xtask/guests/init`; `modules/` holds the kernel's virtio
//!   drivers; `kernel-release` marks the kernel as fetched.
//! - `disks/NAME.img` (256 MiB raw and sparse, made afresh at each boot: guest I/O maps 1:1
//!   onto the host file, so host-side block figures can be checked against the guest's), `consoles/NAME.log` (ttyS0).
//! - `guests.json`, the manifest, present while the environment is prepared:
//!   `{"kernel", "kernel_release", "initrd", "domain_xml", "cmdline", "disks", "consoles",
//!   "network", "bridge", "address", "prefix", "guests": [{"name", "uuid", "ip", "disk",
//!   "console", "workload"}]}`; `domain_xml` is the template `xtask/guests/domain.xml`, whose
//!   `{name}`, `{kernel}`, `{initrd}`, `{cmdline}`, `{disk}`, `{network}` and `{console}` are
//!   to be filled; `cmdline` holds the kernel arguments that go before address and workload.
//! - `/run/setmov-guests/started.json`: `{"virtlogd": PID, "libvirtd": PID}`, the daemons
//!   that `down` must stop.
//!
//! The guest's workload comes from its kernel command line and runs in this order:
//! `setmov.ip=A.B.C.D/P` and `setmov.peer=A.B.C.D` (its address and the one it pings),
//! `setmov.delay=S` (wait), `setmov.alloc_mb=N` (N MiB held in memory until the guest stops),
//! `setmov.burn=S` (busy loop; -1 = forever, nothing after it runs),
//! `setmov.write_mb=N` then `setmov.read_mb=N` (1 MiB O_DIRECT blocks on /dev/vda),
//! `setmov.cache_mb=N` with `setmov.cache_rounds=R` (the first N MiB of /dev/vda read R times
//! through the page cache), `setmov.ping_count=N` and `setmov.ping_size=B` (every 0.2 s).
//! Absent keys do nothing.
//! Console markers: `SETMOV: ready kernel=R ip=A`, `SETMOV: delay-start S`/`delay-done`,
//! `alloc-start N`/`alloc-done N`, `burn-start S`/`burn-done`, `write-start N`/`write-done BYTES`, `read-start N`/
//! `read-done BYTES` (BYTES may read `failed: ...`), `cache-start N`, `cache-round K N START
//! END` (uptime seconds) and `cache-done`, `ping-start N`/`ping-done RECEIVED/SENT`,
//! then `SETMOV: idle`; `SETMOV: error ...` when the set-up went wrong.
//!
//! Here the guests, the network and the manifest; the daemons in `daemons.rs`, the kernel and
//! initramfs in `assets.rs`.

mod assets;
mod daemons;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::packages;
use assets::build_assets;
use daemons::{libvirt_answers, start_daemons, stop_daemons};

const URI: &str = "qemu:///system";
const ASSETS: &str = "/var/lib/setmov-guests";
const NETWORK: &str = "setmov-test";
const BRIDGE: &str = "setmovbr0";
const ADDRESS: &str = "10.213.77.1";
const PREFIX: u8 = 24;
/// Every guest of ours is named so; `down` destroys them all.
const PREFIX_NAME: &str = "setmov-";
/// Kernel arguments of every guest, before its address and workload: console on ttyS0,
/// quiet, a panic stops the guest (on_reboot=destroy), no IPv6 chatter on the bridge.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 ipv6.disable=1";

const DOMAIN_XML: &str = include_str!("../../guests/domain.xml");
const NETWORK_XML: &str = include_str!("../../guests/network.xml");

/// The demo guests of `up`: name, last byte of the address, workload.
const STANDARD: &[(&str, u8, &str)] = &[
    ("setmov-cpu", 11, "setmov.burn=60"),
    ("setmov-disk", 12, "setmov.write_mb=64 setmov.read_mb=64"),
    (
        "setmov-net",
        13,
        "setmov.ping_count=200 setmov.ping_size=1000",
    ),
];

/// Idle guests get addresses after this last byte.
const IDLE_FIRST_HOST: u8 = 100;

/// Everything but the standard guests: packages, daemons, network, assets, manifest.
/// Without root it only says so, and the guest tests skip.
pub fn prepare() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("xtask: not root, so no test guests (the tests that need them skip)");
        return Ok(());
    }
    prepare_as_root()?;
    write_manifest(&[])
}

/// `prepare`, then boots the standard guests and waits for each to report ready.
pub fn up() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("guests up must run as root (it starts libvirtd and writes under /var/lib)");
    }
    prepare_as_root()?;
    let mut records = Vec::new();
    for &(name, host, workload) in STANDARD {
        let ip = format!("{}/{PREFIX}", address_with_host(host));
        start_guest(name, &ip, workload)?;
        let uuid = virsh(&["domuuid", name])?.trim().to_owned();
        records.push(serde_json::json!({
            "name": name,
            "uuid": uuid,
            "ip": ip,
            "disk": disk_path(name),
            "console": console_path(name),
            "workload": workload,
        }));
    }
    write_manifest(&records)?;
    eprintln!(
        "xtask: guests up; manifest {}",
        Path::new(ASSETS).join("guests.json").display()
    );
    Ok(())
}

/// Boots `count` more guests with no workload beside the standard ones (`up` first), so that
/// the per-VM cost of a tick can be measured at a realistic number of VMs. `down` removes them
/// with the others.
pub fn up_idle(count: u8) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("guests up must run as root (it starts libvirtd and writes under /var/lib)");
    }
    for index in 1..=count {
        let name = format!("{PREFIX_NAME}idle-{index}");
        let ip = format!("{}/{PREFIX}", address_with_host(IDLE_FIRST_HOST + index));
        start_guest(&name, &ip, "")?;
    }
    Ok(())
}

/// Boots one guest unless it already runs, and waits until it reports ready.
fn start_guest(name: &str, ip: &str, workload: &str) -> anyhow::Result<()> {
    if domain_running(name)? {
        eprintln!("xtask: {name} already runs");
        return Ok(());
    }
    let started = Instant::now();
    boot(name, ip, workload).with_context(|| format!("cannot boot guest {name}"))?;
    let line = wait_for_console(name, "SETMOV: ready", Duration::from_secs(120))?;
    eprintln!(
        "xtask: {name} ready {:.1} s after start: {line}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// When set, taking the guests down says nothing unless it fails: after the tests, the test
/// runner's summary must stay the last thing printed.
pub static QUIET_DOWN: AtomicBool = AtomicBool::new(false);

fn say(message: &str) {
    if !QUIET_DOWN.load(Ordering::Relaxed) {
        eprintln!("{message}");
    }
}

/// Destroys every `setmov-*` domain and the network, stops the daemons this tool started and
/// forgets them. Safe to repeat.
pub fn down() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("xtask: not root, so no test guests to take down");
        return Ok(());
    }
    if libvirt_answers() {
        for name in lines(&virsh(&["list", "--name"])?) {
            if name.starts_with(PREFIX_NAME) {
                virsh(&["destroy", name])
                    .with_context(|| format!("cannot destroy guest {name}"))?;
            }
        }
        for name in lines(&virsh(&["list", "--all", "--name"])?) {
            if name.starts_with(PREFIX_NAME) {
                virsh(&["undefine", name])
                    .with_context(|| format!("cannot undefine guest {name}"))?;
            }
        }
        if lines(&virsh(&["net-list", "--name"])?).any(|n| n == NETWORK) {
            virsh(&["net-destroy", NETWORK])?;
        }
        if lines(&virsh(&["net-list", "--all", "--name"])?).any(|n| n == NETWORK) {
            virsh(&["net-undefine", NETWORK])?;
        }
    }
    remove_file_if_present(&Path::new(ASSETS).join("guests.json"))?;
    let disks = Path::new(ASSETS).join("disks");
    if disks.exists() {
        for entry in fs::read_dir(&disks)? {
            remove_file_if_present(&entry?.path())?;
        }
    }
    stop_daemons()?;
    say("xtask: guests down");
    Ok(())
}

fn prepare_as_root() -> anyhow::Result<()> {
    packages::ensure()?;
    start_daemons()?;
    ensure_network()?;
    build_assets()
}

// ---- network ----

fn ensure_network() -> anyhow::Result<()> {
    if !lines(&virsh(&["net-list", "--all", "--name"])?).any(|n| n == NETWORK) {
        let xml = NETWORK_XML
            .replace("{network}", NETWORK)
            .replace("{bridge}", BRIDGE)
            .replace("{address}", ADDRESS)
            .replace("{prefix}", &PREFIX.to_string());
        let file = temp_file_with(&xml)?;
        virsh(&["net-define", path_str(file.path())?])
            .with_context(|| format!("cannot define network {NETWORK}"))?;
    }
    if !lines(&virsh(&["net-list", "--name"])?).any(|n| n == NETWORK) {
        virsh(&["net-start", NETWORK])
            .with_context(|| format!("cannot start network {NETWORK}"))?;
        eprintln!("xtask: network {NETWORK} up: bridge {BRIDGE} at {ADDRESS}/{PREFIX}");
    }
    Ok(())
}

fn address_with_host(host: u8) -> String {
    let (net, _) = ADDRESS.rsplit_once('.').unwrap_or((ADDRESS, ""));
    format!("{net}.{host}")
}

// ---- manifest ----

fn write_manifest(guests: &[serde_json::Value]) -> anyhow::Result<()> {
    let assets = Path::new(ASSETS);
    let release = fs::read_to_string(assets.join("kernel-release"))?;
    let domain_xml = assets.join("domain.xml");
    fs::write(&domain_xml, DOMAIN_XML)?;
    let manifest = serde_json::json!({
        "kernel": assets.join("vmlinuz"),
        "kernel_release": release.trim(),
        "initrd": assets.join("initrd.img"),
        "domain_xml": domain_xml,
        "cmdline": CMDLINE,
        "disks": assets.join("disks"),
        "consoles": assets.join("consoles"),
        "network": NETWORK,
        "bridge": BRIDGE,
        "address": ADDRESS,
        "prefix": PREFIX,
        "guests": guests,
    });
    let path = assets.join("guests.json");
    fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

// ---- guests ----

fn disk_path(name: &str) -> PathBuf {
    Path::new(ASSETS).join("disks").join(format!("{name}.img"))
}

fn console_path(name: &str) -> PathBuf {
    Path::new(ASSETS)
        .join("consoles")
        .join(format!("{name}.log"))
}

/// Starts a transient domain `name` on a fresh disk with `workload` on its command line.
fn boot(name: &str, ip: &str, workload: &str) -> anyhow::Result<()> {
    let disk = disk_path(name);
    crate::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("256M"),
    )?;
    let console = console_path(name);
    remove_file_if_present(&console)?;
    let assets = Path::new(ASSETS);
    let cmdline = format!("{CMDLINE} setmov.ip={ip} setmov.peer={ADDRESS} {workload}");
    let xml = DOMAIN_XML
        .replace("{name}", name)
        .replace("{kernel}", path_str(&assets.join("vmlinuz"))?)
        .replace("{initrd}", path_str(&assets.join("initrd.img"))?)
        .replace("{cmdline}", &cmdline)
        .replace("{disk}", path_str(&disk)?)
        .replace("{network}", NETWORK)
        .replace("{console}", path_str(&console)?);
    let file = temp_file_with(&xml)?;
    virsh(&["create", path_str(file.path())?])?;
    Ok(())
}

fn domain_running(name: &str) -> anyhow::Result<bool> {
    Ok(lines(&virsh(&["list", "--name"])?).any(|n| n == name))
}

/// The rest of the first console line of `name` holding `marker`; fails early if the guest
/// stops (a kernel panic destroys it).
fn wait_for_console(name: &str, marker: &str, timeout: Duration) -> anyhow::Result<String> {
    let console = console_path(name);
    let pid_file = format!("/run/libvirt/qemu/{name}.pid");
    let mut found = None;
    poll(timeout, || {
        found = fs::read_to_string(&console).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim().to_owned()))
        });
        found.is_some() || !Path::new(&pid_file).exists()
    });
    found.with_context(|| {
        format!(
            "{name} stopped or printed no {marker:?} within {timeout:?} (see {})",
            console.display()
        )
    })
}

// ---- small helpers ----

/// `virsh -c qemu:///system ARGS`; its stdout, or an error holding its one-line stderr.
fn virsh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .context("cannot run virsh (package libvirt-clients)")?;
    if !out.status.success() {
        bail!("virsh {} failed: {}", args.join(" "), one_line(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The non-empty trimmed lines of a command's output.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

pub(crate) fn one_line(bytes: &[u8]) -> String {
    lines(&String::from_utf8_lossy(bytes))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Calls `done` every 100 ms until it returns true (then true) or `timeout` passes (false).
pub(crate) fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn temp_file_with(text: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(text.as_bytes())?;
    Ok(file)
}

pub(crate) fn remove_file_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
