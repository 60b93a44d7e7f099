//! Block I/O per process from eBPF: loads the programs of `setmov-ebpf`, attaches them to the
//! kernel's block tracepoints and reads the counters they aggregate in the kernel.
//!
//! Which tracepoints: on kernels with `block:block_io_start` (6.5+), that one (a new request)
//! plus `block_bio_backmerge`/`block_bio_frontmerge` (a bio merged into an existing request,
//! which `block_io_start` never sees). `ops` are then requests, as in /proc/diskstats, and
//! `bytes` everything submitted. Older kernels get `block:block_bio_queue`: `ops` are bios, and
//! I/O through stacked devices (device-mapper, md) is counted once per layer.
//!
//! I/O is credited to the process that submits it to the block layer. Buffered writes are
//! submitted later by writeback kworkers and are credited to those.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
    util::KernelVersion,
};
use aya_log::EbpfLogger;
use setmov_common::{
    BLOCK_IO_LOST_MAP, BLOCK_IO_MAP, BLOCK_IO_TOTAL_MAP, BlockKey, BlockTpLayout, BlockValue,
    DIR_READ, DIR_WRITE,
};

/// Tracepoint category of every program here.
const CATEGORY: &str = "block";
/// Programs for kernels with `block_io_start`: new requests, then bios merged into them.
const REQUEST_PROGRAMS: &[&str] = &[
    "block_io_start",
    "block_bio_backmerge",
    "block_bio_frontmerge",
];
/// Programs for older kernels: one event per bio.
const BIO_PROGRAMS: &[&str] = &["block_bio_queue"];
/// Where tracefs lives; the first one is where we mount it if neither is mounted.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why eBPF block accounting is unavailable, or why reading it failed, as one sentence.
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
    #[error("eBPF is off: this kernel has neither block:block_io_start nor block:block_bio_queue")]
    NoTracepoint,
    #[error("eBPF is off: tracepoint format {}: {error}", path.display())]
    Format { path: PathBuf, error: FormatError },
    #[error("eBPF is off: the kernel did not accept the eBPF object: {0}")]
    Load(String),
    #[error("eBPF is off: the eBPF object has no {0}; it does not match this loader")]
    Object(String),
    #[error("eBPF is off: program {program} could not be loaded or attached: {error}")]
    Program {
        program: &'static str,
        error: String,
    },
    #[error("reading eBPF map {map} failed: {error}")]
    Map { map: &'static str, error: String },
}

impl EbpfError {
    /// True when this machine or build lacks something eBPF needs (toolchain at build time,
    /// privileges, tracefs, tracepoints), as opposed to a failure of SETMOV's own programs.
    pub fn is_missing_prerequisite(&self) -> bool {
        matches!(
            self,
            Self::NotBuilt(_) | Self::NotPrivileged | Self::NoTracefs { .. } | Self::NoTracepoint
        )
    }
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

/// Block I/O counters of one process (or a sum of processes), cumulative since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockTotals {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
}

impl BlockTotals {
    fn add(&mut self, direction: u32, value: BlockValue) {
        let (ops, bytes) = match direction {
            DIR_READ => (&mut self.read_ops, &mut self.read_bytes),
            DIR_WRITE => (&mut self.write_ops, &mut self.write_bytes),
            _ => return,
        };
        // Wrapping: counters are modulo 2^64 and a monitor must not panic on them.
        *ops = ops.wrapping_add(value.ops);
        *bytes = bytes.wrapping_add(value.bytes);
    }
}

/// The block programs, attached while this value lives.
pub struct BlockProbe {
    counters: PerCpuHashMap<MapData, BlockKey, BlockValue>,
    total: PerCpuArray<MapData, BlockValue>,
    lost: PerCpuArray<MapData, u64>,
    logger: Option<Mutex<EbpfLogger<LogToTracing>>>,
    attached: Vec<String>,
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: aya::Ebpf,
}

impl BlockProbe {
    /// Loads the eBPF object and attaches its block programs. Mounts tracefs first if it is
    /// not mounted (as `perf` does). Messages from the programs go to `tracing`.
    pub fn load() -> Result<Self, EbpfError> {
        let object = object()?;
        if let Ok(status) = fs::read_to_string("/proc/self/status")
            && capabilities_allow_bpf(&status) == Some(false)
        {
            return Err(EbpfError::NotPrivileged);
        }
        raise_memlock_if_needed();
        let tracefs = tracefs()?;
        let programs = choose_programs(&tracefs)?;

        let mut layouts = Vec::with_capacity(programs.len());
        for program in programs {
            let path = format_path(&tracefs, program);
            let layout = read_layout(&path).map_err(|error| EbpfError::Format { path, error })?;
            layouts.push((format!("{}_LAYOUT", program.to_uppercase()), layout));
        }
        let mut loader = EbpfLoader::new();
        for (global, layout) in &layouts {
            loader.override_global(global, layout, true);
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|error| EbpfError::Load(chain(&error)))?;

        let logger = match EbpfLogger::init_with_logger(&mut ebpf, LogToTracing) {
            Ok(logger) => Some(Mutex::new(logger)),
            Err(aya_log::Error::MapNotFound) => None,
            Err(error) => {
                tracing::warn!("messages from the eBPF programs will not be shown: {error}");
                None
            }
        };

        for &program in programs {
            attach(&mut ebpf, program).map_err(|error| EbpfError::Program {
                program,
                error: chain(error.as_ref()),
            })?;
        }

        let counters = ebpf
            .take_map(BLOCK_IO_MAP)
            .ok_or_else(|| EbpfError::Object(format!("map {BLOCK_IO_MAP}")))?
            .try_into()
            .map_err(map_error(BLOCK_IO_MAP))?;
        let total = ebpf
            .take_map(BLOCK_IO_TOTAL_MAP)
            .ok_or_else(|| EbpfError::Object(format!("map {BLOCK_IO_TOTAL_MAP}")))?
            .try_into()
            .map_err(map_error(BLOCK_IO_TOTAL_MAP))?;
        let lost = ebpf
            .take_map(BLOCK_IO_LOST_MAP)
            .ok_or_else(|| EbpfError::Object(format!("map {BLOCK_IO_LOST_MAP}")))?
            .try_into()
            .map_err(map_error(BLOCK_IO_LOST_MAP))?;

        Ok(Self {
            counters,
            total,
            lost,
            logger,
            attached: programs.iter().map(ToString::to_string).collect(),
            _ebpf: ebpf,
        })
    }

    /// Names of the attached programs, e.g. `["block_io_start", ...]`.
    pub fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// Cumulative counters since load, summed over all processes (forgotten ones included).
    pub fn totals(&self) -> Result<BlockTotals, EbpfError> {
        self.flush_logs();
        let mut totals = BlockTotals::default();
        for direction in [DIR_READ, DIR_WRITE] {
            let values = self
                .total
                .get(&direction, 0)
                .map_err(map_error(BLOCK_IO_TOTAL_MAP))?;
            totals.add(direction, sum_cpus(&values));
        }
        Ok(totals)
    }

    /// Cumulative counters per process (tgid) since load, for the processes still in the map.
    pub fn per_tgid(&self) -> Result<HashMap<u32, BlockTotals>, EbpfError> {
        self.flush_logs();
        let mut out = HashMap::<u32, BlockTotals>::new();
        for entry in self.counters.iter() {
            let (key, values) = entry.map_err(map_error(BLOCK_IO_MAP))?;
            out.entry(key.tgid)
                .or_default()
                .add(key.direction, sum_cpus(&values));
        }
        Ok(out)
    }

    /// I/O events not counted because the counter map was full: non-zero means the figures
    /// are incomplete (call `forget_dead_tgids` more often).
    pub fn lost_events(&self) -> Result<u64, EbpfError> {
        let values = self.lost.get(&0, 0).map_err(map_error(BLOCK_IO_LOST_MAP))?;
        Ok(values.iter().fold(0, |sum, v| sum.wrapping_add(*v)))
    }

    /// Removes the counters of processes that have exited (no `<proc_root>/<tgid>`); `totals`
    /// keeps counting them. Returns how many processes were forgotten.
    pub fn forget_dead_tgids(&mut self, proc_root: &Path) -> Result<usize, EbpfError> {
        let keys = self
            .counters
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_error(BLOCK_IO_MAP))?;
        let mut forgotten = HashSet::new();
        for key in keys {
            // tgid 0 is the idle task (I/O started from interrupts): never a dead process.
            if key.tgid == 0 || proc_root.join(key.tgid.to_string()).exists() {
                continue;
            }
            match self.counters.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(error) => return Err(map_error(BLOCK_IO_MAP)(error)),
            }
            forgotten.insert(key.tgid);
        }
        Ok(forgotten.len())
    }

    /// Passes pending messages of the eBPF programs to tracing. They are rare (a full map),
    /// so reading them whenever the counters are read is soon enough.
    fn flush_logs(&self) {
        if let Some(logger) = &self.logger {
            logger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flush();
        }
    }
}

fn sum_cpus(values: &[BlockValue]) -> BlockValue {
    values
        .iter()
        .fold(BlockValue::default(), |sum, v| BlockValue {
            ops: sum.ops.wrapping_add(v.ops),
            bytes: sum.bytes.wrapping_add(v.bytes),
        })
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

fn format_path(tracefs: &Path, program: &str) -> PathBuf {
    tracefs
        .join("events")
        .join(CATEGORY)
        .join(program)
        .join("format")
}

fn choose_programs(tracefs: &Path) -> Result<&'static [&'static str], EbpfError> {
    [REQUEST_PROGRAMS, BIO_PROGRAMS]
        .into_iter()
        .find(|programs| format_path(tracefs, programs[0]).is_file())
        .ok_or(EbpfError::NoTracepoint)
}

fn read_layout(path: &Path) -> Result<BlockTpLayout, FormatError> {
    let text = fs::read_to_string(path).map_err(|error| FormatError::Read(error.to_string()))?;
    block_layout(&parse_format(&text)?)
}

fn attach(ebpf: &mut aya::Ebpf, program: &'static str) -> Result<(), Box<dyn std::error::Error>> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("no program {program} in the eBPF object"))?
        .try_into()?;
    tracepoint.load()?;
    tracepoint.attach(CATEGORY, program)?;
    Ok(())
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

/// One `field:` line of a tracepoint's `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointField {
    /// The C name, without type or array suffix (`rwbs` for `char rwbs[10]`).
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// What is wrong with a tracepoint's `format` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("line {line}: {problem}")]
    Malformed { line: usize, problem: &'static str },
    #[error("it has no field `{0}`")]
    MissingField(&'static str),
    #[error("field `{name}` has size {size}, expected {expected}")]
    FieldSize {
        name: &'static str,
        size: u32,
        expected: &'static str,
    },
}

/// Parses the `field:<declaration>; offset:<n>; size:<n>; signed:<0|1>;` lines of a
/// tracepoint's `format` file (`/sys/kernel/tracing/events/<category>/<name>/format`).
pub fn parse_format(text: &str) -> Result<Vec<TracepointField>, FormatError> {
    let mut fields = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with("field:") {
            continue;
        }
        let malformed = |problem| FormatError::Malformed {
            line: index + 1,
            problem,
        };
        let (mut declaration, mut offset, mut size) = (None, None, None);
        for part in line.split(';').map(str::trim) {
            if let Some(value) = part.strip_prefix("field:") {
                declaration = Some(value);
            } else if let Some(value) = part.strip_prefix("offset:") {
                offset = Some(value.parse().map_err(|_| malformed("bad offset"))?);
            } else if let Some(value) = part.strip_prefix("size:") {
                size = Some(value.parse().map_err(|_| malformed("bad size"))?);
            }
        }
        let name = declaration
            .and_then(|declaration| declaration.split_whitespace().last())
            .map(|last| {
                let last = last.trim_start_matches('*');
                last.split_once('[').map_or(last, |(name, _)| name)
            })
            .filter(|name| !name.is_empty())
            .ok_or_else(|| malformed("no field name"))?;
        fields.push(TracepointField {
            name: name.to_owned(),
            offset: offset.ok_or_else(|| malformed("no offset"))?,
            size: size.ok_or_else(|| malformed("no size"))?,
        });
    }
    Ok(fields)
}

/// Offsets of `nr_sector` (an `unsigned int`) and `rwbs` (at least the two bytes the
/// program reads) in a block tracepoint record.
pub fn block_layout(fields: &[TracepointField]) -> Result<BlockTpLayout, FormatError> {
    let find = |name: &'static str| {
        fields
            .iter()
            .find(|field| field.name == name)
            .ok_or(FormatError::MissingField(name))
    };
    let nr_sector = find("nr_sector")?;
    if nr_sector.size != 4 {
        return Err(FormatError::FieldSize {
            name: "nr_sector",
            size: nr_sector.size,
            expected: "4",
        });
    }
    let rwbs = find("rwbs")?;
    if rwbs.size < 2 {
        return Err(FormatError::FieldSize {
            name: "rwbs",
            size: rwbs.size,
            expected: "at least 2",
        });
    }
    Ok(BlockTpLayout {
        nr_sector_offset: nr_sector.offset,
        rwbs_offset: rwbs.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /sys/kernel/tracing/events/block/block_io_start/format on Linux 6.18 (x86_64).
    const BLOCK_IO_START: &str = "name: block_io_start
ID: 2102
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:char comm[16];\toffset:44;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;

print fmt: \"%d,%d %s %u (%s) %llu + %u %s,%u,%u [%s]\", ((unsigned int) ((REC->dev) >> 20)), \
((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->rwbs, REC->bytes, __get_str(cmd), \
(unsigned long long)REC->sector, REC->nr_sector, REC->comm
";

    /// /sys/kernel/tracing/events/block/block_bio_queue/format on the same kernel.
    const BLOCK_BIO_QUEUE: &str = "name: block_bio_queue
ID: 2097
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:char rwbs[10];\toffset:28;\tsize:10;\tsigned:0;
\tfield:char comm[16];\toffset:38;\tsize:16;\tsigned:0;

print fmt: \"%d,%d %s %llu + %u [%s]\", ((unsigned int) ((REC->dev) >> 20)), \
((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->rwbs, \
(unsigned long long)REC->sector, REC->nr_sector, REC->comm
";

    fn field(name: &str, offset: u32, size: u32) -> TracepointField {
        TracepointField {
            name: name.to_owned(),
            offset,
            size,
        }
    }

    #[test]
    fn parses_every_field_of_block_io_start() {
        let fields = parse_format(BLOCK_IO_START).expect("parses");
        assert_eq!(fields.len(), 12);
        assert_eq!(fields[0], field("common_type", 0, 2));
        assert_eq!(fields[6], field("nr_sector", 24, 4));
        assert_eq!(fields[9], field("rwbs", 34, 10));
        // `__data_loc char[] cmd`: the name is the last word, after the array type.
        assert_eq!(fields[11], field("cmd", 60, 4));
    }

    #[test]
    fn block_layouts_of_this_kernel() {
        let layout = |text| block_layout(&parse_format(text).expect("parses"));
        assert_eq!(
            layout(BLOCK_IO_START),
            Ok(BlockTpLayout {
                nr_sector_offset: 24,
                rwbs_offset: 34
            })
        );
        assert_eq!(
            layout(BLOCK_BIO_QUEUE),
            Ok(BlockTpLayout {
                nr_sector_offset: 24,
                rwbs_offset: 28
            })
        );
    }

    #[test]
    fn pointer_and_spacing_variants() {
        let fields = parse_format(
            "field:const char * name;offset:8;size:8;signed:0;\n\
             \tfield:void *ptr;\toffset:16;\tsize:8;\tsigned:0;\n",
        )
        .expect("parses");
        assert_eq!(fields, vec![field("name", 8, 8), field("ptr", 16, 8)]);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(
            parse_format("name: x\n\tfield:int a;\tsize:4;\tsigned:1;\n"),
            Err(FormatError::Malformed {
                line: 2,
                problem: "no offset"
            })
        );
        assert_eq!(
            parse_format("\tfield:int a;\toffset:x;\tsize:4;\n"),
            Err(FormatError::Malformed {
                line: 1,
                problem: "bad offset"
            })
        );
        assert_eq!(
            parse_format("\tfield:;\toffset:0;\tsize:4;\n"),
            Err(FormatError::Malformed {
                line: 1,
                problem: "no field name"
            })
        );
    }

    #[test]
    fn block_layout_checks_fields() {
        assert_eq!(
            block_layout(&[field("rwbs", 28, 10)]),
            Err(FormatError::MissingField("nr_sector"))
        );
        assert_eq!(
            block_layout(&[field("nr_sector", 24, 8), field("rwbs", 28, 10)]),
            Err(FormatError::FieldSize {
                name: "nr_sector",
                size: 8,
                expected: "4"
            })
        );
        assert_eq!(
            block_layout(&[field("nr_sector", 24, 4)]),
            Err(FormatError::MissingField("rwbs"))
        );
    }

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

    #[test]
    fn totals_add_by_direction() {
        let mut totals = BlockTotals::default();
        totals.add(
            DIR_READ,
            BlockValue {
                ops: 2,
                bytes: 8192,
            },
        );
        totals.add(DIR_WRITE, BlockValue { ops: 1, bytes: 512 });
        // Neither read nor write (a flush, a discard): not counted.
        totals.add(7, BlockValue { ops: 9, bytes: 9 });
        assert_eq!(
            totals,
            BlockTotals {
                read_ops: 2,
                read_bytes: 8192,
                write_ops: 1,
                write_bytes: 512
            }
        );
    }

    #[test]
    fn probe_can_move_to_another_thread() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<BlockProbe>();
        send_and_sync::<EbpfError>();
    }
}
