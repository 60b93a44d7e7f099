//! `setmov run --prometheus` as Prometheus sees it: a real TCG guest burning its vCPU and then
//! pinging shows up on `/metrics` with plausible figures, the whole exposition passes
//! `promtool check metrics` (Prometheus's own parser and linter), and no counter goes back
//! between two scrapes; with eBPF on, a guest's block writes are exported as libvirt counts
//! them. Without the test guests or promtool (`cargo xtask setup` unpacks it)
//! the guest tests skip loudly, and fail under SETMOV_REQUIRE_ALL=1.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use setmov_tests::guests::{Guest, Workload};
use setmov_tests::monitor::Monitor;
use setmov_tests::skip;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
const BOOT: Duration = Duration::from_secs(90);

/// The guests compete for the same two cores: one test at a time.
static MACHINE: Mutex<()> = Mutex::new(());

/// `GET path` over plain HTTP/1.0; the status line and the body.
fn get(addr: &str, path: &str) -> Result<(String, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read {addr}{path}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((format!("{status}\n{content_type}"), body.to_owned()))
}

/// `/metrics`, asserting a 200 with the 0.0.4 text format.
fn scrape(addr: &str) -> String {
    let (head, body) = get(addr, "/metrics").expect("scrape");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.ends_with("text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

/// Whether promtool runs.
fn promtool_found() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `promtool check metrics` on `text`: it parses it and lints names, types and help; any
/// complaint fails.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} {said}\n{text}",
        out.status
    );
}

/// Sample lines by series (`name{labels}`); values parsed as Prometheus floats.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (series.to_owned(), value.parse().expect("a float value"))
        })
        .collect()
}

/// The value of the one series of family `name` whose labels contain all of `labels`.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = samples.iter().filter(|(series, _)| {
        series
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            && labels.iter().all(|l| series.contains(l))
    });
    let (_, v) = found.next()?;
    assert!(found.next().is_none(), "{name} {labels:?} matches twice");
    Some(*v)
}

#[test]
fn a_busy_guest_is_exported_with_plausible_figures_and_promtool_accepts_it() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if !promtool_found() {
        skip("promtool is missing: `cargo xtask setup` unpacks it into /usr/local/bin");
        return;
    }
    let pings = 15;
    let guest = match Guest::start(
        "prom",
        &Workload {
            burn_secs: 8,
            ping_count: pings,
            ..Workload::default()
        },
    ) {
        Ok(guest) => guest,
        Err(reason) => {
            skip(&reason);
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let monitor = Monitor::start(
        SETMOV,
        &dir.path().join("setmov.db"),
        &[
            "--no-ebpf",
            "--interval",
            "500ms",
            "--prometheus",
            "127.0.0.1:0",
        ],
    );
    let addr = monitor.prometheus_address();
    guest
        .wait_for("SETMOV: burn-start", BOOT)
        .expect("burn starts");
    let uuid = format!("uuid=\"{}\"", guest.uuid());
    let vm = [uuid.as_str()];

    // While it burns: wait for two ticks of rates, then a few more.
    std::thread::sleep(Duration::from_millis(2_500));
    let (index_head, index) = get(&addr, "/").expect("index page");
    assert!(index_head.starts_with("HTTP/1.0 200") || index_head.starts_with("HTTP/1.1 200"));
    assert!(index.contains("href=\"/metrics\""), "{index}");
    let first_text = scrape(&addr);
    promtool_check(&first_text);
    let first = samples(&first_text);
    let name = format!("vm=\"{}\"", guest.name());
    assert_eq!(
        value(&first, "setmov_vm_up", &[&uuid, &name]),
        Some(1.0),
        "{first_text}"
    );
    let busy = value(&first, "setmov_vm_cpu_usage_ratio", &vm).expect("VM CPU");
    let host_busy = value(&first, "setmov_host_cpu_usage_ratio", &[]).expect("host CPU");
    eprintln!(
        "burning guest: {busy:.3} of its vCPU busy, host {host_busy:.3} busy, state {:?}",
        value(&first, "setmov_vm_state", &[&uuid, "state=\"running\""])
    );
    // A burning vCPU is all busy (±0.1), and the host at least as busy as that vCPU's share.
    assert!((0.9..=1.1).contains(&busy), "VM CPU ratio {busy}");
    let vcpu_share = busy / setmov_tests::host_cpus() as f64;
    assert!(
        (0.9 * vcpu_share..=1.0).contains(&host_busy),
        "host CPU ratio {host_busy} with a vCPU burning ({vcpu_share:.3} of the host)"
    );
    assert_eq!(
        value(&first, "setmov_vm_state", &[&uuid, "state=\"running\""]),
        Some(1.0)
    );
    // The kernel's own MemTotal, to the byte.
    let total = value(&first, "setmov_host_memory_total_bytes", &[]).expect("host memory");
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("MemTotal");
    assert_eq!(total, kib * 1024.0, "host memory");

    // After the pings.
    let done = guest
        .wait_for("SETMOV: ping-done", Duration::from_secs(60))
        .expect("pings done");
    std::thread::sleep(Duration::from_millis(1_500));
    let second_text = scrape(&addr);
    promtool_check(&second_text);
    let second = samples(&second_text);
    let _ = monitor.stop();

    let mut counters = 0;
    for (series, before) in &first {
        let family = series.split('{').next().unwrap_or(series);
        if !family.ends_with("_total") {
            continue;
        }
        let after = second
            .get(series)
            .unwrap_or_else(|| panic!("{series} is gone from the second scrape"));
        assert!(after >= before, "{series} went back: {before} then {after}");
        counters += 1;
    }
    assert!(counters > 20, "{counters} counters");
    let ticks = |s: &BTreeMap<String, f64>| value(s, "setmov_ticks_total", &[]).expect("ticks");
    assert!(ticks(&second) > ticks(&first));

    let stats = guest.stats().expect("domstats");
    let cpu_seconds = value(&second, "setmov_vm_cpu_seconds_total", &vm).expect("cpu seconds");
    let libvirt_cpu = stats["cpu.time"] as f64 / 1e9;
    let tap = format!("device=\"{}\"", guest.tap_device().expect("tap"));
    let sent = value(
        &second,
        "setmov_vm_network_transmit_packets_total",
        &[&uuid, &tap],
    )
    .expect("sent packets");
    let received = value(
        &second,
        "setmov_vm_network_receive_packets_total",
        &[&uuid, &tap],
    )
    .expect("received packets");
    let allocated = value(&second, "setmov_vm_memory_allocated_bytes", &vm).expect("memory");
    eprintln!(
        "exported: {cpu_seconds:.2} CPU s (libvirt {libvirt_cpu:.2} since boot), packets sent \
         {sent:.1} received {received:.1} (libvirt {} / {}; ping says {done}), memory {allocated}",
        stats["net.0.tx.pkts"], stats["net.0.rx.pkts"]
    );
    // The counters start when the guest is first sampled, so they are at most libvirt's.
    assert!(cpu_seconds > 3.0, "CPU seconds {cpu_seconds}");
    assert!(
        cpu_seconds <= libvirt_cpu + 0.01,
        "{cpu_seconds} > {libvirt_cpu}"
    );
    assert!(sent.round() >= f64::from(pings), "sent {sent}");
    assert!(sent.round() <= stats["net.0.tx.pkts"] as f64, "sent {sent}");
    assert!(
        received.round() <= stats["net.0.rx.pkts"] as f64,
        "received {received}"
    );
    let replies: f64 = done
        .split('/')
        .next()
        .and_then(|r| r.trim().parse().ok())
        .expect("ping-done RECEIVED/SENT");
    assert!(received.round() >= replies, "received {received}");
    assert_eq!(allocated, stats["balloon.current"] as f64 * 1024.0);
}

#[test]
fn a_port_in_use_is_an_error_before_sampling() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let started = Instant::now();
    let out = setmov_tests::setmov_command(SETMOV)
        .args([
            "run",
            "--quiet",
            "--no-ebpf",
            "--no-libvirt",
            "--count",
            "3",
        ])
        .args(["--interval", "100ms", "--prometheus", &addr, "--database"])
        .arg(&db)
        .output()
        .expect("setmov runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot serve Prometheus metrics on {addr}: Address already in use"
        )),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing was sampled.
    let rows: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0)))
        .unwrap_or(0);
    assert_eq!(rows, 0);
}

#[test]
fn with_ebpf_a_guests_block_io_is_exported_and_promtool_accepts_it() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if !promtool_found() {
        skip("promtool is missing: `cargo xtask setup` unpacks it into /usr/local/bin");
        return;
    }
    if !setmov_tests::is_root() {
        skip("eBPF needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The monitor with its eBPF probes sees the guest from before it writes.
    let monitor = Monitor::start(
        SETMOV,
        &dir.path().join("setmov.db"),
        &["--interval", "500ms", "--prometheus", "127.0.0.1:0"],
    );
    let addr = monitor.prometheus_address();
    let guest = match Guest::start(
        "prom-io",
        &Workload {
            delay_secs: 4,
            write_mb: 16,
            ..Workload::default()
        },
    ) {
        Ok(guest) => guest,
        Err(reason) => {
            skip(&reason);
            return;
        }
    };
    guest
        .wait_for("SETMOV: write-done", BOOT)
        .expect("the guest writes");
    std::thread::sleep(Duration::from_millis(1_500));
    let text = scrape(&addr);
    let log = monitor.stop();
    assert!(log.contains("eBPF is on"), "{log}");
    promtool_check(&text);
    let exported = samples(&text);
    let uuid = format!("uuid=\"{}\"", guest.uuid());
    let written = value(&exported, "setmov_vm_block_write_bytes_total", &[&uuid])
        .unwrap_or_else(|| panic!("no eBPF block bytes for the guest in:\n{text}"));
    let host_written =
        value(&exported, "setmov_host_block_write_bytes_total", &[]).expect("host block bytes");
    let libvirt_written = guest.stats().expect("domstats")["block.0.wr.bytes"] as f64;
    let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
    eprintln!(
        "eBPF on: {families} families; the guest's qemu wrote {:.2} MiB (libvirt {:.2} MiB), \
         the host {:.2} MiB",
        written / 1048576.0,
        libvirt_written / 1048576.0,
        host_written / 1048576.0
    );
    assert!(libvirt_written >= 16.0 * 1048576.0);
    assert!(
        (written / libvirt_written - 1.0).abs() <= 0.02,
        "eBPF {written} against libvirt {libvirt_written}"
    );
    assert!(host_written >= written, "the host total holds the VM's");
}
