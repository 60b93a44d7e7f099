//! CPU cost of one host tick on the live machine: read procfs, compute the usage figures,
//! store them in the embedded database, and the three together.

use std::cell::Cell;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use setmov::host::devices::DEFAULT_SKIPPED_DISK_PREFIXES;
use setmov::host::identity::HostIdentity;
use setmov::host::read::HostReader;
use setmov::store::sqlite::SqliteStore;
use setmov::store::{HostSample, TickRecord};
use setmov::usage::host::host_usage;
use time::OffsetDateTime;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn host_tick(c: &mut Criterion) {
    let reader = HostReader::new("/proc", strings(DEFAULT_SKIPPED_DISK_PREFIXES))
        .expect("/proc is readable");
    let excluded: Vec<String> = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("bench.db")).expect("store");
    let identity = HostIdentity {
        name: "bench".into(),
        ip: "192.0.2.1".into(),
        mac: None,
        interface: None,
    };
    let started = Instant::now();
    let seq = Cell::new(0u64);
    // Each stored tick needs a time of its own (the key is host and time).
    let record = |usage| {
        let seq = seq.replace(seq.get() + 1) + 1;
        TickRecord {
            seq,
            time: OffsetDateTime::UNIX_EPOCH
                + started.elapsed()
                + std::time::Duration::from_millis(seq),
            host: identity.clone(),
            vm_count: Some(0),
            node: None,
            host_sample: Some(HostSample {
                interval_secs: 1.0,
                late_ms: 0.0,
                missed_ticks: 0,
                usage,
                problems: Vec::new(),
            }),
            vms: Vec::new(),
            ebpf: None,
        }
    };

    let mut prev = reader.read();
    c.bench_function("host tick: read procfs", |b| {
        b.iter(|| black_box(reader.read()))
    });
    let now = reader.read();
    c.bench_function("host tick: compute usage", |b| {
        b.iter(|| black_box(host_usage(&prev, &now, 1.0, &excluded)))
    });
    c.bench_function("host tick: store (one transaction)", |b| {
        b.iter_batched(
            || record(host_usage(&prev, &now, 1.0, &excluded)),
            |tick| store.write_tick_blocking(&tick).expect("write"),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("host tick: read + compute + store", |b| {
        b.iter(|| {
            let now = reader.read();
            let tick = record(host_usage(&prev, &now, 1.0, &excluded));
            store.write_tick_blocking(&tick).expect("write");
            prev = now;
        })
    });
}

criterion_group!(benches, host_tick);
criterion_main!(benches);
