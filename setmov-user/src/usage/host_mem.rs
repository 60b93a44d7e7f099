//! Equation (3), host memory, from one `/proc/meminfo` reading.

use super::percent;
use crate::host::snapshot::MemInfo;

/// Equation (3) and its companions, each named for what it counts and the tool it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemUsage {
    pub total_bytes: u64,
    /// The headline: MemTotal − MemAvailable, the "used" of procps 4's `free` and `top`
    /// (shared memory such as a guest's shared-memory backing counts as used). On a kernel
    /// without MemAvailable (before 3.14) it is [`Self::noncache_pct`]'s figure, what procps
    /// 3.3 showed there.
    pub used_bytes: u64,
    /// 100 × used / total.
    pub used_pct: f64,
    /// The paper's figure: 100 × (total − free) / total; page cache counts as used.
    pub nonfree_pct: f64,
    /// 100 × (total − free − buffers − Cached − SReclaimable) / total: procps 3.3's `free`
    /// "used" (its buff/cache holds SReclaimable). Shmem is inside Cached, so it is missing
    /// from this figure though it cannot be reclaimed. `None` without an SReclaimable line.
    pub noncache_pct: Option<f64>,
    /// 100 × (total − MemAvailable) / total, `None` on kernels without MemAvailable: the
    /// headline where the kernel has MemAvailable, with no fallback.
    pub unavailable_pct: Option<f64>,
}

/// Equation (3). `None` when MemTotal is 0.
pub fn mem_usage(m: &MemInfo) -> Option<MemUsage> {
    let total = m.total as f64;
    let noncache = m.s_reclaimable.map(|reclaimable| {
        m.total
            .saturating_sub(m.free)
            .saturating_sub(m.buffers)
            .saturating_sub(m.cached)
            .saturating_sub(reclaimable)
    });
    let used = match m.available {
        Some(available) => m.total.saturating_sub(available),
        None => noncache.unwrap_or_else(|| {
            m.total
                .saturating_sub(m.free)
                .saturating_sub(m.buffers)
                .saturating_sub(m.cached)
        }),
    };
    Some(MemUsage {
        total_bytes: m.total,
        used_bytes: used,
        used_pct: percent(used as f64, total)?,
        nonfree_pct: percent(m.total.saturating_sub(m.free) as f64, total)?,
        noncache_pct: noncache.and_then(|n| percent(n as f64, total)),
        unavailable_pct: m
            .available
            .and_then(|a| percent(m.total.saturating_sub(a) as f64, total)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: MemInfo = MemInfo {
        total: 1000,
        free: 200,
        buffers: 50,
        cached: 250,
        available: Some(550),
        s_reclaimable: Some(100),
    };

    #[test]
    fn memory_figures_are_each_named_for_what_they_count() {
        let u = mem_usage(&FIELDS).expect("usage");
        assert_eq!((u.used_bytes, u.used_pct), (450, 45.0));
        assert_eq!((u.nonfree_pct, u.noncache_pct), (80.0, Some(40.0)));
        assert_eq!(u.unavailable_pct, Some(u.used_pct));
        assert_eq!(mem_usage(&MemInfo { total: 0, ..FIELDS }), None);
    }

    #[test]
    fn shared_memory_counts_as_used_in_the_headline() {
        // 300 of Cached is Shmem (a guest's shared-memory backing): the kernel leaves it out of
        // MemAvailable, procps 3.3's figure counts it as cache.
        let m = MemInfo {
            cached: 550,
            free: 100,
            available: Some(250),
            s_reclaimable: Some(50),
            ..FIELDS
        };
        let u = mem_usage(&m).expect("usage");
        assert_eq!(u.used_bytes, 750);
        assert_eq!(u.noncache_pct, Some(25.0));
    }

    #[test]
    fn without_mem_available_the_headline_is_procps_3_3s() {
        let old = MemInfo {
            available: None,
            ..FIELDS
        };
        let u = mem_usage(&old).expect("usage");
        assert_eq!(
            (u.used_bytes, u.used_pct, u.unavailable_pct),
            (400, 40.0, None)
        );
        let older = MemInfo {
            s_reclaimable: None,
            ..old
        };
        let u = mem_usage(&older).expect("usage");
        assert_eq!((u.used_bytes, u.noncache_pct), (500, None));
    }
}
