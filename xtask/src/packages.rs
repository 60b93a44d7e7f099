//! Debian packages that building (libvirt-dev for the `virt` crate), the test guests
//! (libvirt, qemu, busybox) and the test MariaDB server (xtask/src/mariadb.rs) need. Only the missing ones are installed, in one apt-get call.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

pub const PACKAGES: &[&str] = &[
    "libvirt-daemon-system",
    "libvirt-clients",
    "qemu-system-x86",
    "qemu-utils",
    "busybox-static",
    "cpio",
    "libvirt-dev",
    "pkg-config",
    "dnsmasq-base",
    "iptables",
    // Decompresses kernel modules shipped as .ko.xz (xtask/src/guests.rs).
    "xz-utils",
    // Makes the test MariaDB's CA and server certificate (xtask/src/mariadb.rs).
    "openssl",
    // The MySQL store's tests run against a real server that xtask starts (mariadbd,
    // mariadb-install-db) and configures with the `mariadb` client.
    "mariadb-server",
    "mariadb-client",
    // The service tests check the installed unit with systemd-analyze, apply its capability
    // set with setpriv (util-linux) and render the generated man pages with man.
    "systemd",
    "util-linux",
    "man-db",
];

/// Installs whichever of `PACKAGES` is missing; a no-op when all are there.
pub fn ensure() -> anyhow::Result<()> {
    // Installing can remove a listed package that conflicts with a new one (a backported
    // qemu-utils breaks Debian's qemu-system-x86), so a second round puts Debian's back.
    for _ in 0..2 {
        let missing = not_installed(PACKAGES)?;
        if missing.is_empty() {
            return Ok(());
        }
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "missing Debian packages {}: run as root or install them",
                missing.join(" ")
            );
        }
        eprintln!("xtask: installing {}", missing.join(" "));
        with_package_lists(|| {
            apt(Command::new("apt-get")
                .args(["install", "--yes", "--no-install-recommends"])
                .args(&missing))
        })?;
    }
    let missing = not_installed(PACKAGES)?;
    if !missing.is_empty() {
        bail!("apt-get left {} uninstalled", missing.join(" "));
    }
    Ok(())
}

/// The packages among `packages` that dpkg does not list as installed.
fn not_installed<'a>(packages: &[&'a str]) -> anyhow::Result<Vec<&'a str>> {
    // dpkg-query exits 1 when it knows nothing about some of the names, yet still prints
    // the others, so its status is not checked.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(packages)
        .output()
        .context("cannot run dpkg-query to list installed packages")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(packages
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

/// Runs `step` (an apt-get or apt-cache call), first refreshing the package lists when there
/// are none, or retrying once after a refresh when it fails (the lists may be stale).
pub fn with_package_lists<T>(step: impl Fn() -> anyhow::Result<T>) -> anyhow::Result<T> {
    if !lists_present() {
        update()?;
        return step();
    }
    match step() {
        Ok(value) => Ok(value),
        Err(error) if !UPDATED.load(Ordering::Relaxed) => {
            eprintln!("xtask: {error:#}; refreshing the package lists and retrying");
            update()?;
            step()
        }
        Err(error) => Err(error),
    }
}

/// Set once `apt-get update` has run in this process: it is never needed twice.
static UPDATED: AtomicBool = AtomicBool::new(false);

fn update() -> anyhow::Result<()> {
    if UPDATED.swap(true, Ordering::Relaxed) {
        return Ok(());
    }
    apt(Command::new("apt-get").arg("update"))
}

fn lists_present() -> bool {
    std::fs::read_dir("/var/lib/apt/lists").is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    })
}

/// Runs an apt command non-interactively; its output goes to the terminal.
pub fn apt(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
