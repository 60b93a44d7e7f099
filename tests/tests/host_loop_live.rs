//! A loop device over a file on the host's disk (issue 15 point 1, live): what is written to
//! and read from the loop device reaches the disk under its file again, and the host disk total
//! must count it once.
//!
//! One `setmov run` (eBPF on, `--skip-disks ''` so that the loop device has its own row) beside
//! `iostat -x` while dd writes and reads 64 MiB through a loop device with direct I/O (so its
//! requests reach the disk at once, not at writeback) over a file in /var/tmp. Over the same
//! window:
//!
//! - the loop device's own row holds its I/O (bytes within 2 % of iostat's row of it, and at
//!   least the 128 MiB dd moved), with `in_host_total` = 0;
//! - `host_usage` disk totals (bytes and IOPS) equal iostat summed over the disks nothing sits
//!   below (/sys/block without slaves, not virtual) within 2 %: the loop device's I/O once, at
//!   the disk. Counting it twice would be 128 MiB more;
//! - `host_ebpf_usage` block bytes, summed by the product over the same disks, within 2 % of the
//!   same iostat sum; its IOPS (requests as they start) between iostat's I/Os and those plus
//!   its merges (a started request the scheduler merges into another is one of iostat's
//!   merges), with 2 % either side.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use setmov_tests::block_devices::{LoopDevice, physical_disks};
use setmov_tests::monitor::Monitor;
use setmov_tests::reference::{self, assert_close, missing_tools, table};
use setmov_tests::skip;
use setmov_tests::window::{WINDOW_SECS, Window, sleep_until, unix_now};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// Bytes dd moves each way through the loop device.
const MOVED: u64 = 64 << 20;

fn dd(args: &[&str]) {
    let status = Command::new("dd")
        .args(args)
        .arg("status=none")
        .status()
        .expect("dd");
    assert!(status.success(), "dd {args:?} failed");
}

#[test]
fn io_through_a_loop_device_counts_once_in_the_host_total() {
    if let Some(reason) = missing_tools(&["losetup", "iostat", "dd"]) {
        return skip(&reason);
    }
    let work = tempfile::Builder::new()
        .prefix("setmov-loop")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    if let Some(reason) = setmov_tests::not_on_block_device(work.path()).expect("device") {
        return skip(&reason);
    }
    let file: PathBuf = work.path().join("backing.raw");
    let count = (MOVED >> 16).to_string();
    dd(&[
        "if=/dev/zero",
        &format!("of={}", file.display()),
        "bs=64k",
        &format!("count={count}"),
        "conv=fsync",
    ]);
    let lo = match LoopDevice::attach(&file) {
        Ok(lo) => lo,
        Err(reason) => return skip(&reason),
    };
    let db = work.path().join("setmov.db");
    let monitor = Monitor::start(
        SETMOV,
        &db,
        &[
            "--no-libvirt",
            "--bpf-stats",
            "--skip-disks",
            "",
            "--interval",
            "1s",
        ],
    );
    if monitor
        .wait_for_log("BPF statistics are on", Duration::from_secs(20))
        .is_none()
    {
        let log = monitor.stop();
        return skip(&format!("the eBPF probes are off: {log}"));
    }
    let window = Window::after_next_tick(&db, "host_ebpf_usage");
    let secs = WINDOW_SECS.to_string();
    let iostat = reference::start("iostat", &["-x", "-y", "-d", &secs, "1"]);
    std::thread::sleep(Duration::from_secs(2));
    let of = format!("of={}", lo.device);
    let input = format!("if={}", lo.device);
    dd(&[
        "if=/dev/zero",
        &of,
        "bs=64k",
        &format!("count={count}"),
        "oflag=direct",
    ]);
    dd(&[
        &input,
        "of=/dev/null",
        "bs=64k",
        &format!("count={count}"),
        "iflag=direct",
    ]);
    assert!(unix_now() < window.end() - 0.5, "dd ran past the window");
    let iostat = reference::finish(iostat, "iostat");
    sleep_until(window.end() + 1.5);
    let _ = monitor.stop();

    let rows = table(&iostat, "r/s", "Device");
    let seconds = WINDOW_SECS as f64;
    let loop_row = rows
        .get(lo.name())
        .unwrap_or_else(|| panic!("iostat has no row for {}: {rows:?}", lo.name()));
    let counted = physical_disks();
    let iostat_sum = |column: &str| -> f64 {
        counted
            .iter()
            .filter_map(|d| rows.get(d))
            .map(|row| row[column])
            .sum::<f64>()
            * seconds
    };
    eprintln!("iostat over {WINDOW_SECS} s: {} {loop_row:?}", lo.name());
    for d in &counted {
        eprintln!("iostat over {WINDOW_SECS} s: {d} {:?}", rows.get(d));
    }

    // The loop device's own row.
    let ours_loop = window.sums(
        &db,
        "host_disk_usage d JOIN host_usage u USING (host_ip, time)",
        "u",
        &format!("d.device = '{}'", lo.name()),
        &["d.read_bytes_s", "d.write_bytes_s", "d.in_host_total"],
    );
    eprintln!(
        "loop row: read {:.1} MiB, written {:.1} MiB",
        ours_loop[0] / 1048576.0,
        ours_loop[1] / 1048576.0
    );
    // Σ rate × Δt gives the bytes back up to floating-point rounding.
    let shown = MOVED as f64 * (1.0 - 1e-9);
    assert!(
        ours_loop[0] >= shown && ours_loop[1] >= shown,
        "dd's I/O did not show on the loop device: read {}, written {} bytes of {MOVED}",
        ours_loop[0],
        ours_loop[1]
    );
    assert_close(
        "loop KiB read",
        ours_loop[0] / 1024.0,
        loop_row["rkB/s"] * seconds,
        0.02,
    );
    assert_close(
        "loop KiB written",
        ours_loop[1] / 1024.0,
        loop_row["wkB/s"] * seconds,
        0.02,
    );
    assert_eq!(
        ours_loop[2], 0.0,
        "the loop device is not in the host total"
    );

    // The host total: once, at the disk under the file.
    let total = window.sums(
        &db,
        "host_usage u",
        "u",
        "1",
        &[
            "u.disk_read_bytes_s",
            "u.disk_write_bytes_s",
            "u.disk_read_iops",
            "u.disk_write_iops",
        ],
    );
    let ebpf = window.sums(
        &db,
        "host_ebpf_usage e",
        "e",
        "1",
        &[
            "e.block_read_bytes_s",
            "e.block_write_bytes_s",
            "e.block_read_iops",
            "e.block_write_iops",
        ],
    );
    let theirs = [
        iostat_sum("rkB/s") * 1024.0,
        iostat_sum("wkB/s") * 1024.0,
        iostat_sum("r/s"),
        iostat_sum("w/s"),
    ];
    eprintln!(
        "host total over {counted:?}: read {:.2} MiB, written {:.2} MiB, {:.0} reads, {:.0} writes",
        total[0] / 1048576.0,
        total[1] / 1048576.0,
        total[2],
        total[3]
    );
    eprintln!(
        "eBPF host total: read {:.2} MiB, written {:.2} MiB, {:.0} reads, {:.0} writes",
        ebpf[0] / 1048576.0,
        ebpf[1] / 1048576.0,
        ebpf[2],
        ebpf[3]
    );
    eprintln!(
        "iostat over the same disks: read {:.2} MiB, written {:.2} MiB, {:.0} reads, {:.0} writes",
        theirs[0] / 1048576.0,
        theirs[1] / 1048576.0,
        theirs[2],
        theirs[3]
    );
    let names = ["bytes read", "bytes written", "reads", "writes"];
    for ((what, ours), theirs) in names.iter().zip(&total).zip(&theirs) {
        assert_close(&format!("host {what}"), *ours, *theirs, 0.02);
    }
    for ((what, ours), theirs) in names.iter().zip(&ebpf).zip(&theirs).take(2) {
        assert_close(&format!("eBPF host {what}"), *ours, *theirs, 0.02);
    }
    // The probe counts a request as it starts; one the scheduler then merges into another
    // (mq-deadline does, under writeback) completes as part of that one, so iostat counts it
    // among its merges (rrqm/s, wrqm/s), not its I/Os. Between the two.
    let merges = [iostat_sum("rrqm/s"), iostat_sum("wrqm/s")];
    for (((what, ours), theirs), merged) in names[2..]
        .iter()
        .zip(&ebpf[2..])
        .zip(&theirs[2..])
        .zip(merges)
    {
        eprintln!("eBPF host {what}: {ours:.0}, iostat {theirs:.0} + {merged:.0} merged");
        assert!(
            *ours >= theirs * 0.98 && *ours <= (theirs + merged) * 1.02,
            "eBPF host {what}: {ours:.0}, not between iostat's {theirs:.0} and {:.0}",
            theirs + merged
        );
    }
}
