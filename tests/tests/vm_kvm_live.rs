//! The KVM events SETMOV stores per VM, read back from the database after a real `setmov
//! run`, against bpftrace's count of the same kvm:* tracepoints for the guest's qemu process
//! over the same window.
//!
//! The guests and libvirtd are prepared by `cargo xtask guests up` (or `cargo xtask test`);
//! without them, root, bpftrace or eBPF this test skips loudly (and fails under
//! SETMOV_REQUIRE_ALL=1).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use setmov_tests::bpftrace::{self, Bpftrace};
use setmov_tests::guests::Guest;
use setmov_tests::monitor::Monitor;
use setmov_tests::stored::{Cell, num, query};
use setmov_tests::{kvm_reference, skip};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// The stored (event, reason) of a raw key of bpftrace's map `map`.
fn kvm_reason(map: &str, raw: u64) -> (String, String) {
    let (event, reason) =
        kvm_reference::event_and_reason(map, raw).unwrap_or_else(|e| panic!("{e}"));
    (event.to_owned(), reason)
}

/// The KVM events a firmware-only guest makes under this machine's nested PVM, each of which
/// the window must contain: SeaBIOS's port I/O and MMIO are emulated and go back to qemu.
/// `kvm_exit` cannot fire here (it needs VMX or SVM; PVM never fires it) and is compared all
/// the same (0 and 0); `kvm_halt_poll_ns` and `kvm_vcpu_wakeup` fire in some windows only.
const KVM_SEEN_HERE: [&str; 3] = ["kvm_userspace_exit", "kvm_pio", "kvm_mmio"];

/// `vm_kvm_events` (per event and reason) and `vm_ebpf_usage.kvm_events_s × interval_s`, summed
/// over the stored ticks, against bpftrace's count of the same tracepoints for the qemu pid.
/// The window is exact: the guest is created paused (no vCPU has entered KVM), the monitor
/// stores a row for it, bpftrace attaches, `virsh resume` lets the firmware run for 5 s, and
/// `virsh suspend` returns once every vCPU is out of KVM_RUN; two ticks later the monitor and
/// bpftrace stop. No event happens outside [resume, suspend], so the counts must be equal.
/// `kvm_events_s × interval_s` is a float product: within 0.01 of the integer count per tick.
#[test]
fn stored_kvm_events_are_bpftraces_count_over_the_same_window() {
    if let Some(reason) = bpftrace::why_unusable() {
        return skip(reason);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let Some((guest, reference)) = run_the_firmware_for_5_s(&db, dir.path()) else {
        return;
    };
    let uuid = guest.uuid();
    let theirs = bpftrace_counts(&reference);
    let ours = stored_counts(&db, uuid);
    eprintln!("stored: {ours:?}\nbpftrace: {theirs:?}");
    for event in KVM_SEEN_HERE {
        assert!(
            theirs.keys().any(|(e, _)| e == event),
            "the window has no {event}: {theirs:?}"
        );
    }
    assert_eq!(ours, theirs, "stored KVM events against bpftrace's count");
    kvm_events_s_is_each_ticks_count(&db, uuid, theirs.values().sum());
}

/// The window: the paused guest stored, bpftrace attached, the firmware run for 5 s, two more
/// ticks after the suspension. The guest (still there) and bpftrace's output; None when the
/// guest cannot start (skipped).
fn run_the_firmware_for_5_s(db: &Path, dir: &Path) -> Option<(Guest, bpftrace::Output)> {
    let m = Monitor::start(SETMOV, db, &["--interval", "500ms"]);
    let guest = match Guest::start_kvm_firmware_paused("kvm-window") {
        Ok(guest) => guest,
        Err(reason) => {
            let _ = m.stop();
            skip(&reason);
            return None;
        }
    };
    let uuid = guest.uuid().to_owned();
    let stored_rows = || -> usize {
        rusqlite::Connection::open(db)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM vm_ebpf_usage WHERE uuid = ?1",
                    [&uuid],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    };
    setmov_tests::wait_until("a stored eBPF row of the paused guest", || {
        stored_rows() >= 1
    });
    let qemu = guest.qemu_pid().expect("qemu pid");
    let reference = Bpftrace::attach(kvm_reference::SCRIPT, &[qemu.to_string()], dir)
        .unwrap_or_else(|e| panic!("{e}"));
    guest.resume();
    std::thread::sleep(Duration::from_secs(5));
    guest.suspend();
    let after = stored_rows();
    setmov_tests::wait_until("two more ticks", || stored_rows() >= after + 2);
    let _ = m.stop();
    Some((guest, reference.finish()))
}

/// bpftrace's counts by the stored (event, reason); kvm_exit as a total.
fn bpftrace_counts(reference: &bpftrace::Output) -> BTreeMap<(String, String), u64> {
    let mut theirs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut kvm_exit = 0;
    for (map, value) in &reference.maps {
        if map == "@kvm_exit" {
            kvm_exit = value.as_u64().expect("a count");
            continue;
        }
        for (key, count) in value.as_object().expect("keyed") {
            let raw: u64 = key.parse().expect("a number");
            *theirs.entry(kvm_reason(map, raw)).or_default() += count.as_u64().expect("count");
        }
    }
    if kvm_exit > 0 {
        theirs.insert(("kvm_exit".into(), "(all reasons)".into()), kvm_exit);
    }
    theirs
}

/// The stored vm_kvm_events of `uuid` by (event, reason), summed over the ticks.
fn stored_counts(db: &Path, uuid: &str) -> BTreeMap<(String, String), u64> {
    let mut ours: BTreeMap<(String, String), u64> = BTreeMap::new();
    for row in query::<Cell>(
        db,
        "SELECT event, reason, SUM(count) FROM vm_kvm_events WHERE uuid = ?1 GROUP BY 1, 2",
        uuid,
    ) {
        let (event, reason) = (
            row[0].clone().expect("event").0,
            row[1].clone().expect("r").0,
        );
        // bpftrace does not name kvm_exit's VMX/SVM reasons: compared as a total.
        let reason = if event == "kvm_exit" {
            "(all reasons)".to_owned()
        } else {
            reason
        };
        *ours.entry((event, reason)).or_default() += num(&row[2]) as u64;
    }
    ours
}

/// Per tick, the rate times the interval is that tick's count; summed, bpftrace's total.
fn kvm_events_s_is_each_ticks_count(db: &Path, uuid: &str, reference_total: u64) {
    let ticks = query::<Cell>(
        db,
        "SELECT u.time, u.interval_s, u.kvm_events_s, (SELECT SUM(count) FROM vm_kvm_events k
           WHERE k.uuid = u.uuid AND k.time = u.time)
         FROM vm_ebpf_usage u WHERE u.uuid = ?1 ORDER BY u.time",
        uuid,
    );
    let mut total = 0.0;
    for tick in &ticks {
        let events = tick[3].as_deref().map_or(0.0, |_| num(&tick[3]));
        let product = num(&tick[1]) * tick[2].as_deref().map_or(0.0, |_| num(&tick[2]));
        assert!(
            (product - events).abs() <= 0.01,
            "tick {:?}: kvm_events_s × interval_s = {product}, its events {events}",
            tick[0]
        );
        total += product;
    }
    eprintln!(
        "Σ kvm_events_s × interval_s over {} ticks: {total:.2}; bpftrace: {reference_total}",
        ticks.len()
    );
    assert!(
        (total - reference_total as f64).abs() <= 0.01 * ticks.len() as f64,
        "Σ kvm_events_s × interval_s = {total}, bpftrace {reference_total}"
    );
}
