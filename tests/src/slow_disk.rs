//! A slow block device with a known service time: a loop device over the one file of a FUSE
//! file system whose daemon (tests/fixtures/slow_disk/slow_disk.py, Debian's python3-fusepy)
//! answers each read only after a fixed delay. This kernel has no null_blk, nbd, ublk or
//! device mapper (dm-delay) to slow a device down; loop and FUSE it has.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Debian's interpreter, where python3-fusepy installs its module (a `python3` first on PATH,
/// such as pyenv's, does not see it).
const PYTHON: &str = "/usr/bin/python3";

/// How the daemon answers reads of its file.
pub struct Delays {
    /// Size of the file, MiB.
    pub size_mib: u64,
    /// Delay of most reads, ms.
    pub fast_ms: u64,
    /// Delay of every `slow_every`-th read, ms.
    pub slow_ms: u64,
    pub slow_every: u64,
}

/// The mounted FUSE file system; unmounted, and its daemon gone, on drop. A loop device over
/// its file must be dropped first (declared after it).
pub struct SlowDisk {
    mountpoint: PathBuf,
    daemon: Child,
}

impl SlowDisk {
    /// Mounts the file system on `mountpoint` (an empty directory) and waits until it serves
    /// its file. `Ok(Err(reason))` when FUSE, Debian's python3 or python3-fusepy is missing:
    /// the caller skips.
    pub fn mount(mountpoint: &Path, delays: &Delays) -> anyhow::Result<Result<SlowDisk, String>> {
        if !Path::new("/dev/fuse").exists() {
            return Ok(Err("/dev/fuse is missing: the kernel has no FUSE".into()));
        }
        let import = Command::new(PYTHON)
            .args(["-c", "import fusepy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match import {
            Ok(status) if status.success() => {}
            Ok(_) => {
                return Ok(Err(
                    "python3-fusepy is missing: `cargo xtask setup` installs it".into(),
                ));
            }
            Err(e) => return Ok(Err(format!("{PYTHON}: {e}"))),
        }
        let script = crate::fixture("slow_disk/slow_disk.py");
        let daemon = Command::new(PYTHON)
            .arg(&script)
            .arg(mountpoint)
            .args(
                [
                    delays.size_mib,
                    delays.fast_ms,
                    delays.slow_ms,
                    delays.slow_every,
                ]
                .map(|n| n.to_string()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        // From here on the guard unmounts and reaps whatever happens.
        let mut disk = SlowDisk {
            mountpoint: mountpoint.to_owned(),
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !disk.image().exists() {
            if let Some(status) = disk.daemon.try_wait()? {
                let mut message = String::new();
                if let Some(mut stderr) = disk.daemon.stderr.take() {
                    std::io::Read::read_to_string(&mut stderr, &mut message)?;
                }
                bail!("the FUSE daemon exited ({status}): {}", message.trim());
            }
            if Instant::now() > deadline {
                bail!(
                    "the FUSE daemon did not mount {} in 10 s",
                    mountpoint.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Ok(disk))
    }

    /// The slow file, to put a loop device over.
    pub fn image(&self) -> PathBuf {
        self.mountpoint.join("disk.img")
    }

    /// Reads of the slow file the daemon has answered so far.
    pub fn reads(&self) -> anyhow::Result<u64> {
        let path = self.mountpoint.join("reads");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds {text:?}", path.display()))
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // The daemon exits once unmounted; if the mount is still busy, it is detached lazily
        // and the daemon killed.
        let unmounted = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&self.mountpoint)
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.daemon.try_wait(), Ok(None)) {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }
}
