//! Live-kernel test of the eBPF KVM probe against bpftrace: a KVM-accelerated qemu with no disk
//! runs its firmware (SeaBIOS probes ports and MMIO devices, finds nothing to boot and halts
//! until its timer wakes it), and the events our probe credits to qemu's pid must be, kind by
//! kind and reason by reason, exactly those bpftrace counts on the same tracepoints for the same
//! process over the same window.
//!
//! The window: qemu starts paused (`-S`, no vCPU runs), our probes attach (at `Probes::load`)
//! and bpftrace attaches, QMP `cont` starts the vCPU, and once our probe has seen every event
//! this machine must see ([`SEEN_HERE`]) qemu gets SIGSTOP. When waitpid reports it stopped,
//! every thread of it is stopped, so no vCPU can make another event: our counters are read, and
//! bpftrace is stopped (SIGINT) and prints its maps.
//!
//! Why bpftrace rather than the kernel's own per-VM KVM statistics: on this machine none can
//! serve. Its debugfs files (`/sys/kernel/debug/kvm/<pid>-<fd>/`) refuse reads (the kernel is
//! locked down: "debugfs access is restricted"); the binary statistics fd (`KVM_GET_STATS_FD`)
//! is given only to the process that owns the VM (KVM's ioctls fail with EIO from any other), so
//! only qemu itself (`query-stats`) can read it; and those statistics do not count these events:
//! under PVM `io_exits` stays 0 while kvm_pio fires hundreds of times, `exits` counts PVM's
//! exits while kvm_exit never fires, `halt_wakeup` counts wake-up calls (53 in a run where
//! kvm_vcpu_wakeup fired 54 times), and nothing counts returns to user space by reason.
//!
//! Without root, /dev/kvm, qemu, bpftrace or eBPF the test is skipped with a "SKIPPED:" line on
//! stderr, unless SETMOV_REQUIRE_ALL=1 (as in CI): then it fails.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use setmov::ebpf::{KvmCounters, KvmEventKind, Probes};
use setmov_tests::{is_root, kvm_reference, skip};

/// The KVM events a firmware-only qemu makes on this machine, each of which the run must see.
/// Its /dev/kvm is nested PVM, which runs the firmware in KVM's instruction emulator: its port
/// I/O and MMIO (`kvm_pio`, `kvm_mmio`) go back to qemu (`kvm_userspace_exit`, mostly
/// KVM_EXIT_IO and KVM_EXIT_MMIO), and once it has found nothing to boot it halts until its
/// timer interrupt, so the halted vCPU wakes (`kvm_vcpu_wakeup`). That takes the firmware about
/// 4 to 5 s of emulation here, which is why the run lasts until these are seen.
const SEEN_HERE: [KvmEventKind; 4] = [
    KvmEventKind::UserspaceExit,
    KvmEventKind::Pio,
    KvmEventKind::Mmio,
    KvmEventKind::VcpuWakeup,
];

/// The KVM events the run need not see here, and why. They are compared with bpftrace all the
/// same (0 and 0 when they do not fire), and their programs' layouts and reason tables are
/// unit-tested on this kernel's format files in setmov-user/src/ebpf/kvm.rs and
/// setmov-user/src/ebpf/kvm/print_fmt.rs.
const NOT_REQUIRED_HERE: [(KvmEventKind, &str); 2] = [
    (
        KvmEventKind::Exit,
        "fires only with hardware virtualisation (VMX or SVM); this machine's /dev/kvm is \
         nested PVM, which never fires it",
    ),
    (
        KvmEventKind::HaltPollNs,
        "fires only when the halt-polling interval changes: it grows after a halt that ended \
         within the polling limit (halt_poll_ns, 200 µs here) and shrinks after a longer one; \
         the firmware's halts mostly last until its timer, so it fires in some runs only",
    ),
];

/// How long qemu may take to make every event of [`SEEN_HERE`]; about 5 s are needed.
const FIRMWARE_DEADLINE: Duration = Duration::from_secs(40);

/// How long bpftrace may take to compile and attach its probes; about 1 s is needed.
const BPFTRACE_ATTACH_DEADLINE: Duration = Duration::from_secs(30);

/// How long qemu may take to open its QMP socket, and then to answer a command.
const QMP_DEADLINE: Duration = Duration::from_secs(10);

/// What bpftrace prints once every probe is attached when this variable is set (its own
/// runtime tests use it; bpftrace's "Attaching N probes..." comes before attaching). Version
/// 0.17 prints it on stderr, later versions on stdout: the test reads both.
const BPFTRACE_ATTACHED: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";

/// The probe's event kind and the reason name of the raw field bpftrace keyed `map` by.
fn reason_name(map: &str, raw: u64) -> anyhow::Result<(KvmEventKind, String)> {
    let (event, reason) = kvm_reference::event_and_reason(map, raw).map_err(anyhow::Error::msg)?;
    let kind = match event {
        "kvm_userspace_exit" => KvmEventKind::UserspaceExit,
        "kvm_pio" => KvmEventKind::Pio,
        "kvm_mmio" => KvmEventKind::Mmio,
        "kvm_halt_poll_ns" => KvmEventKind::HaltPollNs,
        "kvm_vcpu_wakeup" => KvmEventKind::VcpuWakeup,
        _ => bail!("no probe kind for {event}"),
    };
    Ok((kind, reason))
}

/// What bpftrace counted: every kind but `kvm_exit` by reason name, as our probe names them,
/// and `kvm_exit` as a total (its reasons are VMX or SVM exit reasons, which the script does
/// not name).
struct Reference {
    counters: KvmCounters,
    kvm_exit: u64,
}

/// The counts of bpftrace's `-f json` output, which has `@kvm_exit` (printed even when 0).
fn parse_reference(json_lines: &str) -> anyhow::Result<Reference> {
    let mut counters = KvmCounters::default();
    let mut kvm_exit = None;
    // One `{"type": "map", "data": {"@name": value}}` line a map, the value a count or an
    // object of counts by key.
    for line in json_lines.lines().filter(|line| !line.trim().is_empty()) {
        let record: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("bpftrace printed a line that is not JSON: {line}"))?;
        if record["type"] != "map" {
            continue;
        }
        let data = record["data"]
            .as_object()
            .with_context(|| format!("a map without data: {line}"))?;
        for (map, value) in data {
            if map == "@kvm_exit" {
                kvm_exit = Some(value.as_u64().context("@kvm_exit is not a count")?);
                continue;
            }
            let by_key = value
                .as_object()
                .with_context(|| format!("{map} is not keyed: {line}"))?;
            for (key, count) in by_key {
                let raw: u64 = key
                    .parse()
                    .with_context(|| format!("{map} has a key {key}"))?;
                let count = count
                    .as_u64()
                    .with_context(|| format!("{map}[{key}] is not a count"))?;
                let (kind, reason) = reason_name(map, raw)?;
                *counters
                    .by_kind
                    .entry(kind)
                    .or_default()
                    .entry(reason)
                    .or_default() += count;
            }
        }
    }
    Ok(Reference {
        counters,
        kvm_exit: kvm_exit.context("bpftrace printed no @kvm_exit")?,
    })
}

/// A qemu process, killed and reaped when dropped (also when the test fails).
struct Qemu {
    child: Child,
    qmp_socket: PathBuf,
}

impl Qemu {
    /// A paused q35 machine with KVM, 64 MiB, no devices, no disk and no display, and a QMP
    /// socket in `dir`: once continued, SeaBIOS boots, finds nothing to boot from, and halts.
    fn start_paused(dir: &Path) -> std::io::Result<Self> {
        let qmp_socket = dir.join("qmp.sock");
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "kvm",
                "-machine",
                "q35",
                "-m",
                "64",
                "-display",
                "none",
                "-nodefaults",
                "-no-reboot",
                "-serial",
                "none",
                "-S",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Qemu { child, qmp_socket })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ok while qemu runs; an error if it already exited (e.g. KVM refused).
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("qemu exited early ({status})"),
        }
    }

    /// Starts the vCPUs with QMP `cont`, and returns once qemu has answered.
    fn cont(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + QMP_DEADLINE;
        let stream = loop {
            match UnixStream::connect(&self.qmp_socket) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() > deadline => {
                    return Err(error).context("connecting to qemu's QMP socket");
                }
                Err(_) => {
                    self.ensure_running()?;
                    thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream.set_read_timeout(Some(QMP_DEADLINE))?;
        let mut replies = BufReader::new(stream.try_clone()?);
        let mut commands = stream;
        let mut line = String::new();
        replies
            .read_line(&mut line)
            .context("reading QMP's greeting")?;
        for command in ["qmp_capabilities", "cont"] {
            writeln!(commands, r#"{{"execute": "{command}"}}"#)?;
            // Events (such as RESUME) may come before the reply.
            loop {
                line.clear();
                if replies.read_line(&mut line)? == 0 {
                    bail!("qemu closed QMP before answering {command}");
                }
                let reply: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("QMP sent a line that is not JSON: {line}"))?;
                if let Some(error) = reply.get("error") {
                    bail!("QMP {command} failed: {error}");
                }
                if reply.get("return").is_some() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Stops every thread of qemu (SIGSTOP) and returns once all have stopped: from then on no
    /// vCPU runs, so no KVM event is made.
    fn stop_all_threads(&mut self) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.pid())?);
        kill(pid, Signal::SIGSTOP).context("SIGSTOP to qemu")?;
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).context("waiting for qemu to stop")? {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => Ok(()),
            status => bail!("qemu did not stop: {status:?}"),
        }
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        // An error here means it has already exited: wait() still reaps it.
        let _ = self.child.kill();
        self.child.wait().context("waiting for qemu")?;
        Ok(())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// bpftrace running [`kvm_reference::SCRIPT`] for one process, its maps written to a file; killed
/// and reaped when dropped.
struct Bpftrace {
    child: Child,
    /// Lines of its stdout and stderr, read by a thread until it exits.
    messages: mpsc::Receiver<String>,
    maps_file: PathBuf,
}

impl Bpftrace {
    /// Starts bpftrace for process `pid` and returns once every probe is attached.
    fn attach(pid: u32, dir: &Path) -> anyhow::Result<Self> {
        let maps_file = dir.join("bpftrace.json");
        let (reader, writer) = std::io::pipe()?;
        let child = Command::new("bpftrace")
            .args(["-f", "json", "-o"])
            .arg(&maps_file)
            .args(["-e", kvm_reference::SCRIPT])
            .arg(pid.to_string())
            .env(BPFTRACE_ATTACHED, "1")
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .context("spawning bpftrace")?;
        let (sender, messages) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                // The receiver is gone once the test no longer needs the messages.
                let _ = sender.send(line);
            }
        });
        let mut bpftrace = Bpftrace {
            child,
            messages,
            maps_file,
        };
        bpftrace.wait_attached()?;
        Ok(bpftrace)
    }

    fn wait_attached(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + BPFTRACE_ATTACH_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(line) if line.trim() == BPFTRACE_ATTACHED => return Ok(()),
                // E.g. "couldn't set RLIMIT_MEMLOCK", which this kernel does not need.
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!("bpftrace exited ({status}) before attaching: {seen:?}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("bpftrace did not attach within {BPFTRACE_ATTACH_DEADLINE:?}: {seen:?}")
                }
            }
        }
    }

    /// Stops bpftrace (SIGINT: it prints its maps and exits) and reads its counts.
    fn finish(mut self) -> anyhow::Result<Reference> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGINT).context("SIGINT to bpftrace")?;
        let status = self.child.wait()?;
        let messages: Vec<String> = self.messages.try_iter().collect();
        ensure!(status.success(), "bpftrace failed ({status}): {messages:?}");
        let maps = std::fs::read_to_string(&self.maps_file)
            .with_context(|| format!("reading {}", self.maps_file.display()))?;
        parse_reference(&maps)
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `program` can be run (it answers `--version`).
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn kvm_events_of_qemu_match_bpftrace_over_the_same_window() -> anyhow::Result<()> {
    if !is_root() {
        skip("ebpf_kvm: needs root");
        return Ok(());
    }
    if !Path::new("/dev/kvm").exists() {
        skip("ebpf_kvm: this machine has no /dev/kvm");
        return Ok(());
    }
    for program in ["qemu-system-x86_64", "bpftrace"] {
        if !installed(program) {
            skip(&format!("ebpf_kvm: {program} is not installed"));
            return Ok(());
        }
    }
    // Every kind is either required here or said why not.
    let mut classified: Vec<KvmEventKind> = SEEN_HERE
        .into_iter()
        .chain(NOT_REQUIRED_HERE.map(|(kind, _)| kind))
        .collect();
    classified.sort();
    ensure!(
        classified == KvmEventKind::ALL,
        "SEEN_HERE and NOT_REQUIRED_HERE do not list every KVM event kind once"
    );

    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => {
            skip(&format!("ebpf_kvm: {error}"));
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let probe = probes.kvm.as_mut().context("the kvm probe is off")?;
    for kind in KvmEventKind::ALL {
        ensure!(
            probe
                .attached()
                .iter()
                .any(|name| name == kind.tracepoint()),
            "program {kind} is not attached: {:?}",
            probe.programs_off()
        );
    }

    let dir = tempfile::tempdir()?;
    let mut qemu = Qemu::start_paused(dir.path()).context("spawning qemu-system-x86_64")?;
    let pid = qemu.pid();
    let bpftrace = Bpftrace::attach(pid, dir.path())?;
    qemu.ensure_running()?;
    ensure!(
        !probe.per_tgid()?.contains_key(&pid),
        "the paused qemu already has KVM events"
    );

    qemu.cont()?;
    let started = Instant::now();
    loop {
        qemu.ensure_running()?;
        let ours = probe.per_tgid()?.remove(&pid).unwrap_or_default();
        let missing: Vec<_> = SEEN_HERE
            .into_iter()
            .filter(|kind| ours.total(*kind) == 0)
            .collect();
        if missing.is_empty() {
            break;
        }
        ensure!(
            started.elapsed() < FIRMWARE_DEADLINE,
            "after {FIRMWARE_DEADLINE:?} qemu still has no {missing:?} events: {:?}",
            ours.by_kind
        );
        thread::sleep(Duration::from_millis(100));
    }
    qemu.stop_all_threads()?;
    eprintln!("qemu ran {:?} before it stopped", started.elapsed());

    let per_tgid = probe.per_tgid()?;
    let ours = per_tgid
        .get(&pid)
        .with_context(|| format!("qemu (pid {pid}) has no KVM counters at all"))?;
    let reference = bpftrace.finish()?;
    for kind in KvmEventKind::ALL {
        let empty = BTreeMap::new();
        let our_reasons = ours.by_kind.get(&kind).unwrap_or(&empty);
        if kind == KvmEventKind::Exit {
            eprintln!(
                "{kind}: ours {} bpftrace {}",
                ours.total(kind),
                reference.kvm_exit
            );
            ensure!(
                ours.total(kind) == reference.kvm_exit,
                "{kind}: ours {our_reasons:?}, bpftrace {} in all",
                reference.kvm_exit
            );
            continue;
        }
        let reference_reasons = reference.counters.by_kind.get(&kind).unwrap_or(&empty);
        eprintln!("{kind}: ours {our_reasons:?} bpftrace {reference_reasons:?}");
        ensure!(
            our_reasons == reference_reasons,
            "{kind}: ours {our_reasons:?}, bpftrace {reference_reasons:?}"
        );
    }
    for (kind, why) in NOT_REQUIRED_HERE {
        eprintln!(
            "not required here: {kind} ({} seen): {why}",
            ours.total(kind)
        );
    }
    // This test process runs no vCPU.
    ensure!(
        !per_tgid.contains_key(&std::process::id()),
        "the test process itself has KVM counters"
    );

    qemu.kill()?;
    let forgotten = probe.forget_dead_tgids(Path::new("/proc"))?;
    ensure!(forgotten >= 1, "no dead process forgotten");
    ensure!(
        !probe.per_tgid()?.contains_key(&pid),
        "the exited qemu is still in the map"
    );
    ensure!(probe.lost_events()? == 0, "the counter map overflowed");
    Ok(())
}
