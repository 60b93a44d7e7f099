//! SETMOV's eBPF layer: loads the programs of `setmov-ebpf` once, and hands each probe
//! (block, ...) the programs and maps it owns. A probe whose tracepoints this kernel lacks, or
//! whose programs the kernel refuses, is off with its reason; the others work on.
//!
//! Nothing per event crosses to user space: the programs aggregate in kernel maps, and the
//! probes read those maps once per tick.

pub mod block;
pub mod btf;
pub mod format;
pub mod kvm;
pub mod net;
pub mod sched;

use std::{
    fs,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use aya::{EbpfLoader, maps::MapError, programs::TracePoint, util::KernelVersion};
use aya_log::EbpfLogger;

pub use block::{BlockProbe, BlockTotals, add_pairing};
pub use format::{FormatError, TracepointField};
pub use kvm::{KvmCounters, KvmEventKind, KvmProbe};
pub use net::{DropCause, DropDevice, NetDeviceCounters, NetProbe};
pub use sched::{RunqWait, SchedProbe};

/// Where tracefs lives; the first one is where we mount it if neither is mounted.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why eBPF as a whole is unavailable, or why reading a map failed, as one sentence.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("eBPF is off: this setmov was built without it because {0}")]
    NotBuilt(&'static str),
    #[error(
        "eBPF is off: it needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), \
         which this process does not have"
    )]
    NotPrivileged,
    #[error("eBPF is off: tracefs is not mounted and mounting it on {target} failed: {error}")]
    NoTracefs {
        target: &'static str,
        error: nix::Error,
    },
    #[error("eBPF is off: the kernel did not accept the eBPF object: {0}")]
    Load(String),
    #[error("eBPF is off: no probe could be attached ({0})")]
    NoProbe(String),
    #[error("reading eBPF map {map} failed: {error}")]
    Map { map: &'static str, error: String },
    #[error("the kernel's BPF statistics cannot be turned on: {0}")]
    Stats(String),
}

impl EbpfError {
    /// True when this machine or build lacks something eBPF needs (toolchain at build time,
    /// privileges, tracefs, tracepoints), as opposed to a failure of SETMOV's own programs.
    pub fn is_missing_prerequisite(&self) -> bool {
        matches!(
            self,
            Self::NotBuilt(_) | Self::NotPrivileged | Self::NoTracefs { .. } | Self::NoProbe(_)
        )
    }
}

/// Why one probe is off; the other probes are not affected.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this kernel has none of the tracepoints {0}")]
    NoTracepoint(String),
    #[error("tracepoint format {}: {error}", path.display())]
    Format { path: PathBuf, error: FormatError },
    #[error("kernel BTF {path}: {error}")]
    Btf {
        path: &'static str,
        error: btf::BtfError,
    },
    #[error("the eBPF object has no {0}; it does not match this loader")]
    Object(String),
    #[error("program {program} could not be loaded or attached: {error}")]
    Program {
        program: &'static str,
        error: String,
    },
}

/// An error and its sources on one line: aya keeps details such as the verifier log in sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |error| EbpfError::Map {
        map,
        error: chain(&error),
    }
}

/// Takes map `name` out of the loaded object as the typed map `M`.
fn take_map<M>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    ebpf.take_map(name)
        .ok_or_else(|| ProbeError::Object(format!("map {name}")))?
        .try_into()
        .map_err(|error: MapError| ProbeError::Object(format!("map {name} ({})", chain(&error))))
}

/// Loads and attaches tracepoint program `program` on `category:program`.
fn attach_tracepoint(
    ebpf: &mut aya::Ebpf,
    category: &str,
    program: &'static str,
) -> Result<(), ProbeError> {
    let attach = |ebpf: &mut aya::Ebpf| -> Result<(), Box<dyn std::error::Error>> {
        let tracepoint: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("no program {program} in the eBPF object"))?
            .try_into()?;
        // Already loaded by `verify_in_parallel` unless the kernel refused it there: loading
        // it again here reports why.
        if tracepoint.fd().is_err() {
            tracepoint.load()?;
        }
        tracepoint.attach(category, program)?;
        Ok(())
    };
    attach(ebpf).map_err(|error| ProbeError::Program {
        program,
        error: chain(error.as_ref()),
    })
}

/// Threads that load programs at once, at most: the kernel verifies each program in the
/// loading thread, a few milliseconds each, and twenty of them one after another were a third
/// of the monitor's start-up.
const VERIFY_THREADS_MAX: usize = 4;

/// Loads the tracepoint programs `wanted` (the kernel verifies them) on several threads at
/// once, so that start-up waits for the slowest share rather than for the sum. A program the
/// kernel refuses stays unloaded here; [`attach_tracepoint`] loads it again and says why.
fn verify_in_parallel(ebpf: &mut aya::Ebpf, wanted: &[&str]) {
    let mut programs: Vec<&mut TracePoint> = ebpf
        .programs_mut()
        .filter(|(name, _)| wanted.contains(name))
        .filter_map(|(_, program)| program.try_into().ok())
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, VERIFY_THREADS_MAX);
    let share = programs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for chunk in programs.chunks_mut(share) {
            scope.spawn(move || {
                for program in chunk {
                    if let Err(error) = program.load() {
                        tracing::debug!("a program failed to load (retried at attach): {error}");
                    }
                }
            });
        }
    });
}

/// Every probe that could be attached, and why the others are off. Dropping it detaches
/// everything.
pub struct Probes {
    pub block: Option<BlockProbe>,
    pub kvm: Option<KvmProbe>,
    pub net: Option<NetProbe>,
    pub sched: Option<SchedProbe>,
    /// One sentence per probe that is off, e.g. "block probe is off: ...", and per program
    /// that is off while the rest of its probe runs ("kvm program kvm_exit is off: ...").
    pub disabled: Vec<String>,
    logger: Option<Mutex<EbpfLogger<LogToTracing>>>,
    /// Keeps the kernel's run-time statistics on while held (`--bpf-stats`).
    stats: Option<OwnedFd>,
    /// Owns the programs and their links.
    ebpf: aya::Ebpf,
}

/// One program's cumulative cost since the statistics were turned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRunStats {
    pub program: String,
    pub run_time: Duration,
    pub run_count: u64,
}

impl Probes {
    /// Loads the eBPF object and attaches every probe this kernel supports. Mounts tracefs
    /// first if it is not mounted (as `perf` does). Messages from the programs go to
    /// `tracing`. Fails only when no probe at all can run.
    pub fn load() -> Result<Self, EbpfError> {
        let probes = Self::load_and_attach();
        release_free_heap();
        probes
    }

    fn load_and_attach() -> Result<Self, EbpfError> {
        let object = object()?;
        if let Ok(status) = fs::read_to_string("/proc/self/status")
            && capabilities_allow_bpf(&status) == Some(false)
        {
            return Err(EbpfError::NotPrivileged);
        }
        raise_memlock_if_needed();
        let tracefs = tracefs()?;

        // Record layouts are read from this kernel's format files and written into the
        // programs' globals before the object is loaded.
        let block_layouts = block::BlockLayouts::read(&tracefs);
        let kvm_layouts = kvm::KvmLayouts::read(&tracefs);
        let net_layouts = net::NetLayouts::read(&tracefs);
        let sched_layouts = sched::SchedLayouts::read(&tracefs);
        let mut loader = loader_without_kernel_btf();
        if let Ok(layouts) = &block_layouts {
            layouts.apply(&mut loader);
        }
        if let Ok(layouts) = &kvm_layouts {
            layouts.apply(&mut loader);
        }
        if let Ok(layouts) = &net_layouts {
            layouts.apply(&mut loader);
        }
        if let Ok(layouts) = &sched_layouts {
            layouts.apply(&mut loader);
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|error| EbpfError::Load(chain(&error)))?;
        // The block programs are BTF tracepoints, loaded as they attach.
        let wanted: Vec<&'static str> = [
            kvm_layouts.as_ref().map(kvm::KvmLayouts::programs),
            net_layouts.as_ref().map(net::NetLayouts::programs),
            sched_layouts.as_ref().map(sched::SchedLayouts::programs),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .collect();
        verify_in_parallel(&mut ebpf, &wanted);

        let logger = match EbpfLogger::init_with_logger(&mut ebpf, LogToTracing) {
            Ok(logger) => Some(Mutex::new(logger)),
            Err(aya_log::Error::MapNotFound) => None,
            Err(error) => {
                tracing::warn!("messages from the eBPF programs will not be shown: {error}");
                None
            }
        };

        let mut disabled = Vec::new();
        let block = keep(
            &mut disabled,
            "block",
            block_layouts.and_then(|layouts| BlockProbe::attach(&mut ebpf, &layouts)),
        );
        if let Some(reason) = block.as_ref().and_then(BlockProbe::latency_off) {
            disabled.push(reason.to_owned());
        }
        let kvm = keep(
            &mut disabled,
            "kvm",
            kvm_layouts.and_then(|layouts| KvmProbe::attach(&mut ebpf, &layouts)),
        );
        // Single programs that are off while the rest of their probe runs.
        let net = keep(
            &mut disabled,
            "net",
            net_layouts.and_then(|layouts| NetProbe::attach(&mut ebpf, &layouts)),
        );
        let sched = keep(
            &mut disabled,
            "sched",
            sched_layouts.and_then(|layouts| SchedProbe::attach(&mut ebpf, &layouts)),
        );
        if let Some(kvm) = &kvm {
            disabled.extend_from_slice(kvm.programs_off());
        }
        if let Some(sched) = &sched {
            disabled.extend(
                sched
                    .disabled()
                    .iter()
                    .map(|off| format!("sched probe: {off}")),
            );
        }
        if let Some(net) = &net {
            disabled.extend_from_slice(net.programs_off());
        }
        if block.is_none() && kvm.is_none() && net.is_none() && sched.is_none() {
            return Err(EbpfError::NoProbe(disabled.join("; ")));
        }
        Ok(Probes {
            block,
            kvm,
            net,
            sched,
            disabled,
            logger,
            stats: None,
            ebpf,
        })
    }

    /// Names of the attached programs, e.g. `["block_io_start", ...]`.
    pub fn attached(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(block) = &self.block {
            names.extend(block.attached());
        }
        if let Some(kvm) = &self.kvm {
            names.extend(kvm.attached());
        }
        if let Some(net) = &self.net {
            names.extend(net.attached());
        }
        if let Some(sched) = &self.sched {
            names.extend(sched.attached());
        }
        names
    }

    /// Turns on the kernel's BPF run-time statistics (`kernel.bpf_stats_enabled`) for as long
    /// as these probes live. They cost two clock reads per event, so they are off by default.
    pub fn enable_run_stats(&mut self) -> Result<(), EbpfError> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|error| EbpfError::Stats(chain(&error)))?;
        self.stats = Some(fd);
        Ok(())
    }

    /// Whether [`Probes::enable_run_stats`] turned the statistics on.
    pub fn run_stats_enabled(&self) -> bool {
        self.stats.is_some()
    }

    /// Each loaded program's run count and run time so far (both stay 0 while statistics are
    /// off), by program name.
    pub fn run_stats(&self) -> Vec<ProgramRunStats> {
        let mut stats: Vec<_> = self
            .ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramRunStats {
                    program: name.to_owned(),
                    run_time: info.run_time(),
                    run_count: info.run_count(),
                })
            })
            .collect();
        stats.sort_by(|a, b| a.program.cmp(&b.program));
        stats
    }

    /// Passes pending messages of the eBPF programs to tracing. They are rare (a full map),
    /// so reading them once per tick is soon enough.
    pub fn flush_logs(&self) {
        if let Some(logger) = &self.logger {
            logger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flush();
        }
    }
}

/// A loader that will not use the kernel's BTF, if possible without parsing it.
///
/// aya 0.14's `EbpfLoader::new()` always parses `/sys/kernel/btf/vmlinux`, for CO-RE
/// relocations: 25 ms and 18 MiB at peak, more than the monitor's whole steady resident set.
/// Our programs have no such relocations (they read at offsets from tracefs and
/// `net::skb_dev_layout`; the test `the_object_needs_no_kernel_btf` checks it), so the parse is
/// waste. aya reads the file with a plain open and goes on without BTF when that fails; while
/// this is the process's only thread, the limit on open files is lowered to the lowest free
/// descriptor for the length of `new()`, so that the open fails with EMFILE and nothing is
/// parsed. With other threads (which could be opening files) it parses and drops the BTF.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let only_thread = fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1);
    let limits = getrlimit(Resource::RLIMIT_NOFILE);
    // The descriptor an open would get now; closed again at once.
    let lowest_free = fs::File::open("/dev/null").map(|file| file.as_raw_fd());
    let mut loader = match (only_thread, limits, lowest_free) {
        (true, Ok((soft, hard)), Ok(lowest)) => {
            let lowered = u64::try_from(lowest)
                .ok()
                .is_some_and(|lowest| setrlimit(Resource::RLIMIT_NOFILE, lowest, hard).is_ok());
            let loader = EbpfLoader::new();
            if lowered && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, soft, hard) {
                tracing::warn!("cannot restore the limit on open files ({soft}): {error}");
            }
            loader
        }
        _ => EbpfLoader::new(),
    };
    loader.btf(None);
    loader
}

/// Hands the heap that loading freed back to the system. Loading allocates and frees ~20 MiB
/// in many small blocks (the object's parse, the verifier's logs, format files, BTF); glibc
/// keeps freed blocks for reuse, so without this the monitor would hold them for good.
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of glibc's arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The probe, or None after adding why it is off to `disabled`.
fn keep<P>(disabled: &mut Vec<String>, name: &str, probe: Result<P, ProbeError>) -> Option<P> {
    match probe {
        Ok(probe) => Some(probe),
        Err(error) => {
            disabled.push(format!("{name} probe is off: {error}"));
            None
        }
    }
}

#[cfg(setmov_ebpf)]
fn object() -> Result<&'static [u8], EbpfError> {
    Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/setmov-ebpf"
    )))
}

#[cfg(not(setmov_ebpf))]
fn object() -> Result<&'static [u8], EbpfError> {
    Err(EbpfError::NotBuilt(env!("SETMOV_EBPF_OFF_REASON")))
}

/// Some(false) when `/proc/self/status` shows neither CAP_SYS_ADMIN nor both CAP_BPF and
/// CAP_PERFMON in the effective set; None when it cannot be told.
fn capabilities_allow_bpf(status: &str) -> Option<bool> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    let effective = u64::from_str_radix(hex, 16).ok()?;
    let has = |cap: u32| effective & (1 << cap) != 0;
    Some(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)))
}

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup.
fn raise_memlock_if_needed() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(5, 11, 0)) {
        return;
    }
    if let Err(error) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::warn!("could not lift RLIMIT_MEMLOCK ({error}); loading eBPF maps may fail");
    }
}

/// The mounted tracefs, mounting it on /sys/kernel/tracing when it is nowhere.
fn tracefs() -> Result<PathBuf, EbpfError> {
    let mounted = || {
        TRACEFS_MOUNTS
            .iter()
            .map(Path::new)
            .find(|root| root.join("events").is_dir())
            .map(Path::to_path_buf)
    };
    if let Some(root) = mounted() {
        return Ok(root);
    }
    use nix::mount::{MsFlags, mount};
    let target = TRACEFS_MOUNTS[0];
    mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|error| EbpfError::NoTracefs { target, error })?;
    tracing::info!("mounted tracefs on {target} (it was not mounted)");
    mounted().ok_or(EbpfError::NoTracefs {
        target,
        error: nix::Error::ENOENT,
    })
}

/// Forwards the eBPF programs' aya-log messages to tracing.
struct LogToTracing;

impl log::Log for LogToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "setmov::ebpf::kernel", "{message}"),
            log::Level::Warn => tracing::warn!(target: "setmov::ebpf::kernel", "{message}"),
            log::Level::Info => tracing::info!(target: "setmov::ebpf::kernel", "{message}"),
            log::Level::Debug => tracing::debug!(target: "setmov::ebpf::kernel", "{message}"),
            log::Level::Trace => tracing::trace!(target: "setmov::ebpf::kernel", "{message}"),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        let status = |cap_eff: &str| format!("Name:\tsetmov\nCapInh:\t0\nCapEff:\t{cap_eff}\n");
        // Full root.
        assert_eq!(
            capabilities_allow_bpf(&status("000001ffffffffff")),
            Some(true)
        );
        // CAP_SYS_ADMIN alone.
        assert_eq!(
            capabilities_allow_bpf(&status("0000000000200000")),
            Some(true)
        );
        // CAP_BPF and CAP_PERFMON.
        assert_eq!(
            capabilities_allow_bpf(&status("000000c000000000")),
            Some(true)
        );
        // CAP_BPF only.
        assert_eq!(
            capabilities_allow_bpf(&status("0000008000000000")),
            Some(false)
        );
        assert_eq!(
            capabilities_allow_bpf(&status("0000000000000000")),
            Some(false)
        );
        assert_eq!(capabilities_allow_bpf("Name:\tx\n"), None);
    }

    /// `Probes::load` drops the kernel BTF: a program with CO-RE relocations would need it.
    #[cfg(setmov_ebpf)]
    #[test]
    fn the_object_needs_no_kernel_btf() {
        let object = aya_obj::Object::parse(object().expect("built in")).expect("parses");
        assert!(!object.has_btf_relocations());
    }

    #[test]
    fn probes_can_move_to_another_thread() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Probes>();
        send_and_sync::<EbpfError>();
    }
}
