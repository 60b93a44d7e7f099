//! The host's memory and user CPU figures against the tools an operator reads them with:
//! `free -bw` right before and right after each tick, and `mpstat` over the same window while
//! the host runs a KVM guest that spins (guest time, which the kernel also counts as user
//! time) and a busy thread of its own. T1's host facts against `getconf`, `nproc` and `free`.
//!
//! The CPU test needs root and sysstat's `mpstat`; otherwise it skips loudly (and fails under
//! SETMOV_REQUIRE_ALL=1). Without /dev/kvm and qemu, or on a kernel that accounts a vCPU's
//! time as system time (nested PVM), it runs with no guest time and says so.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use setmov_tests::monitor::Monitor;
use setmov_tests::reference::{self, assert_within, missing_tools};
use setmov_tests::skip;
use setmov_tests::window::{WINDOW_SECS, Window, sleep_until};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// The tests load and measure the same machine: one at a time.
static MACHINE: Mutex<()> = Mutex::new(());

/// `free -bw`'s `Mem:` line (bytes), and when the run finished.
#[derive(Debug, Clone, Copy)]
struct Free {
    total: u64,
    used: u64,
    free: u64,
    buffers: u64,
    /// Cached + SReclaimable.
    cache: u64,
    available: u64,
    done: Instant,
}

impl Free {
    fn run() -> Free {
        let out = Command::new("free").arg("-bw").output().expect("free");
        assert!(out.status.success(), "free -bw failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let done = Instant::now();
        let header: Vec<&str> = text
            .lines()
            .next()
            .expect("header")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            [
                "total",
                "used",
                "free",
                "shared",
                "buffers",
                "cache",
                "available"
            ],
            "free -bw's columns"
        );
        let mem: Vec<u64> = text
            .lines()
            .find_map(|l| l.strip_prefix("Mem:"))
            .expect("a Mem: line")
            .split_whitespace()
            .map(|n| n.parse().expect("bytes"))
            .collect();
        Free {
            total: mem[0],
            used: mem[1],
            free: mem[2],
            buffers: mem[4],
            cache: mem[5],
            available: mem[6],
            done,
        }
    }

    /// (used, non-free, non-cache, unavailable) in bytes: free's own used column (procps 4:
    /// total − available), total − free, procps 3.3's used (free's cache column holds
    /// SReclaimable) and total − available.
    fn figures(&self) -> [u64; 4] {
        [
            self.used,
            self.total - self.free,
            self.total - self.free - self.buffers - self.cache,
            self.total - self.available,
        ]
    }
}

/// The stored memory figures of ticks bracketed by `free -bw` run right before each tick
/// (about 50 ms before its scheduled instant) and right after its summary line, and T1's host
/// facts against `free -b`'s total and the CPUs the kernel has online.
///
/// Each stored percentage, turned back into bytes with the stored total, lies between what the
/// two runs of free saw, widened by 4 MiB: memory can move past both ends in the ~50 ms between
/// them (other tests and builds share the machine), and by at most a few MiB in practice. A
/// zero, the wrong equation (non-free and used differ by GiBs; used and non-cache by Shmem and
/// the part of the page cache the kernel would not reclaim) or a unit slip falls far outside.
/// `mem_used_bytes`, the headline in bytes, is checked against free's used column the same way. The totals
/// are constants of the running kernel and must be equal to the byte.
#[test]
fn memory_figures_and_host_facts_match_procps() {
    use std::io::BufRead as _;
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    const TICKS: usize = 6;
    let started = Instant::now();
    // With libvirt, which gives T1 its CPUs and memory; no guests are needed.
    let mut child = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
        .args(["run", "--no-ebpf", "--interval", "1s", "--count"])
        .arg(TICKS.to_string())
        .arg("--database")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("setmov starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel::<Instant>();
    let reader = std::thread::spawn(move || {
        for _ in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(Instant::now());
        }
    });
    // (before, after) for each tick; `None` for a tick whose line came before the run of free
    // meant to precede it had finished.
    let mut brackets: Vec<Option<(Free, Free)>> = Vec::new();
    let mut before: Option<Free> = None;
    let mut pending: Option<Instant> = None;
    while let Ok(seen) = pending.take().map_or_else(|| lines.recv(), Ok) {
        let after = Free::run();
        brackets.push(before.take().map(|b| (b, after)));
        // The next tick is due about 1 s after this one was printed.
        let next = seen + Duration::from_millis(950);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let b = Free::run();
        // A bracket only if the next tick's line has not come yet.
        match lines.try_recv() {
            Err(std::sync::mpsc::TryRecvError::Empty) => before = Some(b),
            Ok(seen) => pending = Some(seen),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        }
    }
    assert!(child.wait().expect("setmov").success(), "setmov failed");
    reader.join().expect("reader");
    assert_eq!(brackets.len(), TICKS, "one summary line per tick");

    let conn = rusqlite::Connection::open(&db).expect("db");
    let stored: Vec<(i64, [f64; 4], i64)> = conn
        .prepare(
            "SELECT mem_total_bytes, mem_used_pct, mem_nonfree_pct, mem_noncache_pct,
                    mem_unavailable_pct, mem_used_bytes
             FROM host_usage ORDER BY time",
        )
        .expect("sql")
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?],
                r.get(5)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("every memory figure of every tick");
    assert_eq!(stored.len(), TICKS);
    const SLACK: f64 = 4.0 * 1024.0 * 1024.0;
    const NAMES: [&str; 4] = [
        "mem_used_pct",
        "mem_nonfree_pct",
        "mem_noncache_pct",
        "mem_unavailable_pct",
    ];
    let mut checked = 0;
    for (n, ((total, pcts, used_bytes), bracket)) in stored.iter().zip(&brackets).enumerate() {
        let Some((b, a)) = bracket else { continue };
        assert_eq!(
            (*total as u64, *total as u64),
            (b.total, a.total),
            "tick {n}: mem_total_bytes against free's total"
        );
        let (fb, fa) = (b.figures(), a.figures());
        let used = *used_bytes as f64;
        let diff = |theirs: u64| {
            let d = used - theirs as f64;
            format!("{d:+.0} B ({:+.4} %)", 100.0 * d / theirs as f64)
        };
        eprintln!(
            "tick {n} mem_used_bytes: stored {used:.0} B; free -b used {} B before (stored {}), \
             {} B after (stored {}), {:.0} ms apart",
            b.used,
            diff(b.used),
            a.used,
            diff(a.used),
            a.done.duration_since(b.done).as_secs_f64() * 1e3
        );
        assert!(
            (b.used.min(a.used) as f64 - SLACK..=b.used.max(a.used) as f64 + SLACK).contains(&used),
            "tick {n}: mem_used_bytes {used} B; free's used {} .. {} B",
            b.used,
            a.used
        );
        for (i, name) in NAMES.iter().enumerate() {
            let bytes = pcts[i] / 100.0 * *total as f64;
            let (lo, hi) = (fb[i].min(fa[i]) as f64, fb[i].max(fa[i]) as f64);
            eprintln!(
                "tick {n} {name}: {:.3} % = {:.1} MiB; free {:.1} MiB before, {:.1} MiB after ({:.0} ms later)",
                pcts[i],
                bytes / 1048576.0,
                fb[i] as f64 / 1048576.0,
                fa[i] as f64 / 1048576.0,
                a.done.duration_since(b.done).as_secs_f64() * 1e3
            );
            assert!(
                (lo - SLACK..=hi + SLACK).contains(&bytes),
                "tick {n}: {name} {:.4} % is {bytes:.0} B; free saw {lo}..{hi} B",
                pcts[i]
            );
        }
        checked += 1;
    }
    assert!(checked >= TICKS - 2, "only {checked} ticks were bracketed");

    let (cpus, memory): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT cpus, memory_bytes FROM hosts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("one host row");
    let command = |program: &str, args: &[&str]| -> String {
        let out = Command::new(program).args(args).output().expect(program);
        assert!(out.status.success(), "{program} failed");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let online: i64 = command("getconf", &["_NPROCESSORS_ONLN"])
        .parse()
        .expect("count");
    let all: i64 = command("nproc", &["--all"]).parse().expect("count");
    let free_total = Free::run().total;
    eprintln!(
        "hosts: cpus {cpus:?} (getconf _NPROCESSORS_ONLN {online}, nproc --all {all}), memory_bytes {memory:?} (free -b total {free_total}); {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (Some(cpus), Some(memory)) = (cpus, memory) else {
        return skip("libvirt gave no node facts (is libvirtd running?)");
    };
    // libvirt counts the active logical CPUs; nproc --all also counts offline ones, so it is
    // the reference only when none is offline.
    assert_eq!(cpus, online, "hosts.cpus against the online CPUs");
    if online == all {
        assert_eq!(cpus, all, "hosts.cpus against nproc --all");
    }
    assert_eq!(
        memory as u64, free_total,
        "hosts.memory_bytes against free's total"
    );
}

/// A KVM guest whose one vCPU spins in a boot sector (`jmp $`) under qemu, or `None` (with
/// the reason printed) without /dev/kvm, qemu, or guest time to show for it.
struct SpinningGuest {
    qemu: Child,
    _image: tempfile::NamedTempFile,
}

impl SpinningGuest {
    fn start() -> Option<SpinningGuest> {
        if !Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: no guest time in this run");
            return None;
        }
        let mut image = tempfile::NamedTempFile::new().expect("image");
        let mut sector = [0u8; 512];
        sector[..2].copy_from_slice(&[0xeb, 0xfe]); // jmp $
        sector[510..].copy_from_slice(&[0x55, 0xaa]);
        image.write_all(&sector).expect("write the boot sector");
        let drive = format!("file={},format=raw,if=ide", image.path().display());
        let qemu = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "kvm",
                "-m",
                "16",
                "-display",
                "none",
                "-nodefaults",
            ])
            .args(["-drive", &drive])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(qemu) = qemu else {
            eprintln!("qemu-system-x86_64 does not start: no guest time in this run");
            return None;
        };
        let guest = SpinningGuest {
            qemu,
            _image: image,
        };
        let start = guest_ticks();
        std::thread::sleep(Duration::from_secs(2));
        let grown = guest_ticks() - start;
        if grown < 50 {
            // A kernel may account a vCPU's time as system time, not guest (nested PVM here).
            eprintln!(
                "the KVM guest ran {grown} guest ticks in 2 s (its vCPU's time is not guest \
                 time on this kernel): no guest time in this run"
            );
            return None;
        }
        eprintln!("a KVM guest spins: {grown} guest ticks in 2 s");
        Some(guest)
    }
}

impl Drop for SpinningGuest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// The guest field of /proc/stat's cpu line.
fn guest_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    stat.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(9))
        .and_then(|v| v.parse().ok())
        .expect("a guest field")
}

/// Over one window (`mpstat -P ALL 1 12` beside `setmov run` at 1 s), with a KVM guest
/// spinning and a host thread busy for 6 s: `cpu_user_excl_guest_pct` against mpstat's %usr
/// and `cpu_user_pct` against %usr + %guest, each as the mean of the seconds, within 1 point
/// (see host_disk_live.rs for why the mean of the seconds and why 1 point), and `cpu_pct`
/// against 100 − %idle − %iowait.
#[test]
fn user_without_guest_is_mpstats_usr_on_a_host_running_a_guest() {
    if let Some(reason) = missing_tools(&["mpstat"]) {
        return skip(&reason);
    }
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let guest = SpinningGuest::start();
    let work = tempfile::tempdir().expect("tempdir");
    let db = work.path().join("setmov.db");
    let monitor = Monitor::start(
        SETMOV,
        &db,
        &["--no-ebpf", "--no-libvirt", "--interval", "1s"],
    );
    let window = Window::after_next_tick(&db, "host_usage");
    let mpstat = reference::start("mpstat", &["-P", "ALL", "1", &WINDOW_SECS.to_string()]);
    sleep_until(window.start + 3.0);
    let until = Instant::now() + Duration::from_secs(6);
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let mpstat = reference::finish(mpstat, "mpstat");
    sleep_until(window.end() + 1.5);
    let _ = monitor.stop();
    drop(guest);

    let all = &reference::mean_of_reports(&mpstat, "%usr", "CPU")["all"];
    let sums = window.sums(
        &db,
        "host_usage u",
        "u",
        "1",
        &[
            "u.cpu_user_excl_guest_pct",
            "u.cpu_user_pct",
            "u.cpu_guest_pct",
            "u.cpu_pct",
            "1",
        ],
    );
    let covered = sums[4];
    let ours = |i: usize| sums[i] / covered;
    eprintln!(
        "window {:.3} .. {:.3}: mpstat %usr {:.2} %guest {:.2} %gnice {:.2}",
        window.start,
        window.end(),
        all["%usr"],
        all["%guest"],
        all["%gnice"]
    );
    assert_within("host user without guest %", ours(0), all["%usr"], 1.0);
    assert_within("host user %", ours(1), all["%usr"] + all["%guest"], 1.0);
    assert_within("host guest %", ours(2), all["%guest"] + all["%gnice"], 1.0);
    assert_within(
        "host busy %",
        ours(3),
        100.0 - all["%idle"] - all["%iowait"],
        1.0,
    );
}
