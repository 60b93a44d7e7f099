//! VM figures against real TCG guests under a real libvirtd, each running a known workload,
//! and the monitor's behaviour while VMs and libvirtd misbehave. The guests and libvirtd are
//! prepared by `cargo xtask guests up` (or `cargo xtask test`); without them these tests skip
//! loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use setmov::usage::vm::vm_mem_usage;
use setmov::vm::libvirt::LibvirtCollector;
use setmov_tests::guests::{self, Guest, Workload};
use setmov_tests::monitor::Monitor;
use setmov_tests::skip;

/// The guests compete for the same two cores: one test at a time.
static MACHINE: Mutex<()> = Mutex::new(());

const MIB: f64 = 1_048_576.0;
const BOOT: Duration = Duration::from_secs(90);

fn monitor(db: &Path, interval: &str) -> Monitor {
    Monitor::start(
        env!("CARGO_BIN_EXE_setmov-cli"),
        db,
        &["--no-ebpf", "--interval", interval],
    )
}

fn query<T: rusqlite::types::FromSql>(db: &Path, sql: &str, uuid: &str) -> Vec<Vec<Option<T>>> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn.prepare(sql).expect("sql");
    let columns = stmt.column_count();
    stmt.query_map([uuid], |r| (0..columns).map(|i| r.get(i)).collect())
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Σ rate × Δt over a VM's sampled rows: what the figures account for over the run.
fn integral(db: &Path, rate_column: &str, uuid: &str) -> f64 {
    let sql = format!(
        "SELECT interval_s, {rate_column} FROM vm_usage \
         WHERE uuid = ?1 AND missing IS NULL AND interval_s IS NOT NULL"
    );
    query::<f64>(db, &sql, uuid)
        .iter()
        // A row without the rate (a device libvirt did not list in the previous sample) adds
        // nothing; the totals checked against the workload show that nothing went missing.
        .map(|r| r[0].unwrap_or(0.0) * r[1].unwrap_or(0.0))
        .sum()
}

/// Σ of each expression over the sampled T4 rows of `uuid` in the `window` (`from`
/// names `vm_usage u`, maybe LEFT JOINed to a per-device table); a rate times
/// `u.interval_s` gives what the stored figures account for over the window. Panics when a
/// sampled row lacks an expression's value (a missing figure must not read as 0), or when the
/// window has fewer than `min_rows` rows.
fn window_sums(
    conn: &rusqlite::Connection,
    from: &str,
    exprs: &[String],
    uuid: &str,
    window: &Window,
    min_rows: i64,
) -> Vec<f64> {
    let columns: String = exprs
        .iter()
        .map(|e| format!(", COUNT({e}), SUM({e})"))
        .collect();
    let sql = format!(
        "SELECT COUNT(*){columns} FROM {from} WHERE u.uuid = ?1 AND u.time > ?2 \
         AND u.time <= ?3 AND u.missing IS NULL AND u.interval_s IS NOT NULL"
    );
    conn.query_row(&sql, [uuid, &window.from, &window.to], |r| {
        let rows: i64 = r.get(0)?;
        assert!(rows >= min_rows, "{rows} sampled rows in the window: {sql}");
        exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let present: i64 = r.get(1 + 2 * i)?;
                assert_eq!(present, rows, "{e} is missing from sampled rows");
                r.get(2 + 2 * i)
            })
            .collect()
    })
    .expect("window sums")
}

/// Comparisons of stored figures with their references, all printed, failed together.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// `ours` against the `reference`, within `tolerance` (absolute).
    fn near(&mut self, what: &str, ours: f64, reference: f64, tolerance: f64) {
        let ok = (ours - reference).abs() <= tolerance;
        eprintln!(
            "  {} {what}: stored {ours:.3}, reference {reference:.3} (±{tolerance:.3})",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.failed.push(format!(
                "{what}: stored {ours}, reference {reference}, tolerance {tolerance}"
            ));
        }
    }

    /// `ours` within the `reference` range, widened by `slack` (float rounding).
    fn within(&mut self, what: &str, ours: f64, (lo, hi): (f64, f64), slack: f64) {
        let ok = (lo - slack..=hi + slack).contains(&ours);
        eprintln!(
            "  {} {what}: stored {ours:.3}, libvirt {lo:.3}..{hi:.3}",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.failed
                .push(format!("{what}: stored {ours}, libvirt {lo}..{hi}"));
        }
    }

    fn that(&mut self, what: &str, ok: bool) {
        eprintln!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failed.push(what.to_owned());
        }
    }

    fn finish(self) {
        assert!(self.failed.is_empty(), "{:#?}", self.failed);
    }
}

fn start(name: &str, workload: &Workload) -> Option<Guest> {
    match Guest::start(name, workload) {
        Ok(guest) => Some(guest),
        Err(reason) => {
            skip(&reason);
            None
        }
    }
}

/// A guest whose vCPU burns for good, once it has started burning.
fn start_burning(name: &str) -> Option<Guest> {
    let guest = start(
        name,
        &Workload {
            burn_secs: -1,
            ..Workload::default()
        },
    )?;
    guest
        .wait_for("SETMOV: burn-start", BOOT)
        .expect("burn starts");
    Some(guest)
}

#[test]
fn a_burning_vcpu_reads_full_per_vcpu_and_its_share_of_the_host() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(guest) = start_burning("burn") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = monitor(&db, "1s");
    // libvirt's CPU time of the domain, read every 20 ms through the run.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (from, to, readings) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut readings = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ns = guest.cpu_time_ns().expect("libvirt's CPU time");
                readings.push((unix_now(), ns as f64));
                std::thread::sleep(Duration::from_millis(20));
            }
            readings
        });
        let from = tick_after(&db, guest.uuid());
        std::thread::sleep(Duration::from_millis(3_000));
        let to = tick_after(&db, guest.uuid());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (from, to, poller.join().expect("poller"))
    });
    let _ = m.stop();

    // Equation (2) undone over the window of rows stamped after `from` up to `to`:
    // Σ cpu_pct / 100 × host CPUs × Δt and Σ cpu_vcpu_pct / 100 × vCPUs × Δt are the domain's
    // CPU seconds, whose mean rate must be libvirt's (cpu.time, all of qemu's threads, as
    // virt-top reads it) between the two ticks' stamps, within 1 point of a vCPU. The guest burns
    // at a steady rate, so the few ms to a few hundred ms between a stamp and libvirt's answer
    // to the monitor change the mean rate by far less.
    let cores = setmov_tests::host_cpus() as f64;
    let conn = rusqlite::Connection::open(&db).expect("db");
    let window = Window {
        from: from.clone(),
        to: to.clone(),
        start: Default::default(),
        end: Default::default(),
    };
    let sums = window_sums(
        &conn,
        "vm_usage u",
        &[
            format!("u.interval_s * u.cpu_pct / 100.0 * {cores}"),
            "u.interval_s * u.cpu_vcpu_pct / 100.0 * u.vcpus".to_owned(),
            "u.interval_s".to_owned(),
        ],
        guest.uuid(),
        &window,
        3,
    );
    let libvirt_pct = {
        let at = |t: f64| interpolate(&readings, t);
        let (t0, t1) = (unix_of(&from), unix_of(&to));
        (at(t1) - at(t0)) / 1e9 / (t1 - t0) * 100.0
    };
    let mut checks = Checks::default();
    checks.near(
        "CPU % of a vCPU from cpu_pct",
        sums[0] / sums[2] * 100.0,
        libvirt_pct,
        1.0,
    );
    checks.near(
        "CPU % of a vCPU from cpu_vcpu_pct",
        sums[1] / sums[2] * 100.0,
        libvirt_pct,
        1.0,
    );
    checks.finish();

    let rows = query::<f64>(
        &db,
        "SELECT cpu_vcpu_pct, cpu_pct FROM vm_usage WHERE uuid = ?1 AND cpu_pct IS NOT NULL",
        guest.uuid(),
    );
    eprintln!("burning guest, per vCPU and host-normalised (÷{cores}): {rows:?}");
    assert!(rows.len() >= 4, "{rows:?}");
    for row in &rows {
        let (per_vcpu, host) = (row[0].expect("per vCPU"), row[1].expect("host"));
        assert!((per_vcpu - 100.0).abs() <= 10.0, "per vCPU {per_vcpu}");
        assert!((host - 100.0 / cores).abs() <= 10.0 / cores, "host {host}");
    }

    // The same figures streamed for piping: a CSV header, then one record per VM per tick.
    let out = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
        .args([
            "run",
            "--stream",
            "--format",
            "csv",
            "--no-store",
            "--no-ebpf",
        ])
        .args(["--count", "4", "--interval", "1s"])
        .output()
        .expect("setmov starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (uuid, per_vcpu) = (column("uuid"), column("cpu_vcpu_pct"));
    let records: Vec<Vec<&str>> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r[uuid] == guest.uuid())
        .collect();
    eprintln!("streamed: {records:?}");
    // One record per tick the VM source answered: under load a slow libvirt answer makes it
    // skip a tick (the next sample then spans both), so 3 or 4 of the 4 ticks.
    assert!((3..=4).contains(&records.len()), "{csv}");
    for record in &records[1..] {
        let cpu: f64 = record[per_vcpu].parse().expect("a figure");
        assert!((cpu - 100.0).abs() <= 10.0, "per vCPU {cpu}");
    }

    // A reader that goes away (`| head -3`) ends the run, as it would any Unix filter.
    let mut child = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
        .args([
            "run",
            "--stream",
            "--format",
            "json",
            "--no-store",
            "--no-ebpf",
        ])
        .args(["--interval", "200ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setmov starts");
    let stdout = child.stdout.take().expect("stdout");
    let first: Vec<serde_json::Value> = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .take(3)
        .map(|l| serde_json::from_str(&l.expect("line")).expect("one JSON object per line"))
        .collect();
    assert_eq!(first.len(), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after its reader left"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn direct_writes_of_a_guest_are_its_disk_write_bytes() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    // The monitor sees the guest before it writes: delay, then 32 MiB direct.
    let m = monitor(&db, "500ms");
    let Some(guest) = start(
        "disk",
        &Workload {
            delay_secs: 4,
            write_mb: 32,
            ..Workload::default()
        },
    ) else {
        let _ = m.stop();
        return;
    };
    let done = guest.wait_for("SETMOV: write-done", BOOT).expect("write");
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = m.stop();

    let libvirt_bytes = guest.stats().expect("domstats")["block.0.wr.bytes"] as f64;
    let written = integral(&db, "disk_write_bytes_s", guest.uuid());
    eprintln!(
        "guest wrote {done}; the VM's disk write figure accounts for {:.2} MiB, libvirt counts {:.2} MiB",
        written / MIB,
        libvirt_bytes / MIB
    );
    assert!(
        (written / (32.0 * MIB) - 1.0).abs() <= 0.05,
        "{:.2} MiB",
        written / MIB
    );
    let iops = integral(&db, "disk_write_iops", guest.uuid());
    // At least one request per 1 MiB block (Σ rate × Δt carries float rounding).
    assert!(iops.round() >= 32.0, "write requests {iops}");
}

#[test]
fn a_guests_block_io_and_traffic_seen_by_ebpf_are_what_libvirt_counts() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    // With eBPF this time: the qemu process's host-side I/O, credited to the VM.
    let m = Monitor::start(
        env!("CARGO_BIN_EXE_setmov-cli"),
        &db,
        &["--interval", "500ms"],
    );
    let Some(guest) = start(
        "ebpf-disk",
        &Workload {
            delay_secs: 4,
            write_mb: 32,
            read_mb: 32,
            ping_count: 30,
            ping_size: 1000,
            ..Workload::default()
        },
    ) else {
        let _ = m.stop();
        return;
    };
    // qemu itself reads the kernel and initramfs at start; the comparison starts once the
    // guest has booted and waits, with libvirt's counters at that moment as the baseline.
    guest
        .wait_for("SETMOV: delay-start", BOOT)
        .expect("guest waits");
    let since = setmov::store::format_time(time::OffsetDateTime::now_utc());
    let baseline = guest.stats().expect("domstats");
    // libvirt's counters read before and after the sample of a tick: the window's start.
    let from = tick_after(&db, guest.uuid());
    let after_from = guest.stats().expect("domstats");
    let pinged = ping_counts(&guest.wait_for("SETMOV: ping-done", BOOT).expect("pings"));
    std::thread::sleep(Duration::from_millis(1_500));
    // And around a later tick's: the window's end.
    let before_to = guest.stats().expect("domstats");
    let to = tick_after(&db, guest.uuid());
    let _ = m.stop();

    let stats = guest.stats().expect("domstats");
    let window = Window {
        from,
        to,
        start: (baseline.clone(), after_from),
        end: (before_to, stats.clone()),
    };
    let conn = rusqlite::Connection::open(&db).expect("db");
    let span: (Option<String>, Option<String>) = conn
        .query_row("SELECT MIN(time), MAX(time) FROM vm_ebpf_usage", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("span");
    eprintln!("eBPF rows from {span:?}; the workload started after {since}");
    let row: Vec<Option<f64>> = conn
        .query_row(
            "SELECT SUM(interval_s * block_write_bytes_s), SUM(interval_s * block_read_bytes_s),
                    COUNT(*), SUM(write_latency_p99_us IS NOT NULL),
                    SUM(interval_s * net_tx_pps), SUM(interval_s * net_tx_bytes_s),
                    SUM(cpu_ready_pct IS NOT NULL)
             FROM vm_ebpf_usage WHERE uuid = ?1 AND time > ?2",
            [guest.uuid(), since.as_str()],
            |r| (0..7).map(|i| r.get(i)).collect(),
        )
        .expect("sums");
    let (ebpf_written, ebpf_read) = (
        row[0].expect("eBPF write bytes"),
        row[1].expect("eBPF read bytes"),
    );
    let counted = |key: &str| (stats[key] - baseline[key]) as f64;
    let (libvirt_written, libvirt_read) =
        (counted("block.0.wr.bytes"), counted("block.0.rd.bytes"));
    eprintln!(
        "eBPF credits the VM {:.2} MiB written, {:.2} MiB read over {:?} ticks ({:?} with a \
         write latency); libvirt counts {:.2} MiB written, {:.2} MiB read",
        ebpf_written / MIB,
        ebpf_read / MIB,
        row[2],
        row[3],
        libvirt_written / MIB,
        libvirt_read / MIB
    );
    assert!(
        (ebpf_written / libvirt_written - 1.0).abs() <= 0.02,
        "written: eBPF {ebpf_written} B, libvirt {libvirt_written} B"
    );
    assert!(
        (ebpf_read / libvirt_read - 1.0).abs() <= 0.02,
        "read: eBPF {ebpf_read} B, libvirt {libvirt_read} B"
    );
    assert!(row[3].expect("a count") >= 1.0, "no write latency recorded");

    // The guest's transmit through its tap, as libvirt counts it (pings and a few ARP frames).
    let (ebpf_packets, ebpf_bytes) = (
        row[4].expect("eBPF tx packets"),
        row[5].expect("eBPF tx bytes"),
    );
    let (libvirt_packets, libvirt_bytes) = (counted("net.0.tx.pkts"), counted("net.0.tx.bytes"));
    eprintln!(
        "eBPF: the guest sent {ebpf_packets:.0} packets, {ebpf_bytes:.0} B; libvirt counts \
         {libvirt_packets:.0} packets, {libvirt_bytes:.0} B"
    );
    assert!(libvirt_packets >= 30.0, "the pings did not leave the guest");
    assert!(
        (ebpf_packets / libvirt_packets - 1.0).abs() <= 0.05
            && (ebpf_bytes / libvirt_bytes - 1.0).abs() <= 0.05,
        "tap traffic: eBPF {ebpf_packets} packets {ebpf_bytes} B, libvirt {libvirt_packets} \
         packets {libvirt_bytes} B"
    );
    assert!(
        row[6].expect("a count") >= 1.0,
        "no CPU-ready figure from the vCPU thread"
    );

    io_figures_are_libvirts(&conn, &guest, &window);
    ebpf_figures_are_libvirts(&conn, &guest, &window, pinged, 1000);
}

/// (requests sent, replies received) from the guest's `ping-done RECEIVED/SENT` marker.
fn ping_counts(marker: &str) -> (u32, u32) {
    let parsed = marker.split_once('/').and_then(|(received, sent)| {
        Some((sent.trim().parse().ok()?, received.trim().parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("ping-done {marker:?}"))
}

/// Ethernet framing the counters leave out (DESIGN.md, equation 6): 20 B per packet.
const FRAMING_BYTES: f64 = 20.0;

/// The stored rows stamped after `from` up to `to`, and libvirt's counters (`virsh domstats`)
/// read just before and just after the samples of those two ticks. Whatever a counter did
/// over the rows lies between (end.0 - start.1) and (end.1 - start.0): a strict range,
/// whatever the guest or its neighbours on the bridge do at the window's edges.
struct Window {
    from: String,
    to: String,
    start: (BTreeMap<String, u64>, BTreeMap<String, u64>),
    end: (BTreeMap<String, u64>, BTreeMap<String, u64>),
}

impl Window {
    /// The range of libvirt's counter `key` over the window; panics when a read lacks it.
    fn counted(&self, key: &str) -> (f64, f64) {
        let get = |m: &BTreeMap<String, u64>| {
            *m.get(key).unwrap_or_else(|| panic!("domstats lacks {key}"))
        };
        let (s0, s1) = (get(&self.start.0), get(&self.start.1));
        let (e0, e1) = (get(&self.end.0), get(&self.end.1));
        assert!(
            s0 <= s1 && s1 <= e0 && e0 <= e1,
            "{key} not monotonic: {s0} {s1} {e0} {e1}"
        );
        ((e0 - s1) as f64, (e1 - s0) as f64)
    }
}

/// Now, in Unix seconds.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A stored time (RFC 3339) in Unix seconds.
fn unix_of(t: &str) -> f64 {
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    parsed.unix_timestamp_nanos() as f64 / 1e9
}

/// The value of a counter read at `(instant, value)` points, linearly between the two readings
/// around `t`; panics when `t` is outside the readings.
fn interpolate(readings: &[(f64, f64)], t: f64) -> f64 {
    let after = readings
        .iter()
        .position(|&(at, _)| at >= t)
        .unwrap_or_else(|| panic!("no reading after {t}"));
    assert!(after > 0, "no reading before {t}");
    let ((t0, v0), (t1, v1)) = (readings[after - 1], readings[after]);
    v0 + (v1 - v0) * (t - t0) / (t1 - t0)
}

/// Waits until the monitor has stored a row of `uuid` stamped after now (so sampled after
/// the call) and returns that row's time.
fn tick_after(db: &Path, uuid: &str) -> String {
    let now = setmov::store::format_time(time::OffsetDateTime::now_utc());
    let mut found = None;
    setmov_tests::wait_until("a row stamped after now", || {
        let conn = rusqlite::Connection::open(db).expect("db");
        found = conn
            .query_row(
                "SELECT MIN(time) FROM vm_usage WHERE uuid = ?1 AND time > ?2",
                [uuid, now.as_str()],
                |r| r.get(0),
            )
            // Until the monitor has made its tables, there is no row to find.
            .unwrap_or(None);
        found.is_some()
    });
    found.expect("a row")
}

/// Every I/O figure of T4 (vm_usage) and of its per-device tables (vm_disk_usage for `vda`,
/// vm_nic_usage for the guest's tap) over the `window`, against libvirt's own counters read by
/// `virsh domstats` around the window's first and last tick. The rates are accumulated as
/// Σ rate × interval_s, which must lie in libvirt's range for the window (the slack is float
/// rounding only). Per-tick figures are compared as the window's weighted integral:
/// Σ avg_pkt_bits × pps × Δt is the bits of the window's packets with their framing
/// (equation 6), Σ bps × Δt the same (equation 7), Σ latency × iops × Δt the time of its
/// requests (libvirt's rd/wr.times, ns).
fn io_figures_are_libvirts(conn: &rusqlite::Connection, guest: &Guest, window: &Window) {
    let d = |key: &str| window.counted(key);
    let tap = guest.tap_device().expect("the guest's tap device");
    let rate = |c: &str| format!("u.interval_s * {c}");
    // The bits of a tick's packets: avg × pps × Δt, defined when there were packets (NULL, and
    // so a failed check, when a tick with packets lacks its average).
    let bits = |avg: &str, pps: &str| {
        format!("CASE WHEN {pps} > 0 THEN u.interval_s * {avg} * {pps} WHEN {pps} = 0 THEN 0 END")
    };
    // libvirt's bits on the wire for a direction: 8 × (bytes + 20 B per packet).
    let wire_bits = |dir: &str| {
        let (p, b) = (
            d(&format!("net.0.{dir}.pkts")),
            d(&format!("net.0.{dir}.bytes")),
        );
        (
            8.0 * (b.0 + FRAMING_BYTES * p.0),
            8.0 * (b.1 + FRAMING_BYTES * p.1),
        )
    };
    const SLACK: f64 = 0.01;
    let mut checks = Checks::default();
    let disk = |checks: &mut Checks, table: &str, ours: &[f64]| {
        for (k, key) in ["rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs"]
            .iter()
            .enumerate()
        {
            checks.within(
                &format!("{table} {key}"),
                ours[k],
                d(&format!("block.0.{key}")),
                SLACK,
            );
        }
    };
    let net = |checks: &mut Checks, table: &str, ours: &[f64]| {
        for (i, dir) in ["rx", "tx"].iter().enumerate() {
            checks.within(
                &format!("{table} {dir} packets"),
                ours[i],
                d(&format!("net.0.{dir}.pkts")),
                SLACK,
            );
            checks.within(
                &format!("{table} {dir} bytes"),
                ours[2 + i],
                d(&format!("net.0.{dir}.bytes")),
                SLACK,
            );
            checks.within(
                &format!("{table} {dir} bits (Σ bps × Δt)"),
                ours[4 + i],
                wire_bits(dir),
                SLACK,
            );
            checks.within(
                &format!("{table} {dir} bits (Σ avg_pkt_bits × pps × Δt)"),
                ours[6 + i],
                wire_bits(dir),
                SLACK,
            );
        }
    };

    eprintln!(
        "vm_usage against libvirt from {} to {}:",
        window.from, window.to
    );
    let t4 = window_sums(
        conn,
        "vm_usage u",
        &[
            rate("disk_read_bytes_s"),
            rate("disk_write_bytes_s"),
            rate("disk_read_iops"),
            rate("disk_write_iops"),
            rate("net_rx_pps"),
            rate("net_tx_pps"),
            rate("net_rx_bytes_s"),
            rate("net_tx_bytes_s"),
            rate("net_rx_bps"),
            rate("net_tx_bps"),
            bits("net_rx_avg_pkt_bits", "net_rx_pps"),
            bits("net_tx_avg_pkt_bits", "net_tx_pps"),
        ],
        guest.uuid(),
        window,
        10,
    );
    disk(&mut checks, "vm_usage", &t4[..4]);
    net(&mut checks, "vm_usage", &t4[4..]);

    eprintln!("vm_disk_usage (vda) against libvirt:");
    let disks = window_sums(
        conn,
        "vm_usage u LEFT JOIN vm_disk_usage x \
         ON x.time = u.time AND x.uuid = u.uuid AND x.device = 'vda'",
        &[
            rate("x.read_bytes_s"),
            rate("x.write_bytes_s"),
            rate("x.read_iops"),
            rate("x.write_iops"),
            // The time of the tick's requests, ns (libvirt: rd/wr.times).
            "CASE WHEN x.read_iops > 0 THEN u.interval_s * x.read_iops * x.read_latency_ms * 1e6 \
             WHEN x.read_iops = 0 THEN 0 END"
                .to_owned(),
            "CASE WHEN x.write_iops > 0 THEN u.interval_s * x.write_iops * x.write_latency_ms * 1e6 \
             WHEN x.write_iops = 0 THEN 0 END"
                .to_owned(),
        ],
        guest.uuid(),
        window,
        10,
    );
    disk(&mut checks, "vm_disk_usage", &disks[..4]);
    for (i, dir) in ["rd", "wr"].iter().enumerate() {
        // Float rounding of a product of three stored figures: 1 ns per request.
        let (ns, reqs) = (disks[4 + i], disks[2 + i]);
        checks.within(
            &format!("vm_disk_usage {dir} request time ns (Σ latency × iops × Δt)"),
            ns,
            d(&format!("block.0.{dir}.times")),
            reqs,
        );
        eprintln!(
            "    mean {dir} latency {:.3} ms over {reqs:.0} requests",
            ns / reqs / 1e6
        );
    }

    eprintln!("vm_nic_usage ({tap}) against libvirt:");
    let nic_from = format!(
        "vm_usage u LEFT JOIN vm_nic_usage x \
         ON x.time = u.time AND x.uuid = u.uuid AND x.iface = '{tap}'"
    );
    let nics = window_sums(
        conn,
        &nic_from,
        &[
            rate("x.rx_pps"),
            rate("x.tx_pps"),
            rate("x.rx_bytes_s"),
            rate("x.tx_bytes_s"),
            rate("x.rx_bps"),
            rate("x.tx_bps"),
            bits("x.rx_avg_pkt_bits", "x.rx_pps"),
            bits("x.tx_avg_pkt_bits", "x.tx_pps"),
            // Counts of the interval, not rates.
            "x.rx_errs".to_owned(),
            "x.rx_drop".to_owned(),
            "x.tx_errs".to_owned(),
            "x.tx_drop".to_owned(),
        ],
        guest.uuid(),
        window,
        10,
    );
    net(&mut checks, "vm_nic_usage", &nics[..8]);
    for (i, key) in ["rx.errs", "rx.drop", "tx.errs", "tx.drop"]
        .iter()
        .enumerate()
    {
        checks.within(
            &format!("vm_nic_usage {key}"),
            nics[8 + i],
            d(&format!("net.0.{key}")),
            0.0,
        );
    }
    // A tick without packets has no average, never a 0 that reads as tiny packets.
    let averages_of_nothing: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1 AND \
             ((net_rx_pps = 0 AND net_rx_avg_pkt_bits IS NOT NULL) \
              OR (net_tx_pps = 0 AND net_tx_avg_pkt_bits IS NOT NULL))",
            [guest.uuid()],
            |r| r.get(0),
        )
        .expect("averages");
    checks.that(
        &format!("no average packet size on a tick without packets ({averages_of_nothing} found)"),
        averages_of_nothing == 0,
    );
    checks.finish();
}

/// For each of the first `mib` MiB of `file`, the number of physically contiguous pieces of
/// the host's file system it lies in (from `filefrag -v`, in the file system's blocks).
fn contiguous_pieces_per_mib(file: &Path, mib: u64) -> Vec<u32> {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(file)
        .output()
        .expect("filefrag");
    assert!(out.status.success(), "filefrag {}", file.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let block: u64 = text
        .split_once("blocks of ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no block size in {text}"));
    // (first logical block, first physical block, length) of each extent.
    let extents: Vec<(u64, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').map(str::trim).collect();
            let logical = f.get(1)?.split("..").next()?.trim().parse().ok()?;
            let physical = f.get(2)?.split("..").next()?.trim().parse().ok()?;
            let length = f.get(3)?.parse().ok()?;
            Some((logical, physical, length))
        })
        .collect();
    let per_mib = 1_048_576 / block;
    (0..mib)
        .map(|m| {
            let (start, end) = (m * per_mib, (m + 1) * per_mib);
            let mut pieces = 0;
            let mut next_physical = None;
            for &(logical, physical, length) in &extents {
                if logical + length <= start || logical >= end {
                    continue;
                }
                let first = physical + start.saturating_sub(logical);
                if next_physical != Some(first) {
                    pieces += 1;
                }
                next_physical = Some(physical + length);
            }
            assert!(
                pieces > 0,
                "MiB {m} of {} is not allocated: {text}",
                file.display()
            );
            pieces
        })
        .collect()
}

/// The largest request (KiB) the block device holding `file` takes (`queue/max_sectors_kb`).
fn max_sectors_kb(file: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .dev();
    // Linux's dev_t encoding (glibc's gnu_dev_major/minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    // A partition's queue is its disk's, one level up.
    let queue = [
        format!("/sys/dev/block/{major}:{minor}/queue/max_sectors_kb"),
        format!("/sys/dev/block/{major}:{minor}/../queue/max_sectors_kb"),
    ];
    queue
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request size limit for {major}:{minor}: {queue:?}"))
}

/// The plain I/O figures of vm_ebpf_usage and the packet sizes of vm_nic_packet_sizes over
/// the `window`, against libvirt's counters (`virsh domstats` around its first and last tick)
/// and the pings the guest sent (`pinged`: requests sent, replies received, of `ping_size`
/// data bytes). Sums are exact (slack 0.01 for float rounding).
fn ebpf_figures_are_libvirts(
    conn: &rusqlite::Connection,
    guest: &Guest,
    window: &Window,
    pinged: (u32, u32),
    ping_size: u32,
) {
    let d = |key: &str| window.counted(key);
    let scaled = |(lo, hi): (f64, f64), k: f64| (lo * k, hi * k);
    let mut checks = Checks::default();
    let sums: Vec<Option<f64>> = conn
        .query_row(
            "SELECT SUM(interval_s * block_read_iops), SUM(interval_s * block_write_iops),
                    SUM(interval_s * net_rx_pps), SUM(interval_s * net_rx_bytes_s),
                    SUM(interval_s * net_tx_pps), COUNT(*), COUNT(block_read_iops),
                    COUNT(block_write_iops), COUNT(net_rx_pps), COUNT(net_tx_pps)
             FROM vm_ebpf_usage WHERE uuid = ?1 AND time > ?2 AND time <= ?3",
            [guest.uuid(), &window.from, &window.to],
            |r| (0..10).map(|i| r.get(i)).collect(),
        )
        .expect("eBPF sums");
    let rows = sums[5].expect("a count");
    eprintln!("vm_ebpf_usage against libvirt over {rows} rows:");
    checks.that(
        &format!(
            "every eBPF row has its block and net figures: {:?}",
            &sums[5..]
        ),
        sums[6..].iter().all(|n| *n == Some(rows)) && rows >= 10.0,
    );
    let sum = |i: usize| sums[i].expect("a sum over rows");
    // qemu's requests against the host's block requests its threads submitted. The test
    // guests' disk is a raw image with cache='none': qemu reads and writes it with O_DIRECT,
    // so each guest request of 1 MiB (libvirt counts 1 per dd block, from offset 0) becomes
    // one host request per physically contiguous piece of the image file it covers (ext4
    // maps each piece with a bio of its own; one that continues the previous piece on disk is
    // merged into its request), each split again by the host device's request size limit.
    // Measured: 32 host requests for 32 qemu requests each way when the image's first 32 MiB
    // were one extent, 33 when an extent boundary fell inside a block.
    let limit = max_sectors_kb(guest.disk());
    let pieces = contiguous_pieces_per_mib(guest.disk(), 32);
    let per_block: Vec<u32> = pieces.iter().map(|p| p * 1024u32.div_ceil(limit)).collect();
    let expected = f64::from(per_block.iter().sum::<u32>());
    let split = expected / 32.0;
    let (rd_reqs, wr_reqs) = (d("block.0.rd.reqs"), d("block.0.wr.reqs"));
    eprintln!(
        "  block requests: eBPF {:.2} read, {:.2} write; libvirt {rd_reqs:?} read, \
         {wr_reqs:?} write; {expected} host requests for the 32 MiB (pieces per MiB \
         {pieces:?}, device limit {limit} KiB)",
        sum(0),
        sum(1)
    );
    checks.within("eBPF read requests", sum(0), scaled(rd_reqs, split), 0.01);
    checks.within("eBPF write requests", sum(1), scaled(wr_reqs, split), 0.01);
    // The guest's receive is the host's transmit on the tap, Ethernet header included.
    checks.within("eBPF rx packets", sum(2), d("net.0.rx.pkts"), 0.01);
    checks.within("eBPF rx bytes", sum(3), d("net.0.rx.bytes"), 0.01);

    // Packet sizes: log2 buckets of the tracepoint's length, the host receive's without its
    // 14 B Ethernet header (setmov-common's NetDeviceValue).
    let mut stmt = conn
        .prepare(
            "SELECT direction, bucket, SUM(packets) FROM vm_nic_packet_sizes
             WHERE uuid = ?1 AND time > ?2 AND time <= ?3
             GROUP BY direction, bucket ORDER BY direction, bucket",
        )
        .expect("sql");
    let sizes: Vec<(String, i64, f64)> = stmt
        .query_map([guest.uuid(), &window.from, &window.to], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("sizes")
        .collect::<Result<_, _>>()
        .expect("rows");
    eprintln!("vm_nic_packet_sizes (direction, bucket, packets): {sizes:?}");
    let frame = ping_size + 8 + 20 + 14;
    for (i, dir) in ["rx", "tx"].iter().enumerate() {
        let in_dir = sizes.iter().filter(|s| s.0 == *dir);
        let total: f64 = in_dir.clone().map(|s| s.2).sum();
        // The histogram counts the packets the rates count ...
        checks.near(
            &format!("{dir} histogram packets, Σ eBPF pps × Δt"),
            total,
            sum(2 + 2 * i),
            0.01,
        );
        // ... which are libvirt's.
        checks.within(
            &format!("{dir} histogram packets, libvirt"),
            total,
            d(&format!("net.0.{dir}.pkts")),
            0.01,
        );
        // Echo replies the guest receives are host transmits (header included), its requests
        // host receives (header pulled): only they are 1 KiB or more.
        let len = if *dir == "rx" { frame } else { frame - 14 };
        let bucket = i64::from(len.ilog2());
        let pings = f64::from(if *dir == "rx" { pinged.1 } else { pinged.0 });
        let in_bucket: f64 = in_dir.clone().filter(|s| s.1 == bucket).map(|s| s.2).sum();
        checks.near(
            &format!("{dir} packets of {len} B in bucket {bucket}"),
            in_bucket,
            pings,
            0.0,
        );
    }
    checks.finish();
}

#[test]
fn pings_of_known_count_and_size_are_the_nic_figures() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = monitor(&db, "500ms");
    const PINGS: f64 = 60.0;
    const DATA: u32 = 1000;
    let Some(guest) = start(
        "ping",
        &Workload {
            delay_secs: 4,
            ping_count: PINGS as u32,
            ping_size: DATA,
            ..Workload::default()
        },
    ) else {
        let _ = m.stop();
        return;
    };
    guest.wait_for("SETMOV: ping-done", BOOT).expect("pings");
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = m.stop();

    // An echo request on the wire: data + 8 ICMP + 20 IPv4 + 14 Ethernet header bytes.
    let frame = f64::from(DATA + 8 + 20 + 14);
    let packets = integral(&db, "net_tx_pps", guest.uuid());
    let bytes = integral(&db, "net_tx_bytes_s", guest.uuid());
    let rx_packets = integral(&db, "net_rx_pps", guest.uuid());
    eprintln!(
        "{PINGS} pings of {DATA} B: tx {packets:.1} packets {bytes:.0} B, rx {rx_packets:.1} packets"
    );
    // ARP adds a packet or two of 42 bytes each way.
    assert!(
        (packets / PINGS - 1.0).abs() <= 0.05,
        "tx packets {packets}"
    );
    assert!(
        (bytes / (PINGS * frame) - 1.0).abs() <= 0.05,
        "tx bytes {bytes}"
    );
    // Every echo came back; the guest also receives ARP, broadcasts from other guests too.
    assert!(rx_packets >= PINGS, "rx packets {rx_packets}");
    // Equation (6) over the run: the frame plus 20 B of Ethernet framing (the ARP frames
    // pull it down a little).
    let bits = (bytes / packets + 20.0) * 8.0;
    assert!(
        (bits / ((frame + 20.0) * 8.0) - 1.0).abs() <= 0.05,
        "{bits} bits"
    );
}

/// `virsh dommemstat NAME` as field → KiB.
fn dommemstat(name: &str) -> BTreeMap<String, u64> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "dommemstat", name])
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn memory_figures_match_virsh_dommemstat() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(guest) = start("mem", &Workload::default()) else {
        return;
    };
    guest.wait_for("SETMOV: ready", BOOT).expect("boot");
    // The balloon driver reports every 2 s.
    std::thread::sleep(Duration::from_secs(3));
    let mut collector = LibvirtCollector::new("qemu:///system", "/run/libvirt/qemu");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot = collector.sample().expect("libvirt");
        let virsh = dommemstat(guest.name());
        let domain = snapshot
            .domains
            .iter()
            .find(|d| d.uuid == guest.uuid())
            .expect("the guest");
        let ours = vm_mem_usage(None, &domain.stats.balloon, 0.0);
        let kib = |v: Option<u64>| v.map(|b| b / 1024);
        let pairs = [
            ("actual", kib(ours.allocated_bytes)),
            ("unused", kib(ours.unused_bytes)),
            ("available", kib(ours.available_bytes)),
            ("usable", kib(ours.usable_bytes)),
        ];
        let same = pairs.iter().all(|(k, v)| virsh.get(*k).copied() == *v);
        // The guest's report may change between the two reads; then read both again.
        if !same && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        eprintln!(
            "ours {pairs:?} rss {:?}; virsh {virsh:?}",
            kib(ours.rss_bytes)
        );
        assert!(same, "{pairs:?} vs {virsh:?}");
        let rss = kib(ours.rss_bytes).expect("rss") as f64;
        let virsh_rss = virsh["rss"] as f64;
        assert!(
            (rss / virsh_rss - 1.0).abs() <= 0.02,
            "rss {rss} vs {virsh_rss}"
        );
        break;
    }
}

/// Median of the stored `mem_used_bytes` of `uuid` over ticks stamped in [`from`, `to`).
fn median_used(db: &Path, uuid: &str, from: &str, to: &str) -> (f64, usize) {
    let rows = query::<f64>(
        db,
        &format!(
            "SELECT mem_used_bytes FROM vm_usage WHERE uuid = ?1 AND time >= '{from}'
             AND time < '{to}' AND mem_used_bytes IS NOT NULL ORDER BY mem_used_bytes"
        ),
        uuid,
    );
    let used: Vec<f64> = rows.iter().filter_map(|r| r[0]).collect();
    assert!(
        used.len() >= 3,
        "too few ticks from {from} to {to}: {used:?}"
    );
    (used[used.len() / 2], used.len())
}

/// `virsh -c qemu:///system ARGS`'s output; panics when it fails.
fn virsh_output(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("virsh");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One reading of the test's references: `virsh dommemstat` (KiB) and the qemu process's
/// VmRSS (KiB), taken between the instants `from` and `to` (stored-time syntax).
struct MemPoll {
    from: String,
    to: String,
    stat: BTreeMap<String, u64>,
    vm_rss_kib: u64,
}

/// Reads the references every 200 ms in a thread, from `start` to `stop`.
struct MemPoller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<MemPoll>>,
}

impl MemPoller {
    fn start(guest: &Guest) -> MemPoller {
        let (name, pid) = (guest.name().to_owned(), guest.qemu_pid().expect("qemu pid"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let now = || setmov::store::format_time(time::OffsetDateTime::now_utc());
            let mut polls = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let from = now();
                let stat = dommemstat(&name);
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .expect("the qemu process's status");
                let vm_rss_kib = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .expect("VmRSS");
                polls.push(MemPoll {
                    from,
                    to: now(),
                    stat,
                    vm_rss_kib,
                });
                std::thread::sleep(Duration::from_millis(200));
            }
            polls
        });
        MemPoller { stop, thread }
    }

    fn stop(self) -> Vec<MemPoll> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("poller")
    }
}

/// `t` (stored-time syntax) moved by `secs`.
fn shifted(t: &str, secs: f64) -> String {
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    setmov::store::format_time(parsed + time::Duration::seconds_f64(secs))
}

fn seconds_between(a: &str, b: &str) -> f64 {
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
    };
    (parse(b) - parse(a)).as_seconds_f64()
}

/// The memory and identity figures of a guest's stored T4 rows against libvirt. Levels are
/// compared tick by tick with the references read around the tick: libvirt samples at most a
/// few hundred ms after the tick's time, so the readings taken from 0.5 s before to 1 s after
/// it bracket that instant. The guest's balloon figures change only with its report (every
/// 2 s), so a stored one must be exactly one of the values dommemstat showed in that window;
/// the host-side RSS moves continuously, so it must lie within the range read there (± 1 MiB
/// for what moves between the readings' instants). Counters the guest reports (swap, faults)
/// are compared as Σ rate × interval_s between two ticks at which dommemstat's value was
/// steady, against its difference. Fixed figures (pid, vCPUs, maximum memory, state) are
/// compared on every row.
fn memory_and_identity_are_libvirts(db: &Path, guest: &Guest, polls: &[MemPoll]) {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut checks = Checks::default();
    let kib = |v: u64| v as f64 * 1024.0;
    let pid = f64::from(guest.qemu_pid().expect("qemu pid"));
    let vcpus: f64 = virsh_output(&["vcpucount", guest.name(), "--live", "--active"])
        .trim()
        .parse()
        .expect("vcpucount");
    let state = virsh_output(&["domstate", guest.name()]).trim().to_owned();
    let max_kib: u64 = virsh_output(&["dominfo", guest.name()])
        .lines()
        .find_map(|l| l.strip_prefix("Max memory:"))
        .and_then(|v| v.trim().trim_end_matches("KiB").trim().parse().ok())
        .expect("dominfo's Max memory");
    eprintln!(
        "references: pid {pid}, vCPUs {vcpus}, state {state}, max memory {max_kib} KiB, \
         {} dommemstat readings, the first {:?}",
        polls.len(),
        polls.first().map(|p| &p.stat)
    );

    const NUMBERS: [&str; 17] = [
        "interval_s",
        "qemu_pid",
        "vcpus",
        "mem_alloc_bytes",
        "mem_max_bytes",
        "mem_used_bytes",
        "mem_used_pct",
        "mem_unused_bytes",
        "mem_usable_bytes",
        "mem_available_bytes",
        "rss_bytes",
        "swap_in_bytes_s",
        "swap_out_bytes_s",
        "major_faults_s",
        "minor_faults_s",
        "(SELECT h.interval_s FROM host_usage h WHERE h.time = vm_usage.time)",
        "missing IS NULL",
    ];
    let mut stmt = conn
        .prepare(&format!(
            "SELECT time, state, mem_source, {} FROM vm_usage WHERE uuid = ?1 ORDER BY time",
            NUMBERS.join(", ")
        ))
        .expect("sql");
    type Row = (String, String, Option<String>, Vec<Option<f64>>);
    let rows: Vec<Row> = stmt
        .query_map([guest.uuid()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                (0..NUMBERS.len())
                    .map(|i| r.get(3 + i))
                    .collect::<Result<_, _>>()?,
            ))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let col = |name: &str| NUMBERS.iter().position(|n| *n == name).expect(name);
    let sampled: Vec<&Row> = rows.iter().filter(|r| r.3[16] == Some(1.0)).collect();
    eprintln!("{} rows, {} sampled", rows.len(), sampled.len());
    assert!(sampled.len() >= 20, "{} sampled rows", sampled.len());
    let figure = |row: &Row, name: &str| -> f64 {
        row.3[col(name)].unwrap_or_else(|| panic!("{name} missing at {}", row.0))
    };

    // Fixed figures, on every sampled row.
    let (mut pids, mut cpus, mut maxes, mut states) = (0, 0, 0, 0);
    for row in &sampled {
        pids += usize::from(figure(row, "qemu_pid") == pid);
        cpus += usize::from(figure(row, "vcpus") == vcpus);
        maxes += usize::from(figure(row, "mem_max_bytes") == kib(max_kib));
        states += usize::from(row.1 == state);
    }
    let n = sampled.len();
    checks.that(
        &format!("qemu_pid is libvirt's pid file's {pid} on {pids}/{n} rows"),
        pids == n,
    );
    checks.that(
        &format!("vcpus is vcpucount's {vcpus} on {cpus}/{n} rows"),
        cpus == n,
    );
    checks.that(
        &format!("mem_max_bytes is dominfo's {max_kib} KiB on {maxes}/{n} rows"),
        maxes == n,
    );
    checks.that(
        &format!("state is domstate's {state} on {states}/{n} rows"),
        states == n,
    );

    // interval_s: the time between this VM's samples, against the stored times and the host's
    // interval of the same tick, both within 0.25 s (a quarter of the 1 s tick: libvirt's
    // answer may come that much later than one tick and not the next).
    let mut intervals = Vec::new();
    for pair in rows.windows(2) {
        let (prev, row) = (&pair[0], &pair[1]);
        if prev.3[16] != Some(1.0) || row.3[16] != Some(1.0) {
            continue;
        }
        let stamped = seconds_between(&prev.0, &row.0);
        let host = figure(
            row,
            "(SELECT h.interval_s FROM host_usage h WHERE h.time = vm_usage.time)",
        );
        intervals.push((figure(row, "interval_s"), stamped, host));
    }
    eprintln!("(interval_s, Δ stored time, host interval_s): {intervals:.3?}");
    checks.that(
        &format!("{} consecutive sampled rows", intervals.len()),
        intervals.len() >= 20,
    );
    let worst = intervals
        .iter()
        .map(|(vm, stamped, host)| (vm - stamped).abs().max((vm - host).abs()))
        .fold(0.0, f64::max);
    checks.that(
        &format!(
            "interval_s within 0.25 s of the stored times' difference and the host's \
             interval on every row (worst {worst:.3} s)"
        ),
        worst <= 0.25,
    );
    let (vm_total, stamped_total): (f64, f64) = intervals
        .iter()
        .fold((0.0, 0.0), |(a, b), i| (a + i.0, b + i.1));
    checks.near(
        "Σ interval_s against the stored times' span",
        vm_total,
        stamped_total,
        0.25,
    );

    // Levels against the dommemstat readings around each tick.
    let around = |row: &Row| -> Vec<&MemPoll> {
        let (from, to) = (shifted(&row.0, -0.5), shifted(&row.0, 1.0));
        polls
            .iter()
            .filter(|p| p.from >= from && p.to <= to)
            .collect()
    };
    let mut compared = 0;
    for row in sampled.iter().filter(|r| r.3[0].is_some()) {
        let near = around(row);
        if near.len() < 2 {
            continue;
        }
        compared += 1;
        let field = |poll: &MemPoll, key: &str| poll.stat.get(key).copied();
        for (column, key) in [
            ("mem_alloc_bytes", "actual"),
            ("mem_unused_bytes", "unused"),
            ("mem_usable_bytes", "usable"),
            ("mem_available_bytes", "available"),
        ] {
            let seen: Vec<Option<u64>> = near.iter().map(|p| field(p, key)).collect();
            let ours = row.3[col(column)];
            let ok = seen.iter().any(|v| v.map(kib) == ours);
            if !ok {
                checks.that(
                    &format!(
                        "{column} {ours:?} at {} among dommemstat's {key} {seen:?}",
                        row.0
                    ),
                    false,
                );
            }
        }
        // Used and its percentage: one reading's actual − usable, ÷ actual.
        let used = row.3[col("mem_used_bytes")];
        let pct = row.3[col("mem_used_pct")];
        let matched = near.iter().any(|p| {
            let (Some(actual), Some(usable)) = (field(p, "actual"), field(p, "usable")) else {
                return used.is_none() && pct.is_none();
            };
            let reference = 100.0 * (actual - usable) as f64 / actual as f64;
            used == Some(kib(actual - usable))
                && pct.is_some_and(|pct| (pct - reference).abs() <= 1e-6)
        });
        if !matched {
            checks.that(
                &format!(
                    "mem_used {used:?} B, {pct:?} % at {} from one dommemstat reading",
                    row.0
                ),
                false,
            );
        }
        // The source: which fields the guest reports.
        let sources: Vec<&str> = near
            .iter()
            .map(|p| match (field(p, "usable"), field(p, "unused")) {
                (Some(_), _) => "balloon-usable",
                (None, Some(_)) => "balloon-unused",
                (None, None) => "allocation-only",
            })
            .collect();
        if sources.iter().all(|s| *s == sources[0]) && row.2.as_deref() != Some(sources[0]) {
            checks.that(
                &format!(
                    "mem_source {:?} at {}, dommemstat says {}",
                    row.2, row.0, sources[0]
                ),
                false,
            );
        }
        eprintln!(
            "  {}: stored alloc {:?} unused {:?} usable {:?} available {:?} used {pct:.2?} % \
             rss {:?} KiB; dommemstat unused {:?} usable {:?}, VmRSS {:?}",
            row.0,
            row.3[col("mem_alloc_bytes")].map(|b| b / 1024.0),
            row.3[col("mem_unused_bytes")].map(|b| b / 1024.0),
            row.3[col("mem_usable_bytes")].map(|b| b / 1024.0),
            row.3[col("mem_available_bytes")].map(|b| b / 1024.0),
            row.3[col("rss_bytes")].map(|b| b / 1024.0),
            near.iter().map(|p| field(p, "unused")).collect::<Vec<_>>(),
            near.iter().map(|p| field(p, "usable")).collect::<Vec<_>>(),
            near.iter().map(|p| p.vm_rss_kib).collect::<Vec<_>>(),
        );
        // RSS: within what the test read around the tick.
        let rss = figure(row, "rss_bytes");
        let read: Vec<f64> = near
            .iter()
            .flat_map(|p| [Some(p.vm_rss_kib), field(p, "rss")])
            .map(|v| kib(v.expect("dommemstat's rss")))
            .collect();
        let (lo, hi) = read
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if !(lo - MIB..=hi + MIB).contains(&rss) {
            checks.that(
                &format!(
                    "rss {rss} at {} outside VmRSS/dommemstat's {lo}..{hi}",
                    row.0
                ),
                false,
            );
        }
    }
    checks.that(
        &format!("memory levels of {compared} ticks compared with their readings"),
        compared >= 20,
    );

    // Counters the guest reports: swap in/out (KiB) and faults, as rates.
    for (column, key, scale) in [
        ("swap_in_bytes_s", "swap_in", 1024.0),
        ("swap_out_bytes_s", "swap_out", 1024.0),
        ("major_faults_s", "major_fault", 1.0),
        ("minor_faults_s", "minor_fault", 1.0),
    ] {
        let reported = polls.iter().any(|p| p.stat.contains_key(key));
        if !reported {
            let stored = sampled
                .iter()
                .filter(|r| r.3[col(column)].is_some())
                .count();
            checks.that(
                &format!("the guest reports no {key}: {column} stored on {stored} rows (none)"),
                stored == 0,
            );
            continue;
        }
        // Ticks at which the readings around agree: the counter's value there is known.
        let steady: Vec<(usize, u64)> = sampled
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let values: Vec<Option<u64>> = around(row)
                    .iter()
                    .map(|p| p.stat.get(key).copied())
                    .collect();
                let first = *values.first()?;
                (values.len() >= 2 && values.iter().all(|v| *v == first)).then_some((i, first?))
            })
            .collect();
        let (Some(&(a, at_a)), Some(&(b, at_b))) = (steady.first(), steady.last()) else {
            checks.that(&format!("{key}: no tick with steady readings"), false);
            continue;
        };
        let ours: f64 = sampled[a + 1..=b]
            .iter()
            .map(|r| figure(r, "interval_s") * figure(r, column) / scale)
            .sum();
        checks.near(
            &format!(
                "Σ {column} × interval_s from {} to {}",
                sampled[a].0, sampled[b].0
            ),
            ours,
            (at_b - at_a) as f64,
            0.01,
        );
    }
    checks.finish();
}

/// The stored "used" memory of a guest against what it really takes: the guest holds 32 MiB
/// more half-way through, and the figure rises by that, within 4 MiB (what the guest's own
/// kernel does meanwhile). Over the same run every memory and identity figure of its T4 rows
/// against libvirt (see `memory_and_identity_are_libvirts`).
#[test]
fn a_guest_that_takes_32_mib_more_shows_32_mib_more_used() {
    const TAKEN_MIB: f64 = 32.0;
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(guest) = start(
        "alloc",
        &Workload {
            delay_secs: 20,
            alloc_mb: TAKEN_MIB as u32,
            ..Workload::default()
        },
    ) else {
        return;
    };
    guest.wait_for("SETMOV: ready", BOOT).expect("boot");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = monitor(&db, "1s");
    let poller = MemPoller::start(&guest);
    // The balloon reports every 2 s: its first figures need a few seconds.
    std::thread::sleep(Duration::from_secs(6));
    let before_from = setmov::store::format_time(time::OffsetDateTime::now_utc());
    guest
        .wait_for("SETMOV: alloc-start", Duration::from_secs(60))
        .expect("alloc starts");
    let before_to = setmov::store::format_time(time::OffsetDateTime::now_utc());
    guest
        .wait_for("SETMOV: alloc-done", Duration::from_secs(60))
        .expect("alloc done");
    // Two balloon reports after it, then as long again.
    std::thread::sleep(Duration::from_secs(5));
    let after_from = setmov::store::format_time(time::OffsetDateTime::now_utc());
    std::thread::sleep(Duration::from_secs(8));
    let after_to = setmov::store::format_time(time::OffsetDateTime::now_utc());
    let _ = m.stop();
    let polls = poller.stop();
    memory_and_identity_are_libvirts(&db, &guest, &polls);

    let mib = 1_048_576.0;
    let (before, n_before) = median_used(&db, guest.uuid(), &before_from, &before_to);
    let (after, n_after) = median_used(&db, guest.uuid(), &after_from, &after_to);
    let grown = (after - before) / mib;
    eprintln!(
        "used {:.1} MiB over {n_before} ticks before, {:.1} MiB over {n_after} after: \
         {grown:.1} MiB more for {TAKEN_MIB} MiB taken",
        before / mib,
        after / mib
    );
    assert!(
        (grown - TAKEN_MIB).abs() <= 4.0,
        "used grew by {grown:.1} MiB for {TAKEN_MIB} MiB taken"
    );
}

fn virsh(args: &[&str]) {
    let status = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .status()
        .expect("virsh");
    assert!(status.success(), "virsh {args:?}");
}

#[test]
fn vm_churn_a_suspended_guest_and_a_libvirtd_restart_lose_no_tick() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(a) = start("churn-a", &Workload::default()) else {
        return;
    };
    let Some(b) = start("churn-b", &Workload::default()) else {
        return;
    };
    a.wait_for("SETMOV: ready", BOOT).expect("a boots");
    b.wait_for("SETMOV: ready", BOOT).expect("b boots");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let m = monitor(&db, "500ms");
    std::thread::sleep(Duration::from_secs(2));

    virsh(&["suspend", a.name()]);
    std::thread::sleep(Duration::from_secs(2));
    virsh(&["resume", a.name()]);
    let (b_uuid, b_name) = (b.uuid().to_owned(), b.name().to_owned());
    drop(b);
    let Some(c) = start("churn-c", &Workload::default()) else {
        return;
    };
    c.wait_for("SETMOV: ready", BOOT).expect("c boots");
    std::thread::sleep(Duration::from_secs(1));
    guests::restart_libvirtd().expect("libvirtd restarts");
    std::thread::sleep(Duration::from_secs(4));
    let log = m.stop();

    let conn = rusqlite::Connection::open(&db).expect("db");
    let count = |sql: &str, uuid: &str| -> i64 {
        conn.query_row(sql, [uuid], |r| r.get(0)).expect("count")
    };
    // Every tick wrote its host row, whatever the VMs and libvirtd did.
    let ticks: i64 = conn
        .query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0))
        .expect("ticks");
    assert!(
        log.contains(&format!(
            "stopped after {ticks} ticks: {ticks} written, 0 lost"
        )),
        "{log}"
    );
    let gaps: Vec<f64> = query::<f64>(
        &db,
        "SELECT interval_s FROM host_usage WHERE host_ip <> ?1 ORDER BY time",
        "",
    )
    .iter()
    .filter_map(|r| r[0])
    .collect();
    assert!(
        gaps.iter().all(|g| *g < 1.0),
        "a host tick was held up: {gaps:?}"
    );
    // a has a row on every tick: sampled, paused, or marked missing while libvirtd was away.
    assert_eq!(
        count("SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1", a.uuid()),
        ticks
    );
    let paused = query::<f64>(
        &db,
        "SELECT cpu_vcpu_pct FROM vm_usage WHERE uuid = ?1 AND state = 'paused'",
        a.uuid(),
    );
    // The first paused row's interval still holds running time; the later ones none.
    assert!(paused.len() >= 3, "suspension not seen: {paused:?}");
    assert!(
        paused[1..].iter().filter_map(|r| r[0]).all(|cpu| cpu < 5.0),
        "{paused:?}"
    );
    let missing = count(
        "SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1 AND missing IS NOT NULL",
        a.uuid(),
    );
    assert!(missing >= 1, "the libvirtd restart went unseen");
    // Sampling came back by itself for both running guests.
    for guest in [&a, &c] {
        let last: Vec<Vec<Option<String>>> = query(
            &db,
            "SELECT missing FROM vm_usage WHERE uuid = ?1 ORDER BY time DESC LIMIT 3",
            guest.uuid(),
        );
        assert!(
            last.iter().all(|r| r[0].is_none()),
            "{}: {last:?}",
            guest.name()
        );
    }
    // b is gone, with the last time it was seen running; no rate anywhere is absurd.
    let (state, lct): (String, Option<String>) = conn
        .query_row(
            "SELECT state, lct FROM vms WHERE uuid = ?1",
            [&b_uuid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("b's T3 row");
    assert_eq!(state, "gone", "{b_name}");
    assert!(lct.is_some());
    let (max_cpu, min_rate): (f64, f64) = conn
        .query_row(
            "SELECT MAX(cpu_vcpu_pct), MIN(MIN(COALESCE(disk_read_bytes_s, 0),
                 COALESCE(disk_write_bytes_s, 0), COALESCE(net_rx_bps, 0), COALESCE(net_tx_bps, 0)))
             FROM vm_usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("bounds");
    assert!(
        (0.0..150.0).contains(&max_cpu) && min_rate >= 0.0,
        "{max_cpu} {min_rate}"
    );
    let vmc: i64 = conn
        .query_row("SELECT vmc FROM hosts", [], |r| r.get(0))
        .expect("vmc");
    assert!(vmc >= 2, "VMC {vmc}");
}
