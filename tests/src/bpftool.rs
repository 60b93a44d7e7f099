//! The eBPF programs a running monitor holds, and the kernel's own run statistics of them as
//! `bpftool prog show` reports them: what `ebpf_program_stats` is checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::window::unix_now;

/// Program name (as [`kernel_name`]) → (runs, ns), as the kernel counts them.
pub type RunStats = BTreeMap<String, (f64, f64)>;

/// The process whose command line names `db`: the monitor writing it.
pub fn pid_writing(db: &Path) -> u32 {
    let needle = db.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == needle))
        })
        .unwrap_or_else(|| panic!("no process writes {}", db.display()))
}

/// The ids of the eBPF programs process `pid` holds (its program and link descriptors).
pub fn program_ids(pid: u32) -> BTreeSet<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// The descriptor through which process `pid` holds its eBPF map `name` (as [`kernel_name`]:
/// the kernel keeps 15 characters of a map's name too).
pub fn map_fd(pid: u32, name: &str) -> u32 {
    let out = Command::new("bpftool")
        .args(["--json", "map", "show"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool: {out:?}");
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let named: BTreeSet<u64> = maps
        .as_array()
        .expect("a list of maps")
        .iter()
        .filter(|m| m["name"].as_str() == Some(kernel_name(name).as_str()))
        .filter_map(|m| m["id"].as_u64())
        .collect();
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| {
            let e = e.ok()?;
            let info = std::fs::read_to_string(e.path()).ok()?;
            let id: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("map_id:"))?
                .trim()
                .parse()
                .ok()?;
            named
                .contains(&id)
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
        .next()
        .unwrap_or_else(|| panic!("process {pid} holds no map {name}"))
}

/// The kernel's run statistics of programs `ids` (`bpftool prog show`): name (as
/// [`kernel_name`]) → (runs, ns), and the instant (Unix seconds) they were read at.
pub fn run_stats(ids: &BTreeSet<u64>) -> (RunStats, f64) {
    let before = unix_now();
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .expect("bpftool");
    let at = (before + unix_now()) / 2.0;
    assert!(out.status.success(), "bpftool: {out:?}");
    (run_stats_in(&out.stdout, ids), at)
}

/// The run statistics of programs `ids` in `bpftool --json prog show`'s output.
fn run_stats_in(json: &[u8], ids: &BTreeSet<u64>) -> RunStats {
    figures_in(json, ids, |p| {
        // bpftool leaves the figures out while they are 0.
        let figure = |name: &str| p[name].as_f64().unwrap_or(0.0);
        (figure("run_cnt"), figure("run_time_ns"))
    })
}

/// How many times the kernel skipped each of programs `ids` (name, as [`kernel_name`] → runs
/// missed), as `bpftool prog show` reports it: a classic tracepoint's program does not run
/// when it fires while another such program runs on that CPU (`bpf_prog_active`), e.g. a
/// request completed in an interrupt that came during the program of a request starting.
pub fn recursion_misses(ids: &BTreeSet<u64>) -> BTreeMap<String, u64> {
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool: {out:?}");
    figures_in(&out.stdout, ids, |p| {
        p["recursion_misses"].as_u64().unwrap_or(0)
    })
}

/// `figures` of each of programs `ids` in `bpftool --json prog show`'s output, by name.
fn figures_in<T>(
    json: &[u8],
    ids: &BTreeSet<u64>,
    figures: impl Fn(&serde_json::Value) -> T,
) -> BTreeMap<String, T> {
    let programs: serde_json::Value = serde_json::from_slice(json).expect("bpftool json");
    programs
        .as_array()
        .expect("a list of programs")
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|p| {
            let name = kernel_name(p["name"].as_str().expect("program name"));
            (name, figures(p))
        })
        .collect()
}

/// A program's name as the kernel keeps it (BPF_OBJ_NAME_LEN: 15 characters); bpftool
/// prints the full name when the program carries BTF, the kernel's own otherwise.
pub fn kernel_name(program: &str) -> String {
    program.chars().take(15).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bpftool --json prog show`, shortened: a program of someone else's, one that has run
    /// and one that has not (bpftool then leaves its run figures out).
    const PROG_SHOW: &str = r#"[
        {"id":4131,"type":"cgroup_device","tag":"9b92522e365f8863","gpl_compatible":true,
         "loaded_at":1796609611,"uid":0,"bytes_xlated":616,"jited":true,"bytes_jited":339,
         "bytes_memlock":4096,"map_ids":[4290]},
        {"id":5001,"type":"tracepoint","name":"block_rq_complete","tag":"0123456789abcdef",
         "gpl_compatible":true,"run_time_ns":1234567,"run_cnt":890,"loaded_at":1796609700,
         "uid":0,"map_ids":[5002]},
        {"id":5003,"type":"tracing","name":"sched_switch_handler","tag":"fedcba9876543210",
         "gpl_compatible":true,"loaded_at":1796609700,"uid":0,"map_ids":[5002]}
    ]"#;

    #[test]
    fn only_the_programs_asked_for_are_read_by_their_kernel_names() {
        let stats = run_stats_in(PROG_SHOW.as_bytes(), &BTreeSet::from([5001, 5003]));
        assert_eq!(
            stats,
            RunStats::from([
                ("block_rq_comple".to_owned(), (890.0, 1_234_567.0)),
                ("sched_switch_ha".to_owned(), (0.0, 0.0)),
            ])
        );
    }

    #[test]
    fn a_kernel_name_is_at_most_15_characters() {
        assert_eq!(kernel_name("block_rq_issue"), "block_rq_issue");
        assert_eq!(kernel_name("block_rq_complete"), "block_rq_comple");
    }
}
