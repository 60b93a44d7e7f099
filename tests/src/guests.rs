//! Real guests for integration tests: a transient libvirt domain booted from the assets that
//! `cargo xtask guests up` or `cargo xtask test` prepared (described by their manifest), running
//! a chosen workload, destroyed on drop. The guest side (command-line keys, console markers)
//! is documented in `xtask/src/guests.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MANIFEST: &str = "/var/lib/setmov-guests/guests.json";
const URI: &str = "qemu:///system";
/// Where the libvirtd that `cargo xtask guests` starts writes its PID (xtask/src/guests/daemons.rs).
const LIBVIRTD_PID_FILE: &str = "/run/setmov-guests/libvirtd.pid";
/// Test guests take the addresses from .100 up in the bridge's /24; `up`'s guests use .11-.13.
const FIRST_HOST: u8 = 100;

/// How long a test guest may take to boot and reach a console marker of its workload.
pub const BOOT: Duration = Duration::from_secs(90);

/// What a guest does once booted, in this order. The default is to idle.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Seconds to wait before anything else.
    pub delay_secs: u32,
    /// MiB the guest then takes and holds (in its in-memory root file system).
    pub alloc_mb: u32,
    /// Seconds of busy loop; -1 burns forever and nothing after it runs.
    pub burn_secs: i32,
    /// MiB written to the guest's disk in 1 MiB O_DIRECT blocks.
    pub write_mb: u32,
    /// MiB then read back the same way.
    pub read_mb: u32,
    /// Pings to the bridge address, one every 0.2 s.
    pub ping_count: u32,
    /// Data bytes per ping; 0 means ping's default, 56.
    pub ping_size: u32,
}

impl Workload {
    /// The kernel arguments that carry this workload (absent keys do nothing).
    fn kernel_args(&self) -> String {
        [
            ("delay", i64::from(self.delay_secs)),
            ("alloc_mb", i64::from(self.alloc_mb)),
            ("burn", i64::from(self.burn_secs)),
            ("write_mb", i64::from(self.write_mb)),
            ("read_mb", i64::from(self.read_mb)),
            ("ping_count", i64::from(self.ping_count)),
            ("ping_size", i64::from(self.ping_size)),
        ]
        .iter()
        .filter(|(_, value)| *value != 0)
        .map(|(key, value)| format!(" setmov.{key}={value}"))
        .collect()
    }
}

/// A running transient guest named `setmov-test-NAME`; destroyed, with its disk, on drop.
pub struct Guest {
    name: String,
    uuid: String,
    disk: PathBuf,
    console: PathBuf,
}

impl Guest {
    /// Boots a guest running `workload`. `Err(reason)` when the environment is not prepared
    /// (not root, no manifest, libvirtd or the network down): callers pass it to
    /// `setmov_tests::skip`. Panics when it is prepared but the guest cannot start.
    pub fn start(name: &str, workload: &Workload) -> Result<Guest, String> {
        let manifest = Manifest::load()?;
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "guest name {name:?} must be lowercase letters, digits and dashes"
        );
        let name = format!("setmov-test-{name}");
        // Choosing a free address and starting the domain must not interleave with another
        // test process doing the same.
        let lock_path = Path::new(MANIFEST).with_file_name("guests.lock");
        let lock = fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
        lock.lock()
            .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));

        // A test killed before its drop ran leaves its guest behind.
        if virsh(&["domstate", &name]).is_ok() {
            virsh(&["destroy", &name]).unwrap_or_else(|e| panic!("{e}"));
        }
        let ip = manifest.free_address();
        let disk = Path::new(&manifest.disks).join(format!("{name}.img"));
        let console = Path::new(&manifest.consoles).join(format!("{name}.log"));
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "raw"])
            .arg(&disk)
            .arg("256M")
            .status()
            .expect("cannot run qemu-img");
        assert!(
            status.success(),
            "qemu-img create {} failed: {status}",
            disk.display()
        );
        let _ = fs::remove_file(&console);

        let cmdline = format!(
            "{} setmov.ip={ip}/{} setmov.peer={}{}",
            manifest.cmdline,
            manifest.prefix,
            manifest.address,
            workload.kernel_args()
        );
        let xml = fs::read_to_string(&manifest.domain_xml)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.domain_xml))
            .replace("{name}", &name)
            .replace("{kernel}", &manifest.kernel)
            .replace("{initrd}", &manifest.initrd)
            .replace("{cmdline}", &cmdline)
            .replace("{disk}", &disk.to_string_lossy())
            .replace("{network}", &manifest.network)
            .replace("{console}", &console.to_string_lossy());
        let mut file = tempfile::NamedTempFile::new().expect("cannot create a temporary file");
        file.write_all(xml.as_bytes())
            .expect("cannot write the domain XML");
        virsh(&["create", &file.path().to_string_lossy()]).unwrap_or_else(|e| panic!("{e}"));
        drop(lock);

        let mut guest = Guest {
            name,
            uuid: String::new(),
            disk,
            console,
        };
        guest.uuid = virsh(&["domuuid", &guest.name])
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_owned();
        Ok(guest)
    }

    /// Starts a transient KVM-accelerated domain `setmov-test-NAME` that runs only its firmware
    /// (no disk, no kernel: SeaBIOS probes the hardware and retries booting). Its qemu process
    /// makes real KVM exits even where a guest kernel could not run (nested PVM). `Err(reason)`
    /// as for [`Guest::start`], and also without `/dev/kvm`.
    pub fn start_kvm_firmware(name: &str) -> Result<Guest, String> {
        Self::kvm_firmware(name, false)
    }

    /// [`Guest::start_kvm_firmware`], but created paused (`virsh create --paused`: qemu runs
    /// with `-S`, no vCPU has entered KVM yet) until [`Guest::resume`].
    pub fn start_kvm_firmware_paused(name: &str) -> Result<Guest, String> {
        Self::kvm_firmware(name, true)
    }

    fn kvm_firmware(name: &str, paused: bool) -> Result<Guest, String> {
        Manifest::load()?;
        if !Path::new("/dev/kvm").exists() {
            return Err("no /dev/kvm on this machine".into());
        }
        let name = format!("setmov-test-{name}");
        if virsh(&["domstate", &name]).is_ok() {
            virsh(&["destroy", &name]).unwrap_or_else(|e| panic!("{e}"));
        }
        let xml = format!(
            "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
             <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"
        );
        let mut file = tempfile::NamedTempFile::new().expect("cannot create a temporary file");
        file.write_all(xml.as_bytes())
            .expect("cannot write the domain XML");
        let path = file.path().to_string_lossy();
        let create = if paused {
            vec!["create", "--paused", &path]
        } else {
            vec!["create", &path]
        };
        virsh(&create).unwrap_or_else(|e| panic!("{e}"));
        let uuid = virsh(&["domuuid", &name])
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_owned();
        Ok(Guest {
            name,
            uuid,
            disk: PathBuf::new(),
            console: PathBuf::new(),
        })
    }

    /// The libvirt domain name, `setmov-test-NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The guest's disk image on the host (empty for a firmware-only guest).
    pub fn disk(&self) -> &Path {
        &self.disk
    }

    /// The qemu process, from libvirt's pid file; `None` once it is gone.
    pub fn qemu_pid(&self) -> Option<u32> {
        fs::read_to_string(format!("/run/libvirt/qemu/{}.pid", self.name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The thread ids of its vCPUs, from libvirt's live domain XML (`<vcpu id='0' pid='T'/>`).
    pub fn vcpu_threads(&self) -> Vec<u32> {
        let xml =
            fs::read_to_string(format!("/run/libvirt/qemu/{}.xml", self.name)).unwrap_or_default();
        xml.split("<vcpu ")
            .skip(1)
            .filter_map(|tag| {
                let pid = tag.split("pid='").nth(1)?;
                pid.split('\'').next()?.parse().ok()
            })
            .collect()
    }

    /// Pauses every vCPU (`virsh suspend`); returns once qemu has stopped them.
    pub fn suspend(&self) {
        virsh(&["suspend", &self.name]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Lets the vCPUs run again (`virsh resume`).
    pub fn resume(&self) {
        virsh(&["resume", &self.name]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The host-side tap device of the guest's NIC (`vnetN`).
    pub fn tap_device(&self) -> Option<String> {
        // Rows under a dashed line: `vnet0  network  setmov-test  virtio  52:54:00:..`.
        let table = virsh(&["domiflist", &self.name]).ok()?;
        table
            .lines()
            .skip_while(|l| !l.starts_with("---"))
            .nth(1)?
            .split_whitespace()
            .next()
            .map(str::to_owned)
    }

    /// Waits until the serial console shows `marker` (e.g. `"SETMOV: write-done"`) and returns
    /// the rest of that line, trimmed. Fails early when the guest stops.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(&self.console).unwrap_or_default();
            if let Some(rest) = text
                .lines()
                .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim().to_owned()))
            {
                return Ok(rest);
            }
            let problem = if self.qemu_pid().is_none() {
                "stopped"
            } else if start.elapsed() > timeout {
                "timed out"
            } else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            return Err(format!(
                "{} {problem} before printing {marker:?} ({:.1} s); console {} ends with: {}",
                self.name,
                start.elapsed().as_secs_f64(),
                self.console.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    }

    /// libvirt's bulk stats of the guest (`virsh domstats`), numeric fields only, e.g.
    /// `block.0.wr.bytes`, `net.0.tx.pkts`, `cpu.time`, `balloon.rss`.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>, String> {
        Ok(virsh(&["domstats", "--raw", &self.name])?
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
            .collect())
    }

    /// The domain's CPU time (ns, all of qemu's threads), read through libvirt's API as
    /// `virsh domstats`' `cpu.time` is, in milliseconds rather than a virsh process's time.
    pub fn cpu_time_ns(&self) -> Result<u64, String> {
        let conn = virt::connect::Connect::open_read_only(Some("qemu:///system"))
            .map_err(|e| format!("libvirt: {e}"))?;
        conn.lookup_domain_by_uuid_string(&self.uuid)
            .and_then(|domain| domain.info())
            .map(|info| info.cpu_time)
            .map_err(|e| format!("{}: {e}", self.name))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Err(e) = virsh(&["destroy", &self.name]) {
            eprintln!("cannot destroy test guest: {e}");
        }
        // A firmware-only guest has no disk.
        if !self.disk.as_os_str().is_empty()
            && let Err(e) = fs::remove_file(&self.disk)
        {
            eprintln!("cannot remove {}: {e}", self.disk.display());
        }
    }
}

/// [`Guest::start`], or None after `crate::skip` when the environment is not prepared.
pub fn start_or_skip(name: &str, workload: &Workload) -> Option<Guest> {
    match Guest::start(name, workload) {
        Ok(guest) => Some(guest),
        Err(reason) => {
            crate::skip(&reason);
            None
        }
    }
}

/// A guest whose vCPU burns for good, once it has started burning (or None after
/// `crate::skip`, as [`start_or_skip`]).
pub fn start_burning_or_skip(name: &str) -> Option<Guest> {
    let guest = start_or_skip(
        name,
        &Workload {
            burn_secs: -1,
            ..Workload::default()
        },
    )?;
    guest
        .wait_for("SETMOV: burn-start", BOOT)
        .expect("burn starts");
    Some(guest)
}

/// What `cargo xtask guests up` / `cargo xtask test` prepared (see xtask/src/guests.rs).
struct Manifest {
    kernel: String,
    initrd: String,
    domain_xml: String,
    cmdline: String,
    disks: String,
    consoles: String,
    network: String,
    address: String,
    prefix: u64,
}

impl Manifest {
    /// The manifest, once the environment is checked usable; else why not.
    fn load() -> Result<Manifest, String> {
        if !crate::is_root() {
            return Err("test guests need root (libvirt's system instance)".into());
        }
        let prepare = "run `cargo xtask guests up` or `cargo xtask test`";
        let text = fs::read_to_string(MANIFEST)
            .map_err(|e| format!("no test guests prepared ({MANIFEST}: {e}): {prepare}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{MANIFEST} is not JSON: {e}"))?;
        let field = |key: &str| {
            json[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{MANIFEST} has no text field {key:?}: {prepare}"))
        };
        let manifest = Manifest {
            kernel: field("kernel")?,
            initrd: field("initrd")?,
            domain_xml: field("domain_xml")?,
            cmdline: field("cmdline")?,
            disks: field("disks")?,
            consoles: field("consoles")?,
            network: field("network")?,
            address: field("address")?,
            prefix: json["prefix"]
                .as_u64()
                .ok_or_else(|| format!("{MANIFEST} has no number \"prefix\": {prepare}"))?,
        };
        virsh(&["version"]).map_err(|e| format!("libvirtd does not answer ({e}): {prepare}"))?;
        let active = virsh(&["net-list", "--name"])?;
        if !active.lines().any(|l| l.trim() == manifest.network) {
            return Err(format!(
                "network {} is not active: {prepare}",
                manifest.network
            ));
        }
        Ok(manifest)
    }

    /// The first address from `.FIRST_HOST` that no running guest of ours uses.
    fn free_address(&self) -> String {
        let used: Vec<String> = virsh(&["list", "--name"])
            .unwrap_or_else(|e| panic!("{e}"))
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with("setmov-"))
            .filter_map(|n| virsh(&["dumpxml", n]).ok())
            .filter_map(|xml| {
                let (_, rest) = xml.split_once("setmov.ip=")?;
                Some(rest.split('/').next()?.to_owned())
            })
            .collect();
        let (net, _) = self
            .address
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("bridge address {} is not IPv4", self.address));
        (FIRST_HOST..=254)
            .map(|host| format!("{net}.{host}"))
            .find(|ip| !used.contains(ip))
            .expect("every test guest address is taken")
    }
}

/// `virsh -c qemu:///system ARGS`: its stdout, or what failed in one line.
pub fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run virsh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "virsh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Restarts the running libvirtd as an operator would: SIGTERM, wait for it to exit, start it
/// again with its own command line (and the clean environment `cargo xtask guests` gives it),
/// then wait until it answers. Running guests keep running meanwhile.
pub fn restart_libvirtd() -> Result<(), String> {
    let stopped = stop_libvirtd("-TERM")?;
    stopped.start_again()
}

/// libvirtd as it was before [`stop_libvirtd`] ended it: its command line, to start it again.
#[derive(Debug)]
pub struct StoppedLibvirtd {
    argv: Vec<String>,
}

/// Ends the running libvirtd with `signal` (`kill`'s spelling: `-TERM`, `-KILL`) and waits
/// until it has exited. Its PID is the one in the PID file `cargo xtask guests` gives it, or
/// any process named libvirtd.
pub fn stop_libvirtd(signal: &str) -> Result<StoppedLibvirtd, String> {
    let pid = fs::read_to_string(LIBVIRTD_PID_FILE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "libvirtd")
        });
    let pid = match pid {
        Some(pid) => pid,
        None => {
            let out = Command::new("pgrep")
                .args(["-x", "libvirtd"])
                .output()
                .map_err(|e| format!("cannot run pgrep: {e}"))?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
                .ok_or("no libvirtd runs")?
        }
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| format!("cannot read libvirtd's command line: {e}"))?;
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if argv.is_empty() {
        return Err("libvirtd has no command line".into());
    }
    let killed = Command::new("kill").args([signal, &pid]).status();
    if !killed.is_ok_and(|s| s.success()) {
        return Err(format!("cannot send {signal} to libvirtd {pid}"));
    }
    // Gone, or a zombie waiting for a slow init to reap it.
    let exited = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exited() {
        if Instant::now() > deadline {
            return Err(format!("libvirtd {pid} does not stop"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(StoppedLibvirtd { argv })
}

impl StoppedLibvirtd {
    /// Starts libvirtd again with its own command line, then waits until it answers.
    pub fn start_again(self) -> Result<(), String> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or("libvirtd has no command line")?;
        let status = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                "LIBVIRT_LOG_OUTPUTS",
                "3:file:/var/log/libvirt/libvirtd.log",
            )
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        if !status.success() {
            return Err(format!("{program} did not start again: {status}"));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while virsh(&["version"]).is_err() {
            if Instant::now() > deadline {
                return Err("libvirtd does not answer after its restart".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}
