//! The Prometheus endpoint's limits against a real monitor started with 1,024 file descriptors
//! (systemd's default soft limit): 2,000 idle connections held by a client leave a new
//! scraper a full answer within 2 s and leave sampling alone (every tick stored with its
//! figures, no descriptor error logged); a client that sends its request head one byte a
//! second is closed by the header-read timeout (5 s).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::{skip, stored};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// The monitor's descriptor limit: systemd's default soft limit.
const MONITOR_OPEN_FILES: u64 = 1024;
const IDLE_CONNECTIONS: usize = 2_000;
/// What this process needs to hold them, and more.
const TEST_OPEN_FILES: u64 = 8_192;

/// This process's descriptor limit is lowered around a spawn and raised to hold the
/// connections: one test at a time.
static RLIMIT: Mutex<()> = Mutex::new(());

/// `setmov run` without libvirt or eBPF, every 200 ms, serving on a port the kernel picks,
/// started with a soft RLIMIT_NOFILE of [`MONITOR_OPEN_FILES`] (the hard limit as this
/// process's, as systemd leaves it).
fn start_monitor(db: &Path) -> Monitor {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, MONITOR_OPEN_FILES, hard).expect("lower RLIMIT_NOFILE");
    let monitor = Monitor::start(
        SETMOV,
        db,
        &[
            "--no-libvirt",
            "--no-ebpf",
            "--interval",
            "200ms",
            "--prometheus",
            "127.0.0.1:0",
        ],
    );
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("restore RLIMIT_NOFILE");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", monitor.pid()))
        .expect("the monitor's limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some(MONITOR_OPEN_FILES.to_string().as_str()),
        "{open_files}"
    );
    monitor
}

/// `GET /metrics` on a new connection: the whole response.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the response");
    response
}

/// Whether the server has closed `stream` (EOF or reset), waiting at most `wait`.
fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn two_thousand_idle_connections_leave_metrics_and_sampling_alone() {
    let _alone = RLIMIT.lock().unwrap_or_else(|e| e.into_inner());
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < TEST_OPEN_FILES {
        skip(&format!(
            "the hard RLIMIT_NOFILE ({hard}) is under the {TEST_OPEN_FILES} this test needs"
        ));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let monitor = start_monitor(&db);
    let addr = monitor.prometheus_address();
    setrlimit(Resource::RLIMIT_NOFILE, TEST_OPEN_FILES, hard).expect("raise RLIMIT_NOFILE");
    // The exporter answers before the first tick reaches it (only the build info then):
    // wait for a tick, so that the scrape behind the idle connections can be checked for one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let first = scrape(&addr);
        if first.contains("\nsetmov_ticks_total") || Instant::now() > deadline {
            break first;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.contains("\nsetmov_ticks_total"),
        "no tick in 20 s: {first}"
    );

    let from = stored::now();
    let opening = Instant::now();
    let mut idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let opened_in = opening.elapsed();

    let asked = Instant::now();
    let response = scrape(&addr);
    let answered_in = asked.elapsed();
    eprintln!(
        "{IDLE_CONNECTIONS} idle connections opened in {opened_in:?}; a new scrape answered \
         in {answered_in:?} ({} bytes)",
        response.len()
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\nsetmov_ticks_total"), "{response}");
    assert!(
        answered_in < Duration::from_secs(2),
        "/metrics answered in {answered_in:?} behind {IDLE_CONNECTIONS} idle connections"
    );

    let open_files = std::fs::read_dir(format!("/proc/{}/fd", monitor.pid()))
        .expect("the monitor's descriptors")
        .count();
    eprintln!("the monitor has {open_files} descriptors open");
    assert!(
        open_files < 256,
        "{open_files} descriptors: the exporter's are not capped"
    );

    // A few ticks more with the idle connections held.
    std::thread::sleep(Duration::from_millis(1_500));
    let again = scrape(&addr);
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    let to = stored::now();
    let still_open = idle
        .iter_mut()
        .map(|s| closed_by_server(s, Duration::from_millis(1)))
        .filter(|closed| !closed)
        .count();
    eprintln!("{still_open} of the {IDLE_CONNECTIONS} idle connections still open");
    drop(idle);

    let log = monitor.stop();
    eprintln!("{log}");
    for line in log.lines() {
        assert!(
            !line.contains("Too many open files") && !line.contains("ERROR"),
            "{line}"
        );
    }
    assert!(
        log.contains("the Prometheus endpoint closed"),
        "the closed connections are reported: {log}"
    );
    let summary = RunSummary::from_log(&log);
    assert_eq!(summary.lost, 0, "{summary:?}");
    // Every tick while the connections were held: stored, with its figures, without problems.
    let rows = stored::query::<stored::Cell>(
        &db,
        "SELECT time, mem_total_bytes, cpu_pct, problems FROM host_usage \
         WHERE time >= ?1 ORDER BY time",
        &from,
    );
    let held: Vec<_> = rows
        .iter()
        .filter(|r| r[0].as_deref().is_some_and(|t| t <= to.as_str()))
        .collect();
    eprintln!(
        "{} ticks stored while the connections were held ({from} to {to})",
        held.len()
    );
    assert!(held.len() >= 5, "ticks stored meanwhile: {held:?}");
    for row in held {
        assert!(
            row[1].is_some() && row[2].is_some() && row[3].is_none(),
            "a tick without its figures: {row:?}"
        );
    }
}

#[test]
fn a_client_dribbling_its_request_head_is_closed_by_the_header_timeout() {
    let _alone = RLIMIT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let monitor = start_monitor(&dir.path().join("setmov.db"));
    let addr = monitor.prometheus_address();
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let started = Instant::now();
    let mut sent = 0;
    let closed = loop {
        let Some(byte) = head.as_bytes().get(sent..=sent) else {
            break false;
        };
        if stream.write_all(byte).is_err() {
            break true;
        }
        sent += 1;
        // The read's timeout paces the bytes: one a second.
        if closed_by_server(&mut stream, Duration::from_secs(1)) {
            break true;
        }
    };
    let after = started.elapsed();
    eprintln!(
        "closed: {closed}, after {after:?} and {sent} of the head's {} bytes",
        head.len()
    );
    assert!(closed, "the whole head went through, one byte a second");
    assert!(sent < head.len());
    assert!(
        (Duration::from_millis(4_500)..Duration::from_secs(10)).contains(&after),
        "closed after {after:?}, not by the 5 s header-read timeout"
    );
    let log = monitor.stop();
    assert!(
        log.contains("1 without a whole request head within 5s"),
        "{log}"
    );
}
