//! The block probe's eBPF cost (issue #16), part of `cargo xtask bench`: per program, from the
//! kernel's own BPF statistics, beside a plain bpftrace script doing the same pairing
//! (`ebpf_cost/peer.bt`) on the same fio run; then fio's IOPS with and without the monitor
//! attached, in alternating rounds.
//!
//! The I/O is `fio --rw=randread --bs=4k --iodepth=16 --direct=1` on a loop device (direct I/O)
//! over a file on `/`, made for the bench and removed after it. Each process's programs are
//! found through its descriptors; their `run_time_ns` and `run_cnt` (`bpftool prog show`) are
//! read before and after the fio run.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The peer script, as a bpftrace user would write it.
const PEER_SCRIPT: &str = include_str!("ebpf_cost/peer.bt");
/// The three programs the issue compares, one event each per request.
const COMPARED: [&str; 3] = ["block_io_start", "block_rq_issue", "block_rq_complete"];
/// Every block tracepoint the monitor or the peer attaches to.
const BLOCK_TRACEPOINTS: [&str; 6] = [
    "block_io_start",
    "block_bio_queue",
    "block_bio_backmerge",
    "block_bio_frontmerge",
    "block_rq_issue",
    "block_rq_complete",
];
/// The backing file's size: large enough that 4k random reads rarely hit one block twice.
const DISK_BYTES: usize = 512 << 20;
/// How long the monitor and bpftrace may take to attach.
const ATTACH_DEADLINE: Duration = Duration::from_secs(60);
/// bpftrace's map size, as the tests give it (`tests/src/bpftrace.rs`): its default, 4096,
/// fills with requests whose completion is never seen and then drops updates, which would
/// make it look cheaper than it is.
const PEER_MAP_KEYS_MAX: &str = "32768";
const KERNEL_BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Pause after the monitor stops, before fio runs again.
const SETTLE: Duration = Duration::from_secs(1);

pub struct Options {
    /// The `setmov` binary to measure.
    pub binary: PathBuf,
    /// Length of the fio run the programs' costs are read over.
    pub cost_seconds: u64,
    /// Pairs of fio rounds (one with the monitor attached, one without).
    pub rounds: usize,
    /// Length of one fio round.
    pub round_seconds: u64,
}

/// Measures and prints both parts.
pub fn ebpf_cost(options: &Options) -> anyhow::Result<()> {
    for tool in ["fio", "bpftrace", "bpftool", "losetup"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            bail!("the eBPF cost bench needs {tool} (cargo xtask setup installs it)");
        }
    }
    let work = tempfile::Builder::new()
        .prefix("setmov-ebpf-cost")
        .tempdir_in("/var/tmp")
        .context("cannot make a folder in /var/tmp")?;
    let disk = LoopDisk::create(&work.path().join("disk.img"))?;
    println!(
        "eBPF block cost: fio 4k random reads, iodepth 16, direct, on {} (a loop device with \
         direct I/O over a file on /); load average before: {}",
        disk.device,
        load_average()
    );
    let costs = {
        let _stats = KernelBpfStats::enable()?;
        measure_costs(options, work.path(), &disk.device)?
    };
    print_costs(&costs);
    let rounds = measure_rounds(options, work.path(), &disk.device)?;
    print_rounds(options, &rounds);
    println!("load average after: {}", load_average());
    Ok(())
}

/// One program's runs over the fio run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cost {
    run_time_ns: u64,
    run_count: u64,
}

impl Cost {
    fn ns_per_event(self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// Programs by tracepoint, for the monitor and for the peer script.
struct Costs {
    setmov: BTreeMap<String, Cost>,
    peer: BTreeMap<String, Cost>,
    seconds: u64,
    iops: f64,
}

fn measure_costs(options: &Options, work: &Path, device: &str) -> anyhow::Result<Costs> {
    let mut monitor = Monitor::start(&options.binary, work)?;
    let script = work.join("peer.bt");
    fs::write(&script, PEER_SCRIPT)?;
    let mut peer = Process::spawn(
        Command::new("bpftrace")
            .arg(&script)
            .env("BPFTRACE_MAP_KEYS_MAX", PEER_MAP_KEYS_MAX)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let setmov_programs = wait_for_programs(monitor.process.pid, &mut monitor.process)?;
    let peer_programs = wait_for_programs(peer.pid, &mut peer)?;
    let before = (read_costs(&setmov_programs)?, read_costs(&peer_programs)?);
    let iops = fio_iops(device, options.cost_seconds)?;
    let after = (read_costs(&setmov_programs)?, read_costs(&peer_programs)?);
    peer.interrupt_and_wait()?;
    monitor.stop()?;
    Ok(Costs {
        setmov: difference(&before.0, &after.0),
        peer: difference(&before.1, &after.1),
        seconds: options.cost_seconds,
        iops,
    })
}

fn print_costs(costs: &Costs) {
    println!(
        "per program over one {} s fio run ({:.0} IOPS), kernel BPF statistics \
         (run_time_ns / run_cnt):",
        costs.seconds, costs.iops
    );
    println!(
        "  {:22} {:>16} {:>12} {:>18} {:>12}",
        "program", "setmov ns/event", "events", "bpftrace ns/event", "events"
    );
    let cell = |cost: Option<&Cost>| match cost.and_then(|c| c.ns_per_event().map(|ns| (ns, c))) {
        Some((ns, c)) => (format!("{ns:.1}"), c.run_count.to_string()),
        None => ("-".to_owned(), "0".to_owned()),
    };
    let mut names: Vec<&String> = costs.setmov.keys().chain(costs.peer.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let (ours, our_events) = cell(costs.setmov.get(name));
        let (theirs, their_events) = cell(costs.peer.get(name));
        println!("  {name:22} {ours:>16} {our_events:>12} {theirs:>18} {their_events:>12}");
    }
    let per_io = |programs: &BTreeMap<String, Cost>| -> Option<f64> {
        COMPARED
            .iter()
            .map(|name| programs.get(*name).and_then(|c| c.ns_per_event()))
            .sum()
    };
    match (per_io(&costs.setmov), per_io(&costs.peer)) {
        (Some(ours), Some(theirs)) => println!(
            "  per I/O ({}): setmov {ours:.1} ns, bpftrace {theirs:.1} ns, ratio {:.2} \
             (target <= 0.70)",
            COMPARED.join(" + "),
            ours / theirs
        ),
        _ => println!("  per I/O: not measured (a compared program did not run)"),
    }
    // Every block program's time over the requests started: merges and requeues included.
    let per_request = |programs: &BTreeMap<String, Cost>| {
        let total: u64 = programs.values().map(|c| c.run_time_ns).sum();
        let started = programs.get(COMPARED[0]).map_or(0, |c| c.run_count);
        (started > 0).then(|| total as f64 / started as f64)
    };
    if let (Some(ours), Some(theirs)) = (per_request(&costs.setmov), per_request(&costs.peer)) {
        println!(
            "  all block programs' time per request started: setmov {ours:.1} ns, bpftrace \
             {theirs:.1} ns"
        );
    }
}

/// fio's IOPS in one round with and one without the monitor.
struct Round {
    with: f64,
    without: f64,
}

impl Round {
    fn loss_percent(&self) -> f64 {
        100.0 * (1.0 - self.with / self.without)
    }
}

/// Alternating rounds: the order within each pair flips, so that a drift of the machine
/// (others' builds, the page cache) weighs on both sides alike.
fn measure_rounds(options: &Options, work: &Path, device: &str) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::new();
    for pair in 0..options.rounds {
        let with = || -> anyhow::Result<f64> {
            let mut monitor = Monitor::start(&options.binary, work)?;
            wait_for_programs(monitor.process.pid, &mut monitor.process)?;
            let iops = fio_iops(device, options.round_seconds);
            monitor.stop()?;
            iops
        };
        let without = || fio_iops(device, options.round_seconds);
        let round = if pair % 2 == 0 {
            let with = with()?;
            Round {
                with,
                without: without()?,
            }
        } else {
            let without = without()?;
            Round {
                with: with()?,
                without,
            }
        };
        eprintln!(
            "xtask: round {}: {:.0} IOPS with setmov, {:.0} without ({:+.2} %)",
            pair + 1,
            round.with,
            round.without,
            -round.loss_percent()
        );
        rounds.push(round);
    }
    Ok(rounds)
}

fn print_rounds(options: &Options, rounds: &[Round]) {
    if rounds.is_empty() {
        println!("fio IOPS loss: not measured (--rounds 0)");
        return;
    }
    let mut losses: Vec<f64> = rounds.iter().map(Round::loss_percent).collect();
    losses.sort_by(f64::total_cmp);
    let median = |sorted: &[f64]| match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted.get(n / 2).copied().unwrap_or(f64::NAN),
        n => match (sorted.get(n / 2 - 1), sorted.get(n / 2)) {
            (Some(a), Some(b)) => (a + b) / 2.0,
            _ => f64::NAN,
        },
    };
    let mut with: Vec<f64> = rounds.iter().map(|r| r.with).collect();
    let mut without: Vec<f64> = rounds.iter().map(|r| r.without).collect();
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    println!(
        "fio IOPS loss with every probe attached, {} alternating pairs of {} s rounds: median \
         {:.2} % (min {:.2} %, max {:.2} %; target <= 1 %); median IOPS {:.0} with, {:.0} \
         without",
        rounds.len(),
        options.round_seconds,
        median(&losses),
        losses.first().copied().unwrap_or(f64::NAN),
        losses.last().copied().unwrap_or(f64::NAN),
        median(&with),
        median(&without)
    );
}

/// A child process, killed and reaped if still running when dropped.
struct Process {
    child: Child,
    pid: u32,
}

impl Process {
    fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let pid = child.id();
        Ok(Self { child, pid })
    }

    /// SIGINT (bpftrace prints its maps and detaches), then waits.
    fn interrupt_and_wait(&mut self) -> anyhow::Result<()> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = i32::try_from(self.pid).context("PID out of range")?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `setmov run` with every probe, on a database of its own.
struct Monitor {
    process: Process,
}

impl Monitor {
    /// Starts the monitor and waits for its first tick: by then every probe is attached.
    /// Attaching patches the kernel's code on every CPU, which here holds I/O back for a while:
    /// fio must not run across it.
    fn start(binary: &Path, work: &Path) -> anyhow::Result<Self> {
        let log = fs::File::create(work.join("setmov.log"))?;
        let mut process = Process::spawn(
            Command::new(binary)
                .args(["run", "--interval", "1s", "--database"])
                .arg(work.join("cost.db"))
                .stdout(Stdio::piped())
                .stderr(log),
        )?;
        let stdout = process.child.stdout.take().context("no stdout")?;
        let (ticked, first_tick) = std::sync::mpsc::channel();
        // Reads every summary line, so that the monitor never blocks on a full pipe.
        std::thread::spawn(move || {
            for _ in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ticked.send(());
            }
        });
        if first_tick.recv_timeout(ATTACH_DEADLINE).is_err() {
            bail!("setmov run printed no tick within 60 s");
        }
        Ok(Self { process })
    }

    /// Stops the monitor, then lets the detaching of its probes settle (as attaching, it
    /// patches the kernel's code) before the next round.
    fn stop(mut self) -> anyhow::Result<()> {
        crate::footprint::stop(&mut self.process.child)?;
        std::thread::sleep(SETTLE);
        Ok(())
    }
}

/// Waits until `pid` has attached its programs to the compared tracepoints; returns program id
/// by tracepoint of all its block programs.
fn wait_for_programs(pid: u32, process: &mut Process) -> anyhow::Result<BTreeMap<String, u64>> {
    let started = Instant::now();
    loop {
        let programs = block_programs_of(pid)?;
        if COMPARED.iter().all(|name| programs.contains_key(*name)) {
            return Ok(programs);
        }
        if let Some(status) = process.child.try_wait()? {
            bail!("process {pid} ended ({status}) before attaching its block programs");
        }
        if started.elapsed() > ATTACH_DEADLINE {
            bail!("process {pid} did not attach its block programs within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Program id by tracepoint of the block programs `pid` holds: the program ids in its
/// descriptors' `fdinfo` (programs and links), named by `bpftool prog show` (names are cut to
/// 15 bytes: matched against the block tracepoints by prefix).
fn block_programs_of(pid: u32) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut programs = BTreeMap::new();
    let fdinfo = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&fdinfo).with_context(|| format!("cannot list {fdinfo}"))? {
        // A descriptor closed meanwhile is not a program.
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let Some(id) = text
            .lines()
            .find_map(|line| line.strip_prefix("prog_id:"))
            .and_then(|id| id.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let info = bpftool(&["prog", "show", "id", &id.to_string()])?;
        let name = info.get("name").and_then(|n| n.as_str()).unwrap_or("");
        if let Some(tracepoint) = BLOCK_TRACEPOINTS
            .iter()
            .find(|tracepoint| !name.is_empty() && tracepoint.starts_with(name))
        {
            programs.insert((*tracepoint).to_owned(), id);
        }
    }
    Ok(programs)
}

fn read_costs(programs: &BTreeMap<String, u64>) -> anyhow::Result<BTreeMap<String, Cost>> {
    let mut costs = BTreeMap::new();
    for (name, id) in programs {
        let info = bpftool(&["prog", "show", "id", &id.to_string()])?;
        // Both are left out while they are 0.
        let field = |key: &str| info.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        costs.insert(
            name.clone(),
            Cost {
                run_time_ns: field("run_time_ns"),
                run_count: field("run_cnt"),
            },
        );
    }
    Ok(costs)
}

fn difference(
    before: &BTreeMap<String, Cost>,
    after: &BTreeMap<String, Cost>,
) -> BTreeMap<String, Cost> {
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            let cost = Cost {
                run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                run_count: a.run_count.saturating_sub(b.run_count),
            };
            (name.clone(), cost)
        })
        .collect()
}

fn bpftool(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let output = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("cannot run bpftool")?;
    if !output.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout).context("bpftool printed no JSON")
}

/// fio's read IOPS over `seconds` of 4k random reads at iodepth 16, direct.
fn fio_iops(device: &str, seconds: u64) -> anyhow::Result<f64> {
    let output = Command::new("fio")
        .args([
            "--name=ebpf-cost",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=16",
            "--direct=1",
            "--ioengine=libaio",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--filename={device}"))
        .arg(format!("--runtime={seconds}"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run fio")?;
    if !output.status.success() {
        bail!(
            "fio failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("fio printed no JSON")?;
    report
        .pointer("/jobs/0/read/iops")
        .and_then(serde_json::Value::as_f64)
        .context("no read IOPS in fio's report")
}

/// A loop device with direct I/O over a file of real (written) blocks; detached when dropped.
struct LoopDisk {
    device: String,
}

impl LoopDisk {
    fn create(file: &Path) -> anyhow::Result<Self> {
        // Written, not allocated: reads of unwritten extents never reach the disk.
        let mut out = fs::File::create(file)?;
        let chunk = vec![0x5a_u8; 1 << 20];
        for _ in 0..DISK_BYTES / chunk.len() {
            out.write_all(&chunk)?;
        }
        out.sync_all()?;
        let output = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(file)
            .output()
            .context("cannot run losetup")?;
        if !output.status.success() {
            bail!(
                "losetup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Self { device })
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// `kernel.bpf_stats_enabled` on while held, then back to what it was.
struct KernelBpfStats {
    before: String,
}

impl KernelBpfStats {
    fn enable() -> anyhow::Result<Self> {
        let before = fs::read_to_string(KERNEL_BPF_STATS)
            .with_context(|| format!("cannot read {KERNEL_BPF_STATS}"))?;
        fs::write(KERNEL_BPF_STATS, "1")
            .with_context(|| format!("cannot turn on {KERNEL_BPF_STATS}"))?;
        Ok(Self { before })
    }
}

impl Drop for KernelBpfStats {
    fn drop(&mut self) {
        let _ = fs::write(KERNEL_BPF_STATS, self.before.trim());
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}
