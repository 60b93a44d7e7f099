//! Interval figures from the eBPF programs' cumulative per-process counters.

use std::collections::HashMap;

use crate::ebpf::BlockTotals;

/// Block I/O seen by the eBPF block program during one interval, all processes together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockFigures {
    pub io: BlockTotals,
    pub interval_secs: f64,
}

/// Block I/O of all processes during an interval, from two readings of the per-tgid map.
///
/// Summed per tgid rather than from grand totals, because the loader removes dead processes'
/// entries: a grand total would then go backwards. A tgid whose counters went backwards was
/// reused by a new process, whose whole count belongs to this interval.
pub fn block_interval(
    prev: &HashMap<u32, BlockTotals>,
    now: &HashMap<u32, BlockTotals>,
) -> BlockTotals {
    let mut sum = BlockTotals::default();
    for (tgid, n) in now {
        let p = prev.get(tgid).copied().unwrap_or_default();
        let d = if n.read_ops < p.read_ops
            || n.read_bytes < p.read_bytes
            || n.write_ops < p.write_ops
            || n.write_bytes < p.write_bytes
        {
            *n
        } else {
            BlockTotals {
                read_ops: n.read_ops - p.read_ops,
                read_bytes: n.read_bytes - p.read_bytes,
                write_ops: n.write_ops - p.write_ops,
                write_bytes: n.write_bytes - p.write_bytes,
            }
        };
        sum.read_ops += d.read_ops;
        sum.read_bytes += d.read_bytes;
        sum.write_ops += d.write_ops;
        sum.write_bytes += d.write_bytes;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ops: u64, bytes: u64) -> BlockTotals {
        BlockTotals {
            read_ops: 0,
            read_bytes: 0,
            write_ops: ops,
            write_bytes: bytes,
        }
    }

    #[test]
    fn interval_sums_growth_new_processes_and_reused_tgids() {
        let prev = HashMap::from([(10, t(5, 500)), (11, t(9, 900)), (12, t(1, 100))]);
        // 10 grew by 2 ops, 11 was reused (went back), 12 exited (gone), 13 is new.
        let now = HashMap::from([(10, t(7, 700)), (11, t(1, 50)), (13, t(3, 300))]);
        assert_eq!(block_interval(&prev, &now), t(6, 550));
    }
}
