//! Live-kernel test of the eBPF KVM probe: a KVM-accelerated qemu with no disk runs its
//! firmware (SeaBIOS probes ports and MMIO devices) for a few seconds, and the probe must credit
//! its returns to user space, port I/O and MMIO to qemu's pid, with the kernel's reason names.
//!
//! Without root, /dev/kvm, qemu or eBPF the test is skipped with a "SKIPPED:" line on stderr,
//! unless SETMOV_REQUIRE_ALL=1 (as in CI): then it fails.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use setmov::ebpf::{KvmCounters, KvmEventKind, Probes};
use setmov_tests::{is_root, skip};

/// How long the guest's firmware runs before the counters are read.
const GUEST_RUN: Duration = Duration::from_millis(2500);

/// A qemu process, killed and reaped when dropped (also when the test fails).
struct Qemu(Child);

impl Qemu {
    /// A q35 machine with KVM, 64 MiB, no devices, no disk and no display: SeaBIOS boots,
    /// finds nothing to boot from, and waits.
    fn start() -> std::io::Result<Self> {
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
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Qemu(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Ok while qemu runs; an error if it already exited (e.g. KVM refused).
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.0.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("qemu exited early ({status})"),
        }
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        // An error here means it has already exited: wait() still reaps it.
        let _ = self.0.kill();
        self.0.wait().context("waiting for qemu")?;
        Ok(())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[test]
fn kvm_events_of_qemu_are_credited_to_qemu() -> anyhow::Result<()> {
    if !is_root() {
        skip("ebpf_kvm: needs root");
        return Ok(());
    }
    if !Path::new("/dev/kvm").exists() {
        skip("ebpf_kvm: this machine has no /dev/kvm");
        return Ok(());
    }
    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => {
            skip(&format!("ebpf_kvm: {error}"));
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    eprintln!("attached: {:?}", probes.attached());
    eprintln!("disabled: {:?}", probes.disabled);
    let probe = probes.kvm.as_mut().context("the kvm probe is off")?;
    for program in ["kvm_userspace_exit", "kvm_pio", "kvm_mmio"] {
        ensure!(
            probe.attached().iter().any(|name| name == program),
            "program {program} is not attached"
        );
    }

    let mut qemu = match Qemu::start() {
        Ok(qemu) => qemu,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            skip("ebpf_kvm: qemu-system-x86_64 is not installed");
            return Ok(());
        }
        Err(error) => return Err(error).context("spawning qemu-system-x86_64"),
    };
    let pid = qemu.pid();
    thread::sleep(GUEST_RUN);
    qemu.ensure_running()?;

    let per_tgid = probe.per_tgid()?;
    let counters: &KvmCounters = per_tgid
        .get(&pid)
        .with_context(|| format!("qemu (pid {pid}) has no KVM counters at all"))?;
    for (kind, reasons) in &counters.by_kind {
        eprintln!("qemu (pid {pid}) {kind}: {reasons:?}");
    }
    for kind in [
        KvmEventKind::UserspaceExit,
        KvmEventKind::Pio,
        KvmEventKind::Mmio,
    ] {
        ensure!(counters.total(kind) > 0, "qemu has no {kind} events");
    }
    // Port I/O that qemu emulates returns to user space as KVM_EXIT_IO, named from the table.
    ensure!(
        counters.count(KvmEventKind::UserspaceExit, "KVM_EXIT_IO") > 0,
        "no KVM_EXIT_IO among qemu's returns to user space: {:?}",
        counters.by_kind.get(&KvmEventKind::UserspaceExit)
    );
    ensure!(
        counters.count(KvmEventKind::Pio, "in") + counters.count(KvmEventKind::Pio, "out")
            == counters.total(KvmEventKind::Pio),
        "port I/O with a direction other than in/out"
    );
    // Every kvm_mmio type is in the kernel's table: no bare numbers.
    if let Some(mmio) = counters.by_kind.get(&KvmEventKind::Mmio) {
        ensure!(
            mmio.keys().all(|name| name.parse::<u32>().is_err()),
            "unnamed MMIO types: {mmio:?}"
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
