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
    std::thread::sleep(Duration::from_millis(5_500));
    let _ = m.stop();

    let cores = setmov_tests::host_cpus() as f64;
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
    guest.wait_for("SETMOV: ping-done", BOOT).expect("pings");
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = m.stop();

    let stats = guest.stats().expect("domstats");
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
    let (ebpf_written, ebpf_read) = (row[0].unwrap_or(0.0), row[1].unwrap_or(0.0));
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
    assert!(row[3].unwrap_or(0.0) >= 1.0, "no write latency recorded");

    // The guest's transmit through its tap, as libvirt counts it (pings and a few ARP frames).
    let (ebpf_packets, ebpf_bytes) = (row[4].unwrap_or(0.0), row[5].unwrap_or(0.0));
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
        row[6].unwrap_or(0.0) >= 1.0,
        "no CPU-ready figure from the vCPU thread"
    );
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

/// The stored "used" memory of a guest against what it really takes: the guest holds 32 MiB
/// more half-way through, and the figure rises by that, within 4 MiB (what the guest's own
/// kernel does meanwhile).
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
