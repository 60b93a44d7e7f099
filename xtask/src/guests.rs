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
//! `setmov.delay=S` (wait), `setmov.burn=S` (busy loop; -1 = forever, nothing after it runs),
//! `setmov.write_mb=N` then `setmov.read_mb=N` (1 MiB O_DIRECT blocks on /dev/vda),
//! `setmov.cache_mb=N` with `setmov.cache_rounds=R` (the first N MiB of /dev/vda read R times
//! through the page cache), `setmov.ping_count=N` and `setmov.ping_size=B` (every 0.2 s).
//! Absent keys do nothing.
//! Console markers: `SETMOV: ready kernel=R ip=A`, `SETMOV: delay-start S`/`delay-done`,
//! `burn-start S`/`burn-done`, `write-start N`/`write-done BYTES`, `read-start N`/
//! `read-done BYTES` (BYTES may read `failed: ...`), `cache-start N`, `cache-round K N START
//! END` (uptime seconds) and `cache-done`, `ping-start N`/`ping-done RECEIVED/SENT`,
//! then `SETMOV: idle`; `SETMOV: error ...` when the set-up went wrong.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::packages;

const URI: &str = "qemu:///system";
const ASSETS: &str = "/var/lib/setmov-guests";
const STATE_DIR: &str = "/run/setmov-guests";
const NETWORK: &str = "setmov-test";
const BRIDGE: &str = "setmovbr0";
const ADDRESS: &str = "10.213.77.1";
const PREFIX: u8 = 24;
/// Every guest of ours is named so; `down` destroys them all.
const PREFIX_NAME: &str = "setmov-";
/// Kernel arguments of every guest, before its address and workload: console on ttyS0,
/// quiet, a panic stops the guest (on_reboot=destroy), no IPv6 chatter on the bridge.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 ipv6.disable=1";

const INIT: &str = include_str!("../guests/init");
const DOMAIN_XML: &str = include_str!("../guests/domain.xml");
const NETWORK_XML: &str = include_str!("../guests/network.xml");

/// The kernel's virtio drivers, in the order they must be loaded (`/lib/modules/order`).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_balloon",
];

/// Daemons in start order (a domain does not start without virtlogd); stopped in reverse.
const DAEMONS: [&str; 2] = ["virtlogd", "libvirtd"];

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

/// Destroys every `setmov-*` domain and the network, stops the daemons this tool started and
/// forgets them. Safe to repeat.
/// When set, taking the guests down says nothing unless it fails: after the tests, the test
/// runner's summary must stay the last thing printed.
pub static QUIET_DOWN: AtomicBool = AtomicBool::new(false);

fn say(message: &str) {
    if !QUIET_DOWN.load(Ordering::Relaxed) {
        eprintln!("{message}");
    }
}

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

// ---- daemons ----

/// Starts virtlogd and libvirtd unless a process of that name already runs, and records the
/// ones it starts in the state file.
fn start_daemons() -> anyhow::Result<()> {
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

fn libvirt_answers() -> bool {
    Command::new("virsh")
        .args(["-c", URI, "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops the daemons recorded in the state file (SIGTERM, then SIGKILL after 10 s) and
/// removes the file.
fn stop_daemons() -> anyhow::Result<()> {
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

// ---- assets ----

/// Fetches the kernel once, and rebuilds the initramfs whenever its inputs changed.
fn build_assets() -> anyhow::Result<()> {
    let assets = Path::new(ASSETS);
    for dir in [
        assets.to_path_buf(),
        assets.join("disks"),
        assets.join("consoles"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // qemu runs as libvirt-qemu: it must traverse these folders.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    let release = match fs::read_to_string(assets.join("kernel-release")) {
        Ok(release) => release.trim().to_owned(),
        Err(_) => fetch_kernel(assets)?,
    };
    let stamp = format!("{release}\n{MODULES:?}\n{INIT}");
    let stamp_path = assets.join("initrd.stamp");
    if fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str())
        || !assets.join("initrd.img").exists()
    {
        build_initrd(assets)?;
        fs::write(&stamp_path, stamp)?;
    }
    Ok(())
}

/// Downloads the Debian cloud kernel package, keeps its vmlinuz and virtio modules, and
/// returns the kernel release.
fn fetch_kernel(assets: &Path) -> anyhow::Result<String> {
    let package = packages::with_package_lists(cloud_kernel_package)?;
    eprintln!("xtask: fetching {package} for the test guests");
    let work = tempfile::tempdir()?;
    packages::with_package_lists(|| {
        // The sandbox user _apt cannot write into a root-only temporary folder.
        packages::apt(
            Command::new("apt-get")
                .current_dir(work.path())
                .args(["-o", "APT::Sandbox::User=root", "download", "--quiet"])
                .arg(&package),
        )
    })?;
    let deb = fs::read_dir(work.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb of {package}"))?;
    let tree = work.path().join("tree");
    crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;

    let vmlinuz = fs::read_dir(tree.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| file_name(p).starts_with("vmlinuz-"))
        .with_context(|| format!("no boot/vmlinuz-* in {package}"))?;
    let release = file_name(&vmlinuz)
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let module_tree = tree.join("lib/modules").join(&release);
    let modules = assets.join("modules");
    fs::create_dir_all(&modules)?;
    fs::set_permissions(&modules, fs::Permissions::from_mode(0o755))?;
    for name in MODULES {
        let found = find_module(&module_tree, name)?
            .with_context(|| format!("no module {name} in {package}"))?;
        copy_module(&found, &modules.join(format!("{name}.ko")))?;
    }
    copy_readable(&vmlinuz, &assets.join("vmlinuz"))?;
    // Written last: its presence means the kernel and its modules are complete.
    fs::write(assets.join("kernel-release"), &release)?;
    Ok(release)
}

/// `linux-image-<release>-cloud-amd64`, the package `linux-image-cloud-amd64` points to.
fn cloud_kernel_package() -> anyhow::Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-cloud-amd64"])
        .output()
        .context("cannot run apt-cache")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .context("apt-cache knows no kernel that linux-image-cloud-amd64 depends on")
}

/// `NAME.ko` or `NAME.ko.xz` anywhere under `dir`.
fn find_module(dir: &Path, name: &str) -> anyhow::Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, name)? {
                return Ok(Some(found));
            }
        } else if [format!("{name}.ko"), format!("{name}.ko.xz")].contains(&file_name(&path)) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Copies a module, decompressing a `.ko.xz` (newer Debian kernels; bookworm's are plain `.ko`,
/// and the initramfs's busybox insmod takes only those).
fn copy_module(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.extension().is_some_and(|x| x == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(from)
            .output()
            .context("cannot run xz")?;
        if !out.status.success() {
            bail!(
                "cannot decompress {}: {}",
                from.display(),
                one_line(&out.stderr)
            );
        }
        fs::write(to, out.stdout).with_context(|| format!("cannot write {}", to.display()))?;
        fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
        Ok(())
    } else {
        copy_readable(from, to)
    }
}

/// The initramfs: static busybox, `/init`, the modules and their load order, as gzipped cpio.
fn build_initrd(assets: &Path) -> anyhow::Result<()> {
    let stage = tempfile::tempdir()?;
    let root = stage.path();
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("lib/modules"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("cannot copy /bin/busybox (package busybox-static)")?;
    fs::write(root.join("init"), INIT)?;
    for executable in ["bin/busybox", "init"] {
        fs::set_permissions(root.join(executable), fs::Permissions::from_mode(0o755))?;
    }
    let mut entries = vec![
        ".".to_owned(),
        "bin".into(),
        "bin/busybox".into(),
        "init".into(),
        "lib".into(),
        "lib/modules".into(),
        "lib/modules/order".into(),
    ];
    fs::write(root.join("lib/modules/order"), MODULES.join("\n") + "\n")?;
    for name in MODULES {
        let file = format!("lib/modules/{name}.ko");
        fs::copy(
            assets.join("modules").join(format!("{name}.ko")),
            root.join(&file),
        )?;
        entries.push(file);
    }

    let partial = assets.join("initrd.img.partial");
    let mut cpio = Command::new("cpio")
        .args(["--create", "--format=newc", "--owner=0:0", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&partial)?)
        .spawn()
        .context("cannot run cpio")?;
    cpio.stdin
        .take()
        .context("no stdin for cpio")?
        .write_all((entries.join("\n") + "\n").as_bytes())?;
    let status = cpio.wait()?;
    if !status.success() {
        bail!("cpio failed to pack the initramfs: {status}");
    }
    let gzip = Command::new("gzip")
        .args(["-9", "--no-name", "--stdout"])
        .arg(&partial)
        .output()
        .context("cannot run gzip")?;
    if !gzip.status.success() {
        bail!("gzip failed on the initramfs: {}", one_line(&gzip.stderr));
    }
    fs::remove_file(&partial)?;
    let initrd = assets.join("initrd.img");
    fs::write(&initrd, gzip.stdout)?;
    fs::set_permissions(&initrd, fs::Permissions::from_mode(0o644))?;
    eprintln!(
        "xtask: built {} ({} KiB)",
        initrd.display(),
        fs::metadata(&initrd)?.len() / 1024
    );
    Ok(())
}

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

fn copy_readable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_in_the_tree_and_decompressed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let tree = dir.path().join("kernel/drivers/virtio");
        fs::create_dir_all(&tree)?;
        fs::write(tree.join("virtio.ko"), "plain")?;
        fs::write(tree.join("virtio_ring.ko"), "packed")?;
        crate::run(Command::new("xz").arg(tree.join("virtio_ring.ko")))?;

        let plain = find_module(dir.path(), "virtio")?.context("virtio.ko")?;
        let packed = find_module(dir.path(), "virtio_ring")?.context("virtio_ring.ko.xz")?;
        assert_eq!(find_module(dir.path(), "virtio_net")?, None);
        assert_eq!(file_name(&packed), "virtio_ring.ko.xz");
        for (found, expected) in [(plain, "plain"), (packed, "packed")] {
            let copy = dir.path().join("copy.ko");
            copy_module(&found, &copy)?;
            assert_eq!(fs::read_to_string(&copy)?, expected);
        }
        Ok(())
    }
}
