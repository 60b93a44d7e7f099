//! The memory knee (the paper's Figure 13): the guest memory size past which more memory no
//! longer raises read throughput, from the same read workload run in guests of several sizes.

/// The durations, in seconds, of the read rounds a guest's console reports
/// (`SETMOV: cache-round K N START END`, uptime seconds), in round order.
pub fn round_seconds(console: &str) -> Vec<f64> {
    console
        .lines()
        .filter_map(|line| {
            let rest = line.split("SETMOV: cache-round ").nth(1)?;
            let fields: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            match fields.as_slice() {
                [_, _, start, end] if end >= start => Some(end - start),
                _ => None,
            }
        })
        .collect()
}

/// Read throughput in MiB/s of the warm rounds (all but the first, which fills the cache):
/// `working_set_mib` over their mean duration. `None` without warm rounds.
pub fn warm_throughput(working_set_mib: u32, rounds: &[f64]) -> Option<f64> {
    let warm = rounds.get(1..).filter(|w| !w.is_empty())?;
    let mean = warm.iter().sum::<f64>() / warm.len() as f64;
    (mean > 0.0).then(|| f64::from(working_set_mib) / mean)
}

/// Share of the best throughput a size must reach to count as past the knee.
pub const KNEE_SHARE: f64 = 0.9;

/// The smallest memory size (MiB) whose throughput reaches [`KNEE_SHARE`] of the best one.
pub fn knee(results: &[(u32, f64)]) -> Option<u32> {
    let best = results.iter().map(|r| r.1).fold(0.0, f64::max);
    let mut sizes: Vec<&(u32, f64)> = results.iter().collect();
    sizes.sort_by_key(|r| r.0);
    sizes
        .into_iter()
        .find(|r| best > 0.0 && r.1 >= KNEE_SHARE * best)
        .map(|r| r.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_come_from_the_console_markers() {
        let console = "SETMOV: ready\nSETMOV: cache-start 112\n\
                       SETMOV: cache-round 1 112 2.88 3.66\nnoise\n\
                       SETMOV: cache-round 2 112 3.66 3.97\nSETMOV: cache-round 3 112 x y\n";
        let rounds = round_seconds(console);
        assert_eq!(rounds.len(), 2);
        assert!((rounds[0] - 0.78).abs() < 1e-9 && (rounds[1] - 0.31).abs() < 1e-9);
    }

    #[test]
    fn the_first_round_is_not_warm() {
        assert_eq!(warm_throughput(100, &[10.0, 1.0, 3.0]), Some(50.0));
        assert_eq!(warm_throughput(100, &[10.0]), None);
    }

    #[test]
    fn the_knee_is_the_smallest_size_near_the_best() {
        // 96 and 128 MiB thrash at the disk's 32 MiB/s; 192 and 256 read from memory.
        let results = [(256, 300.0), (96, 31.0), (192, 290.0), (128, 33.0)];
        assert_eq!(knee(&results), Some(192));
        assert_eq!(knee(&[]), None);
    }
}
