//! The host's block devices as sysfs shows them, read independently of the product: what the
//! tests compare its host totals over.

use std::path::Path;

/// The whole disks nothing sits below, from /sys/block: no `slaves`, not under
/// `devices/virtual` (dm, md, loop, zram, nbd, ram), not an optical drive.
pub fn physical_disks() -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let dir = Path::new("/sys/block").join(name);
            let link = std::fs::read_link(&dir).expect("sysfs link");
            let slaves = std::fs::read_dir(dir.join("slaves")).map_or(0, |d| d.count());
            !link.to_string_lossy().contains("/devices/virtual/")
                && slaves == 0
                && !name.starts_with("sr")
        })
        .collect()
}
