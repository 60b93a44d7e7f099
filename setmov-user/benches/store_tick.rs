//! CPU cost of writing one tick's VM rows into the embedded store, against the number of VMs,
//! with synthetic but complete samples (every figure set, one disk and one NIC per VM). The
//! per-VM cost is the slope between the VM counts; the rest is the fixed cost of a tick
//! (transaction, T1/T3 upkeep).

use std::cell::Cell;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use setmov::host::identity::HostIdentity;
use setmov::host::snapshot::NetCounters;
use setmov::store::sqlite::SqliteStore;
use setmov::store::{TickRecord, VmSample};
use setmov::usage::vm::vm_usage;
use setmov::vm::stats::{BalloonCounters, DomainState, DomainStats, VcpuCounters, VmDiskCounters};
use time::OffsetDateTime;

/// One domain's cumulative counters after `secs` seconds of steady load.
fn counters(secs: u64) -> DomainStats {
    DomainStats {
        state: Some(DomainState::Running),
        cpu_time_ns: Some(secs * 700_000_000),
        vcpus_current: Some(2),
        vcpus: vec![
            VcpuCounters {
                time_ns: Some(secs * 350_000_000),
                delay_ns: Some(secs * 2_000_000),
            };
            2
        ],
        balloon: BalloonCounters {
            current_kib: Some(4 << 20),
            maximum_kib: Some(4 << 20),
            unused_kib: Some(1 << 20),
            available_kib: Some(4 << 20),
            usable_kib: Some(2 << 20),
            disk_caches_kib: Some(1 << 19),
            rss_kib: Some(3 << 20),
            swap_in_kib: Some(0),
            swap_out_kib: Some(0),
            major_faults: Some(secs),
            minor_faults: Some(secs * 900),
        },
        disks: vec![VmDiskCounters {
            name: "vda".into(),
            rd_reqs: secs * 40,
            rd_bytes: secs * 40 * 4096,
            rd_times_ns: secs * 40 * 150_000,
            wr_reqs: secs * 25,
            wr_bytes: secs * 25 * 16384,
            wr_times_ns: secs * 25 * 400_000,
        }],
        nics: vec![NetCounters {
            name: "vnet0".into(),
            rx_bytes: secs * 90_000,
            rx_packets: secs * 120,
            tx_bytes: secs * 30_000,
            tx_packets: secs * 80,
            ..NetCounters::default()
        }],
    }
}

fn vm_samples(count: usize) -> Vec<VmSample> {
    let usage = vm_usage(Some(&counters(100)), &counters(101), 1.0, 64);
    (0..count)
        .map(|i| VmSample {
            uuid: format!("3f9a7c1e-0000-4000-8000-{i:012}"),
            name: format!("desk-{i}"),
            state: Some(DomainState::Running),
            gone: false,
            qemu_pid: Some(4300 + i as u32),
            vcpu_tids: vec![5300 + i as u32, 6300 + i as u32],
            missing: None,
            interval_secs: Some(1.0),
            usage: Some(usage.clone()),
            ebpf: None,
        })
        .collect()
}

fn store_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_tick");
    group.measurement_time(Duration::from_secs(10));
    for vms in [3usize, 30, 100] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("bench.db")).expect("store");
        let seq = Cell::new(0u64);
        let mut record = TickRecord {
            seq: 0,
            time: OffsetDateTime::UNIX_EPOCH,
            host: HostIdentity {
                name: "bench".into(),
                ip: "192.0.2.1".into(),
                mac: None,
                interface: None,
            },
            vm_count: Some(vms as u32),
            node: None,
            host_sample: None,
            vms: vm_samples(vms),
            ebpf: None,
        };
        group.throughput(Throughput::Elements(vms as u64));
        group.bench_function(BenchmarkId::new("vms", vms), |b| {
            b.iter(|| {
                // Each tick needs a time of its own (rows are keyed by VM and time).
                let s = seq.replace(seq.get() + 1) + 1;
                record.seq = s;
                record.time = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(s);
                store.write_tick_blocking(&record).expect("write");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, store_tick);
criterion_main!(benches);
