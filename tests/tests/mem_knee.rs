//! `setmov experiment mem-knee` end to end with real TCG guests of 96, 128 and 192 MiB reading
//! a 112 MiB working set: the two smaller ones cannot keep it in their page cache, the largest
//! can, so the knee is 192 MiB. Needs the test-guest assets (`cargo xtask guests prepare`, done
//! by `cargo xtask test`); skips loudly without them.

use std::path::Path;

use setmov_tests::skip;

#[test]
fn the_knee_is_where_the_working_set_fits() {
    if !Path::new("/var/lib/setmov-guests/guests.json").exists() {
        return skip("no test-guest assets: run `cargo xtask guests prepare`");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
        .args([
            "experiment",
            "mem-knee",
            "--sizes",
            "96,128,192",
            "--working-set",
            "112",
            "--rounds",
            "3",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .expect("setmov runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    eprintln!("{printed}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("knee: 192 MiB"), "{printed}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("mem-knee.json")).expect("results"),
    )
    .expect("JSON");
    assert_eq!(json["knee_mib"], 192);
    let size = |mib: u64| {
        json["sizes"]
            .as_array()
            .and_then(|s| s.iter().find(|r| r["memory_mib"] == mib))
            .unwrap_or_else(|| panic!("no {mib} MiB result: {json}"))
            .clone()
    };
    // Every figure must be there: a missing one is a failure, never a 0 that passes.
    let figure = |mib: u64, key: &str| {
        size(mib)[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} for {mib} MiB: {json}"))
    };
    let throughput = |mib| figure(mib, "throughput_mib_s");
    assert!(
        throughput(192) > 4.0 * throughput(96).max(throughput(128)),
        "the cached guest must read far faster: {json}"
    );
    // What SETMOV recorded: the 96 MiB guest reads every round from disk, the 192 MiB one only
    // the first. The 128 MiB guest's cache holds part of the working set on some runs (its
    // later rounds then read 60-90 % of it, 239 MiB in all once): more than once, never all
    // of it cached.
    let read = |mib| figure(mib, "disk_read_mib");
    assert!(read(96) > 2.5 * 112.0, "{json}");
    assert!(read(128) > 1.5 * 112.0, "{json}");
    assert!(read(192) < 1.5 * 112.0, "{json}");
    let chart = std::fs::read_to_string(dir.path().join("mem-knee.svg")).expect("chart");
    assert!(
        chart.contains("guest memory") && chart.contains("knee: 192 MiB"),
        "{chart}"
    );
}
