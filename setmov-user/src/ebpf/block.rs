//! Block I/O per process: requests and bytes counted where they are submitted.
//!
//! Which tracepoints: on kernels with `block:block_io_start` (6.5+), that one (a new request)
//! plus `block_bio_backmerge`/`block_bio_frontmerge` (a bio merged into an existing request,
//! which `block_io_start` never sees). `ops` are then requests, as in /proc/diskstats, and
//! `bytes` everything submitted. Older kernels get `block:block_bio_queue`: `ops` are bios, and
//! I/O through stacked devices (device-mapper, md) is counted once per layer. The all-process
//! counters are kept per device, so that the host total can count only the disks nothing sits
//! below, as the /proc/diskstats total does (a loop device's requests, for one, reach the disk
//! under its file again).
//!
//! I/O is credited to the process that submits it to the block layer. Buffered writes are
//! submitted later by writeback kworkers and are credited to those.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use setmov_common::{
    BLOCK_IO_LOST_MAP, BLOCK_IO_MAP, BLOCK_IO_TOTAL_MAP, BLOCK_LATENCY_DEVICE_MAP,
    BLOCK_LATENCY_TGID_MAP, BLOCK_PAIRING_MAP, BlockKey, BlockTpLayout, BlockValue, DIR_READ,
    DIR_WRITE, DeviceKey, LatHist, PairingCounters,
};

use super::format::{FormatError, TracepointField, find_field, format_path, read_format};
use super::{EbpfError, ProbeError, attach_tracepoint, map_error, take_map};

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
/// Programs pairing requests for their latency, on any kernel that has them.
const LATENCY_PROGRAMS: &[&str] = &["block_rq_issue", "block_rq_complete"];

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

/// The record layout of each block program this kernel can run, read from its format files.
pub struct BlockLayouts {
    programs: Vec<&'static str>,
    /// `<PROGRAM>_LAYOUT` global name and value, one per program.
    globals: Vec<(String, BlockTpLayout)>,
    /// Why latency is not measured, when it is not.
    latency_off: Option<String>,
}

impl BlockLayouts {
    /// Chooses the programs for this kernel and reads their record layouts. Without
    /// `block_rq_issue`/`block_rq_complete` the I/O is still counted, without latency.
    pub fn read(tracefs: &Path) -> Result<Self, ProbeError> {
        let counting = [REQUEST_PROGRAMS, BIO_PROGRAMS]
            .into_iter()
            .find(|programs| {
                programs
                    .first()
                    .is_some_and(|first| format_path(tracefs, CATEGORY, first).is_file())
            })
            .ok_or_else(|| {
                ProbeError::NoTracepoint("block:block_io_start, block:block_bio_queue".into())
            })?;
        let mut layouts = BlockLayouts {
            programs: Vec::new(),
            globals: Vec::new(),
            latency_off: None,
        };
        for &program in counting {
            layouts.add(tracefs, program)?;
        }
        let missing: Vec<_> = LATENCY_PROGRAMS
            .iter()
            .filter(|program| !format_path(tracefs, CATEGORY, program).is_file())
            .map(|program| format!("{CATEGORY}:{program}"))
            .collect();
        if missing.is_empty() {
            for &program in LATENCY_PROGRAMS {
                layouts.add(tracefs, program)?;
            }
        } else {
            layouts.latency_off = Some(format!(
                "block latency is off: this kernel has no {}",
                missing.join(", ")
            ));
        }
        Ok(layouts)
    }

    fn add(&mut self, tracefs: &Path, program: &'static str) -> Result<(), ProbeError> {
        let path = format_path(tracefs, CATEGORY, program);
        let layout = read_format(&path)
            .and_then(|fields| block_layout(&fields))
            .map_err(|error| ProbeError::Format { path, error })?;
        self.programs.push(program);
        self.globals
            .push((format!("{}_LAYOUT", program.to_uppercase()), layout));
        Ok(())
    }

    /// The programs this kernel gets, in attach order.
    pub fn programs(&self) -> Vec<&'static str> {
        self.programs.clone()
    }

    /// Writes the layouts into the programs' globals.
    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (global, layout) in &self.globals {
            loader.override_global(global, layout, true);
        }
    }
}

/// The block programs' maps; the programs stay attached while the loaded object lives.
pub struct BlockProbe {
    counters: PerCpuHashMap<MapData, BlockKey, BlockValue>,
    total: PerCpuHashMap<MapData, DeviceKey, BlockValue>,
    lost: PerCpuArray<MapData, u64>,
    latency_by_device: PerCpuHashMap<MapData, DeviceKey, LatHist>,
    latency_by_tgid: PerCpuHashMap<MapData, BlockKey, LatHist>,
    pairing: PerCpuHashMap<MapData, DeviceKey, PairingCounters>,
    attached: Vec<String>,
    latency_off: Option<String>,
}

impl BlockProbe {
    /// Attaches the programs `layouts` chose and takes their maps.
    pub fn attach(ebpf: &mut aya::Ebpf, layouts: &BlockLayouts) -> Result<Self, ProbeError> {
        for &program in &layouts.programs {
            attach_tracepoint(ebpf, CATEGORY, program)?;
        }
        Ok(Self {
            counters: take_map(ebpf, BLOCK_IO_MAP)?,
            total: take_map(ebpf, BLOCK_IO_TOTAL_MAP)?,
            lost: take_map(ebpf, BLOCK_IO_LOST_MAP)?,
            latency_by_device: take_map(ebpf, BLOCK_LATENCY_DEVICE_MAP)?,
            latency_by_tgid: take_map(ebpf, BLOCK_LATENCY_TGID_MAP)?,
            pairing: take_map(ebpf, BLOCK_PAIRING_MAP)?,
            attached: layouts.programs.iter().map(ToString::to_string).collect(),
            latency_off: layouts.latency_off.clone(),
        })
    }

    /// Why latency is not measured on this kernel, if it is not.
    pub fn latency_off(&self) -> Option<&str> {
        self.latency_off.as_deref()
    }

    /// Cumulative issue-to-completion latency histograms (ns) per device and direction.
    pub fn latency_by_device(&self) -> Result<HashMap<DeviceKey, LatHist>, EbpfError> {
        read_histograms(&self.latency_by_device, BLOCK_LATENCY_DEVICE_MAP)
    }

    /// Cumulative issue-to-completion latency histograms (ns) per submitting process and
    /// direction; tgid 0 holds requests whose submitter is unknown.
    pub fn latency_by_tgid(&self) -> Result<HashMap<BlockKey, LatHist>, EbpfError> {
        read_histograms(&self.latency_by_tgid, BLOCK_LATENCY_TGID_MAP)
    }

    /// How requests and completions were paired since load per device (kernel `dev_t`) and
    /// direction, all CPUs together: collisions (several requests in flight to one device,
    /// direction and first sector), overflows and completions whose latency is in no
    /// histogram. A device without any of them is absent.
    pub fn pairing(&self) -> Result<HashMap<DeviceKey, PairingCounters>, EbpfError> {
        let mut out = HashMap::new();
        for entry in self.pairing.iter() {
            let (key, per_cpu) = entry.map_err(map_error(BLOCK_PAIRING_MAP))?;
            let sum = per_cpu
                .iter()
                .fold(PairingCounters::default(), |sum, v| add_pairing(&sum, v));
            out.insert(key, sum);
        }
        Ok(out)
    }

    /// Names of the attached programs, e.g. `["block_io_start", ...]`.
    pub fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// Cumulative counters since load, every device and process together (stacked devices
    /// and the disks below them both count).
    pub fn totals(&self) -> Result<BlockTotals, EbpfError> {
        let mut sum = BlockTotals::default();
        for io in self.totals_by_device()?.values() {
            sum.add(
                DIR_READ,
                BlockValue {
                    ops: io.read_ops,
                    bytes: io.read_bytes,
                },
            );
            sum.add(
                DIR_WRITE,
                BlockValue {
                    ops: io.write_ops,
                    bytes: io.write_bytes,
                },
            );
        }
        Ok(sum)
    }

    /// Cumulative counters since load per device (kernel `dev_t`), summed over all processes
    /// (forgotten ones included).
    pub fn totals_by_device(&self) -> Result<HashMap<u32, BlockTotals>, EbpfError> {
        let mut out = HashMap::<u32, BlockTotals>::new();
        for entry in self.total.iter() {
            let (key, values) = entry.map_err(map_error(BLOCK_IO_TOTAL_MAP))?;
            out.entry(key.dev)
                .or_default()
                .add(key.direction, sum_cpus(&values));
        }
        Ok(out)
    }

    /// Cumulative counters per process (tgid) since load, for the processes still in the map.
    pub fn per_tgid(&self) -> Result<HashMap<u32, BlockTotals>, EbpfError> {
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

    /// Removes the counters and latency histograms of processes that have exited (no
    /// `<proc_root>/<tgid>`); `totals` keeps counting them. Returns how many processes were
    /// forgotten.
    pub fn forget_dead_tgids(&mut self, proc_root: &Path) -> Result<usize, EbpfError> {
        let mut forgotten = HashSet::new();
        forget_dead(&mut self.counters, BLOCK_IO_MAP, proc_root, &mut forgotten)?;
        forget_dead(
            &mut self.latency_by_tgid,
            BLOCK_LATENCY_TGID_MAP,
            proc_root,
            &mut forgotten,
        )?;
        Ok(forgotten.len())
    }
}

/// Removes from `map` the keys of processes without `<proc_root>/<tgid>`, noting their tgids.
fn forget_dead<V: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, BlockKey, V>,
    name: &'static str,
    proc_root: &Path,
    forgotten: &mut HashSet<u32>,
) -> Result<(), EbpfError> {
    let keys = map
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_error(name))?;
    for key in keys {
        // tgid 0 is the idle task (I/O started from interrupts) or an unknown submitter:
        // never a dead process.
        if key.tgid == 0 || proc_root.join(key.tgid.to_string()).exists() {
            continue;
        }
        match map.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(error) => return Err(map_error(name)(error)),
        }
        forgotten.insert(key.tgid);
    }
    Ok(())
}

/// Every histogram of a per-CPU map, summed over CPUs.
fn read_histograms<K: aya::Pod + Eq + std::hash::Hash>(
    map: &PerCpuHashMap<MapData, K, LatHist>,
    name: &'static str,
) -> Result<HashMap<K, LatHist>, EbpfError> {
    let mut out = HashMap::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry.map_err(map_error(name))?;
        let mut sum = LatHist::default();
        for hist in per_cpu.iter() {
            crate::usage::hist::hist_add(&mut sum, hist);
        }
        out.insert(key, sum);
    }
    Ok(out)
}

/// The two counts added (wrapping, as the kernel's counters do).
pub fn add_pairing(a: &PairingCounters, b: &PairingCounters) -> PairingCounters {
    PairingCounters {
        collided: a.collided.wrapping_add(b.collided),
        overflowed: a.overflowed.wrapping_add(b.overflowed),
        unpaired: a.unpaired.wrapping_add(b.unpaired),
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

/// Offsets of `nr_sector` (an `unsigned int`) and `rwbs` (at least the two bytes the
/// program reads) in a block tracepoint record.
pub fn block_layout(fields: &[TracepointField]) -> Result<BlockTpLayout, FormatError> {
    let dev = find_field(fields, "dev", 4..=4, "4")?;
    let sector = find_field(fields, "sector", 8..=8, "8")?;
    let nr_sector = find_field(fields, "nr_sector", 4..=4, "4")?;
    let rwbs = find_field(fields, "rwbs", 2..=u32::MAX, "at least 2")?;
    Ok(BlockTpLayout {
        dev_offset: dev.offset,
        sector_offset: sector.offset,
        nr_sector_offset: nr_sector.offset,
        rwbs_offset: rwbs.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::format::parse_format;
    use crate::ebpf::format::tests::{BLOCK_BIO_QUEUE, BLOCK_IO_START, field};

    /// /sys/kernel/tracing/events/block/block_rq_complete/format on Linux 6.18 (x86_64),
    /// print fmt left out.
    const BLOCK_RQ_COMPLETE: &str = "name: block_rq_complete
ID: 2107
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:dev_t dev;\toffset:8;\tsize:4;\tsigned:0;
\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int nr_sector;\toffset:24;\tsize:4;\tsigned:0;
\tfield:int error;\toffset:28;\tsize:4;\tsigned:1;
\tfield:unsigned short ioprio;\toffset:32;\tsize:2;\tsigned:0;
\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;
\tfield:__data_loc char[] cmd;\toffset:44;\tsize:4;\tsigned:0;
";

    #[test]
    fn block_layouts_of_this_kernel() {
        let layout = |text| block_layout(&parse_format(text).expect("parses"));
        let expected = |rwbs_offset| BlockTpLayout {
            dev_offset: 8,
            sector_offset: 16,
            nr_sector_offset: 24,
            rwbs_offset,
        };
        assert_eq!(layout(BLOCK_IO_START), Ok(expected(34)));
        assert_eq!(layout(BLOCK_BIO_QUEUE), Ok(expected(28)));
        assert_eq!(layout(BLOCK_RQ_COMPLETE), Ok(expected(34)));
    }

    #[test]
    fn block_layout_checks_fields() {
        let dev = field("dev", 8, 4);
        let sector = field("sector", 16, 8);
        assert_eq!(
            block_layout(&[field("rwbs", 28, 10)]),
            Err(FormatError::MissingField("dev"))
        );
        assert_eq!(
            block_layout(&[dev.clone(), sector.clone(), field("rwbs", 28, 10)]),
            Err(FormatError::MissingField("nr_sector"))
        );
        assert_eq!(
            block_layout(&[
                dev.clone(),
                sector.clone(),
                field("nr_sector", 24, 8),
                field("rwbs", 28, 10)
            ]),
            Err(FormatError::FieldSize {
                name: "nr_sector",
                size: 8,
                expected: "4"
            })
        );
        assert_eq!(
            block_layout(&[dev, sector, field("nr_sector", 24, 4)]),
            Err(FormatError::MissingField("rwbs"))
        );
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
}
