//! CPU time of the VM part of a tick, per VM, against the domains running on this host:
//! libvirt's bulk statistics, the VM equations and the store write. Measured as this thread's
//! CPU time (waiting for libvirtd's answer is not ours), with libvirtd's own CPU beside it.
//! Needs running guests (`cargo xtask guests up`); `cargo xtask bench` starts them.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use setmov::host::identity::HostIdentity;
use setmov::sampler::vm_source::VmTracker;
use setmov::store::TickRecord;
use setmov::store::sqlite::SqliteStore;
use setmov::vm::libvirt::LibvirtCollector;
use time::OffsetDateTime;

const TICKS: u32 = 300;

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// utime + stime of the running libvirtd, in clock ticks.
fn libvirtd_ticks() -> Option<u64> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == "libvirtd" {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            return Some(
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
            );
        }
    }
    None
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that short.
    let ticks = if std::env::args().any(|a| a == "--bench") {
        TICKS
    } else {
        3
    };
    let mut collector = LibvirtCollector::new("qemu:///system", "/run/libvirt/qemu");
    let vms = match collector.sample() {
        Ok(s) => s
            .domains
            .iter()
            .filter(|d| d.stats.cpu_time_ns.is_some())
            .count(),
        Err(e) => {
            println!("vm tick: not measured: {e} (start guests with `cargo xtask guests up`)");
            return;
        }
    };
    if vms == 0 {
        println!(
            "vm tick: not measured: no running domain (start guests with `cargo xtask guests up`)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("bench.db")).expect("store");
    let identity = HostIdentity {
        name: "bench".into(),
        ip: "192.0.2.1".into(),
        mac: None,
        interface: None,
    };
    let mut tracker = VmTracker::default();
    let started = Instant::now();
    let libvirtd_before = libvirtd_ticks();
    let cpu_before = thread_cpu();
    let (mut in_libvirt, mut in_equations, mut in_store) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for seq in 0..ticks {
        let at = tokio::time::Instant::now();
        let t0 = thread_cpu();
        let snapshot = collector.sample().expect("libvirt answers");
        let t1 = thread_cpu();
        let report = tracker.sample(at, &snapshot);
        let t2 = thread_cpu();
        let record = TickRecord {
            seq: u64::from(seq),
            time: OffsetDateTime::UNIX_EPOCH + Duration::from_millis(u64::from(seq)),
            host: identity.clone(),
            vm_count: report.vm_count,
            node: report.node,
            host_sample: None,
            vms: report.samples,
            ebpf: None,
        };
        store.write_tick_blocking(&record).expect("write");
        in_libvirt += t1 - t0;
        in_equations += t2 - t1;
        in_store += thread_cpu() - t2;
    }
    let ours = thread_cpu() - cpu_before;
    let wall = started.elapsed();
    let per_tick = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(ticks);
    let per = |d: Duration| per_tick(d) / vms as f64;
    // `cargo xtask bench` reads the VM count and the CPU per tick from this line.
    print!(
        "vm tick: {vms} running VMs, {ticks} ticks: {:.1} µs CPU per tick, {:.1} µs per VM in \
         setmov (libvirt client {:.1} + equations {:.1} + store {:.1}), {:.1} µs wall per VM",
        per_tick(ours),
        per(ours),
        per(in_libvirt),
        per(in_equations),
        per(in_store),
        per(wall)
    );
    if let (Some(before), Some(after)) = (libvirtd_before, libvirtd_ticks()) {
        let hz = 100.0; // USER_HZ
        let libvirtd = Duration::from_secs_f64((after - before) as f64 / hz);
        print!(
            "; libvirtd spent {:.0} µs per VM per tick answering",
            per(libvirtd)
        );
    }
    println!();
}
