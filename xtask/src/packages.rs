//! Debian packages that building (libvirt-dev for the `virt` crate), the test guests
//! (libvirt, qemu, busybox), the test MariaDB server (xtask/src/mariadb.rs), the live
//! terminal test (tmux) and the live tests' reference tools (sysstat, fio, bpftrace,
//! python3-fusepy) need. Only the missing ones are installed, in one apt-get call.

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
    // A real terminal for `setmov top`'s live test (tests/tests/top_live.rs), driven by keys.
    "tmux",
    // The references the host figures are checked against (tests/tests/host_disk_live.rs,
    // host_net_live.rs): sar and iostat (sysstat) over the same interval, with fio's direct
    // I/O and traffic across a veth pair (iproute2, ping) as the load.
    "sysstat",
    "fio",
    "iproute2",
    "iputils-ping",
    // The reference the eBPF KVM probe is checked against (tests/tests/ebpf_kvm.rs): bpftrace
    // counts the same KVM tracepoints for the same qemu over the same window.
    "bpftrace",
    // The reference the stored eBPF program costs are checked against
    // (tests/tests/host_disk_live.rs): the kernel's run_cnt and run_time_ns, as bpftool shows
    // them.
    "bpftool",
    // The slow block device the eBPF block latency is checked against fio on
    // (tests/src/slow_disk.rs): a FUSE daemon in Python (fusepy, over libfuse2) that answers
    // each read after a known delay, under a loop device.
    "python3-fusepy",
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

/// Where `ensure_promtool` puts promtool: on PATH, outside dpkg's files.
const PROMTOOL: &str = "/usr/local/bin/promtool";

/// Makes `promtool` available (the Prometheus export's live test lints the exposition with
/// `promtool check metrics`). It comes from Debian's `prometheus` package, which is downloaded
/// and unpacked rather than installed: installing it would enable and, under systemd, start a
/// Prometheus server listening on every interface, and pull in its web UI's libraries. Only the
/// promtool binary is kept. A no-op when a promtool is already on PATH.
pub fn ensure_promtool() -> anyhow::Result<()> {
    let on_path = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if on_path {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("promtool is missing: run as root, or put Prometheus's promtool on PATH");
    }
    eprintln!("xtask: unpacking promtool from Debian's prometheus package into {PROMTOOL}");
    let work = tempfile::tempdir()?;
    with_package_lists(|| {
        // The sandbox user _apt cannot write into a root-only temporary folder.
        apt(Command::new("apt-get")
            .current_dir(work.path())
            .args(["-o", "APT::Sandbox::User=root", "download", "--quiet"])
            .arg("prometheus"))
    })?;
    let deb = std::fs::read_dir(work.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb of prometheus")?;
    let tree = work.path().join("tree");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .context("cannot run dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed: {status}", deb.display());
    }
    let binary = tree.join("usr/bin/promtool");
    let staged = std::path::Path::new(PROMTOOL).with_extension("new");
    std::fs::copy(&binary, &staged)
        .with_context(|| format!("cannot copy {} to {}", binary.display(), staged.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&staged, PROMTOOL)
        .with_context(|| format!("cannot move {} to {PROMTOOL}", staged.display()))?;
    Ok(())
}
