//! `cargo xtask fuzz`: coverage-guided fuzzing (cargo-fuzz, libFuzzer on nightly) of every
//! parser of outside text, one target each (setmov-user/fuzz/fuzz_targets). Installs nightly and
//! cargo-fuzz when missing, builds every target once, seeds each corpus from the fixtures, runs
//! the targets one after the other and prints their executions and crashes.
//!
//! Corpora, crash artifacts and logs live in the fuzz target folder, never in git:
//! `<target dir>/corpus/TARGET`, `<target dir>/artifacts/TARGET/`, `<target dir>/logs/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

/// Where a target's seeds come from, besides its hand-made ones in
/// `setmov-user/fuzz/seeds/TARGET/`.
enum Seeds {
    /// This file of every captured /proc tree in `tests/fixtures/golden/`.
    ProcFixture(&'static str),
    /// Every file with this extension in these folders.
    Folders(&'static [&'static str], &'static str),
    /// Hand-made seeds only.
    None,
}

struct Target {
    name: &'static str,
    seeds: Seeds,
}

const FORMAT_FIXTURES: &str = "setmov-user/src/ebpf/testdata";
const KVM_FORMAT_FIXTURES: &str = "setmov-user/src/ebpf/kvm/testdata";

const TARGETS: &[Target] = &[
    Target {
        name: "proc_stat",
        seeds: Seeds::ProcFixture("stat"),
    },
    Target {
        name: "proc_meminfo",
        seeds: Seeds::ProcFixture("meminfo"),
    },
    Target {
        name: "proc_diskstats",
        seeds: Seeds::ProcFixture("diskstats"),
    },
    Target {
        name: "proc_net_dev",
        seeds: Seeds::ProcFixture("net/dev"),
    },
    Target {
        name: "qemu_run_files",
        seeds: Seeds::None,
    },
    Target {
        name: "tracefs_format",
        seeds: Seeds::Folders(&[FORMAT_FIXTURES, KVM_FORMAT_FIXTURES], "format"),
    },
    Target {
        name: "kvm_print_fmt",
        seeds: Seeds::Folders(&[KVM_FORMAT_FIXTURES], "format"),
    },
    Target {
        name: "spool_reader",
        seeds: Seeds::None,
    },
    Target {
        name: "config_check",
        seeds: Seeds::Folders(&["tests/config/valid", "tests/config/invalid"], "toml"),
    },
    Target {
        name: "libvirt_stats",
        seeds: Seeds::None,
    },
    Target {
        name: "rollup_sketch",
        seeds: Seeds::None,
    },
];

/// Flags of both the build and every run: they must be the same, or each run builds again.
/// No sanitizer: the fuzzed code is safe Rust, whose bugs are panics, which libFuzzer catches
/// without one, and runs are several times faster. `--dev` (no optimisation) builds in a
/// fraction of the time, for short runs whose executions matter less than the build.
fn build_flags(dev: bool) -> Vec<&'static str> {
    let mut flags = vec!["--sanitizer", "none"];
    if dev {
        flags.push("--dev");
    }
    flags
}

pub struct FuzzOptions {
    /// One target, or all of them.
    pub target: Option<String>,
    pub seconds: u64,
    /// Build without optimisation (the CI smoke run).
    pub dev: bool,
    /// cargo-fuzz's target folder; corpora, artifacts and logs go below it too.
    pub target_dir: PathBuf,
}

/// `<CARGO_TARGET_DIR or target>/fuzz`: apart from the stable builds, which cannot share it.
pub fn default_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("fuzz")
}

/// What one target's run gave.
struct Outcome {
    name: &'static str,
    seconds: f64,
    executions: Option<u64>,
    crash: Option<String>,
}

pub fn fuzz(root: &Path, options: &FuzzOptions) -> anyhow::Result<()> {
    let targets: Vec<&Target> = match &options.target {
        Some(name) => vec![
            TARGETS
                .iter()
                .find(|t| t.name == name.as_str())
                .with_context(|| {
                    let names: Vec<_> = TARGETS.iter().map(|t| t.name).collect();
                    format!("no fuzz target {name}; the targets: {}", names.join(", "))
                })?,
        ],
        None => TARGETS.iter().collect(),
    };
    ensure_tools()?;
    let fuzz_dir = root.join("setmov-user/fuzz");
    let target_dir = &options.target_dir;
    eprintln!(
        "xtask: building the fuzz targets in {}",
        target_dir.display()
    );
    let flags = build_flags(options.dev);
    super::run(cargo_fuzz(&fuzz_dir, target_dir, "build").args(&flags))?;
    let logs = target_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = target_dir.join("corpus").join(target.name);
        seed(root, target, &corpus)?;
        let artifacts = target_dir.join("artifacts").join(target.name);
        fs::create_dir_all(&artifacts)
            .with_context(|| format!("cannot create {}", artifacts.display()))?;
        let log = logs.join(format!("{}.log", target.name));
        eprintln!(
            "xtask: fuzzing {} for {} s (log {})",
            target.name,
            options.seconds,
            log.display()
        );
        let log_file =
            fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let started = Instant::now();
        let status = cargo_fuzz(&fuzz_dir, target_dir, "run")
            .args(&flags)
            .arg(target.name)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", options.seconds))
            // One input taking this long is a bug too (a loop that does not end).
            .arg("-timeout=10")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .stdout(Stdio::null())
            .stderr(log_file)
            .status()
            .context("cannot start cargo fuzz run")?;
        let seconds = started.elapsed().as_secs_f64();
        let text = fs::read_to_string(&log).unwrap_or_default();
        let crash = match (status.success(), crash_artifact(&text)) {
            (true, _) => None,
            (false, Some(path)) => Some(path),
            (false, None) => Some(format!("{status}, see {}", log.display())),
        };
        if crash.is_some() {
            eprintln!("xtask: {} crashed:\n{}", target.name, crash_report(&text));
        }
        outcomes.push(Outcome {
            name: target.name,
            seconds,
            executions: executions(&text),
            crash,
        });
    }
    print_table(&outcomes);
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crash.is_some())
        .map(|o| o.name)
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

/// Nightly (libFuzzer's instrumentation needs it) and cargo-fuzz, when missing.
fn ensure_tools() -> anyhow::Result<()> {
    if !super::toolchain::installed("rustup", &["toolchain", "list"], "nightly") {
        eprintln!("xtask: installing the nightly toolchain (cargo-fuzz builds with it)");
        super::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if !super::toolchain::installed("cargo", &["fuzz", "--version"], "cargo-fuzz") {
        eprintln!("xtask: installing cargo-fuzz");
        super::run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    Ok(())
}

/// `cargo +nightly fuzz SUBCOMMAND` in the fuzz crate, building into `target_dir`. Through
/// rustup's `cargo` (not `$CARGO`, the stable one running xtask), so that `+nightly` works.
fn cargo_fuzz(fuzz_dir: &Path, target_dir: &Path, subcommand: &str) -> Command {
    let mut command = Command::new("cargo");
    command
        .current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", subcommand])
        .env("CARGO_TARGET_DIR", target_dir)
        // The parsers need no eBPF object, and building one needs bpf-linker.
        .env("SETMOV_NO_EBPF", "1")
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

/// Copies the target's seeds into its corpus; what the corpus has already is kept.
fn seed(root: &Path, target: &Target, corpus: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let mut files = files_in(&root.join("setmov-user/fuzz/seeds").join(target.name))?;
    match target.seeds {
        Seeds::ProcFixture(file) => {
            for tree in files_in(&root.join("tests/fixtures/golden"))? {
                files.push(tree.join(file));
            }
        }
        Seeds::Folders(folders, extension) => {
            for folder in folders {
                let in_folder = files_in(&root.join(folder))?;
                files.extend(
                    in_folder
                        .into_iter()
                        .filter(|f| f.extension().is_some_and(|e| e == extension)),
                );
            }
        }
        Seeds::None => {}
    }
    for file in files.iter().filter(|f| f.is_file()) {
        // The folder's name too: t0/stat and t1/stat are two seeds.
        let name = |path: Option<&Path>| {
            path.and_then(Path::file_name)
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        };
        let copy = corpus.join(format!("seed-{}-{}", name(file.parent()), name(Some(file))));
        if !copy.exists() {
            fs::copy(file, &copy)
                .with_context(|| format!("cannot copy {} to the corpus", file.display()))?;
        }
    }
    Ok(())
}

/// The entries of `folder`, sorted; none when it does not exist.
fn files_in(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !folder.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(folder)
        .with_context(|| format!("cannot list {}", folder.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", folder.display()))?;
    paths.sort();
    Ok(paths)
}

/// The executions libFuzzer reports at its end: `stat::number_of_executed_units: N`, or
/// `Done N runs in S second(s)`.
fn executions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            return n.trim().parse().ok();
        }
        line.strip_prefix("Done ")?
            .split_once(" runs in ")?
            .0
            .parse()
            .ok()
    })
}

/// The crashing input libFuzzer saved: `... Test unit written to PATH`.
fn crash_artifact(log: &str) -> Option<String> {
    log.lines()
        .find_map(|line| line.split_once("Test unit written to "))
        .map(|(_, path)| path.trim().to_owned())
}

/// The panic message of a crash (without its backtrace, which is in the log), else the log's
/// last lines (a timeout or running out of memory).
fn crash_report(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let panic = lines
        .iter()
        .position(|line| line.contains(" panicked at "))
        .and_then(|start| lines.get(start..))
        .map(|from| {
            from.iter()
                .take_while(|line| !line.starts_with("stack backtrace:"))
                .copied()
                .collect::<Vec<_>>()
        });
    match panic {
        Some(message) => message.join("\n"),
        None => lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default()
            .join("\n"),
    }
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<16} {:>8} {:>14}  crashes",
        "target", "seconds", "executions"
    );
    for o in outcomes {
        println!(
            "{:<16} {:>8.0} {:>14}  {}",
            o.name,
            o.seconds,
            o.executions.map_or("?".to_owned(), |n| n.to_string()),
            o.crash.as_deref().unwrap_or("0")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_the_final_stats_or_the_done_line() {
        let stats = "#2097152\tpulse  cov: 312 ft: 1401 corp: 240/18Kb exec/s: 69905 rss: 61Mb\n\
                     Done 4194304 runs in 61 second(s)\n\
                     stat::number_of_executed_units: 4194305\n\
                     stat::average_exec_per_sec:     68759\n";
        assert_eq!(executions(stats), Some(4_194_305));
        assert_eq!(executions("Done 123 runs in 20 second(s)\n"), Some(123));
        assert_eq!(executions("INFO: Seed: 1\n"), None);
    }

    #[test]
    fn the_crash_artifact_comes_from_the_test_unit_line() {
        let log = "==12== ERROR: libFuzzer: deadly signal\n\
                   MS: 1 ChangeBit-; base unit: 0\n\
                   artifact_prefix='/t/artifacts/proc_stat/'; Test unit written to /t/artifacts/proc_stat/crash-da39a3ee\n";
        assert_eq!(
            crash_artifact(log).as_deref(),
            Some("/t/artifacts/proc_stat/crash-da39a3ee")
        );
        assert_eq!(crash_artifact("Done 1 runs in 1 second(s)\n"), None);
    }

    #[test]
    fn a_crash_report_is_the_panic_message() {
        let log = "INFO: Seed: 1\n\
                   thread '<unnamed>' (12896) panicked at src/meminfo.rs:329:29:\n\
                   end byte index 9 is not a char boundary\n\
                   stack backtrace:\n   0: __rustc::rust_begin_unwind\n\
                   ==12896== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(
            crash_report(log),
            "thread '<unnamed>' (12896) panicked at src/meminfo.rs:329:29:\n\
             end byte index 9 is not a char boundary"
        );
        assert_eq!(
            crash_report("a\n==1== ERROR: libFuzzer: timeout after 10 seconds\n"),
            "a\n==1== ERROR: libFuzzer: timeout after 10 seconds"
        );
    }

    #[test]
    fn every_target_has_a_source_file() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../setmov-user/fuzz");
        for target in TARGETS {
            let source = fuzz.join(format!("fuzz_targets/{}.rs", target.name));
            assert!(source.is_file(), "{} is missing", source.display());
        }
    }
}
