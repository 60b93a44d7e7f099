//! Where a guest's disk image lies on the host's disk: how many physically contiguous pieces
//! each MiB of the file is in, and the largest request its block device takes. Together they
//! say how many host block requests a guest's O_DIRECT request of 1 MiB becomes.

use std::path::Path;
use std::process::Command;

/// For each of the first `mib` MiB of `file`, the number of physically contiguous pieces of
/// the host's file system it lies in (from `filefrag -v`, in the file system's blocks).
pub fn contiguous_pieces_per_mib(file: &Path, mib: u64) -> Vec<u32> {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(file)
        .output()
        .expect("filefrag");
    assert!(out.status.success(), "filefrag {}", file.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let block: u64 = text
        .split_once("blocks of ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no block size in {text}"));
    // (first logical block, first physical block, length) of each extent.
    let extents: Vec<(u64, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').map(str::trim).collect();
            let logical = f.get(1)?.split("..").next()?.trim().parse().ok()?;
            let physical = f.get(2)?.split("..").next()?.trim().parse().ok()?;
            let length = f.get(3)?.parse().ok()?;
            Some((logical, physical, length))
        })
        .collect();
    let per_mib = 1_048_576 / block;
    (0..mib)
        .map(|m| {
            let (start, end) = (m * per_mib, (m + 1) * per_mib);
            let mut pieces = 0;
            let mut next_physical = None;
            for &(logical, physical, length) in &extents {
                if logical + length <= start || logical >= end {
                    continue;
                }
                let first = physical + start.saturating_sub(logical);
                if next_physical != Some(first) {
                    pieces += 1;
                }
                next_physical = Some(physical + length);
            }
            assert!(
                pieces > 0,
                "MiB {m} of {} is not allocated: {text}",
                file.display()
            );
            pieces
        })
        .collect()
}

/// The largest request (KiB) the block device holding `file` takes (`queue/max_sectors_kb`).
pub fn max_sectors_kb(file: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .dev();
    let (major, minor) = crate::major_minor(dev);
    // A partition's queue is its disk's, one level up.
    let queue = [
        format!("/sys/dev/block/{major}:{minor}/queue/max_sectors_kb"),
        format!("/sys/dev/block/{major}:{minor}/../queue/max_sectors_kb"),
    ];
    queue
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request size limit for {major}:{minor}: {queue:?}"))
}
