//! `cargo xtask`: set-up, run, test and bench SETMOV on a fresh machine.
//!
//! It only orchestrates: installs what is missing, then calls cargo and the built binary.
//! The eBPF object itself is built by `setmov-user/build.rs`.

mod ebpf_cost;
mod footprint;
mod fuzz;
mod guests;
mod install;
mod mariadb;
mod packages;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (Debian packages, rust-src, bpf-linker); safe to
    /// repeat.
    Setup,
    /// Set up, build in release mode and run `setmov run` on the embedded store.
    /// Arguments after `--` go to `setmov run`, e.g. `cargo xtask run -- --count 5`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and lints, prepare the test guests, start the test MariaDB,
    /// run every test, take the guests and MariaDB down again, then fuzz each parser for 20 s.
    /// Every test must run for real: one that cannot (no root, a service missing) fails,
    /// unless --allow-skips.
    Test {
        /// Let tests that cannot run here skip (each says why; the lines are listed at the
        /// end) instead of failing: for a local run without root or services.
        #[arg(long)]
        allow_skips: bool,
    },
    /// Fuzz every parser of outside text (cargo-fuzz on nightly, both installed when missing):
    /// each target in turn, seeded from the fixtures; prints executions and crashes per target
    /// and fails on a crash.
    Fuzz {
        /// One target (proc_stat, config_check, ...); all of them without it.
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Build without optimisation: a quicker build, fewer executions (CI's smoke run).
        #[arg(long)]
        dev: bool,
        /// cargo-fuzz's target folder, which also holds the corpora, crash artifacts and logs
        /// [default: <CARGO_TARGET_DIR or target>/fuzz].
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Real test guests (tiny VMs under libvirt on an isolated bridge); needs root.
    Guests {
        #[command(subcommand)]
        action: GuestsAction,
    },
    /// A MariaDB server for the MySQL store's tests, on 127.0.0.1:3307 (not systemd's, not the
    /// system's); needs root.
    Mariadb {
        #[command(subcommand)]
        action: MariadbAction,
    },
    /// Build the release binary and install it with a hardened systemd unit
    /// (contrib/systemd/setmov.service), a default /etc/setmov/setmov.toml (an existing one is
    /// kept), bash, zsh and fish completions and man pages; needs root for `/`.
    Install {
        /// Install below this folder instead of `/` (to stage a package).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The binary goes to PREFIX/sbin, completions and man pages below PREFIX/share.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Install this binary instead of building the release one.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Measure the cost of a host tick (criterion), the monitor's own CPU use over 60 s, its
    /// memory and start-up time with and without eBPF (the footprint), the block probe's eBPF
    /// cost against a bpftrace peer and fio's IOPS with and without it, and the CPU time per VM
    /// per tick with the demo guests running.
    Bench {
        /// Length of the whole-monitor run, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only the footprint, of the guests already running (none are started).
        #[arg(long)]
        footprint: bool,
        /// The binary of the footprint or of the eBPF cost [default: the release build, built
        /// first].
        #[arg(long)]
        binary: Option<PathBuf>,
        /// How long the footprint's monitor samples before its resident set is read.
        #[arg(long, default_value_t = 20)]
        steady_after: u64,
        /// Only the block probe's eBPF cost: per program against the bpftrace peer script on
        /// one fio run, then fio's IOPS with and without the monitor in alternating rounds.
        #[arg(long, conflicts_with = "footprint")]
        ebpf_cost: bool,
        /// Length of the fio run the programs' costs are read over.
        #[arg(long, default_value_t = 20)]
        cost_seconds: u64,
        /// Pairs of fio rounds with and without the monitor.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Length of one fio round.
        #[arg(long, default_value_t = 5)]
        round_seconds: u64,
    },
}

#[derive(Subcommand)]
enum GuestsAction {
    /// Install and start what guests need, then boot the demo guests setmov-cpu, setmov-disk
    /// and setmov-net; the manifest is /var/lib/setmov-guests/guests.json.
    Up {
        /// Also boot this many guests with no workload (setmov-idle-1, ...), as the VM-tick
        /// bench does, to measure a host with more VMs.
        #[arg(long, default_value_t = 0)]
        idle: u8,
    },
    /// Install and start what guests need (daemons, network, assets) without booting any:
    /// what `cargo xtask test` does before the tests.
    Prepare,
    /// Destroy every setmov-* guest and the network, stop the daemons `up` started.
    Down,
}

#[derive(Subcommand)]
enum MariadbAction {
    /// Install MariaDB if missing, initialise /var/lib/setmov-mariadb/data once, start mariadbd
    /// and create the `setmov` user and `setmov_test` database; the manifest is
    /// /var/lib/setmov-mariadb/mariadb.json.
    Up,
    /// Stop the mariadbd that `up` started (by PID) and remove the manifest; the data stays.
    Down,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Setup => toolchain::setup(&root),
        Task::Run { args } => {
            toolchain::setup(&root)?;
            cargo(&root, &["build", "--release", "-p", "setmov-user"])?;
            let binary = root.join("target/release/setmov");
            let status = Command::new(&binary)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            if !status.success() {
                bail!("setmov run exited with {status}");
            }
            Ok(())
        }
        Task::Test { allow_skips } => {
            toolchain::setup(&root)?;
            cargo(&root, &["fmt", "--all", "--check"])?;
            cargo(&root, &["clippy", "--all-targets", "--", "-D", "warnings"])?;
            let mut test = cargo_command(&root, &["nextest", "run", "--no-tests", "fail"]);
            // Every test must run for real: one that would skip for lack of root or a service
            // fails instead, unless the caller allows skips.
            if !allow_skips {
                test.env("SETMOV_REQUIRE_ALL", "1");
            }
            // Each skip appends its reason here; they are listed after the run, pass or fail.
            let skipped = root.join("target/skipped-tests.log");
            let _ = std::fs::remove_file(&skipped);
            test.env("SETMOV_SKIP_LOG", &skipped);
            let tested = guests::prepare()
                .and_then(|()| mariadb::prepare())
                .and_then(|()| run(&mut test));
            match std::fs::read_to_string(&skipped) {
                Ok(lines) if !lines.is_empty() => {
                    eprintln!("xtask: tests that skipped:\n{lines}");
                }
                _ => eprintln!("xtask: no test skipped"),
            }
            guests::QUIET_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
            mariadb::QUIET_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
            let database_down = mariadb::down();
            let cleaned = guests::down().and(database_down);
            if let (Err(_), Err(e)) = (&tested, &cleaned) {
                eprintln!("xtask: {e:#}");
            }
            tested.and(cleaned)?;
            footprint_smoke(&root)?;
            fuzz_smoke(&root)
        }
        Task::Fuzz {
            target,
            seconds,
            dev,
            target_dir,
        } => fuzz::fuzz(
            &root,
            &fuzz::FuzzOptions {
                target,
                seconds,
                dev,
                target_dir: target_dir.unwrap_or_else(|| fuzz::default_target_dir(&root)),
            },
        ),
        Task::Guests { action } => match action {
            GuestsAction::Up { idle } => guests::up().and_then(|()| guests::up_idle(idle)),
            GuestsAction::Prepare => guests::prepare(),
            GuestsAction::Down => guests::down(),
        },
        Task::Mariadb { action } => match action {
            MariadbAction::Up => mariadb::up(),
            MariadbAction::Down => mariadb::down(),
        },
        Task::Bench {
            seconds,
            footprint,
            binary,
            steady_after,
            ebpf_cost,
            cost_seconds,
            rounds,
            round_seconds,
        } => {
            let cost = |binary| ebpf_cost::Options {
                binary,
                cost_seconds,
                rounds,
                round_seconds,
            };
            if !footprint && !ebpf_cost {
                return bench(&root, seconds, steady_after, &cost(release_binary(&root)));
            }
            let binary = match binary {
                Some(binary) => binary,
                None => {
                    toolchain::setup(&root)?;
                    cargo(&root, &["build", "--release", "-p", "setmov-user"])?;
                    release_binary(&root)
                }
            };
            if ebpf_cost {
                ebpf_cost::ebpf_cost(&cost(binary))
            } else {
                footprint::footprint(&footprint_options(binary, steady_after))
            }
        }
        Task::Install {
            root: target,
            prefix,
            binary,
        } => install::install(
            &root,
            &install::InstallOptions {
                root: target,
                prefix,
                binary,
            },
        ),
    }
}

/// The footprint bench for a few seconds on the tests' debug build of the monitor: a smoke test
/// that it still runs and reads its figures (those of a debug build say little).
fn footprint_smoke(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let measured = footprint::footprint(&footprint::Options {
        binary: target_dir(root).join("debug/setmov-cli"),
        steady_after: std::time::Duration::from_secs(2),
        startups: 2,
    });
    eprintln!(
        "xtask: footprint smoke test took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    measured
}

/// Every fuzz target for 20 s after the tests: a smoke test that the targets build and that
/// their seeds and first mutations do not crash; the real runs are `cargo xtask fuzz`.
fn fuzz_smoke(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let fuzzed = fuzz::fuzz(
        root,
        &fuzz::FuzzOptions {
            target: None,
            seconds: 20,
            // Built without optimisation: minutes less on a fresh clone, and 20 s of a slower
            // target still runs every seed and thousands of mutations.
            dev: true,
            target_dir: fuzz::default_target_dir(root),
        },
    );
    eprintln!(
        "xtask: fuzz smoke test took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    fuzzed
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo_command(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root).args(args);
    c
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    run(&mut cargo_command(root, args))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Criterion for the per-tick cost, then the release binary sampling at 1 s for `seconds`,
/// its CPU time taken from the kernel's accounting of the finished child.
fn bench(
    root: &Path,
    seconds: u64,
    steady_after: u64,
    cost: &ebpf_cost::Options,
) -> anyhow::Result<()> {
    toolchain::setup(root)?;
    cargo(
        root,
        &["bench", "-p", "setmov-user", "--bench", "host_tick"],
    )?;
    cargo(root, &["build", "--release", "-p", "setmov-user"])?;
    let dir = tempfile::tempdir()?;
    let before = children_cpu_seconds();
    let started = Instant::now();
    let status = Command::new(release_binary(root))
        .args(["run", "--quiet", "--interval", "1s", "--count"])
        .arg(seconds.to_string())
        .arg("--database")
        .arg(dir.path().join("bench.db"))
        .status()
        .context("cannot start setmov")?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("setmov run failed: {status}");
    }
    let (user, system) = children_cpu_seconds();
    let (user, system) = (user - before.0, system - before.1);
    let monitor = format!(
        "monitor over {wall:.1} s at 1 s interval: {:.3} s CPU (user {user:.3}, system {system:.3}) = {:.3} % of one core, {:.0} µs per tick",
        user + system,
        100.0 * (user + system) / wall,
        1e6 * (user + system) / seconds as f64
    );
    cargo(
        root,
        &["bench", "-p", "setmov-user", "--bench", "store_tick"],
    )?;
    cargo(
        root,
        &["bench", "-p", "setmov-user", "--bench", "report_month"],
    )?;
    // Before the guests: their disk and CPU load would weigh on fio's rounds.
    ebpf_cost::ebpf_cost(cost)?;
    let footprint = footprint_options(release_binary(root), steady_after);
    let vm = guests::up()
        .and_then(|()| footprint::footprint(&footprint))
        .and_then(|()| vm_tick(root))
        .and_then(|few| {
            guests::up_idle(BENCH_IDLE_GUESTS)?;
            Ok((few, vm_tick(root)?))
        });
    let down = guests::down();
    println!("{monitor}");
    let ((few_vms, few_us), (many_vms, many_us)) = vm?;
    if many_vms > few_vms {
        let per_vm = (many_us - few_us) / f64::from(many_vms - few_vms);
        println!(
            "vm tick: each further VM costs {per_vm:.1} µs CPU per tick; the rest of a tick, \
             {:.1} µs, is the same for any number of VMs",
            few_us - per_vm * f64::from(few_vms)
        );
    }
    down
}

/// Where cargo builds.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The release `setmov`, where cargo builds it.
fn release_binary(root: &Path) -> PathBuf {
    target_dir(root).join("release/setmov")
}

fn footprint_options(binary: PathBuf, steady_after: u64) -> footprint::Options {
    footprint::Options {
        binary,
        steady_after: std::time::Duration::from_secs(steady_after),
        startups: 5,
    }
}

/// Guests with no workload added for the second VM-tick measurement.
const BENCH_IDLE_GUESTS: u8 = 9;

/// Runs the VM-tick benchmark against the running guests; returns the VM count and the CPU
/// microseconds per tick it reports.
fn vm_tick(root: &Path) -> anyhow::Result<(u32, f64)> {
    let output = cargo_command(root, &["bench", "-p", "setmov-user", "--bench", "vm_tick"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the vm_tick benchmark")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!("the vm_tick benchmark failed: {}", output.status);
    }
    stdout
        .lines()
        .find_map(parse_vm_tick)
        .context("the vm_tick benchmark measured nothing (no running guest?)")
}

/// "vm tick: 3 running VMs, 300 ticks: 541.8 µs CPU per tick, ..." → (3, 541.8).
fn parse_vm_tick(line: &str) -> Option<(u32, f64)> {
    let rest = line.strip_prefix("vm tick: ")?;
    let (vms, rest) = rest.split_once(" running VMs, ")?;
    let (_, rest) = rest.split_once(": ")?;
    let (per_tick, _) = rest.split_once(" µs CPU per tick")?;
    Some((vms.parse().ok()?, per_tick.parse().ok()?))
}

/// CPU seconds (user, system) of all waited-for children so far.
fn children_cpu_seconds() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (secs(u.user_time()), secs(u.system_time()))
        }
        Err(_) => (0.0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_vm_tick;

    #[test]
    fn the_vm_tick_line_gives_the_vm_count_and_cpu_per_tick() {
        let line = "vm tick: 12 running VMs, 300 ticks: 1023.2 µs CPU per tick, 85.3 µs per VM \
                    in setmov (libvirt client 40.0 + equations 5.0 + store 40.3), 900.0 µs wall";
        assert_eq!(parse_vm_tick(line), Some((12, 1023.2)));
        assert_eq!(
            parse_vm_tick("vm tick: not measured: no running domain"),
            None
        );
    }
}
