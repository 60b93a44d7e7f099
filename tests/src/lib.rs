//! Helpers shared by SETMOV's integration tests.

pub mod guests;
pub mod mariadb;
pub mod monitor;
pub mod rollups;
pub mod ticks;

use std::path::PathBuf;

/// A fixture folder under `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
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
