//! Giving up capabilities in one thread, with raw system calls only: the kernel keeps
//! capabilities, the bounding set and no_new_privs per thread, and capset(2) and prctl(2) act on
//! the calling thread alone. The other threads do the same in a signal handler
//! ([`install_handler`]), as glibc does for setuid(2).

use std::ffi::{c_int, c_ulong};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use super::set::CapabilitySet;

/// linux/capability.h: the 64-bit version of capset(2)'s header.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The step of a drop that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    NoNewPrivs,
    AmbientClear,
    BoundingDrop,
    Capset,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Step::AmbientClear => "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            Step::BoundingDrop => "prctl(PR_CAPBSET_DROP)",
            Step::Capset => "capset",
        }
    }
}

/// A system call of the drop that failed, with its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFailure {
    pub step: Step,
    pub errno: i32,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{} failed: {error}", self.step.describe())
    }
}

impl StepFailure {
    fn last(step: Step) -> StepFailure {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or_default();
        StepFailure { step, errno }
    }

    /// Packed into one atomic: errno × 4 + step.
    fn encode(self) -> i32 {
        self.errno
            .saturating_mul(4)
            .saturating_add(self.step as i32)
    }

    fn decode(code: i32) -> StepFailure {
        let step = match code % 4 {
            0 => Step::NoNewPrivs,
            1 => Step::AmbientClear,
            2 => Step::BoundingDrop,
            _ => Step::Capset,
        };
        StepFailure {
            step,
            errno: code / 4,
        }
    }
}

/// What a thread drops to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The capabilities kept in the permitted, effective and bounding sets.
    pub keep: CapabilitySet,
    /// The highest capability number of the kernel.
    pub last_cap: u32,
    /// Whether to shrink the bounding set too (it needs CAP_SETPCAP).
    pub bounding: bool,
}

/// Sets no_new_privs, empties the ambient and inheritable sets, and takes every capability
/// not in `plan.keep` out of the permitted and the effective sets of the calling thread, and
/// out of its bounding set when `plan.bounding`. Async-signal-safe: system calls and arithmetic
/// only.
pub fn drop_in_calling_thread(plan: Plan) -> Result<(), StepFailure> {
    let Plan {
        keep,
        last_cap,
        bounding,
    } = plan;
    let prctl = |option: c_int, argument: c_ulong| {
        // SAFETY: prctl with integer arguments; it reads or writes no memory of ours.
        unsafe { libc::prctl(option, argument, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) }
    };
    if prctl(libc::PR_SET_NO_NEW_PRIVS, 1) != 0 {
        return Err(StepFailure::last(Step::NoNewPrivs));
    }
    let clear_all = c_ulong::try_from(libc::PR_CAP_AMBIENT_CLEAR_ALL).unwrap_or_default();
    // SAFETY: as above.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            clear_all,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if cleared != 0 {
        return Err(StepFailure::last(Step::AmbientClear));
    }
    let dropped_from_bounding = (0..=last_cap.min(63)).filter(|&c| bounding && !keep.contains(c));
    for capability in dropped_from_bounding {
        if prctl(libc::PR_CAPBSET_DROP, c_ulong::from(capability)) != 0 {
            return Err(StepFailure::last(Step::BoundingDrop));
        }
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // The low and high 32 bits, as the version 3 header wants them.
    let (low, high) = (keep.0 as u32, (keep.0 >> 32) as u32);
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: the header and the two data structs are capset(2)'s, alive for the call.
    let set = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if set != 0 {
        return Err(StepFailure::last(Step::Capset));
    }
    Ok(())
}

/// What the handler drops to, set before it is installed.
static HANDLER_KEEP: AtomicU64 = AtomicU64::new(0);
static HANDLER_LAST_CAP: AtomicU32 = AtomicU32::new(0);
static HANDLER_BOUNDING: AtomicBool = AtomicBool::new(false);
/// The first failure a signalled thread met, encoded; 0 while none did.
static HANDLER_FAILURE: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_drop_signal(_signal: c_int) {
    // SAFETY: the calling thread's errno, saved so that the interrupted code does not see
    // the handler's.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: errno is the thread's own int.
    let saved = unsafe { *errno };
    let plan = Plan {
        keep: CapabilitySet(HANDLER_KEEP.load(Ordering::SeqCst)),
        last_cap: HANDLER_LAST_CAP.load(Ordering::SeqCst),
        bounding: HANDLER_BOUNDING.load(Ordering::SeqCst),
    };
    if let Err(failure) = drop_in_calling_thread(plan) {
        // Never 0: errno is at least 1.
        let _ = HANDLER_FAILURE.compare_exchange(
            0,
            failure.encode(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
    // SAFETY: as above.
    unsafe { *errno = saved };
}

/// The signal the other threads are asked to drop with: a real-time one that nothing else in
/// the monitor uses.
pub fn drop_signal() -> c_int {
    libc::SIGRTMAX()
}

/// Makes [`drop_signal`] run [`drop_in_calling_thread`] with `plan` in whichever thread gets it.
/// SA_RESTART: the system call a thread was in goes on after the handler.
pub fn install_handler(plan: Plan) -> std::io::Result<()> {
    HANDLER_KEEP.store(plan.keep.0, Ordering::SeqCst);
    HANDLER_LAST_CAP.store(plan.last_cap, Ordering::SeqCst);
    HANDLER_BOUNDING.store(plan.bounding, Ordering::SeqCst);
    HANDLER_FAILURE.store(0, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid "no handler, no flags, empty mask" to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_drop_signal as extern "C" fn(c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    set_action(&action)
}

/// Ignores [`drop_signal`] from now on (a second one still on its way is discarded).
pub fn remove_handler() -> std::io::Result<()> {
    // SAFETY: as in install_handler.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_IGN;
    set_action(&action)
}

fn set_action(action: &libc::sigaction) -> std::io::Result<()> {
    // SAFETY: a complete sigaction; the old one is not asked for.
    if unsafe { libc::sigaction(drop_signal(), action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The first failure a signalled thread reported since [`install_handler`].
pub fn handler_failure() -> Option<StepFailure> {
    match HANDLER_FAILURE.load(Ordering::SeqCst) {
        0 => None,
        code => Some(StepFailure::decode(code)),
    }
}

/// Sends [`drop_signal`] to thread `tid` of this process; a thread that has exited meanwhile
/// is no error.
pub fn signal_thread(tid: i32) -> std::io::Result<()> {
    // SAFETY: tgkill with integer arguments.
    let sent = unsafe { libc::tgkill(libc::getpid(), tid, drop_signal()) };
    let error = std::io::Error::last_os_error();
    if sent != 0 && error.raw_os_error() != Some(libc::ESRCH) {
        return Err(error);
    }
    Ok(())
}

/// The calling thread's id.
pub fn own_tid() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_survive_the_atomic() {
        for step in [
            Step::NoNewPrivs,
            Step::AmbientClear,
            Step::BoundingDrop,
            Step::Capset,
        ] {
            let failure = StepFailure {
                step,
                errno: libc::EPERM,
            };
            assert_eq!(StepFailure::decode(failure.encode()), failure);
        }
        let failure = StepFailure {
            step: Step::BoundingDrop,
            errno: libc::EPERM,
        };
        assert_eq!(
            failure.to_string(),
            "prctl(PR_CAPBSET_DROP) failed: Operation not permitted (os error 1)"
        );
    }
}
