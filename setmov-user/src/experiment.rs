//! `setmov experiment mem-knee`: the same read workload in test guests of several memory
//! sizes, recorded by SETMOV itself, to find the size past which more memory no longer raises
//! read throughput (the paper's Figure 13).
//!
//! It uses the test-guest assets that `cargo xtask guests prepare` leaves (manifest
//! `/var/lib/setmov-guests/guests.json`): one transient libvirt guest per size, one after the
//! other so they do not compete, each reading the first `working_set` MiB of its disk `rounds`
//! times through its page cache. The disk is limited to `disk_limit` bytes/s (libvirt
//! `iotune`), like shared VDI storage: a round that misses the cache pays for it, one that hits
//! does not. A `setmov run` records the whole experiment into `<out>/mem-knee.db`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::analysis::knee::{round_seconds, warm_throughput};
use crate::progress::Progress;

/// Where `cargo xtask guests prepare` describes the guest assets.
pub const GUEST_MANIFEST: &str = "/var/lib/setmov-guests/guests.json";

/// How the experiment runs.
#[derive(Debug, Clone)]
pub struct MemKnee {
    pub sizes_mib: Vec<u32>,
    pub working_set_mib: u32,
    pub rounds: u32,
    pub disk_limit_bytes_s: u64,
    pub out: PathBuf,
}

/// One guest size's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SizeResult {
    pub memory_mib: u32,
    /// Seconds of each read round, the first one filling the cache.
    pub round_seconds: Vec<f64>,
    /// MiB/s of the rounds after the first.
    pub throughput_mib_s: Option<f64>,
    /// What SETMOV recorded the guest reading from its virtual disk, in MiB.
    pub disk_read_mib: Option<f64>,
}

/// The assets' paths and the domain template.
struct Assets {
    kernel: String,
    initrd: String,
    domain_xml: String,
    cmdline: String,
    disks: String,
    consoles: String,
    network: String,
}

impl Assets {
    fn load() -> anyhow::Result<Assets> {
        let text = std::fs::read_to_string(GUEST_MANIFEST).with_context(|| {
            format!("no test-guest assets ({GUEST_MANIFEST}): run `cargo xtask guests prepare`")
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{GUEST_MANIFEST} is not JSON"))?;
        let field = |key: &str| -> anyhow::Result<String> {
            json.get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("{GUEST_MANIFEST} has no {key:?}"))
        };
        Ok(Assets {
            kernel: field("kernel")?,
            initrd: field("initrd")?,
            domain_xml: std::fs::read_to_string(field("domain_xml")?)
                .context("cannot read the guests' domain template")?,
            cmdline: field("cmdline")?,
            disks: field("disks")?,
            consoles: field("consoles")?,
            network: field("network")?,
        })
    }
}

fn virsh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .context("cannot run virsh")?;
    if !out.status.success() {
        bail!(
            "virsh {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The monitor recording the experiment, its log in a file; stopped (SIGINT) on drop.
struct Recorder {
    child: Child,
    log: PathBuf,
}

impl Recorder {
    /// An error, with the end of its log, when it is no longer running.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "the recording `setmov run` stopped ({status}): {}",
                log_tail(&self.log)
            ),
            Err(e) => bail!("cannot watch the recording `setmov run`: {e}"),
        }
    }

    /// Stops it with SIGINT, as an operator would; an error unless it exits 0.
    fn stop(mut self) -> anyhow::Result<()> {
        self.interrupt();
        let status = self
            .child
            .wait()
            .context("cannot wait for the recording `setmov run`")?;
        if !status.success() {
            bail!(
                "the recording `setmov run` failed ({status}): {}",
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    fn interrupt(&self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.interrupt();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!("{} (log {})", tail.join(" | "), log.display())
}

/// Waits until the recording has stored `ticks` ticks after `after` (its rows of that moment
/// are then in the database), or fails after `timeout`.
fn wait_for_ticks(
    recorder: &mut Recorder,
    database: &Path,
    after: time::OffsetDateTime,
    ticks: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let since = crate::store::format_time(after);
    let started = Instant::now();
    loop {
        recorder.check_running()?;
        let stored = rusqlite::Connection::open(database)
            .and_then(|conn| {
                conn.query_row(
                    "SELECT COUNT(*) FROM host_usage WHERE time > ?1",
                    [&since],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0);
        if stored >= ticks {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "the recording stored {stored} of {ticks} ticks within {}: {}",
                humantime::format_duration(timeout),
                log_tail(&recorder.log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A transient guest; destroyed, with its disk, on drop.
struct Guest {
    name: String,
    disk: PathBuf,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = std::fs::remove_file(&self.disk);
    }
}

/// Runs the experiment; `setmov` is this program (it records the experiment).
pub fn mem_knee(config: &MemKnee, setmov: &Path) -> anyhow::Result<Vec<SizeResult>> {
    if config.sizes_mib.is_empty() || config.rounds < 2 {
        bail!("give at least one size and two rounds (the first fills the cache)");
    }
    let assets = Assets::load()?;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let database = config.out.join("mem-knee.db");
    let _ = std::fs::remove_file(&database);
    let log = config.out.join("recorder.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut recorder = Recorder {
        child: Command::new(setmov)
            .args([
                "run",
                "--quiet",
                "--interval",
                "1s",
                "--no-ebpf",
                "--database",
            ])
            .arg(&database)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("cannot start setmov run to record the experiment")?,
        log,
    };
    // Its first tick: the database and its schema are there, the recording works.
    let start = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    wait_for_ticks(&mut recorder, &database, start, 1, Duration::from_secs(30))?;
    let mut results = Vec::new();
    let mut progress = Progress::steps("mem-knee", config.sizes_mib.len() as u64);
    for &size in &config.sizes_mib {
        let name = format!("setmov-knee-{size}");
        progress.set_step(&format!(
            "mem-knee: {name}, {size} MiB, reading {} MiB {} times",
            config.working_set_mib, config.rounds
        ));
        let console = run_guest(&assets, config, &name, size)?;
        recorder.check_running()?;
        progress.advance(1);
        let rounds = round_seconds(&console);
        results.push(SizeResult {
            memory_mib: size,
            throughput_mib_s: warm_throughput(config.working_set_mib, &rounds),
            round_seconds: rounds,
            disk_read_mib: None,
        });
    }
    // Two more ticks, so that the last guest's reads are in the database; then stop it.
    let last_guest_done = time::OffsetDateTime::now_utc();
    wait_for_ticks(
        &mut recorder,
        &database,
        last_guest_done,
        2,
        Duration::from_secs(30),
    )?;
    recorder.stop()?;
    for result in &mut results {
        result.disk_read_mib =
            recorded_reads(&database, &format!("setmov-knee-{}", result.memory_mib));
    }
    progress.finish(&format!(
        "mem-knee: {} guest sizes measured",
        config.sizes_mib.len()
    ));
    Ok(results)
}

/// Boots one guest, waits for its workload to end and returns its console.
fn run_guest(assets: &Assets, config: &MemKnee, name: &str, size: u32) -> anyhow::Result<String> {
    let _ = virsh(&["destroy", name]);
    let disk = Path::new(&assets.disks).join(format!("{name}.img"));
    let console = Path::new(&assets.consoles).join(format!("{name}.log"));
    let _ = std::fs::remove_file(&console);
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&disk)
        .arg(format!("{}M", config.working_set_mib + 16))
        .status()
        .context("cannot run qemu-img")?;
    if !status.success() {
        bail!("qemu-img create {} failed", disk.display());
    }
    let guest = Guest {
        name: name.to_owned(),
        disk: disk.clone(),
    };
    let cmdline = format!(
        "{} setmov.cache_mb={} setmov.cache_rounds={}",
        assets.cmdline, config.working_set_mib, config.rounds
    );
    let xml = assets
        .domain_xml
        .replace("<memory unit='MiB'>128</memory>", &format!("<memory unit='MiB'>{size}</memory>"))
        .replace(
            "<target dev='vda' bus='virtio'/>",
            &format!(
                "<target dev='vda' bus='virtio'/><iotune><total_bytes_sec>{}</total_bytes_sec></iotune>",
                config.disk_limit_bytes_s
            ),
        )
        .replace("{name}", name)
        .replace("{kernel}", &assets.kernel)
        .replace("{initrd}", &assets.initrd)
        .replace("{cmdline}", &cmdline)
        .replace("{disk}", &disk.to_string_lossy())
        .replace("{network}", &assets.network)
        .replace("{console}", &console.to_string_lossy());
    let file = config.out.join(format!("{name}.xml"));
    std::fs::write(&file, xml).with_context(|| format!("cannot write {}", file.display()))?;
    virsh(&["create", &file.to_string_lossy()])?;
    let started = Instant::now();
    let timeout = Duration::from_secs(120 + 30 * u64::from(config.rounds));
    loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("SETMOV: cache-done") {
            drop(guest);
            return Ok(text);
        }
        if let Some(error) = text.lines().find(|l| l.contains("SETMOV: error")) {
            bail!("guest {name}: {error}");
        }
        if started.elapsed() > timeout {
            bail!(
                "guest {name} did not finish its reads within {}",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// MiB the monitor saw guest `name` read from its virtual disk (Σ rate × Δt).
fn recorded_reads(database: &Path, name: &str) -> Option<f64> {
    let conn = rusqlite::Connection::open(database).ok()?;
    conn.query_row(
        "SELECT SUM(u.interval_s * u.disk_read_bytes_s) / 1048576.0 FROM vm_usage u
         JOIN vms v ON v.uuid = u.uuid WHERE v.name = ?1",
        [name],
        |r| r.get::<_, Option<f64>>(0),
    )
    .ok()
    .flatten()
}
