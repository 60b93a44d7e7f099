//! Interval figures from the eBPF programs' cumulative counters.

use super::counter_delta;
use crate::ebpf::BlockTotals;

/// Block I/O seen by the eBPF block program during one interval, all processes together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockFigures {
    pub io: BlockTotals,
    pub interval_secs: f64,
}

/// Block I/O between two readings of the probe's grand totals (which never go down, even when
/// dead processes are forgotten). `None` if a total went backwards (the probe was reloaded).
pub fn block_interval(prev: &BlockTotals, now: &BlockTotals) -> Option<BlockTotals> {
    Some(BlockTotals {
        read_ops: counter_delta(prev.read_ops, now.read_ops)?,
        read_bytes: counter_delta(prev.read_bytes, now.read_bytes)?,
        write_ops: counter_delta(prev.write_ops, now.write_ops)?,
        write_bytes: counter_delta(prev.write_bytes, now.write_bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ops: u64, bytes: u64) -> BlockTotals {
        BlockTotals {
            read_ops: 1,
            read_bytes: 512,
            write_ops: ops,
            write_bytes: bytes,
        }
    }

    #[test]
    fn interval_is_the_growth_and_a_reload_gives_none() {
        let d = block_interval(&t(5, 500), &t(7, 1500)).expect("growth");
        assert_eq!((d.read_ops, d.write_ops, d.write_bytes), (0, 2, 1000));
        assert_eq!(block_interval(&t(5, 500), &t(1, 100)), None);
    }
}
