//! The host's per-device disk and per-interface network figures against the tools an operator
//! checks them with: `iostat -x` while fio does a fixed amount of direct random I/O, and
//! `sar -n DEV` while a fixed number of packets cross a veth pair into a network namespace.
//! The load starts after and ends before both windows (the tool's one 12 s report, and a
//! `setmov run` at 1 s started before the tool and stopped after it), so both count all of
//! it: the totals (Σ rate × Δt: I/Os, bytes, packets, time spent reading and writing, time
//! the device was busy) must agree within 2 % for counts and bytes, 10 % for times.
//!
//! Needs root (namespaces, veth), sysstat, fio and ping (`cargo xtask setup` installs them)
//! and a block device under /var/tmp; otherwise it skips loudly (and fails under
//! SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use setmov_tests::{is_root, skip};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
/// The reference tool's one report covers this long; the load takes a few seconds of it.
const WINDOW_SECS: u64 = 12;

/// The tests load the machine and measure it: one at a time.
static MACHINE: Mutex<()> = Mutex::new(());

/// Why this test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if !is_root() {
        return Some("namespaces, veth and direct I/O on /var/tmp need root".into());
    }
    for tool in ["iostat", "sar", "fio", "ip", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is missing: `cargo xtask setup` installs it"
            ));
        }
    }
    None
}

/// `setmov run` at 1 s into `db`, until stopped.
fn setmov_monitor(db: &Path) -> setmov_tests::monitor::Monitor {
    setmov_tests::monitor::Monitor::start(
        SETMOV,
        db,
        &["--no-ebpf", "--no-libvirt", "--interval", "1s"],
    )
}

/// `TOOL ARGS` in the C locale, started now; its output is read when it ends.
fn reference(tool: &str, args: &[&str]) -> Child {
    Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .env("S_TIME_FORMAT", "ISO")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {tool}: {e}"))
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The row of `name` in a table whose header row holds `header_marker`: column → value.
fn table_row(text: &str, header_marker: &str, name: &str) -> BTreeMap<String, f64> {
    let mut header: Option<Vec<&str>> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.contains(&header_marker) {
            header = Some(fields);
            continue;
        }
        let Some(columns) = &header else { continue };
        if let Some(at) = fields.iter().position(|f| *f == name)
            && fields.len() == columns.len()
        {
            return columns
                .iter()
                .zip(&fields)
                .skip(at + 1)
                .filter_map(|(c, v)| Some(((*c).to_owned(), v.parse().ok()?)))
                .collect();
        }
    }
    panic!("no row {name} under a header with {header_marker} in:\n{text}")
}

/// Σ over the stored ticks of each of `figures` × Δt (each figure a SQL expression over the
/// table's columns), for the rows of `key`: what the monitor counted over its whole run.
fn totals(db: &Path, table: &str, key_column: &str, key: &str, figures: &[&str]) -> Vec<f64> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let sums: Vec<String> = figures
        .iter()
        .map(|f| format!("SUM(({f}) * u.interval_s)"))
        .collect();
    let sql = format!(
        "SELECT COUNT(*), {} FROM {table} d JOIN host_usage u USING (host_ip, time)
         WHERE d.{key_column} = ?1",
        sums.join(", ")
    );
    let row: Vec<Option<f64>> = conn
        .query_row(&sql, [key], |r| {
            (0..=figures.len()).map(|i| r.get(i)).collect()
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let ticks = row[0].unwrap_or(0.0);
    assert!(ticks >= WINDOW_SECS as f64, "only {ticks} ticks of {key}");
    row[1..]
        .iter()
        .map(|v| v.unwrap_or_else(|| panic!("{sql}: a NULL figure")))
        .collect()
}

fn assert_close(what: &str, ours: f64, theirs: f64, relative: f64) {
    let error = if theirs == 0.0 {
        ours.abs()
    } else {
        (ours / theirs - 1.0).abs()
    };
    eprintln!(
        "{what}: setmov {ours:.2}, reference {theirs:.2} ({:.2} %)",
        error * 100.0
    );
    assert!(
        error <= relative,
        "{what}: setmov {ours}, reference {theirs}"
    );
}

/// The block device (as /proc/diskstats names it) holding `dir`.
fn device_of(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(dir).expect("metadata").dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let uevent =
        std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).expect("uevent");
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .expect("DEVNAME")
        .to_owned()
}

#[test]
fn disk_figures_match_iostat_over_the_same_interval() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = missing_tools() {
        return skip(&reason);
    }
    let work = tempfile::Builder::new()
        .prefix("setmov-iostat")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    if let Some(reason) = setmov_tests::not_on_block_device(work.path()).expect("device") {
        return skip(&reason);
    }
    let device = device_of(work.path());
    let db = work.path().join("setmov.db");
    let monitor = setmov_monitor(&db);
    std::thread::sleep(Duration::from_secs(1));
    let window = WINDOW_SECS.to_string();
    let iostat = reference("iostat", &["-x", "-y", "-d", &device, &window, "1"]);
    std::thread::sleep(Duration::from_secs(2));
    // 96 MiB of 4 KiB direct random I/O, 70 % reads: a few seconds here.
    let fio = Command::new("fio")
        .args([
            "--name=setmov",
            "--rw=randrw",
            "--rwmixread=70",
            "--bs=4k",
            "--size=96M",
            "--direct=1",
            "--ioengine=psync",
            "--output=/dev/null",
        ])
        .arg(format!("--directory={}", work.path().display()))
        .status()
        .expect("fio");
    assert!(fio.success(), "fio failed");
    let iostat = finish(iostat, "iostat");
    std::thread::sleep(Duration::from_secs(1));
    let _ = monitor.stop();

    // iostat's one report: rates over its window, as totals.
    let theirs = table_row(&iostat, "r/s", &device);
    eprintln!("iostat {device} over {WINDOW_SECS} s: {theirs:?}");
    let seconds = WINDOW_SECS as f64;
    let total = |rate: &str| theirs[rate] * seconds;
    let ours = totals(
        &db,
        "host_disk_usage",
        "device",
        &device,
        &[
            "d.read_iops",
            "d.write_iops",
            "d.read_bytes_s",
            "d.write_bytes_s",
            "d.read_iops * COALESCE(d.read_await_ms, 0)",
            "d.write_iops * COALESCE(d.write_await_ms, 0)",
            "d.util_pct / 100.0",
        ],
    );
    assert!(
        total("r/s") > 10_000.0,
        "fio's reads did not show: {theirs:?}"
    );
    assert_close("reads", ours[0], total("r/s"), 0.02);
    assert_close("writes", ours[1], total("w/s"), 0.02);
    assert_close("KiB read", ours[2] / 1024.0, total("rkB/s"), 0.02);
    assert_close("KiB written", ours[3] / 1024.0, total("wkB/s"), 0.02);
    // Time spent on reads and writes (await × I/Os), and the time the device was busy.
    let read_ms = theirs["r_await"] * total("r/s");
    let write_ms = theirs["w_await"] * total("w/s");
    assert_close("ms reading", ours[4], read_ms, 0.10);
    assert_close("ms writing", ours[5], write_ms, 0.10);
    assert_close("s busy", ours[6], theirs["%util"] / 100.0 * seconds, 0.10);
}

/// A veth pair, one end in a namespace of its own; removed on drop.
struct VethPair {
    namespace: String,
    host_end: String,
}

impl VethPair {
    fn create(namespace: &str, host_end: &str, inner_end: &str) -> VethPair {
        let pair = VethPair {
            namespace: namespace.into(),
            host_end: host_end.into(),
        };
        pair.remove();
        for args in [
            vec!["netns", "add", namespace],
            vec![
                "link", "add", host_end, "type", "veth", "peer", "name", inner_end,
            ],
            vec!["link", "set", inner_end, "netns", namespace],
            vec!["addr", "add", "10.213.78.1/30", "dev", host_end],
            vec!["link", "set", host_end, "up"],
            vec![
                "-n",
                namespace,
                "addr",
                "add",
                "10.213.78.2/30",
                "dev",
                inner_end,
            ],
            vec!["-n", namespace, "link", "set", inner_end, "up"],
            vec!["-n", namespace, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("ip");
            assert!(status.success(), "ip {args:?}");
        }
        pair
    }

    fn remove(&self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        quiet(&["link", "del", &self.host_end]);
        quiet(&["netns", "del", &self.namespace]);
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn interface_figures_match_sar_over_the_same_interval() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = missing_tools() {
        return skip(&reason);
    }
    let pair = VethPair::create("setmov-sar", "smvsar0", "smvsar1");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let monitor = setmov_monitor(&db);
    std::thread::sleep(Duration::from_secs(1));
    let window = WINDOW_SECS.to_string();
    let sar = reference("sar", &["-n", "DEV", &window, "1"]);
    std::thread::sleep(Duration::from_secs(2));
    // 500 pings of 1000 B from the namespace to the host end, one every 5 ms.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.namespace,
            "ping",
            "-q",
            "-i",
            "0.005",
            "-s",
            "1000",
        ])
        .args(["-c", "500", "10.213.78.1"])
        .stdout(Stdio::null())
        .status()
        .expect("ping");
    assert!(ping.success(), "ping failed");
    let sar = finish(sar, "sar");
    std::thread::sleep(Duration::from_secs(1));
    let _ = monitor.stop();

    // sar's row for the interface (after its time column), in its own units (kB = 1024 B).
    let theirs = table_row(&sar, "rxpck/s", &pair.host_end);
    eprintln!("sar {} over {WINDOW_SECS} s: {theirs:?}", pair.host_end);
    let total = |rate: &str| theirs[rate] * WINDOW_SECS as f64;
    let ours = totals(
        &db,
        "host_net_usage",
        "iface",
        &pair.host_end,
        &["d.rx_pps", "d.tx_pps", "d.rx_bytes_s", "d.tx_bytes_s"],
    );
    assert!(
        total("rxpck/s") >= 500.0,
        "the pings did not show: {theirs:?}"
    );
    assert_close("packets received", ours[0], total("rxpck/s"), 0.02);
    assert_close("packets sent", ours[1], total("txpck/s"), 0.02);
    assert_close("KiB received", ours[2] / 1024.0, total("rxkB/s"), 0.02);
    assert_close("KiB sent", ours[3] / 1024.0, total("txkB/s"), 0.02);
}
