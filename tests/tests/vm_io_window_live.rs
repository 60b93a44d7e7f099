//! Every I/O figure of a real TCG guest under a real libvirtd, with the eBPF probes on, over
//! one window of stored ticks against libvirt's own counters (`virsh domstats`) read around
//! its first and last tick: T4 (vm_usage), its per-device tables, vm_ebpf_usage and
//! vm_nic_packet_sizes. The guest writes, reads back and pings a known amount. The guest and
//! libvirtd are prepared by `cargo xtask guests up` (or `cargo xtask test`); without them this
//! test skips loudly (and fails under SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use setmov_tests::checks::Checks;
use setmov_tests::guests::{self, BOOT, Guest, Workload};
use setmov_tests::image_layout::{contiguous_pieces_per_mib, max_sectors_kb};
use setmov_tests::monitor::Monitor;
use setmov_tests::stored::{self, Span, window_sums};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
const MIB: f64 = 1_048_576.0;
/// Data bytes of each of the guest's pings.
const PING_SIZE: u32 = 1000;

/// The slack of the eBPF receive checks: frames the guest received that the probe may miss
/// (an open finding: one 70-byte frame in 1 CI run of 2), each a small control frame of at
/// most this many bytes.
const RX_FRAMES_SLACK: f64 = 2.0;
const SMALL_FRAME_BYTES: f64 = 128.0;

#[test]
fn a_guests_block_io_and_traffic_seen_by_ebpf_are_what_libvirt_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let Some(run) = run_the_workload(&db) else {
        return;
    };
    let conn = rusqlite::Connection::open(&db).expect("db");
    ebpf_totals_are_libvirts_since_the_guest_waited(&conn, &run);
    io_figures_are_libvirts(&conn, &run.guest, &run.window);
    ebpf_figures_are_libvirts(&conn, &run.guest, &run.window, run.pinged, PING_SIZE);
}

/// The guest (still running: its tap is looked up by the checks), the time the comparison
/// starts from, the window of ticks with libvirt's counters around it, and the pings.
struct IoRun {
    guest: Guest,
    /// When the guest had booted and was waiting, before its I/O.
    since: String,
    /// libvirt's counters around the window; `start.0` was read at `since`, `end.1` after the
    /// monitor stopped.
    window: Window,
    /// (requests sent, replies received).
    pinged: (u32, u32),
}

/// With eBPF this time: the qemu process's host-side I/O, credited to the VM. The monitor at
/// 500 ms sees the guest boot, wait, write and read back 32 MiB and send 30 pings of
/// [`PING_SIZE`] bytes. None when the guest cannot start (skipped).
fn run_the_workload(db: &Path) -> Option<IoRun> {
    let m = Monitor::start(SETMOV, db, &["--interval", "500ms"]);
    let Some(guest) = guests::start_or_skip(
        "ebpf-disk",
        &Workload {
            delay_secs: 4,
            write_mb: 32,
            read_mb: 32,
            ping_count: 30,
            ping_size: PING_SIZE,
            ..Workload::default()
        },
    ) else {
        let _ = m.stop();
        return None;
    };
    // qemu itself reads the kernel and initramfs at start; the comparison starts once the
    // guest has booted and waits, with libvirt's counters at that moment as the baseline.
    guest
        .wait_for("SETMOV: delay-start", BOOT)
        .expect("guest waits");
    let since = stored::now();
    let baseline = guest.stats().expect("domstats");
    // libvirt's counters read before and after the sample of a tick: the window's start.
    let from = stored::tick_after(db, guest.uuid());
    let after_from = guest.stats().expect("domstats");
    let pinged = ping_counts(&guest.wait_for("SETMOV: ping-done", BOOT).expect("pings"));
    std::thread::sleep(Duration::from_millis(1_500));
    // And around a later tick's: the window's end.
    let before_to = guest.stats().expect("domstats");
    let to = stored::tick_after(db, guest.uuid());
    let _ = m.stop();

    let stats = guest.stats().expect("domstats");
    let window = Window {
        span: Span { from, to },
        start: (baseline, after_from),
        end: (before_to, stats),
    };
    Some(IoRun {
        guest,
        since,
        window,
        pinged,
    })
}

/// (requests sent, replies received) from the guest's `ping-done RECEIVED/SENT` marker.
fn ping_counts(marker: &str) -> (u32, u32) {
    let parsed = marker.split_once('/').and_then(|(received, sent)| {
        Some((sent.trim().parse().ok()?, received.trim().parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("ping-done {marker:?}"))
}

/// The eBPF rows stored since the guest waited, summed, against libvirt's counters from then
/// to after the monitor stopped: block bytes each way within 2 %, a write latency recorded,
/// the tap's transmit within 5 %, and a CPU-ready figure from the vCPU thread.
fn ebpf_totals_are_libvirts_since_the_guest_waited(conn: &rusqlite::Connection, run: &IoRun) {
    let (guest, since) = (&run.guest, &run.since);
    let (baseline, stats) = (&run.window.start.0, &run.window.end.1);
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
}

/// Ethernet framing the counters leave out (DESIGN.md, equation 6): 20 B per packet.
const FRAMING_BYTES: f64 = 20.0;

/// The float rounding the sums of stored figures may carry against libvirt's counters.
const SLACK: f64 = 0.01;

/// The stored rows stamped after `span.from` up to `span.to`, and libvirt's counters (`virsh
/// domstats`) read just before and just after the samples of those two ticks. Whatever a
/// counter did over the rows lies between (end.0 - start.1) and (end.1 - start.0): a strict
/// range, whatever the guest or its neighbours on the bridge do at the window's edges.
struct Window {
    span: Span,
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

    /// libvirt's bits on the wire for a direction: 8 × (bytes + 20 B per packet).
    fn wire_bits(&self, dir: &str) -> (f64, f64) {
        let (p, b) = (
            self.counted(&format!("net.0.{dir}.pkts")),
            self.counted(&format!("net.0.{dir}.bytes")),
        );
        (
            8.0 * (b.0 + FRAMING_BYTES * p.0),
            8.0 * (b.1 + FRAMING_BYTES * p.1),
        )
    }
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
    let mut checks = Checks::default();
    vm_usage_io_is_libvirts(&mut checks, conn, guest, window);
    vm_disk_usage_is_libvirts(&mut checks, conn, guest, window);
    vm_nic_usage_is_libvirts(&mut checks, conn, guest, window);
    checks.finish();
}

/// A stored rate times its tick's interval.
fn rate(column: &str) -> String {
    format!("u.interval_s * {column}")
}

/// The bits of a tick's packets: avg × pps × Δt, defined when there were packets (NULL, and
/// so a failed check, when a tick with packets lacks its average).
fn bits(avg: &str, pps: &str) -> String {
    format!("CASE WHEN {pps} > 0 THEN u.interval_s * {avg} * {pps} WHEN {pps} = 0 THEN 0 END")
}

/// Disk sums of `table` (read bytes, write bytes, read requests, write requests) against
/// libvirt's counters.
fn disk_is_libvirts(checks: &mut Checks, window: &Window, table: &str, ours: &[f64]) {
    for (k, key) in ["rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs"]
        .iter()
        .enumerate()
    {
        checks.within(
            &format!("{table} {key}"),
            ours[k],
            window.counted(&format!("block.0.{key}")),
            SLACK,
        );
    }
}

/// NIC sums of `table` (packets, bytes, Σ bps × Δt, Σ avg_pkt_bits × pps × Δt; rx then tx
/// each) against libvirt's counters.
fn net_is_libvirts(checks: &mut Checks, window: &Window, table: &str, ours: &[f64]) {
    for (i, dir) in ["rx", "tx"].iter().enumerate() {
        checks.within(
            &format!("{table} {dir} packets"),
            ours[i],
            window.counted(&format!("net.0.{dir}.pkts")),
            SLACK,
        );
        checks.within(
            &format!("{table} {dir} bytes"),
            ours[2 + i],
            window.counted(&format!("net.0.{dir}.bytes")),
            SLACK,
        );
        checks.within(
            &format!("{table} {dir} bits (Σ bps × Δt)"),
            ours[4 + i],
            window.wire_bits(dir),
            SLACK,
        );
        checks.within(
            &format!("{table} {dir} bits (Σ avg_pkt_bits × pps × Δt)"),
            ours[6 + i],
            window.wire_bits(dir),
            SLACK,
        );
    }
}

fn vm_usage_io_is_libvirts(
    checks: &mut Checks,
    conn: &rusqlite::Connection,
    guest: &Guest,
    window: &Window,
) {
    eprintln!(
        "vm_usage against libvirt from {} to {}:",
        window.span.from, window.span.to
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
        &window.span,
        10,
    );
    disk_is_libvirts(checks, window, "vm_usage", &t4[..4]);
    net_is_libvirts(checks, window, "vm_usage", &t4[4..]);
}

fn vm_disk_usage_is_libvirts(
    checks: &mut Checks,
    conn: &rusqlite::Connection,
    guest: &Guest,
    window: &Window,
) {
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
        &window.span,
        10,
    );
    disk_is_libvirts(checks, window, "vm_disk_usage", &disks[..4]);
    for (i, dir) in ["rd", "wr"].iter().enumerate() {
        // Float rounding of a product of three stored figures: 1 ns per request.
        let (ns, reqs) = (disks[4 + i], disks[2 + i]);
        checks.within(
            &format!("vm_disk_usage {dir} request time ns (Σ latency × iops × Δt)"),
            ns,
            window.counted(&format!("block.0.{dir}.times")),
            reqs,
        );
        eprintln!(
            "    mean {dir} latency {:.3} ms over {reqs:.0} requests",
            ns / reqs / 1e6
        );
    }
}

fn vm_nic_usage_is_libvirts(
    checks: &mut Checks,
    conn: &rusqlite::Connection,
    guest: &Guest,
    window: &Window,
) {
    let tap = guest.tap_device().expect("the guest's tap device");
    eprintln!("vm_nic_usage ({tap}) against libvirt:");
    let nic_tables = format!(
        "vm_usage u LEFT JOIN vm_nic_usage x \
         ON x.time = u.time AND x.uuid = u.uuid AND x.iface = '{tap}'"
    );
    let nics = window_sums(
        conn,
        &nic_tables,
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
        &window.span,
        10,
    );
    net_is_libvirts(checks, window, "vm_nic_usage", &nics[..8]);
    for (i, key) in ["rx.errs", "rx.drop", "tx.errs", "tx.drop"]
        .iter()
        .enumerate()
    {
        checks.within(
            &format!("vm_nic_usage {key}"),
            nics[8 + i],
            window.counted(&format!("net.0.{key}")),
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
    let mut checks = Checks::default();
    let packets = vm_ebpf_usage_is_libvirts(&mut checks, conn, guest, window);
    packet_sizes_are_libvirts_and_the_pings(
        &mut checks,
        conn,
        guest,
        window,
        packets,
        pinged,
        ping_size,
    );
    checks.finish();
}

/// vm_ebpf_usage's block requests and the guest's receive over the window, against libvirt's
/// counters. Returns the eBPF packets (Σ pps × Δt) received and sent.
fn vm_ebpf_usage_is_libvirts(
    checks: &mut Checks,
    conn: &rusqlite::Connection,
    guest: &Guest,
    window: &Window,
) -> (f64, f64) {
    let d = |key: &str| window.counted(key);
    let scaled = |(lo, hi): (f64, f64), k: f64| (lo * k, hi * k);
    let sums: Vec<Option<f64>> = conn
        .query_row(
            "SELECT SUM(interval_s * block_read_iops), SUM(interval_s * block_write_iops),
                    SUM(interval_s * net_rx_pps), SUM(interval_s * net_rx_bytes_s),
                    SUM(interval_s * net_tx_pps), COUNT(*), COUNT(block_read_iops),
                    COUNT(block_write_iops), COUNT(net_rx_pps), COUNT(net_tx_pps)
             FROM vm_ebpf_usage WHERE uuid = ?1 AND time > ?2 AND time <= ?3",
            [guest.uuid(), &window.span.from, &window.span.to],
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
    // Reads: up to 2 more than the guest's, never fewer. In 2 CI runs of about 6, one host
    // read more than the guest's 32 was credited to qemu's process (33 for 32, 34 for 33)
    // with the image one extent: qemu's process reads for itself too (a page of its own code
    // or of a library paged in again is a read it submits), which libvirt's count of the
    // guest's requests does not hold. An open finding, see tests/REFERENCES.md.
    let (lo, hi) = scaled(rd_reqs, split);
    checks.within("eBPF read requests", sum(0), (lo, hi + 2.0), 0.01);
    checks.within("eBPF write requests", sum(1), scaled(wr_reqs, split), 0.01);
    // The guest's receive is the host's transmit on the tap, Ethernet header included. Within
    // 2 frames of libvirt's range, not exactly: in 1 CI run of 2 the probe credited the guest
    // 33 of the 34 frames the tap sent, one 70-byte frame short (an IPv6 router solicitation's
    // size) - an open finding, see tests/REFERENCES.md. The pings alone are checked exactly
    // below (bucket 10).
    let (rx_packets, rx_bytes) = (d("net.0.rx.pkts"), d("net.0.rx.bytes"));
    checks.within("eBPF rx packets", sum(2), rx_packets, RX_FRAMES_SLACK);
    checks.within(
        "eBPF rx bytes",
        sum(3),
        rx_bytes,
        RX_FRAMES_SLACK * SMALL_FRAME_BYTES,
    );
    (sum(2), sum(4))
}

/// Packet sizes: log2 buckets of the tracepoint's length, the host receive's without its
/// 14 B Ethernet header (setmov-common's NetDeviceValue). `packets`: the eBPF packets (Σ pps ×
/// Δt) received and sent.
fn packet_sizes_are_libvirts_and_the_pings(
    checks: &mut Checks,
    conn: &rusqlite::Connection,
    guest: &Guest,
    window: &Window,
    packets: (f64, f64),
    pinged: (u32, u32),
    ping_size: u32,
) {
    let mut stmt = conn
        .prepare(
            "SELECT direction, bucket, SUM(packets) FROM vm_nic_packet_sizes
             WHERE uuid = ?1 AND time > ?2 AND time <= ?3
             GROUP BY direction, bucket ORDER BY direction, bucket",
        )
        .expect("sql");
    let sizes: Vec<(String, i64, f64)> = stmt
        .query_map([guest.uuid(), &window.span.from, &window.span.to], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("sizes")
        .collect::<Result<_, _>>()
        .expect("rows");
    eprintln!("vm_nic_packet_sizes (direction, bucket, packets): {sizes:?}");
    let frame = ping_size + 8 + 20 + 14;
    for (dir, ebpf_packets) in [("rx", packets.0), ("tx", packets.1)] {
        let in_dir = sizes.iter().filter(|s| s.0 == dir);
        let total: f64 = in_dir.clone().map(|s| s.2).sum();
        // The histogram counts the packets the rates count ...
        checks.near(
            &format!("{dir} histogram packets, Σ eBPF pps × Δt"),
            total,
            ebpf_packets,
            0.01,
        );
        // ... which are libvirt's (received: within the slack above).
        checks.within(
            &format!("{dir} histogram packets, libvirt"),
            total,
            window.counted(&format!("net.0.{dir}.pkts")),
            if dir == "rx" { RX_FRAMES_SLACK } else { 0.01 },
        );
        // Echo replies the guest receives are host transmits (header included), its requests
        // host receives (header pulled): only they are 1 KiB or more.
        let len = if dir == "rx" { frame } else { frame - 14 };
        let bucket = i64::from(len.ilog2());
        let pings = f64::from(if dir == "rx" { pinged.1 } else { pinged.0 });
        let in_bucket: f64 = in_dir.clone().filter(|s| s.1 == bucket).map(|s| s.2).sum();
        checks.near(
            &format!("{dir} packets of {len} B in bucket {bucket}"),
            in_bucket,
            pings,
            0.0,
        );
    }
}
