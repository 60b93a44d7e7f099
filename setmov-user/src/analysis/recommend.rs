//! `setmov recommend`: a vCPU count and a memory size per VM from what it used over a window,
//! idle and starved VMs, and a host-level plan that stays within the host's capacity.
//!
//! The rule, per VM (all figures over the window, from [`super::report`]):
//! - **CPU demand** in vCPUs is the 95th percentile of the vCPU threads' CPU (Σ `vcpu.N.time`,
//!   `cpu_vcpu_threads_pct`) × vCPUs: what the guest itself ran. qemu's own work for the VM
//!   (emulator and I/O threads, vhost workers: the whole process's CPU less its vCPU threads')
//!   is reported beside it and is no vCPU demand: more vCPUs would not take it. Windows stored
//!   before the vCPU threads' figure existed fall back to the whole process, and say so. The
//!   recommendation is that demand plus [`CPU_HEADROOM`], rounded up, at least 1, and never
//!   below the mean demand rounded up (what the guest actively used). A VM at 100 % of one of
//!   its 4 vCPUs has a demand of 1 vCPU and gets 2.
//! - **Memory demand** is the 95th percentile of the memory the guest reports as used (balloon
//!   statistics). The recommendation is that demand plus [`MEMORY_HEADROOM`] (at least
//!   [`MEMORY_HEADROOM_MIN`]), rounded up to [`MEMORY_STEP`], and never below the most the
//!   guest used. A guest that reports nothing keeps its allocation. A recommendation that
//!   shrinks the guest below what it uses plus its page cache (its balloon's `disk_caches`, at
//!   p95) says so: the guest will read again from its disks what it no longer caches.
//! - **Idle**: per-vCPU CPU p95 under 5 %, disk under 64 KiB/s and network under 64 kbit/s (p95).
//! - **Starved**: steal or CPU ready p95 over 10 % (its vCPUs wait for host CPUs), per-vCPU CPU
//!   p95 of 90 % or more (saturated), balloon usable memory under 5 % of the allocation on
//!   average, swap-in, or major faults p95 over 10/s. A CPU-saturated VM gets at least one vCPU
//!   more, a memory-starved one at least [`MEMORY_STARVED_GROWTH`] more memory.
//!
//! The plan sums the recommendations of a host's VMs against its capacity (logical CPUs × the
//! vCPU overcommit allowed, memory less a reserve for the host). Shrinking over-provisioned VMs
//! frees capacity; growth that would still exceed it is cut, largest first, and reported as
//! unmet. Nothing is applied: the output is a table, JSON, and a `virsh` script to review
//! ([`super::recommend_script`]).

use serde::Serialize;

use super::report::{FigureReport, OwnerReport};

/// Added to the CPU demand's 95th percentile.
pub const CPU_HEADROOM: f64 = 0.25;
/// Added to the memory demand's 95th percentile.
pub const MEMORY_HEADROOM: f64 = 0.20;
/// The least memory headroom, in bytes.
pub const MEMORY_HEADROOM_MIN: u64 = 256 << 20;
/// Memory sizes are multiples of this.
pub const MEMORY_STEP: u64 = 128 << 20;
/// A memory-starved VM grows by at least this fraction.
pub const MEMORY_STARVED_GROWTH: f64 = 0.25;

/// What a host can give its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Capacity {
    pub vcpus: u32,
    pub memory_bytes: u64,
}

/// What the VM has and what it should have.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRecommendation {
    pub name: String,
    pub uuid: Option<String>,
    pub vcpus: Option<u32>,
    pub recommended_vcpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub recommended_memory_bytes: Option<u64>,
    pub idle: bool,
    pub starved: bool,
    /// Why, one sentence each.
    pub reasons: Vec<String>,
}

/// The host-level plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub capacity: Option<Capacity>,
    pub vcpus_now: u32,
    pub vcpus_planned: u32,
    pub memory_now: u64,
    pub memory_planned: u64,
    /// What the host could not give, one sentence per VM.
    pub unmet: Vec<String>,
    pub vms: Vec<VmRecommendation>,
}

fn figure(vm: &OwnerReport, name: &str) -> Option<FigureReport> {
    vm.figures.get(name).copied()
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// The recommendation for one VM (see the module's rule).
pub fn recommend_vm(vm: &OwnerReport) -> VmRecommendation {
    let mut reasons = Vec::new();
    let vcpus = figure(vm, "vcpus").map(|f| f.max.round() as u32);
    let whole_process = figure(vm, "cpu_vcpu_pct");
    let vcpu_threads = figure(vm, "cpu_vcpu_threads_pct");
    // The guest's own demand; the whole process only for windows without the threads' figure.
    let per_vcpu = vcpu_threads.or(whole_process);
    let pct = |name: &str| figure(vm, name).map(|f| f.p95);
    let disk = pct("disk_read_bytes_s").unwrap_or(0.0) + pct("disk_write_bytes_s").unwrap_or(0.0);
    let net = pct("net_rx_bps").unwrap_or(0.0) + pct("net_tx_bps").unwrap_or(0.0);
    let idle = per_vcpu.is_some_and(|c| c.p95 < 5.0) && disk < 65_536.0 && net < 65_536.0;
    if idle {
        reasons.push(format!(
            "idle: CPU p95 {:.1} % per vCPU, disk {:.0} KiB/s, network {:.0} kbit/s",
            per_vcpu.map_or(0.0, |c| c.p95),
            disk / 1024.0,
            net / 1000.0
        ));
    }

    let mut starved = false;
    let mut cpu_saturated = false;
    for (name, what) in [("steal_pct", "steal"), ("cpu_ready_pct", "CPU ready")] {
        if let Some(p95) = pct(name).filter(|p| *p > 10.0) {
            starved = true;
            reasons.push(format!(
                "starved of CPU: {what} p95 {p95:.1} % (its vCPUs wait for host CPUs)"
            ));
        }
    }
    if let Some(c) = per_vcpu.filter(|c| c.p95 >= 90.0) {
        starved = true;
        cpu_saturated = true;
        reasons.push(format!("CPU saturated: p95 {:.1} % per vCPU", c.p95));
    }
    let alloc = figure(vm, "mem_alloc_bytes").map(|f| f.max as u64);
    let mut memory_starved = false;
    if let (Some(usable), Some(alloc)) = (figure(vm, "mem_usable_bytes"), alloc)
        && alloc > 0
        && usable.mean < 0.05 * alloc as f64
    {
        memory_starved = true;
        reasons.push(format!(
            "short of memory: usable {} of {} on average",
            mib(usable.mean as u64),
            mib(alloc)
        ));
    }
    if let Some(swap) = figure(vm, "swap_in_bytes_s").filter(|f| f.max > 0.0) {
        memory_starved = true;
        reasons.push(format!("swapping in: up to {:.0} KiB/s", swap.max / 1024.0));
    }
    if let Some(faults) = pct("major_faults_s").filter(|p| *p > 10.0) {
        memory_starved = true;
        reasons.push(format!("major faults p95 {faults:.0}/s"));
    }
    starved |= memory_starved;

    if let (Some(n), Some(whole), Some(threads)) = (vcpus, whole_process, vcpu_threads) {
        let overhead = (whole.mean - threads.mean).max(0.0) / 100.0 * f64::from(n);
        reasons.push(format!(
            "qemu's own work (emulator, I/O threads, vhost): {overhead:.2} vCPUs on average, \
             beside the vCPUs (not vCPU demand)"
        ));
    } else if vcpu_threads.is_none() && whole_process.is_some() {
        reasons.push(
            "CPU: the window has no vCPU threads' figure (stored before it existed): demand \
             is the whole qemu process, emulator and I/O threads included"
                .into(),
        );
    }
    let recommended_vcpus = vcpus.zip(per_vcpu).map(|(n, c)| {
        let demand_p95 = c.p95 / 100.0 * f64::from(n);
        let demand_mean = c.mean / 100.0 * f64::from(n);
        let mut r = ((demand_p95 * (1.0 + CPU_HEADROOM)).ceil() as u32)
            .max(demand_mean.ceil() as u32)
            .max(1);
        if cpu_saturated {
            r = r.max(n + 1);
        }
        reasons.push(format!(
            "CPU: {demand_p95:.2} vCPUs at p95 (mean {demand_mean:.2}) + {:.0} % headroom → {r} \
             (has {n})",
            CPU_HEADROOM * 100.0
        ));
        r
    });
    if vcpus.is_some() && per_vcpu.is_none() {
        reasons.push("CPU: no usage in the window; vCPUs kept".into());
    }

    let recommended_memory_bytes = alloc.map(|alloc| {
        // Sized from the allocation's side (actual − usable): the guest's own "used" leaves
        // out what its kernel keeps below MemTotal, which the allocation must hold too.
        let Some(used) =
            figure(vm, "mem_actual_less_usable_bytes").or_else(|| figure(vm, "mem_used_bytes"))
        else {
            reasons.push(format!(
                "memory: the guest reports no use (balloon statistics off); {} kept",
                mib(alloc)
            ));
            return alloc;
        };
        let demand = used.p95;
        let headroom = (demand * MEMORY_HEADROOM).max(MEMORY_HEADROOM_MIN as f64);
        let mut r = round_up((demand + headroom) as u64, MEMORY_STEP)
            .max(round_up(used.max as u64, MEMORY_STEP));
        if memory_starved {
            r = r.max(round_up(
                (alloc as f64 * (1.0 + MEMORY_STARVED_GROWTH)) as u64,
                MEMORY_STEP,
            ));
        }
        reasons.push(format!(
            "memory: {} used at p95 (most {}) + headroom → {} (has {})",
            mib(demand as u64),
            mib(used.max as u64),
            mib(r),
            mib(alloc)
        ));
        if let Some(cache) = figure(vm, "mem_guest_cache_bytes")
            && r < alloc
            && (r as f64) < demand + cache.p95
        {
            reasons.push(format!(
                "memory: {} is less than the guest uses plus its page cache ({} + {} at p95): \
                 it will read again from its disks what it no longer caches",
                mib(r),
                mib(demand as u64),
                mib(cache.p95 as u64)
            ));
        }
        r
    });
    VmRecommendation {
        name: vm.owner.clone(),
        uuid: vm.uuid.clone(),
        vcpus,
        recommended_vcpus,
        memory_bytes: alloc,
        recommended_memory_bytes,
        idle,
        starved,
        reasons,
    }
}

fn round_up(bytes: u64, step: u64) -> u64 {
    bytes.div_ceil(step).saturating_mul(step)
}

/// The plan for one host's VMs within `capacity` (unknown capacity: recommendations as they
/// are).
pub fn plan(vms: &[OwnerReport], capacity: Option<Capacity>) -> Plan {
    let mut recs: Vec<VmRecommendation> = vms.iter().map(recommend_vm).collect();
    let now_vcpus: u32 = recs.iter().filter_map(|r| r.vcpus).sum();
    let now_memory: u64 = recs.iter().filter_map(|r| r.memory_bytes).sum();
    let mut unmet = Vec::new();
    if let Some(cap) = capacity {
        fit(
            &mut recs,
            u64::from(cap.vcpus),
            |r| r.vcpus.map(u64::from),
            |r| r.recommended_vcpus.map(u64::from),
            |r, v| r.recommended_vcpus = Some(v as u32),
            |r, short| format!("{}: {short} vCPU(s) short (the host is full)", r.name),
            &mut unmet,
        );
        fit(
            &mut recs,
            cap.memory_bytes,
            |r| r.memory_bytes,
            |r| r.recommended_memory_bytes,
            |r, v| r.recommended_memory_bytes = Some(v),
            |r, short| format!("{}: {} short (the host is full)", r.name, mib(short)),
            &mut unmet,
        );
    }
    Plan {
        capacity,
        vcpus_now: now_vcpus,
        vcpus_planned: recs.iter().filter_map(|r| r.recommended_vcpus).sum(),
        memory_now: now_memory,
        memory_planned: recs.iter().filter_map(|r| r.recommended_memory_bytes).sum(),
        unmet,
        vms: recs,
    }
}

/// Cuts growth (largest first, never below the current size) until the planned total fits
/// `capacity`. When the VMs do not fit even with no growth at all, none is planned and the
/// excess is reported: shrinking a VM below its own need is not a plan.
fn fit(
    recs: &mut [VmRecommendation],
    capacity: u64,
    current: impl Fn(&VmRecommendation) -> Option<u64>,
    planned: impl Fn(&VmRecommendation) -> Option<u64>,
    set: impl Fn(&mut VmRecommendation, u64),
    say: impl Fn(&VmRecommendation, u64) -> String,
    unmet: &mut Vec<String>,
) {
    let total = |recs: &[VmRecommendation]| -> u64 {
        recs.iter()
            .map(|r| planned(r).or(current(r)).unwrap_or(0))
            .sum()
    };
    let mut excess = total(recs).saturating_sub(capacity);
    if excess == 0 {
        return;
    }
    let growth = |r: &VmRecommendation| {
        planned(r)
            .unwrap_or(0)
            .saturating_sub(current(r).unwrap_or(0))
    };
    let mut growers: Vec<&mut VmRecommendation> = recs
        .iter_mut()
        .filter(|r| planned(r) > current(r))
        .collect();
    growers.sort_by_key(|r| std::cmp::Reverse(growth(r)));
    for rec in growers {
        if excess == 0 {
            break;
        }
        let want = planned(rec).unwrap_or(0);
        let cut = growth(rec).min(excess);
        set(rec, want - cut);
        excess -= cut;
        unmet.push(say(rec, cut));
    }
    if excess > 0 {
        // Even without growth the VMs want more than the host has: only moving VMs helps.
        unmet.push(format!(
            "the host is {excess} over its capacity with no VM grown: move VMs to another host"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const GIB: f64 = 1073741824.0;

    /// A figure over a window whose statistics all differ, so that a test tells which one
    /// the rule reads: p95 `v`, mean 0.44 `v`, median 0.4 `v`, maximum `max_factor` × `v`.
    fn spread(v: f64, max_factor: f64) -> FigureReport {
        FigureReport {
            mean: 0.44 * v,
            p50: 0.4 * v,
            p95: v,
            p99: 0.5 * (1.0 + max_factor) * v,
            max: max_factor * v,
            n: 100,
            approximate: false,
        }
    }

    /// An allocation: the same all along.
    fn constant(v: f64) -> FigureReport {
        FigureReport {
            mean: v,
            p50: v,
            p95: v,
            p99: v,
            max: v,
            n: 100,
            approximate: false,
        }
    }

    /// A VM with `vcpus`, `mem_gib`, using `per_vcpu` % CPU and `used_gib` of memory at p95.
    /// CPU peaks at twice its p95, memory at 1.1 times.
    fn vm(name: &str, vcpus: f64, per_vcpu: f64, mem_gib: f64, used_gib: f64) -> OwnerReport {
        let mut figures = BTreeMap::new();
        figures.insert("vcpus".into(), constant(vcpus));
        figures.insert("cpu_vcpu_pct".into(), spread(per_vcpu, 2.0));
        figures.insert("mem_alloc_bytes".into(), constant(mem_gib * GIB));
        figures.insert("mem_used_bytes".into(), spread(used_gib * GIB, 1.1));
        figures.insert(
            "mem_usable_bytes".into(),
            spread((mem_gib - used_gib) * GIB, 1.1),
        );
        figures.insert("disk_write_bytes_s".into(), spread(1e6, 1.2));
        figures.insert("net_rx_bps".into(), spread(1e6, 1.2));
        OwnerReport {
            owner: name.into(),
            uuid: None,
            ticks: 60,
            figures,
        }
    }

    #[test]
    fn one_busy_vcpu_of_four_gets_two() {
        let r = recommend_vm(&vm("desk", 4.0, 25.0, 4.0, 1.0));
        // p95 25 % of 4 vCPUs is 1.0 + 25 % → 2; the mean (0.44) would give 1, the peak
        // (2.0) 3.
        assert_eq!((r.vcpus, r.recommended_vcpus), (Some(4), Some(2)));
        // 1 GiB used at p95 + 256 MiB headroom (20 % would be less), in 128 MiB steps; the
        // mean would give 768 MiB, the most used (1.1 GiB) 1152 MiB.
        assert_eq!(r.recommended_memory_bytes, Some(1280 << 20));
        assert!(!r.idle && !r.starved, "{:?}", r.reasons);
    }

    #[test]
    fn an_io_heavy_desktop_is_sized_by_its_vcpu_threads_not_qemus_io_work() {
        // One vCPU: the whole qemu process at 98 % of it (p95), its vCPU thread at 40 %.
        let mut desk = vm("io-heavy", 1.0, 98.0, 2.0, 1.0);
        desk.figures
            .insert("cpu_vcpu_threads_pct".into(), spread(40.0, 2.0));
        let r = recommend_vm(&desk);
        // 0.40 vCPU + 25 % → 1; not saturated.
        assert_eq!(r.recommended_vcpus, Some(1), "{:?}", r.reasons);
        assert!(!r.starved, "{:?}", r.reasons);
        // Mean whole 43.12 % − mean threads 17.6 % of 1 vCPU.
        assert!(
            r.reasons
                .iter()
                .any(|s| s.starts_with("qemu's own work") && s.contains("0.26 vCPUs")),
            "{:?}",
            r.reasons
        );
        // Without the threads' figure (an old window) the whole process is the demand, and
        // the reasons say so.
        let old = recommend_vm(&vm("io-heavy", 1.0, 98.0, 2.0, 1.0));
        assert!(old.starved && old.recommended_vcpus == Some(2), "{old:?}");
        assert!(
            old.reasons.iter().any(|s| s.contains("whole qemu process")),
            "{:?}",
            old.reasons
        );
    }

    #[test]
    fn memory_is_sized_from_the_allocations_side_when_it_is_known() {
        // The guest's own view says 1 GiB used; actual − usable, what the allocation must
        // hold (the guest kernel's reserve included), 1.5 GiB: 1536 + 20 % → 1920 MiB.
        let mut desk = vm("desk", 2.0, 25.0, 4.0, 1.0);
        desk.figures.insert(
            "mem_actual_less_usable_bytes".into(),
            spread(1.5 * GIB, 1.1),
        );
        let r = recommend_vm(&desk);
        assert_eq!(
            r.recommended_memory_bytes,
            Some(1920 << 20),
            "{:?}",
            r.reasons
        );
    }

    #[test]
    fn shrinking_below_the_guests_page_cache_is_said() {
        // 4 GiB, 1 GiB used at p95 → 1280 MiB recommended; the guest caches 1.5 GiB.
        let mut reader = vm("reader", 2.0, 25.0, 4.0, 1.0);
        reader
            .figures
            .insert("mem_guest_cache_bytes".into(), spread(1.5 * GIB, 1.1));
        let r = recommend_vm(&reader);
        assert_eq!(r.recommended_memory_bytes, Some(1280 << 20));
        assert!(
            r.reasons
                .iter()
                .any(|s| s.contains("page cache (1024 MiB + 1536 MiB at p95)")),
            "{:?}",
            r.reasons
        );
        // A cache that fits in the headroom says nothing.
        reader
            .figures
            .insert("mem_guest_cache_bytes".into(), spread(0.1 * GIB, 1.1));
        let r = recommend_vm(&reader);
        assert!(
            !r.reasons.iter().any(|s| s.contains("page cache")),
            "{:?}",
            r.reasons
        );
    }

    #[test]
    fn an_idle_vm_is_flagged_and_kept_at_its_floor() {
        let mut idle = vm("quiet", 2.0, 1.0, 2.0, 0.5);
        idle.figures.remove("disk_write_bytes_s");
        idle.figures.remove("net_rx_bps");
        let r = recommend_vm(&idle);
        assert!(r.idle, "{:?}", r.reasons);
        assert_eq!(r.recommended_vcpus, Some(1));
    }

    #[test]
    fn a_starved_vm_is_given_resources() {
        // Saturated CPU, swapping, usable memory near zero.
        let mut hungry = vm("hungry", 2.0, 97.0, 2.0, 1.98);
        hungry
            .figures
            .insert("swap_in_bytes_s".into(), spread(4096.0, 1.2));
        let r = recommend_vm(&hungry);
        assert!(r.starved, "{:?}", r.reasons);
        assert!(r.recommended_vcpus.is_some_and(|v| v >= 3), "{r:?}");
        assert!(
            r.recommended_memory_bytes.is_some_and(|m| m >= (5 << 29)),
            "at least 2.5 GiB: {r:?}"
        );
    }

    #[test]
    fn the_plan_never_exceeds_the_host() {
        let vms = [
            vm("big", 8.0, 10.0, 8.0, 2.0),
            vm("hungry-1", 2.0, 99.0, 2.0, 1.99),
            vm("hungry-2", 2.0, 99.0, 2.0, 1.99),
        ];
        let capacity = Capacity {
            vcpus: 8,
            memory_bytes: 8 << 30,
        };
        let plan = plan(&vms, Some(capacity));
        assert!(plan.vcpus_planned <= capacity.vcpus, "{plan:?}");
        assert!(plan.memory_planned <= capacity.memory_bytes, "{plan:?}");
        // The over-provisioned VM gave, the starved ones got.
        let get = |name: &str| plan.vms.iter().find(|r| r.name == name).expect("vm");
        let vcpus = |name: &str| {
            let r = get(name);
            (
                r.vcpus.expect("vCPUs known"),
                r.recommended_vcpus.expect("vCPUs recommended"),
            )
        };
        let (big_has, big_gets) = vcpus("big");
        assert!(big_gets < big_has, "{plan:?}");
        let (hungry_has, hungry_gets) = vcpus("hungry-1");
        assert!(hungry_gets > hungry_has, "{plan:?}");
        // A host too small for all the growth says what it could not give.
        let tight = super::plan(
            &vms,
            Some(Capacity {
                vcpus: 5,
                memory_bytes: 7 << 30,
            }),
        );
        assert!(tight.vcpus_planned <= 5 && tight.memory_planned <= 7 << 30);
        assert!(!tight.unmet.is_empty(), "{tight:?}");
        // Full even before any growth: no growth at all, and it says so.
        let full = super::plan(
            &vms,
            Some(Capacity {
                vcpus: 4,
                memory_bytes: 4 << 30,
            }),
        );
        assert!(
            full.vms.iter().all(|r| {
                let (has, gets) = (r.vcpus.expect("vCPUs"), r.recommended_vcpus.expect("plan"));
                gets <= has
            }),
            "{full:?}"
        );
        assert!(
            full.unmet.iter().any(|u| u.contains("move VMs")),
            "{full:?}"
        );
    }
}
