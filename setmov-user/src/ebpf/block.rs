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
    programs::BtfTracePoint,
};
use setmov_common::{
    BLOCK_IO_LOST_MAP, BLOCK_IO_MAP, BLOCK_LATENCY_DEVICE_MAP, BLOCK_LATENCY_TGID_MAP,
    BLOCK_PAIRING_MAP, BlockIoKey, BlockKey, BlockOffsets, BlockValue, DIR_READ, DIR_WRITE,
    DeviceKey, LatHist, PairingCounters,
};

use super::btf::{Btf, BtfError, KERNEL_BTF, KernelBtfBytes, typedefs_at_kernel_ids};
use super::format::format_path;
use super::{EbpfError, ProbeError, chain, map_error, take_map};

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
/// The programs' global holding [`BlockOffsets`].
const OFFSETS_GLOBAL: &str = "BLOCK_OFFSETS";

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

    fn add_totals(&mut self, other: &BlockTotals) {
        self.read_ops = self.read_ops.wrapping_add(other.read_ops);
        self.read_bytes = self.read_bytes.wrapping_add(other.read_bytes);
        self.write_ops = self.write_ops.wrapping_add(other.write_ops);
        self.write_bytes = self.write_bytes.wrapping_add(other.write_bytes);
    }
}

/// The block programs this kernel can run, and the struct offsets they read at.
pub struct BlockLayouts {
    programs: Vec<&'static str>,
    offsets: BlockOffsets,
    /// What attaching the programs needs of the kernel's BTF (see `typedefs_at_kernel_ids`).
    attach_btf: Vec<u8>,
    /// Why latency is not measured, when it is not.
    latency_off: Option<String>,
}

impl BlockLayouts {
    /// Chooses the programs for this kernel (by its tracepoints) and reads the offsets of the
    /// struct members they read from its BTF. Without `block_rq_issue`/`block_rq_complete` the
    /// I/O is still counted, without latency.
    pub fn read(tracefs: &Path) -> Result<Self, ProbeError> {
        let has = |program: &str| format_path(tracefs, CATEGORY, program).is_file();
        let counting = [REQUEST_PROGRAMS, BIO_PROGRAMS]
            .into_iter()
            .find(|programs| programs.first().is_some_and(|first| has(first)))
            .ok_or_else(|| {
                ProbeError::NoTracepoint("block:block_io_start, block:block_bio_queue".into())
            })?;
        let btf_error = |error| ProbeError::Btf {
            path: KERNEL_BTF,
            error,
        };
        let raw = KernelBtfBytes::load().map_err(btf_error)?;
        let btf = Btf::parse(raw.bytes()).map_err(btf_error)?;
        let offsets = block_offsets(&btf).map_err(btf_error)?;
        let mut programs = counting.to_vec();
        let missing: Vec<_> = LATENCY_PROGRAMS
            .iter()
            .filter(|program| !has(program))
            .map(|program| format!("{CATEGORY}:{program}"))
            .collect();
        let latency_off = if missing.is_empty() {
            programs.extend_from_slice(LATENCY_PROGRAMS);
            None
        } else {
            Some(format!(
                "block latency is off: this kernel has no {}",
                missing.join(", ")
            ))
        };
        let mut typedefs = Vec::new();
        for &program in &programs {
            let name = format!("btf_trace_{program}");
            match btf.typedef_id(&name).map_err(btf_error)? {
                Some(id) => typedefs.push((name, id)),
                None => {
                    return Err(ProbeError::Program {
                        program,
                        error: format!("the kernel's BTF has no {name}"),
                    });
                }
            }
        }
        let typedefs: Vec<(&str, u32)> = typedefs.iter().map(|(n, id)| (n.as_str(), *id)).collect();
        Ok(Self {
            programs,
            offsets,
            attach_btf: typedefs_at_kernel_ids(&typedefs),
            latency_off,
        })
    }

    /// Writes the offsets into the programs' global.
    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(OFFSETS_GLOBAL, &self.offsets, true);
    }
}

/// The offsets of the struct members the block programs read, from the kernel's BTF.
pub fn block_offsets(btf: &Btf) -> Result<BlockOffsets, BtfError> {
    let bio_iter = btf.member_offset("bio", "bi_iter", "bio.bi_iter")?;
    let iter_size = btf.member_offset("bvec_iter", "bi_size", "bvec_iter.bi_size")?;
    Ok(BlockOffsets {
        request_queue: btf.member_offset("request", "q", "request.q")?,
        request_cmd_flags: btf.member_offset("request", "cmd_flags", "request.cmd_flags")?,
        request_data_len: btf.member_offset("request", "__data_len", "request.__data_len")?,
        queue_disk: btf.member_offset("request_queue", "disk", "request_queue.disk")?,
        disk_major: btf.member_offset("gendisk", "major", "gendisk.major")?,
        disk_first_minor: btf.member_offset("gendisk", "first_minor", "gendisk.first_minor")?,
        bio_bdev: btf.member_offset("bio", "bi_bdev", "bio.bi_bdev")?,
        bio_opf: btf.member_offset("bio", "bi_opf", "bio.bi_opf")?,
        bio_size: bio_iter + iter_size,
        bdev_disk: btf.member_offset("block_device", "bd_disk", "block_device.bd_disk")?,
    })
}

/// Loads BTF tracepoint program `program` (on `block:program`) and attaches it.
fn attach_btf_tracepoint(
    ebpf: &mut aya::Ebpf,
    kernel_btf: &aya::Btf,
    program: &'static str,
) -> Result<(), ProbeError> {
    let attach = |ebpf: &mut aya::Ebpf| -> Result<(), Box<dyn std::error::Error>> {
        let tracepoint: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("no program {program} in the eBPF object"))?
            .try_into()?;
        tracepoint.load(program, kernel_btf)?;
        tracepoint.attach()?;
        Ok(())
    };
    attach(ebpf).map_err(|error| ProbeError::Program {
        program,
        error: chain(error.as_ref()),
    })
}

/// The block programs' maps; the programs stay attached while the loaded object lives.
pub struct BlockProbe {
    counters: PerCpuHashMap<MapData, BlockIoKey, BlockValue>,
    lost: PerCpuArray<MapData, u64>,
    latency_by_device: PerCpuHashMap<MapData, DeviceKey, LatHist>,
    latency_by_tgid: PerCpuHashMap<MapData, BlockKey, LatHist>,
    pairing: PerCpuHashMap<MapData, DeviceKey, PairingCounters>,
    /// Per disk, the counters of the processes removed from `counters` (they exited), so that
    /// the totals per device stay cumulative.
    forgotten: HashMap<u32, BlockTotals>,
    attached: Vec<String>,
    latency_off: Option<String>,
}

impl BlockProbe {
    /// Attaches the programs `layouts` chose and takes their maps.
    pub fn attach(ebpf: &mut aya::Ebpf, layouts: &BlockLayouts) -> Result<Self, ProbeError> {
        let kernel_btf =
            aya::Btf::parse(&layouts.attach_btf, aya::Endianness::default()).map_err(|error| {
                ProbeError::Object(format!("BTF of the block tracepoints: {error}"))
            })?;
        for &program in &layouts.programs {
            attach_btf_tracepoint(ebpf, &kernel_btf, program)?;
        }
        Ok(Self {
            counters: take_map(ebpf, BLOCK_IO_MAP)?,
            lost: take_map(ebpf, BLOCK_IO_LOST_MAP)?,
            latency_by_device: take_map(ebpf, BLOCK_LATENCY_DEVICE_MAP)?,
            latency_by_tgid: take_map(ebpf, BLOCK_LATENCY_TGID_MAP)?,
            pairing: take_map(ebpf, BLOCK_PAIRING_MAP)?,
            forgotten: HashMap::new(),
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
    /// direction, all CPUs together: requests displaced from a full bucket of the in-flight
    /// map, and completions whose latency is in no histogram. A device without any of them is
    /// absent.
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
            sum.add_totals(io);
        }
        Ok(sum)
    }

    /// Cumulative counters since load per disk (kernel `dev_t`), summed over all processes
    /// (forgotten ones included).
    pub fn totals_by_device(&self) -> Result<HashMap<u32, BlockTotals>, EbpfError> {
        let mut out = self.forgotten.clone();
        for entry in self.counters.iter() {
            let (key, values) = entry.map_err(map_error(BLOCK_IO_MAP))?;
            out.entry(key.dev)
                .or_default()
                .add(key.direction, sum_cpus(&values));
        }
        Ok(out)
    }

    /// Cumulative counters per process (tgid) since load, all disks together, for the
    /// processes still in the map.
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
    /// `<proc_root>/<tgid>`); `totals` and `totals_by_device` keep counting them. Returns how
    /// many processes were forgotten.
    pub fn forget_dead_tgids(&mut self, proc_root: &Path) -> Result<usize, EbpfError> {
        let mut forgotten = HashSet::new();
        let dead: Vec<_> = self
            .counters
            .iter()
            .filter(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| is_dead(key.tgid, proc_root))
            })
            .collect::<Result<_, _>>()
            .map_err(map_error(BLOCK_IO_MAP))?;
        // An exited process submits nothing more: what is read here is all it will have.
        for (key, values) in dead {
            match self.counters.remove(&key) {
                Ok(()) => self
                    .forgotten
                    .entry(key.dev)
                    .or_default()
                    .add(key.direction, sum_cpus(&values)),
                Err(MapError::KeyNotFound) => {}
                Err(error) => return Err(map_error(BLOCK_IO_MAP)(error)),
            }
            forgotten.insert(key.tgid);
        }
        forget_dead(
            &mut self.latency_by_tgid,
            BLOCK_LATENCY_TGID_MAP,
            proc_root,
            &mut forgotten,
        )?;
        Ok(forgotten.len())
    }
}

/// Whether `tgid` is a process that has exited. tgid 0 is the idle task (I/O started from
/// interrupts) or an unknown submitter: never a dead process.
fn is_dead(tgid: u32, proc_root: &Path) -> bool {
    tgid != 0 && !proc_root.join(tgid.to_string()).exists()
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
        if !is_dead(key.tgid, proc_root) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::btf::tiny_btf;

    /// BTF without the block structs says which member it lacks (the live kernel's offsets are
    /// checked by the ebpf_block tests: the verifier refuses a program reading at a wrong one).
    #[test]
    fn offsets_name_what_the_btf_lacks() {
        let raw = tiny_btf("ifindex");
        match block_offsets(&Btf::parse(&raw).expect("parses")) {
            Err(BtfError::Member { member, problem }) => {
                assert_eq!(member, "bio.bi_iter");
                assert_eq!(problem, "no struct bio");
            }
            other => panic!("{other:?}"),
        }
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
