//! Equation (1), host CPU, over two readings of one `/proc/stat` cpu line.

use super::counter_delta;
use crate::host::snapshot::CpuTimes;

/// Equation (1) with the breakdown. Every figure is a percentage of the interval's CPU time
/// (all CPUs of the line together, so 100 % = every CPU busy).
///
/// How each field of the line is counted:
/// - `busy_pct` is the sum of the busy fields' deltas: user, nice, system, irq, softirq and
///   steal. idle and iowait are not busy (a CPU in iowait is idle: a task waits, the CPU
///   does not) and never enter it, so a dip in iowait cannot move it.
/// - guest and guest_nice are already inside user and nice (the kernel accounts guest time
///   twice): they are never added to busy or to the total. `guest_pct` is guest + guest_nice.
/// - `user_pct` is the kernel's user, guest time included (what top's "us" shows);
///   `user_excl_guest_pct` is user − guest, mpstat's %usr.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    pub busy_pct: f64,
    pub user_pct: f64,
    /// user − guest: the host's own user-mode time, mpstat's %usr.
    pub user_excl_guest_pct: f64,
    pub nice_pct: f64,
    pub system_pct: f64,
    pub idle_pct: f64,
    pub iowait_pct: f64,
    pub irq_pct: f64,
    pub softirq_pct: f64,
    pub steal_pct: f64,
    pub guest_pct: f64,
}

/// Equation (1). `None` when the line's total went backwards (CPU hot-plug, a new boot) or
/// no time passed. A single field that went backwards while the total grew (the kernel
/// documents this for iowait, and idle on tickless CPUs) counts as 0 for the interval, as
/// mpstat and top count it; the interval's CPU time (the percentages' denominator) is the sum
/// of the fields' deltas so counted, so busy + idle + iowait is 100.
pub fn cpu_usage(prev: &CpuTimes, now: &CpuTimes) -> Option<CpuUsage> {
    counter_delta(prev.total(), now.total())?;
    let d = |field: fn(&CpuTimes) -> u64| field(now).saturating_sub(field(prev)) as f64;
    let user = d(|t| t.user);
    let nice = d(|t| t.nice);
    let system = d(|t| t.system);
    let idle = d(|t| t.idle);
    let iowait = d(|t| t.iowait);
    let irq = d(|t| t.irq);
    let softirq = d(|t| t.softirq);
    let steal = d(|t| t.steal);
    let busy = user + nice + system + irq + softirq + steal;
    let total = busy + idle + iowait;
    if total == 0.0 {
        return None;
    }
    let pct = |x: f64| 100.0 * x / total;
    Some(CpuUsage {
        busy_pct: pct(busy),
        user_pct: pct(user),
        // The kernel adds a guest tick to guest and to user one after the other, so a reading
        // can show guest ahead of user by a tick: user − guest never goes below 0.
        user_excl_guest_pct: pct(d(|t| t.user.saturating_sub(t.guest))),
        nice_pct: pct(nice),
        system_pct: pct(system),
        idle_pct: pct(idle),
        iowait_pct: pct(iowait),
        irq_pct: pct(irq),
        softirq_pct: pct(softirq),
        steal_pct: pct(steal),
        guest_pct: pct(d(|t| t.guest + t.guest_nice)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(user: u64, system: u64, idle: u64, iowait: u64, guest: u64) -> CpuTimes {
        CpuTimes {
            user,
            system,
            idle,
            iowait,
            guest,
            ..CpuTimes::default()
        }
    }

    #[test]
    fn cpu_busy_leaves_out_idle_and_iowait_and_never_counts_guest_twice() {
        let prev = cpu(100, 50, 800, 50, 40);
        // Δuser 60 (of which guest 30), Δsystem 20, Δidle 100, Δiowait 20: Δtotal 200.
        let now = cpu(160, 70, 900, 70, 70);
        let u = cpu_usage(&prev, &now).expect("usage");
        assert_eq!(u.busy_pct, 40.0);
        assert_eq!(u.user_pct, 30.0);
        assert_eq!(u.user_excl_guest_pct, 15.0);
        assert_eq!(u.guest_pct, 15.0);
        assert_eq!(u.iowait_pct, 10.0);
        assert_eq!(u.idle_pct, 50.0);
    }

    #[test]
    fn busy_is_the_sum_of_the_busy_fields() {
        let prev = CpuTimes::default();
        let now = CpuTimes {
            user: 10,
            nice: 20,
            system: 30,
            idle: 200,
            iowait: 100,
            irq: 40,
            softirq: 50,
            steal: 50,
            guest: 5,
            guest_nice: 15,
        };
        // Busy 10 + 20 + 30 + 40 + 50 + 50 = 200 of 500; guest is inside user and nice.
        let u = cpu_usage(&prev, &now).expect("usage");
        assert_eq!(u.busy_pct, 40.0);
        assert_eq!((u.idle_pct, u.iowait_pct), (40.0, 20.0));
        assert_eq!((u.user_excl_guest_pct, u.guest_pct), (1.0, 4.0));
    }

    #[test]
    fn cpu_total_going_back_or_standing_still_gives_no_rate() {
        let prev = cpu(100, 50, 800, 50, 0);
        assert_eq!(cpu_usage(&prev, &cpu(10, 5, 80, 5, 0)), None);
        assert_eq!(cpu_usage(&prev, &prev), None);
    }

    #[test]
    fn an_iowait_dip_leaves_busy_as_the_busy_fields_say() {
        let prev = cpu(100, 0, 800, 50, 0);
        // Δuser 50, Δidle 100, iowait 5 back: the dip counts as 0, and busy is the 50 ticks of
        // user of the 150 counted. Taken as total − idle − iowait (145 − 100 − 0), busy would
        // have absorbed the dip: 45 ticks.
        let now = cpu(150, 0, 900, 45, 0);
        let u = cpu_usage(&prev, &now).expect("usage");
        assert_eq!(u.iowait_pct, 0.0);
        assert_eq!(u.busy_pct, 100.0 * 50.0 / 150.0);
        assert_eq!(u.busy_pct + u.idle_pct + u.iowait_pct, 100.0);
    }

    #[test]
    fn guest_a_tick_ahead_of_user_gives_no_negative_user() {
        // The kernel bumped guest before user: user − guest went from 60 to 59.
        let prev = cpu(100, 0, 800, 0, 40);
        let now = cpu(100, 0, 900, 0, 41);
        let u = cpu_usage(&prev, &now).expect("usage");
        assert_eq!(u.user_excl_guest_pct, 0.0);
    }
}
