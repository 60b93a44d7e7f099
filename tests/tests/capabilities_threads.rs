//! The capability drop of `setmov run` (setmov::privileges) reaches every thread of the process,
//! not only the caller: the kernel keeps capabilities per thread, so the others drop theirs in
//! a signal handler. Here threads blocked in a pipe read, asleep and busy are all started
//! before the drop; each ends with nothing, and the blocked read goes on afterwards (the
//! handler's SA_RESTART). In a test file of its own: the drop is for the whole process and for
//! good, which no other test in the same process could bear. Needs root (skips loudly).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use setmov::privileges::{CapabilitySet, KEPT, ThreadPrivileges, drop_capabilities};
use setmov_tests::{is_root, skip};

fn privileges_of(tid: &str) -> Option<ThreadPrivileges> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    ThreadPrivileges::parse(&status)
}

#[test]
fn every_thread_started_before_the_drop_gives_them_up() {
    if !is_root() {
        return skip("giving up capabilities needs a process that has them: run as root");
    }
    let (mut reader, mut writer) = std::io::pipe().expect("pipe");
    let blocked = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).map(|()| byte[0])
    });
    let asleep = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3)));
    let stop = Arc::new(AtomicBool::new(false));
    let spinning = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));

    let (held, threads) = drop_capabilities().expect("drops");
    eprintln!("{threads} threads: {held}");
    let expected = ThreadPrivileges {
        inheritable: CapabilitySet::EMPTY,
        permitted: KEPT,
        effective: KEPT,
        bounding: KEPT,
        ambient: CapabilitySet::EMPTY,
        no_new_privs: true,
    };
    assert_eq!(held, expected);
    // libtest's main thread, this one and the three above.
    assert!(threads >= 5, "{threads} threads");
    let tids: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .map(|t| t.expect("task").file_name().to_string_lossy().into_owned())
        .collect();
    for tid in &tids {
        assert_eq!(privileges_of(tid), Some(expected), "thread {tid}");
    }

    writer.write_all(&[42]).expect("write");
    assert_eq!(blocked.join().expect("reader").expect("read"), 42);
    stop.store(true, Ordering::Relaxed);
    spinning.join().expect("spinner");
    asleep.join().expect("sleeper");
}
