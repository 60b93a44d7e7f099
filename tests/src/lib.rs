//! Helpers shared by SETMOV's integration tests.

pub mod block_devices;
pub mod bpftool;
pub mod bpftrace;
pub mod checks;
pub mod faults;
pub mod fio;
pub mod guests;
pub mod image_layout;
pub mod kvm_reference;
pub mod lat_hist;
pub mod latency;
pub mod mariadb;
pub mod memstat;
pub mod minute_reports;
pub mod monitor;
pub mod mysql_run;
pub mod reference;
pub mod rollups;
pub mod slow_disk;
pub mod stored;
pub mod streaming;
pub mod ticks;
pub mod window;

use std::path::PathBuf;

/// A fixture folder under `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

/// For the stores' calls: one thread, with tokio's I/O and timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Whether the caller demands that nothing be skipped (CI sets `SETMOV_REQUIRE_ALL=1`).
pub fn require_all() -> bool {
    std::env::var("SETMOV_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skips a test loudly, or fails it when skipping is not allowed. Returns normally only when
/// the caller should return early (skip).
pub fn skip(reason: &str) {
    assert!(
        !require_all(),
        "SETMOV_REQUIRE_ALL=1 but this test cannot run: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
    // `cargo xtask test` lists every skip after the run, also when the run passes (nextest
    // shows a passing test's output only for the live tests).
    if let Some(log) = std::env::var_os("SETMOV_SKIP_LOG") {
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let line = format!("SKIPPED {test}: {reason}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("cannot note the skip in SETMOV_SKIP_LOG: {e}");
        }
    }
}

/// The `setmov` binary at `path` with no configuration file (`SETMOV_CONFIG=/dev/null`): a
/// /etc/setmov/setmov.toml on the machine must not change what a test sees. Tests about the
/// configuration file name their own.
pub fn setmov_command(path: &str) -> std::process::Command {
    let mut command = std::process::Command::new(path);
    command.env("SETMOV_CONFIG", NO_CONFIG);
    command
}

/// An empty configuration file, for [`setmov_command`] and commands built otherwise.
pub const NO_CONFIG: &str = "/dev/null";

/// Why `dir` is not on a block device (tmpfs, overlay, btrfs subvolumes have anonymous
/// device numbers with no /sys/dev/block entry), or None when it is.
pub fn not_on_block_device(dir: &std::path::Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt as _;
    let (major, minor) = major_minor(std::fs::metadata(dir)?.dev());
    if std::path::Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
        Ok(None)
    } else {
        Ok(Some(format!(
            "{} is on device {major}:{minor}, which is not a block device",
            dir.display()
        )))
    }
}

/// The (major, minor) numbers of device number `dev`, in Linux's dev_t encoding (glibc's
/// gnu_dev_major/minor).
pub fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The host's CPUs as the product counts them (the `cpuN` lines of /proc/stat, as libvirt's
/// node info does), not the CPUs this process may run on.
pub fn host_cpus() -> usize {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_else(|e| panic!("/proc/stat: {e}"));
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert!(cpus > 0, "no cpuN line in /proc/stat");
    cpus
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Polls `done` until it holds. Not a measurement: the deadline only keeps a broken test from
/// hanging, and is far above what any machine needs.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
