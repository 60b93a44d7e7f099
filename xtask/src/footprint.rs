//! The monitor's footprint, part of `cargo xtask bench`: peak and steady memory and the time
//! from start to the first tick, with the eBPF probes on and with `--no-ebpf`, on whatever
//! guests are running.
//!
//! Memory is the kernel's accounting of the running process (`/proc/PID/status`): `VmHWM`, the
//! peak resident set, and `VmRSS` (split into anonymous and file-backed pages) once start-up is
//! long over, with the binary read afresh into the page cache first; and from
//! `/proc/PID/smaps_rollup`, how much of it other processes map too (libvirt's libraries, which
//! libvirtd maps) and the proportional set size that divides those among them. Start-up is measured from
//! outside, as a user sees it: from just before the process is spawned to the arrival of the
//! first tick's summary line on its stdout, at `--interval 10ms` (so the first tick is due
//! 10 ms after sampling starts, and that is included).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The measured runs of one configuration.
pub struct Options {
    /// The `setmov` binary to measure.
    pub binary: PathBuf,
    /// How long the memory run samples (at 1 s) before its `VmRSS` is read.
    pub steady_after: Duration,
    /// Measured start-ups (after one that warms the page cache and creates the database).
    pub startups: usize,
}

/// One configuration's figures.
struct Footprint {
    peak_kib: u64,
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    /// Resident pages other processes map too (libvirt's libraries, which libvirtd maps).
    shared_kib: u64,
    /// Proportional set size: each shared page divided among the processes that map it.
    pss_kib: u64,
    /// What the last summary line said after `vms` ("3", "n/a", ...).
    vms: String,
    /// Sorted start-up times.
    startups: Vec<Duration>,
}

/// Measures `setmov run` with eBPF on and with `--no-ebpf`, and prints both.
pub fn footprint(options: &Options) -> anyhow::Result<()> {
    cache_afresh(&options.binary)?;
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("footprint.db");
    let mut lines = Vec::new();
    for (label, extra) in [("eBPF on", &[][..]), ("--no-ebpf", &["--no-ebpf"][..])] {
        let figures = measure(options, &database, extra)
            .with_context(|| format!("measuring setmov run ({label})"))?;
        lines.push(describe(label, options, &figures));
    }
    println!("footprint of {}:", options.binary.display());
    for line in lines {
        println!("  {line}");
    }
    Ok(())
}

fn measure(options: &Options, database: &Path, extra: &[&str]) -> anyhow::Result<Footprint> {
    let run = |args: &[&str]| {
        let mut command = Command::new(&options.binary);
        command
            .arg("run")
            .arg("--database")
            .arg(database)
            .args(args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    };
    let mut startups = Vec::new();
    for round in 0..=options.startups {
        // No --count: the end of a run detaches the probes (~80 ms a tracepoint) on the
        // runtime's one thread, which would hold back the lines of ticks not yet complete.
        let mut command = run(&["--interval", "10ms"]);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        let first = first_line(&mut child, Duration::from_secs(30));
        let elapsed = started.elapsed();
        stop(&mut child)?;
        first?;
        // Round 0 creates the database and warms the caches the others find warm.
        if round > 0 {
            startups.push(elapsed);
        }
    }
    startups.sort();

    let mut child = run(&["--interval", "1s"])
        .spawn()
        .with_context(|| format!("cannot start {}", options.binary.display()))?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("no stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(options.steady_after);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", child.id()));
    stop(&mut child)?;
    let status = status.context("the monitor ended before it was measured")?;
    let rollup = rollup.context("the monitor ended before it was measured")?;
    let field = |key: &str| {
        status_kib(&status, key).with_context(|| format!("no {key} in /proc/PID/status"))
    };
    let rollup_field = |key: &str| {
        status_kib(&rollup, key).with_context(|| format!("no {key} in /proc/PID/smaps_rollup"))
    };
    let vms = rx
        .try_iter()
        .filter_map(|line| vms_field(&line).map(str::to_owned))
        .last()
        .context("the monitor printed no tick")?;
    Ok(Footprint {
        peak_kib: field("VmHWM")?,
        rss_kib: field("VmRSS")?,
        anon_kib: field("RssAnon")?,
        file_kib: field("RssFile")?,
        shared_kib: rollup_field("Shared_Clean")? + rollup_field("Shared_Dirty")?,
        pss_kib: rollup_field("Pss")?,
        vms,
        startups,
    })
}

/// Drops `binary` from the page cache and reads it back whole. How much of a binary its
/// process maps depends on how its pages came into the cache (a freshly written file is held
/// in larger blocks than one read back): 1.3 MiB of `VmRSS` either way for the same build.
fn cache_afresh(binary: &Path) -> anyhow::Result<()> {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file =
        std::fs::File::open(binary).with_context(|| format!("cannot open {}", binary.display()))?;
    // Only clean pages leave the cache.
    file.sync_all()?;
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .context("cannot drop the binary from the page cache")?;
    std::io::copy(&mut &file, &mut std::io::sink())?;
    Ok(())
}

/// Waits for the first line `child` prints; an error if none comes within `limit`.
fn first_line(child: &mut Child, limit: Duration) -> anyhow::Result<()> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(read.map(|n| n > 0));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => bail!("the monitor printed no tick"),
        Ok(Err(e)) => Err(e).context("reading the monitor's stdout"),
        Err(_) => {
            let _ = child.kill();
            bail!("no tick within {} s", limit.as_secs())
        }
    }
}

/// SIGTERM (the monitor finishes its tick and stops), then waits; an error if it did not
/// stop cleanly.
pub fn stop(child: &mut Child) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = i32::try_from(child.id()).context("PID out of range")?;
    // Already gone (it failed) is told by its status below.
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let status = child.wait()?;
    if !status.success() {
        bail!("setmov run exited with {status}");
    }
    Ok(())
}

fn describe(label: &str, options: &Options, f: &Footprint) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let startup = match (f.startups.first(), f.startups.last()) {
        (Some(min), Some(max)) => format!(
            "{:.0} ms (median of {}, {:.0}-{:.0})",
            ms(&f.startups[f.startups.len() / 2]),
            f.startups.len(),
            ms(min),
            ms(max)
        ),
        _ => "not measured".to_owned(),
    };
    let vms = match f.vms.as_str() {
        "n/a" => "no VMs (libvirt unavailable: start guests with `cargo xtask guests up`)".into(),
        n => format!("{n} VMs"),
    };
    format!(
        "{label:9}: VmHWM {:.1} MiB; VmRSS after {} s {:.1} MiB (anon {:.1}, file {:.1}; \
         {:.1} shared with other processes; PSS {:.1}); start-up to the first tick {startup}; \
         {vms}",
        mib(f.peak_kib),
        options.steady_after.as_secs(),
        mib(f.rss_kib),
        mib(f.anon_kib),
        mib(f.file_kib),
        mib(f.shared_kib),
        mib(f.pss_kib),
    )
}

/// `VmHWM:\t   84124 kB` → 84124.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// "... | vms 3 busiest setmov-net 16.0%/vCPU | ebpf ..." → "3".
fn vms_field(summary: &str) -> Option<&str> {
    summary
        .split(" | ")
        .find_map(|part| part.strip_prefix("vms "))?
        .split_whitespace()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_in_kib() {
        let status =
            "Name:\tsetmov\nVmHWM:\t   84124 kB\nVmRSS:\t   29340 kB\nRssAnon:\t    4028 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(84124));
        assert_eq!(status_kib(status, "VmRSS"), Some(29340));
        assert_eq!(status_kib(status, "RssAnon"), Some(4028));
        assert_eq!(status_kib(status, "RssFile"), None);
        assert_eq!(status_kib(status, "Name"), None);
    }

    #[test]
    fn vms_of_a_summary_line() {
        let line = "2026-11-30T06:45:22.166Z 192.0.2.2 cpu  24.4% mem   4.4% disk r 0 B/s w 4.0 \
                    KiB/s 1 IOPS net rx 16.8 kbit/s tx 17.0 kbit/s | vms 3 busiest setmov-net \
                    16.0%/vCPU | ebpf block r 0 B (0 ops) w 4.0 KiB (1 ops)";
        assert_eq!(vms_field(line), Some("3"));
        assert_eq!(
            vms_field("... net rx 0.0 bit/s | vms n/a | ebpf block"),
            Some("n/a")
        );
        assert_eq!(vms_field("no summary"), None);
    }
}
