//! Which block devices are sampled, and which are partitions. Which devices the host totals
//! count is the topology's answer ([`super::topology`]).

use super::snapshot::DeviceKind;

/// Block device name prefixes not sampled unless configured otherwise: loop and RAM disks
/// would only add rows (idle loop devices are many on some hosts). Sampled or not, they are
/// never in the host disk total, which counts only the disks nothing sits below.
pub const DEFAULT_SKIPPED_DISK_PREFIXES: &[&str] = &["loop", "ram"];

/// True when `name` starts with any of `prefixes`.
pub fn has_prefix(name: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// Tells a partition from a whole disk by name, among the devices the kernel lists.
///
/// A device is a partition of another listed device when its name is that device's name
/// followed by a number (`sda1`, `vda2`), or by `p` and a number when the parent's name ends
/// in a digit (`nvme0n1p1`, `mmcblk0p1`, `loop0p1`). Works on a captured proc tree, where
/// `/sys` is not available.
pub fn classify(name: &str, all_names: &[&str]) -> DeviceKind {
    let is_partition = all_names.iter().any(|parent| {
        let Some(rest) = name.strip_prefix(parent) else {
            return false;
        };
        if rest.is_empty() {
            return false;
        }
        let parent_ends_in_digit = parent.chars().last().is_some_and(|c| c.is_ascii_digit());
        let number = if parent_ends_in_digit {
            match rest.strip_prefix('p') {
                Some(n) => n,
                None => return false,
            }
        } else {
            rest
        };
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit())
    });
    if is_partition {
        DeviceKind::Partition
    } else {
        DeviceKind::Disk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "sda",
        "sda1",
        "sda10",
        "vda",
        "nvme0n1",
        "nvme0n1p1",
        "mmcblk0",
        "mmcblk0p2",
        "dm-0",
        "md127",
        "sr0",
        "nbd1",
    ];

    #[test]
    fn whole_disks_and_partitions_are_told_apart() {
        let kinds: Vec<_> = NAMES.iter().map(|n| (*n, classify(n, NAMES))).collect();
        let partitions: Vec<_> = kinds
            .iter()
            .filter(|(_, k)| *k == DeviceKind::Partition)
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(partitions, ["sda1", "sda10", "nvme0n1p1", "mmcblk0p2"]);
    }

    #[test]
    fn a_numbered_device_without_a_listed_parent_is_a_disk() {
        assert_eq!(classify("sdb1", &["sdb1"]), DeviceKind::Disk);
        // Numbered devices whose names extend one another are not partitions of each other.
        let numbered = ["md1", "md12", "dm-1", "dm-10", "nbd1", "nbd10"];
        for name in numbered {
            assert_eq!(classify(name, &numbered), DeviceKind::Disk, "{name}");
        }
    }

    #[test]
    fn prefixes_match_names() {
        let skip: Vec<String> = DEFAULT_SKIPPED_DISK_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(has_prefix("loop7", &skip));
        assert!(has_prefix("ram0", &skip));
        assert!(!has_prefix("vda", &skip));
    }
}
