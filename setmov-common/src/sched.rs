//! Run-queue wait of watched threads (a VM's "CPU ready"): the time from the moment a thread
//! becomes runnable (woken, or preempted while still runnable) until it is switched in.

use crate::LatHist;

/// Name of the hash map of watched thread ids (tid -> 1), written by user space only: the
/// programs track no other thread.
pub const RUNQ_WATCHED_MAP: &str = "RUNQ_WATCHED";
/// Name of the hash map of watched threads waiting in a run queue (tid -> `bpf_ktime_get_ns`
/// when it became runnable; 0 when it is running or sleeping). Only watched tids enter it.
pub const RUNQ_SINCE_MAP: &str = "RUNQ_SINCE";
/// Name of the hash map of cumulative run-queue waits per watched tid (tid -> [`RunqWait`]).
pub const RUNQ_WAIT_MAP: &str = "RUNQ_WAIT";
/// Name of the per-CPU array (one `u64`) counting waits not recorded because a map was full.
pub const RUNQ_LOST_MAP: &str = "RUNQ_LOST";
/// Capacity of each of the three per-tid maps: room for 16 Ki vCPU threads. None is
/// preallocated, so memory follows the number of watched threads.
pub const RUNQ_MAX_ENTRIES: u32 = 16384;

/// Value of [`RUNQ_WAIT_MAP`]: the run-queue waits of one thread since it was first watched.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunqWait {
    /// Sum of the waits, in nanoseconds.
    pub wait_ns: u64,
    /// Number of waits (each ends with the thread being switched in).
    pub waits: u64,
    /// The waits in nanoseconds, by [`crate::lat_bucket`] (2200-byte values in all).
    pub hist: LatHist,
}

/// Where `sched:sched_switch` keeps what the program reads, set by the loader from the format
/// file (global `SCHED_SWITCH_LAYOUT`). All zeroes means "not set": the program does nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedSwitchLayout {
    /// Byte offset of `pid_t prev_pid`.
    pub prev_pid_offset: u32,
    /// Byte offset of `long prev_state`; the program reads its low 32 bits (little-endian).
    pub prev_state_offset: u32,
    /// Byte offset of `pid_t next_pid`.
    pub next_pid_offset: u32,
    /// The `prev_state` bits that mean "no longer runnable" (see [`prev_state_is_runnable`]).
    pub prev_state_sleep_mask: u32,
}

/// Where `sched:sched_wakeup` or `sched:sched_wakeup_new` keeps the woken thread's id (globals
/// `SCHED_WAKEUP_LAYOUT`, `SCHED_WAKEUP_NEW_LAYOUT`). Zero means "not set".
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedWakeupLayout {
    /// Byte offset of `pid_t pid`.
    pub pid_offset: u32,
}

/// Whether the task switched out by `sched:sched_switch` stays in the run queue, given the
/// record's `prev_state` and the mask of the states its print fmt names (`S|D|T|t|X|Z|P|I`,
/// 0xff on 4.14+ kernels up to at least 6.18).
///
/// The tracepoint reports 0 (`R`) for a task that gave up the CPU while runnable (e.g.
/// `sched_yield`) and `TASK_REPORT_MAX` (one bit above the mask, 0x100 on 6.x, printed `R+`)
/// for a preempted task whatever its state: both are waiting for a CPU from now on. Any bit
/// under the mask is a sleep, a stop or an exit.
#[inline(always)]
pub const fn prev_state_is_runnable(prev_state: u32, sleep_mask: u32) -> bool {
    prev_state & sleep_mask == 0
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are #[repr(C)], made only of integers, with no padding.
    unsafe impl aya::Pod for super::RunqWait {}
    unsafe impl aya::Pod for super::SchedSwitchLayout {}
    unsafe impl aya::Pod for super::SchedWakeupLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LAT_BUCKETS;

    /// `S|D|T|t|X|Z|P|I` as printed by sched_switch on 6.18.
    const SLEEP_MASK_6_18: u32 = 0xff;

    #[test]
    fn running_and_preempted_tasks_are_runnable() {
        assert!(prev_state_is_runnable(0, SLEEP_MASK_6_18));
        // TASK_REPORT_MAX: preempted.
        assert!(prev_state_is_runnable(0x100, SLEEP_MASK_6_18));
    }

    #[test]
    fn sleeping_stopped_and_dead_tasks_are_not_runnable() {
        for state in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
            assert!(
                !prev_state_is_runnable(state, SLEEP_MASK_6_18),
                "{state:#x}"
            );
        }
        // Kernels before 4.14 passed raw state bits, up to TASK_STATE_MAX - 1 = 2047.
        assert!(!prev_state_is_runnable(0x400, 0x7ff));
        assert!(prev_state_is_runnable(0x800, 0x7ff));
    }

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<RunqWait>(), 16 + 8 * LAT_BUCKETS);
        assert_eq!(size_of::<SchedSwitchLayout>(), 16);
        assert_eq!(size_of::<SchedWakeupLayout>(), 4);
    }
}
