//! Block I/O per process: requests and bytes counted where they are submitted.
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
    path::Path,
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
};
use setmov_common::{
    BLOCK_IO_LOST_MAP, BLOCK_IO_MAP, BLOCK_IO_TOTAL_MAP, BlockKey, BlockTpLayout, BlockValue,
    DIR_READ, DIR_WRITE,
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
    programs: &'static [&'static str],
    /// `<PROGRAM>_LAYOUT` global name and value, one per program.
    globals: Vec<(String, BlockTpLayout)>,
}

impl BlockLayouts {
    /// Chooses the programs for this kernel and reads their record layouts.
    pub fn read(tracefs: &Path) -> Result<Self, ProbeError> {
        let programs = [REQUEST_PROGRAMS, BIO_PROGRAMS]
            .into_iter()
            .find(|programs| format_path(tracefs, CATEGORY, programs[0]).is_file())
            .ok_or_else(|| {
                ProbeError::NoTracepoint("block:block_io_start, block:block_bio_queue".into())
            })?;
        let mut globals = Vec::with_capacity(programs.len());
        for &program in programs {
            let path = format_path(tracefs, CATEGORY, program);
            let layout = read_format(&path)
                .and_then(|fields| block_layout(&fields))
                .map_err(|error| ProbeError::Format { path, error })?;
            globals.push((format!("{}_LAYOUT", program.to_uppercase()), layout));
        }
        Ok(BlockLayouts { programs, globals })
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
    total: PerCpuArray<MapData, BlockValue>,
    lost: PerCpuArray<MapData, u64>,
    attached: Vec<String>,
}

impl BlockProbe {
    /// Attaches the programs `layouts` chose and takes their maps.
    pub fn attach(ebpf: &mut aya::Ebpf, layouts: &BlockLayouts) -> Result<Self, ProbeError> {
        for &program in layouts.programs {
            attach_tracepoint(ebpf, CATEGORY, program)?;
        }
        Ok(Self {
            counters: take_map(ebpf, BLOCK_IO_MAP)?,
            total: take_map(ebpf, BLOCK_IO_TOTAL_MAP)?,
            lost: take_map(ebpf, BLOCK_IO_LOST_MAP)?,
            attached: layouts.programs.iter().map(ToString::to_string).collect(),
        })
    }

    /// Names of the attached programs, e.g. `["block_io_start", ...]`.
    pub fn attached(&self) -> Vec<String> {
        self.attached.clone()
    }

    /// Cumulative counters since load, summed over all processes (forgotten ones included).
    pub fn totals(&self) -> Result<BlockTotals, EbpfError> {
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
    let nr_sector = find_field(fields, "nr_sector", 4..=4, "4")?;
    let rwbs = find_field(fields, "rwbs", 2..=u32::MAX, "at least 2")?;
    Ok(BlockTpLayout {
        nr_sector_offset: nr_sector.offset,
        rwbs_offset: rwbs.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::format::parse_format;
    use crate::ebpf::format::tests::{BLOCK_BIO_QUEUE, BLOCK_IO_START, field};

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
