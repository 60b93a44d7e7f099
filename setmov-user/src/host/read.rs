//! Reads a [`HostSnapshot`] from a procfs tree (the live `/proc` or a captured copy).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use procfs::net::InterfaceDeviceStatus;
use procfs::{
    DiskStat, ExplicitSystemInfo, FromBufRead, FromBufReadSI, KernelStats, PartitionEntry,
    ProcError,
};

use super::devices::{classify, has_prefix};
use super::meminfo::parse_meminfo;
use super::snapshot::{CpuTimes, DeviceKind, Disk, DiskCounters, HostSnapshot, NetCounters};
use super::topology::{
    disk_facts, disk_role, disk_role_by_name, net_facts, net_role, net_role_by_name,
};

/// The one file a procfs root must have for the host collector to start.
#[derive(Debug, thiserror::Error)]
#[error("{path} is not a readable procfs tree: {source}")]
pub struct ProcRootError {
    path: PathBuf,
    source: std::io::Error,
}

/// A procfs parse error as one line for `problems`: procfs words a line it cannot parse as a
/// bug of its own, with its source file, its macro and a newline, none of which helps an
/// operator.
fn describe(e: &ProcError) -> String {
    match e {
        ProcError::InternalError(_) => "not in the kernel's format".to_owned(),
        other => other
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// What to read and which devices to keep.
#[derive(Debug, Clone)]
pub struct HostReader {
    proc_root: PathBuf,
    /// The sysfs tree beside `proc_root` (`/sys` for `/proc`), when there is one.
    sys_root: Option<PathBuf>,
    skipped_disk_prefixes: Vec<String>,
}

/// The `sys` beside a procfs root (`/sys` for `/proc`, `<capture>/sys` for `<capture>/proc`),
/// when it has block devices or interfaces to read.
fn sys_beside(proc_root: &Path) -> Option<PathBuf> {
    let sys = proc_root.parent()?.join("sys");
    (sys.join("block").is_dir() || sys.join("class/net").is_dir()).then_some(sys)
}

impl HostReader {
    /// Checks that `proc_root/stat` is readable, so a wrong `--proc-root` fails at start. The
    /// device topology is read from the `sys` beside it; without one (a proc tree captured
    /// alone), the host totals judge devices by their names, which is said in the log.
    pub fn new(
        proc_root: impl Into<PathBuf>,
        skipped_disk_prefixes: Vec<String>,
    ) -> Result<Self, ProcRootError> {
        let proc_root = proc_root.into();
        let stat = proc_root.join("stat");
        File::open(&stat).map_err(|source| ProcRootError {
            path: proc_root.clone(),
            source,
        })?;
        let sys_root = sys_beside(&proc_root);
        if sys_root.is_none() {
            tracing::info!(
                "no sysfs beside {}: the host disk and network totals judge devices by name",
                proc_root.display()
            );
        }
        Ok(HostReader {
            proc_root,
            sys_root,
            skipped_disk_prefixes,
        })
    }

    /// Reads every host file once. Never fails as a whole: a section that cannot be read is
    /// left empty and described in `problems`.
    pub fn read(&self) -> HostSnapshot {
        let mut snap = HostSnapshot::default();
        match self.open("stat").and_then(|r| {
            // Ticks per second only matter for procfs's unit conversions, which we do not use.
            let si = ExplicitSystemInfo {
                boot_time_secs: 0,
                ticks_per_second: 100,
                page_size: 4096,
                is_little_endian: cfg!(target_endian = "little"),
            };
            KernelStats::from_buf_read(r, &si).map_err(|e| describe(&e))
        }) {
            Ok(stats) => {
                snap.cpu = Some(CpuTimes::from(&stats.total));
                snap.cpus = stats.cpu_time.iter().map(CpuTimes::from).collect();
            }
            Err(e) => snap.problems.push(format!("stat: {e}")),
        }
        match self
            .open("meminfo")
            .and_then(|r| parse_meminfo(r).map_err(|e| e.to_string()))
        {
            Ok(m) => snap.mem = Some(m),
            Err(e) => snap.problems.push(format!("meminfo: {e}")),
        }
        self.read_disks(&mut snap);
        match self
            .open("net/dev")
            .and_then(|r| InterfaceDeviceStatus::from_buf_read(r).map_err(|e| describe(&e)))
        {
            Ok(devs) => {
                let mut nets: Vec<NetCounters> = devs
                    .0
                    .into_values()
                    .map(|d| NetCounters {
                        name: d.name,
                        rx_bytes: d.recv_bytes,
                        rx_packets: d.recv_packets,
                        rx_errs: d.recv_errs,
                        rx_drop: d.recv_drop,
                        tx_bytes: d.sent_bytes,
                        tx_packets: d.sent_packets,
                        tx_errs: d.sent_errs,
                        tx_drop: d.sent_drop,
                    })
                    .collect();
                nets.sort_by(|a, b| a.name.cmp(&b.name));
                snap.nets = nets;
            }
            Err(e) => snap.problems.push(format!("net/dev: {e}")),
        }
        self.mark_totals(&mut snap);
        snap
    }

    /// Fills `disk_total_over` and `net_total_over` from the device topology. A device sysfs
    /// does not list (gone since procfs was read) is not counted.
    fn mark_totals(&self, snap: &mut HostSnapshot) {
        let sys = self.sys_root.as_deref();
        snap.disk_total_over = snap
            .disks
            .iter()
            .filter(|d| d.kind == DeviceKind::Disk)
            .map(|d| d.counters.name.as_str())
            .filter(|name| match sys {
                Some(sys) => disk_facts(sys, name).is_some_and(|f| disk_role(name, &f).counted()),
                None => disk_role_by_name(name).counted(),
            })
            .map(str::to_owned)
            .collect();
        snap.net_total_over = snap
            .nets
            .iter()
            .map(|n| n.name.as_str())
            .filter(|name| match sys {
                Some(sys) => net_facts(sys, name).is_some_and(|f| net_role(&f).counted()),
                None => net_role_by_name(name).counted(),
            })
            .map(str::to_owned)
            .collect();
    }

    fn read_disks(&self, snap: &mut HostSnapshot) {
        let sizes: HashMap<String, u64> = match self
            .open("partitions")
            .and_then(|r| Vec::<PartitionEntry>::from_buf_read(r).map_err(|e| describe(&e)))
        {
            Ok(parts) => parts
                .into_iter()
                .map(|p| (p.name, p.blocks.saturating_mul(1024)))
                .collect(),
            Err(e) => {
                snap.problems.push(format!("partitions: {e}"));
                HashMap::new()
            }
        };
        let reader = match self.open("diskstats") {
            Ok(r) => r,
            Err(e) => {
                snap.problems.push(format!("diskstats: {e}"));
                return;
            }
        };
        // Line by line, so one malformed line costs one device, not the whole file.
        let mut counters = Vec::new();
        for (index, line) in reader.lines().enumerate() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    snap.problems.push(format!("diskstats: {e}"));
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            match DiskStat::from_line(&line) {
                Ok(d) if !has_prefix(&d.name, &self.skipped_disk_prefixes) => {
                    counters.push(disk_counters(&d))
                }
                Ok(_) => {}
                Err(e) => snap.problems.push(format!(
                    "diskstats line {}: skipped ({}: {:?})",
                    index + 1,
                    describe(&e),
                    line.chars().take(80).collect::<String>()
                )),
            }
        }
        let names: Vec<&str> = counters.iter().map(|c| c.name.as_str()).collect();
        let kinds: Vec<_> = counters.iter().map(|c| classify(&c.name, &names)).collect();
        snap.disks = counters
            .into_iter()
            .zip(kinds)
            .map(|(counters, kind)| Disk {
                kind,
                size_bytes: sizes.get(&counters.name).copied(),
                counters,
            })
            .collect();
    }

    fn open(&self, relative: &str) -> Result<BufReader<File>, String> {
        let path = self.proc_root.join(relative);
        File::open(&path)
            .map(BufReader::new)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

fn disk_counters(d: &DiskStat) -> DiskCounters {
    DiskCounters {
        name: d.name.clone(),
        reads: d.reads,
        reads_merged: d.merged,
        sectors_read: d.sectors_read,
        ms_reading: d.time_reading,
        writes: d.writes,
        writes_merged: d.writes_merged,
        sectors_written: d.sectors_written,
        ms_writing: d.time_writing,
        in_progress: d.in_progress,
        ms_doing_io: d.time_in_progress,
        weighted_ms_doing_io: d.weighted_time_in_progress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::devices::DEFAULT_SKIPPED_DISK_PREFIXES;
    use crate::host::snapshot::DeviceKind;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    const STAT: &str = "cpu  100 5 50 800 20 3 2 1 30 0\n\
cpu0 50 2 25 400 10 1 1 1 15 0\n\
cpu1 50 3 25 400 10 2 1 0 15 0\n\
intr 0\nctxt 10\nbtime 1700000000\nprocesses 5\nprocs_running 1\nprocs_blocked 0\n";
    const MEMINFO: &str = "MemTotal:       16000 kB\nMemFree:         4000 kB\n\
MemAvailable:    9000 kB\nBuffers:          500 kB\nCached:          3500 kB\n\
SwapCached:         0 kB\nActive:  0 kB\nInactive: 0 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n\
Dirty: 0 kB\nWriteback: 0 kB\nAnonPages: 0 kB\nMapped: 0 kB\nShmem: 0 kB\nSlab: 0 kB\n\
SReclaimable: 0 kB\nSUnreclaim: 0 kB\nKernelStack: 0 kB\nPageTables: 0 kB\nNFS_Unstable: 0 kB\n\
Bounce: 0 kB\nWritebackTmp: 0 kB\nCommitLimit: 0 kB\nCommitted_AS: 0 kB\nVmallocTotal: 0 kB\n\
VmallocUsed: 0 kB\nVmallocChunk: 0 kB\n";
    const DISKSTATS: &str = "   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
 254       0 vda 10 1 80 5 20 2 160 7 0 9 12 0 0 0 0 0 0\n\
 254       1 vda1 this line is broken\n\
 254       2 vda2 4 0 32 1 8 0 64 2 0 3 3 0 0 0 0 0 0\n";
    const PARTITIONS: &str =
        "major minor  #blocks  name\n\n 254        0  1048576 vda\n 254        2   524288 vda2\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n\
  eth0:    1500      10    1    2    0     0          0         0     3000      20    3    4    0     0       0          0\n";

    #[test]
    fn reads_every_section_of_a_captured_tree() {
        let dir = tree(&[
            ("stat", STAT),
            ("meminfo", MEMINFO),
            ("diskstats", DISKSTATS),
            ("partitions", PARTITIONS),
            ("net/dev", NET_DEV),
        ]);
        let skip = DEFAULT_SKIPPED_DISK_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let snap = HostReader::new(dir.path(), skip).expect("root").read();
        let cpu = snap.cpu.expect("cpu");
        assert_eq!((cpu.user, cpu.guest, cpu.total()), (100, 30, 981));
        assert_eq!(snap.cpus.len(), 2);
        let mem = snap.mem.expect("mem");
        assert_eq!(
            (mem.total, mem.available),
            (16000 * 1024, Some(9000 * 1024))
        );
        let disks: Vec<_> = snap
            .disks
            .iter()
            .map(|d| (d.counters.name.as_str(), d.kind, d.size_bytes))
            .collect();
        assert_eq!(
            disks,
            [
                ("vda", DeviceKind::Disk, Some(1 << 30)),
                ("vda2", DeviceKind::Partition, Some(512 << 20)),
            ]
        );
        assert_eq!(snap.problems.len(), 1, "{:?}", snap.problems);
        assert!(
            snap.problems[0]
                .starts_with("diskstats line 3: skipped (not in the kernel's format: \"")
        );
        // One line for the log and the stored column, without procfs's own bug-report wording.
        assert!(!snap.problems[0].contains('\n') && !snap.problems[0].contains("procfs bug"));
        let eth0 = &snap.nets[0];
        assert_eq!(
            (eth0.name.as_str(), eth0.rx_bytes, eth0.tx_drop),
            ("eth0", 1500, 4)
        );
    }

    #[test]
    fn a_missing_file_is_a_problem_not_a_failure() {
        let dir = tree(&[("stat", STAT)]);
        let snap = HostReader::new(dir.path(), Vec::new())
            .expect("root")
            .read();
        assert!(snap.cpu.is_some());
        assert!(snap.mem.is_none());
        assert_eq!(snap.problems.len(), 4, "{:?}", snap.problems);
    }

    #[test]
    fn a_root_without_stat_is_refused() {
        let dir = tree(&[]);
        let err = HostReader::new(dir.path(), Vec::new()).expect_err("must fail");
        assert!(err.to_string().contains("is not a readable procfs tree"));
    }
}
