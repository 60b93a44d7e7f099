//! The host's block devices as sysfs shows them, read independently of the product: what the
//! tests compare its host totals over.

use std::path::Path;
use std::process::Command;

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub device: String,
}

impl LoopDevice {
    /// Attaches the first free loop device to `file`, with direct I/O (its requests reach the
    /// file's disk at once, not at writeback).
    pub fn attach(file: &Path) -> Result<LoopDevice, String> {
        LoopDevice::attach_with(file, "--direct-io=on")
    }

    /// Attaches the first free loop device to `file`, read-only and without direct I/O: for a
    /// file whose reads bypass the page cache anyway (FUSE with direct_io,
    /// [`crate::slow_disk`]).
    pub fn attach_read_only(file: &Path) -> Result<LoopDevice, String> {
        LoopDevice::attach_with(file, "--read-only")
    }

    fn attach_with(file: &Path, option: &str) -> Result<LoopDevice, String> {
        let out = Command::new("losetup")
            .args(["--find", "--show", option])
            .arg(file)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup cannot attach a loop device ({option}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(LoopDevice {
            device: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        })
    }

    /// `loop3` for `/dev/loop3`.
    pub fn name(&self) -> &str {
        self.device.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

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
