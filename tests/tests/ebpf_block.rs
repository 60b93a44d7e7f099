//! Live-kernel test of the eBPF block probe: `dd` moves 64 MiB with O_DIRECT to and from a
//! file on a real block device, and the probe must credit those bytes to each `dd`'s pid.
//! Its latency histograms are checked against fio's completion-latency percentiles, and its
//! pairing of completions with requests against fio's count of reads.
//!
//! Without root, eBPF, a block-device-backed /var/tmp, fio or (for the slow device) FUSE and
//! python3-fusepy a test is skipped with a "SKIPPED:" line on stderr, unless
//! SETMOV_REQUIRE_ALL=1 (as in CI): then it fails.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use setmov::ebpf::{BlockProbe, BlockTotals, Probes};
use setmov::usage::hist::{hist_count, hist_quantile};
use setmov_common::{BlockKey, DIR_READ, DIR_WRITE, DeviceKey, LatHist, PairingCounters};
use setmov_tests::block_devices::LoopDevice;
use setmov_tests::fio::{self, FioRun};
use setmov_tests::slow_disk::{Delays, SlowDisk};

const MIB: u64 = 1 << 20;
const DD_MIB: u64 = 64;

/// Ok(()) after saying why the test does not run here, or an error under SETMOV_REQUIRE_ALL=1.
fn skip(reason: &str) -> anyhow::Result<()> {
    setmov_tests::skip(&format!("ebpf_block: {reason}"));
    Ok(())
}

/// Runs dd with `args` and returns its pid once it has exited successfully.
fn dd(args: &[&str]) -> anyhow::Result<u32> {
    let mut child = Command::new("dd")
        .args(args)
        .arg("status=none")
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning dd")?;
    let pid = child.id();
    let status = child.wait()?;
    if !status.success() {
        let mut message = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut message)?;
        }
        bail!("dd {args:?} failed ({status}): {}", message.trim());
    }
    Ok(pid)
}

fn credited(probe: &BlockProbe, pid: u32) -> anyhow::Result<BlockTotals> {
    probe
        .per_tgid()?
        .get(&pid)
        .copied()
        .with_context(|| format!("dd (pid {pid}) has no block I/O counters at all"))
}

fn assert_about_dd_size(what: &str, bytes: u64) -> anyhow::Result<()> {
    let expected = DD_MIB * MIB;
    ensure!(
        bytes * 100 >= expected * 99 && bytes * 100 <= expected * 110,
        "{what}: {bytes} bytes credited, expected {expected} (-1 %/+10 %)"
    );
    Ok(())
}

#[test]
fn direct_io_of_dd_is_credited_to_dd() -> anyhow::Result<()> {
    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => return skip(&error.to_string()),
        Err(error) => return Err(error.into()),
    };
    eprintln!("attached: {:?}", probes.attached());
    let probe = probes.block.as_mut().context("the block probe is off")?;

    let dir = tempfile::Builder::new()
        .prefix("setmov-ebpf-test")
        .tempdir_in("/var/tmp")?;
    if let Some(reason) = setmov_tests::not_on_block_device(dir.path())? {
        return skip(&reason);
    }
    let file = dir.path().join("dd.out");
    let file = file.to_str().context("temporary path is not UTF-8")?;
    let count = format!("count={DD_MIB}");

    let at_start = probe.totals()?;
    let writer = dd(&[
        "if=/dev/zero",
        &format!("of={file}"),
        "bs=1M",
        &count,
        "oflag=direct",
    ])?;
    let written = credited(probe, writer)?;
    eprintln!("dd writer (pid {writer}): {written:?}");
    assert_about_dd_size("write by dd", written.write_bytes)?;
    ensure!(written.write_ops > 0, "writes counted without any op");

    let reader = dd(&[
        &format!("if={file}"),
        "of=/dev/null",
        "bs=1M",
        &count,
        "iflag=direct",
    ])?;
    let read = credited(probe, reader)?;
    eprintln!("dd reader (pid {reader}): {read:?}");
    assert_about_dd_size("read by dd", read.read_bytes)?;
    ensure!(read.read_ops > 0, "reads counted without any op");

    // Every request counted got exactly one latency, paired from issue to completion.
    eprintln!("pairing by device: {:?}", probe.pairing()?);
    let latencies = probe.latency_by_tgid()?;

    for (pid, direction, ops) in [
        (writer, DIR_WRITE, written.write_ops),
        (reader, DIR_READ, read.read_ops),
    ] {
        let hist = latencies
            .get(&BlockKey {
                tgid: pid,
                direction,
            })
            .with_context(|| format!("dd (pid {pid}) has no latency histogram"))?;
        let paired = hist_count(hist);
        eprintln!(
            "dd pid {pid}: {ops} requests, {paired} latencies, p50 {:.0} µs, p99 {:.0} µs",
            hist_quantile(hist, 0.5).unwrap_or(0.0) / 1e3,
            hist_quantile(hist, 0.99).unwrap_or(0.0) / 1e3
        );
        ensure!(
            paired * 100 >= ops * 99 && paired * 100 <= ops * 101,
            "{paired} latencies for {ops} requests of pid {pid} (must agree within 1 %)"
        );
    }
    let device_latencies: u64 = probe.latency_by_device()?.values().map(hist_count).sum();
    ensure!(
        device_latencies >= written.write_ops + read.read_ops,
        "the devices' histograms hold {device_latencies} latencies, fewer than dd's requests"
    );

    // The host-wide totals hold at least what the two dd processes did.
    let before = probe.totals()?;
    ensure!(
        before.write_bytes - at_start.write_bytes >= written.write_bytes
            && before.read_bytes - at_start.read_bytes >= read.read_bytes,
        "totals {at_start:?} -> {before:?} miss dd's I/O"
    );
    // Both dd processes have exited: forgetting them keeps their bytes in the totals.
    let forgotten = probe.forget_dead_tgids(Path::new("/proc"))?;
    let after = probe.totals()?;
    let remaining = probe.per_tgid()?;
    ensure!(forgotten >= 2, "only {forgotten} dead processes forgotten");
    ensure!(
        !remaining.contains_key(&writer) && !remaining.contains_key(&reader),
        "exited dd processes are still in the map"
    );
    ensure!(
        after.write_bytes >= before.write_bytes && after.read_bytes >= before.read_bytes,
        "totals went down when dead processes were forgotten: {before:?} -> {after:?}"
    );
    ensure!(probe.lost_events()? == 0, "the counter map overflowed");
    Ok(())
}

/// The probe's latency of fio's own requests against fio's completion-latency percentiles
/// of the same requests: direct 4 KiB random reads and writes one at a time, so each request
/// is issued as soon as it is submitted and both measure the device's service time.
///
/// A sanity check on a real disk, per process, reads and writes: on this fast virtio disk fio's
/// own path is as long as the device's time, so the bounds below are wide. The claim that the
/// percentiles agree within the bucket error rests on
/// [`latency_percentiles_of_a_slow_device_match_fios_within_the_bucket_error`].
///
/// The probe times a request from `block_rq_issue` to `block_rq_complete`, both inside fio's
/// pread/pwrite (checked per request with bpftrace: no request outlasted its syscall in 14
/// runs), so none of its p50/p95/p99 may exceed fio's by more than the bucket error: 12.5 %
/// (a quantile is interpolated inside a log-linear bucket at most 1/8 of its lower bound
/// wide), plus fio's own (its percentiles come from buckets 1/64 of a power of two wide), so
/// at most 1.15× fio's. Below fio's they are by fio's software path: the system call, the
/// copy and the wake-up after completion, which the device's time does not hold. Measured
/// here (2-vCPU VM, virtio disk, 4 s, 7 runs): p50 probe 34–46 µs against fio 55–81 µs, a
/// path of 17–35 µs (0.56× to 0.69×); p99 0.49× to 0.66×. So the median must be at least
/// 0.4× fio's; the tails are checked from above
/// only (on a loaded 2-CPU host fio's p99 was up to 8 times the probe's: its wake-ups).
///
/// The file is laid out by a first fio process: laying it out, the measured fio would write
/// 64 MiB through the page cache and fsync it, ~60 requests of ~1 MiB taking 0.5-1 ms that
/// are rightly its I/O but not in its clat, enough to lift the probe's write p99 past fio's.
#[test]
fn latency_percentiles_of_fio_match_fios_own() -> anyhow::Result<()> {
    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => return skip(&error.to_string()),
        Err(error) => return Err(error.into()),
    };
    let probe = probes.block.as_mut().context("the block probe is off")?;
    let dir = tempfile::Builder::new()
        .prefix("setmov-ebpf-fio")
        .tempdir_in("/var/tmp")?;
    if let Some(reason) = setmov_tests::not_on_block_device(dir.path())? {
        return skip(&reason);
    }
    let job = |more: &[&str]| -> Vec<String> {
        [
            "--name=setmov",
            "--thread",
            "--rw=randrw",
            "--rwmixread=70",
            "--bs=4k",
            "--size=64M",
            "--direct=1",
            "--ioengine=psync",
        ]
        .iter()
        .chain(more)
        .map(|arg| (*arg).to_owned())
        .chain([format!("--directory={}", dir.path().display())])
        .collect()
    };
    // The layout by another process (see above); it ends with an fsync.
    if let Err(reason) = fio::run(dir.path(), &[], &job(&["--create_only=1"]))? {
        return skip(&reason);
    }
    // --thread: the I/O is submitted by a thread of this fio process, so under its pid.
    let measured = job(&["--time_based", "--runtime=4", "--percentile_list=50:95:99"]);
    let FioRun { pid, report: json } = match fio::run(dir.path(), &[], &measured)? {
        Ok(run) => run,
        Err(reason) => return skip(&reason),
    };
    let latencies = probe.latency_by_tgid()?;
    for (direction, name) in [(DIR_READ, "read"), (DIR_WRITE, "write")] {
        let hist = latencies
            .get(&BlockKey {
                tgid: pid,
                direction,
            })
            .with_context(|| format!("fio (pid {pid}) has no {name} latency histogram"))?;
        let clat = &json["jobs"][0][name]["clat_ns"]["percentile"];
        let buckets: Vec<(u64, u64)> = hist
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| (setmov_common::lat_bucket_low(b), *n))
            .collect();
        eprintln!(
            "fio {name}: {} requests by fio, clat max {} ns; probe (bucket low ns, requests) \
             {buckets:?}",
            json["jobs"][0][name]["total_ios"], json["jobs"][0][name]["clat_ns"]["max"]
        );
        for (q, key) in [(0.5, "50.000000"), (0.95, "95.000000"), (0.99, "99.000000")] {
            let theirs = clat[key]
                .as_f64()
                .with_context(|| format!("no {name} p{key} in fio's report: {clat}"))?;
            let ours = hist_quantile(hist, q).context("an empty histogram")?;
            let ratio = ours / theirs;
            eprintln!(
                "{name} p{}: probe {:.1} µs over {} requests, fio {:.1} µs ({ratio:.2}×, fio's \
                 path {:.1} µs)",
                q * 100.0,
                ours / 1e3,
                hist_count(hist),
                theirs / 1e3,
                (theirs - ours) / 1e3
            );
            // The median both ways; the tails only from above (see the function's comment).
            let lowest = if q == 0.5 { 0.4 } else { 0.0 };
            ensure!(
                (lowest..=1.15).contains(&ratio),
                "{name} latency p{}: probe {ours} ns, fio {theirs} ns ({ratio:.2}×, allowed \
                 {lowest}× to 1.15×)",
                q * 100.0
            );
        }
    }
    Ok(())
}

/// The slow device's delays: 9 reads in 10 take 4 ms in the FUSE daemon, every 10th 12 ms,
/// so fio's p50 lies among the fast reads and its p99 among the slow ones.
const SLOW_DISK: Delays = Delays {
    size_mib: 64,
    fast_ms: 4,
    slow_ms: 12,
    slow_every: 10,
};

/// Allowance for fio's own path in its completion latency, ns: a psync read's time in
/// pread(2) outside the request's issue-to-completion (the system call, the submission before
/// `block_rq_issue`, the wake-up after `block_rq_complete`). Measured per request with
/// bpftrace (sys_enter/exit_pread64 of fio against block_rq_issue/complete of the loop device)
/// over 5 runs of this job, fio under SCHED_FIFO, on this 2-CPU machine shared with builds:
/// 4677 requests, mean 34–56 µs per run, 99.6 % under 128 µs, 2 between 256 and 512 µs. A
/// request over the allowance only moves fio's quantile by one rank. Without SCHED_FIFO 1–2 %
/// of the requests waited 1–8 ms for a CPU to wake fio on (2 runs): enough to move fio's p99.
const FIO_PATH_NS: f64 = 250_000.0;

/// Point 7 of issue #15: the probe's p50 and p99 of a device's read latency agree with fio's
/// completion-latency percentiles of the same reads within the bucket error, on a device slow
/// enough that fio's own path is a small, bounded part of its figure.
///
/// The device is a loop device over the one file of a FUSE file system whose daemon sleeps
/// [`SLOW_DISK`]'s delays per read ([`setmov_tests::slow_disk`]); mounted with direct_io, so
/// each read of the loop device reaches the daemon (checked: the daemon's reads equal fio's),
/// merging off (`queue/nomerges` = 2). fio reads 4 KiB at random, direct, psync (one at a
/// time), for 5 s, under SCHED_FIFO so that its wake-up does not wait for a CPU. The probe's
/// histogram of the loop device over the run must hold fio's reads (at most 1 in 200 missing).
///
/// For the same requests, with D the exact q-quantile of issue-to-completion, F fio's exact
/// clat quantile and P = [`FIO_PATH_NS`]: each request's clat is its device time plus a path
/// of 0 to P, so D ≤ F ≤ D + P (order statistics move with every value). fio reports the
/// midpoint of a bucket 1/64 of a power of two wide: within F/128. The probe's interpolated
/// quantile lies in the bucket holding D, at most D/8 wide: within D/8. So, with T fio's
/// figure, the probe's must lie in [7/8·(T/(1+1/128) − P), 9/8·T/(1−1/128)]: about 0.82× to
/// 1.13× at the 4.4 ms median, 0.85× to 1.13× at the 12.5 ms p99. Measured here (33 runs):
/// 0.99× to 1.05× at p50 (the interpolation in a 512 µs bucket), 0.94× to 1.05× at p99.
#[test]
fn latency_percentiles_of_a_slow_device_match_fios_within_the_bucket_error() -> anyhow::Result<()> {
    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => return skip(&error.to_string()),
        Err(error) => return Err(error.into()),
    };
    let probe = probes.block.as_mut().context("the block probe is off")?;
    let dir = tempfile::Builder::new()
        .prefix("setmov-ebpf-slow")
        .tempdir()?;
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint)?;
    // Declared before the loop device, so dropped after it: unmounting needs it detached.
    let disk = match SlowDisk::mount(&mountpoint, &SLOW_DISK)? {
        Ok(disk) => disk,
        Err(reason) => return skip(&reason),
    };
    let lo = match LoopDevice::attach_read_only(&disk.image()) {
        Ok(lo) => lo,
        Err(reason) => return skip(&reason),
    };
    std::fs::write(format!("/sys/block/{}/queue/nomerges", lo.name()), "2")
        .context("turning merges off on the loop device")?;
    let _ = Command::new("udevadm").arg("settle").status();
    let key = DeviceKey {
        dev: setmov_tests::latency::dev_t(lo.name()),
        direction: DIR_READ,
    };
    let reading = |probe: &BlockProbe| -> anyhow::Result<(LatHist, u64, PairingCounters)> {
        let hist = probe
            .latency_by_device()?
            .get(&key)
            .copied()
            .unwrap_or_default();
        let started = probe
            .totals_by_device()?
            .get(&key.dev)
            .map_or(0, |io| io.read_ops);
        let pairing = probe.pairing()?.get(&key).copied().unwrap_or_default();
        Ok((hist, started, pairing))
    };
    let (before, reads_before) = (reading(probe)?, disk.reads()?);
    let run = fio::run(
        dir.path(),
        &["chrt", "--fifo", "10"],
        &[
            "--name=slow",
            &format!("--filename={}", lo.device),
            "--readonly",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--ioengine=psync",
            "--time_based",
            "--runtime=5",
            "--percentile_list=50:99",
        ],
    )?;
    let json = match run {
        Ok(run) => run.report,
        Err(reason) => return skip(&reason),
    };
    let (after, reads_after) = (reading(probe)?, disk.reads()?);
    let mut hist = LatHist::default();
    for (bucket, (a, b)) in hist
        .buckets
        .iter_mut()
        .zip(after.0.buckets.iter().zip(&before.0.buckets))
    {
        *bucket = a.saturating_sub(*b);
    }
    let started = after.1 - before.1;
    let pairing = PairingCounters {
        collided: after.2.collided - before.2.collided,
        overflowed: after.2.overflowed - before.2.overflowed,
        unpaired: after.2.unpaired - before.2.unpaired,
    };
    let read = &json["jobs"][0]["read"];
    let fio_reads = read["total_ios"]
        .as_u64()
        .with_context(|| format!("no read.total_ios in fio's report: {read}"))?;
    let daemon_reads = reads_after - reads_before;
    let probed = hist_count(&hist);
    eprintln!(
        "{} over FUSE ({} ms, every {}th {} ms): fio {fio_reads} reads, daemon {daemon_reads} \
         reads, probe {started} requests started, {probed} latencies, {pairing:?}",
        lo.name(),
        SLOW_DISK.fast_ms,
        SLOW_DISK.slow_every,
        SLOW_DISK.slow_ms
    );
    ensure!(
        daemon_reads == fio_reads,
        "the FUSE daemon answered {daemon_reads} reads for fio's {fio_reads}: some did not \
         reach it, or others did"
    );
    // The exact count is the other loop device test's claim. Here one request in 34 runs went
    // untimed (956 latencies for 957 reads, the cause not caught), most likely an event the
    // kernel skipped because another BPF program ran on that CPU (its recursion_misses):
    // allowed up to 1 in 200, which cannot move a p50 or a p99 out of the bounds below.
    let allowed_missing = fio_reads / 200 + 1;
    ensure!(
        started <= fio_reads
            && probed <= fio_reads
            && fio_reads - started.min(probed) <= allowed_missing,
        "the probe saw {started} reads of {} start and timed {probed} for fio's {fio_reads}, \
         more than {allowed_missing} missing ({pairing:?})",
        lo.name()
    );
    let clat = &read["clat_ns"]["percentile"];
    for (q, key) in [(0.5, "50.000000"), (0.99, "99.000000")] {
        let theirs = clat[key]
            .as_f64()
            .with_context(|| format!("no read p{key} in fio's report: {clat}"))?;
        let ours = hist_quantile(&hist, q).context("an empty histogram")?;
        let low = 7.0 / 8.0 * (theirs / (1.0 + 1.0 / 128.0) - FIO_PATH_NS);
        let high = 9.0 / 8.0 * theirs / (1.0 - 1.0 / 128.0);
        eprintln!(
            "read p{}: probe {:.1} µs, fio {:.1} µs ({:.3}×, allowed {:.1}–{:.1} µs, {:.3}× to \
             {:.3}×)",
            q * 100.0,
            ours / 1e3,
            theirs / 1e3,
            ours / theirs,
            low / 1e3,
            high / 1e3,
            low / theirs,
            high / theirs
        );
        ensure!(
            (low..=high).contains(&ours),
            "read latency p{}: probe {ours:.0} ns, fio {theirs:.0} ns, allowed {low:.0} to \
             {high:.0} ns",
            q * 100.0
        );
    }
    Ok(())
}

/// Reads fio completes in the loop device test: 128 passes over its 16 blocks.
const HOT_READS: u64 = 2048;

/// Requests to the same device, direction and first sector in flight together: fio reads
/// 4 KiB blocks at random from the first 64 KiB of a loop device, up to 32 at a time
/// (`--size=64k --bs=4k --iodepth=32`, libaio, direct I/O, `--norandommap`: with its random map
/// fio reads each block once per pass and keeps at most one pass of 16 reads in flight, so two
/// reads of a block rarely overlap). fio keeps 4 to 16 reads in flight here, so a block often
/// has two or more. Merging is off on the loop device
/// (`queue/nomerges` = 2), so each of fio's reads is one request. Over fio's run:
///
/// - the loop device's read latency histogram gains exactly fio's completed reads (its JSON
///   `read.total_ios`), and the probe's started read requests as many: no latency lost or
///   counted twice;
/// - no request was displaced from the in-flight map and no completion was unpaired: requests
///   pair by their own address, so reads of one sector in flight together (which a map keyed
///   by device and sector would mix up) each get theirs.
#[test]
fn reads_in_flight_to_one_sector_each_get_their_latency() -> anyhow::Result<()> {
    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => return skip(&error.to_string()),
        Err(error) => return Err(error.into()),
    };
    let probe = probes.block.as_mut().context("the block probe is off")?;
    let dir = tempfile::Builder::new()
        .prefix("setmov-ebpf-pairing")
        .tempdir_in("/var/tmp")?;
    if let Some(reason) = setmov_tests::not_on_block_device(dir.path())? {
        return skip(&reason);
    }
    let file = dir.path().join("loop.img");
    std::fs::File::create(&file)?.set_len(MIB)?;
    let lo = match LoopDevice::attach(&file) {
        Ok(lo) => lo,
        Err(reason) => return skip(&reason),
    };
    std::fs::write(format!("/sys/block/{}/queue/nomerges", lo.name()), "2")
        .context("turning merges off on the loop device")?;
    // udev probes a new device (reads its first blocks): let it finish first.
    let _ = Command::new("udevadm").arg("settle").status();
    let dev = setmov_tests::latency::dev_t(lo.name());
    let key = DeviceKey {
        dev,
        direction: DIR_READ,
    };
    let reading = |probe: &BlockProbe| -> anyhow::Result<(u64, u64, PairingCounters)> {
        let latencies = probe.latency_by_device()?.get(&key).map_or(0, hist_count);
        let started = probe
            .totals_by_device()?
            .get(&dev)
            .map_or(0, |io| io.read_ops);
        let pairing = probe.pairing()?.get(&key).copied().unwrap_or_default();
        Ok((latencies, started, pairing))
    };
    let before = reading(probe)?;
    let json = match fio::run(
        dir.path(),
        &[],
        &[
            "--name=pairing",
            &format!("--filename={}", lo.device),
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--size=64k",
            &format!("--io_size={}k", HOT_READS * 4),
            "--iodepth=32",
            "--ioengine=libaio",
            "--norandommap",
        ],
    )? {
        Ok(run) => run.report,
        Err(reason) => return skip(&reason),
    };
    let after = reading(probe)?;
    let completed = json["jobs"][0]["read"]["total_ios"]
        .as_u64()
        .with_context(|| format!("no read.total_ios in fio's report: {json}"))?;
    let latencies = after.0 - before.0;
    let started = after.1 - before.1;
    let pairing = PairingCounters {
        collided: after.2.collided - before.2.collided,
        overflowed: after.2.overflowed - before.2.overflowed,
        unpaired: after.2.unpaired - before.2.unpaired,
    };
    eprintln!(
        "{}: fio completed {completed} reads; probe: {started} read requests started, \
         {latencies} latencies, {} displaced ({} issued), {} unpaired completions",
        lo.name(),
        pairing.collided,
        pairing.overflowed,
        pairing.unpaired
    );
    ensure!(completed == HOT_READS, "fio completed {completed} reads");
    ensure!(
        latencies == completed,
        "{latencies} latencies in the histogram for {completed} reads fio completed"
    );
    ensure!(
        started == completed,
        "{started} requests started for {completed} reads"
    );
    ensure!(pairing == PairingCounters::default(), "{pairing:?}");
    Ok(())
}
