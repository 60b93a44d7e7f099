//! The reference the KVM probe is checked against: a bpftrace script counting the same kvm:*
//! tracepoints for one qemu process, each map keyed by the raw field the probe turns into a
//! reason name, and those names as the kernel's print fmt gives them.

/// The reference: counts of the same tracepoints for process `$1`, each map keyed by the raw
/// field our probe turns into a reason name. `kvm_userspace_exit` is split as our probe splits
/// it: by exit reason, or by errno when `KVM_RUN` failed (the exit reason is then stale).
pub const SCRIPT: &str = r#"
tracepoint:kvm:kvm_exit /pid == $1/ { @kvm_exit = count(); }
tracepoint:kvm:kvm_userspace_exit /pid == $1 && args->errno >= 0/ {
    @kvm_userspace_exit[args->reason] = count();
}
tracepoint:kvm:kvm_userspace_exit /pid == $1 && args->errno < 0/ {
    @kvm_userspace_exit_errno[-args->errno] = count();
}
tracepoint:kvm:kvm_pio /pid == $1/ { @kvm_pio[args->rw] = count(); }
tracepoint:kvm:kvm_mmio /pid == $1/ { @kvm_mmio[args->type] = count(); }
tracepoint:kvm:kvm_halt_poll_ns /pid == $1/ { @kvm_halt_poll_ns[args->grow] = count(); }
tracepoint:kvm:kvm_vcpu_wakeup /pid == $1/ { @kvm_vcpu_wakeup[args->waited] = count(); }
"#;

/// `KVM_EXIT_*` names by value (include/uapi/linux/kvm.h), as far as the kvm_userspace_exit
/// tracepoint's table goes on this kernel; a later reason keeps its number there.
pub const KVM_EXIT_NAMES: [&str; 31] = [
    "UNKNOWN",
    "EXCEPTION",
    "IO",
    "HYPERCALL",
    "DEBUG",
    "HLT",
    "MMIO",
    "IRQ_WINDOW_OPEN",
    "SHUTDOWN",
    "FAIL_ENTRY",
    "INTR",
    "SET_TPR",
    "TPR_ACCESS",
    "S390_SIEIC",
    "S390_RESET",
    "DCR",
    "NMI",
    "INTERNAL_ERROR",
    "OSI",
    "PAPR_HCALL",
    "S390_UCONTROL",
    "WATCHDOG",
    "S390_TSCH",
    "EPR",
    "SYSTEM_EVENT",
    "S390_STSI",
    "IOAPIC_EOI",
    "HYPERV",
    "ARM_NISV",
    "X86_RDMSR",
    "X86_WRMSR",
];

/// `errno` of a `KVM_RUN` cut short by a signal, which the tracepoint calls "restart".
const EINTR: u64 = 4;

/// The event (its tracepoint's name) and the reason name the kernel's print fmt gives the raw
/// field bpftrace keyed `map` by.
pub fn event_and_reason(map: &str, raw: u64) -> Result<(&'static str, String), String> {
    let two_way = |is_first: bool, first: &str, second: &str| {
        if is_first { first } else { second }.to_owned()
    };
    Ok(match map {
        "@kvm_userspace_exit" => (
            "kvm_userspace_exit",
            usize::try_from(raw)
                .ok()
                .and_then(|value| KVM_EXIT_NAMES.get(value))
                .map_or_else(|| raw.to_string(), |name| format!("KVM_EXIT_{name}")),
        ),
        "@kvm_userspace_exit_errno" if raw == EINTR => ("kvm_userspace_exit", "restart".to_owned()),
        "@kvm_userspace_exit_errno" => ("kvm_userspace_exit", format!("error {raw}")),
        // `rw` is KVM_PIO_IN (0) or KVM_PIO_OUT (1); the print fmt reads any non-zero as out.
        "@kvm_pio" => ("kvm_pio", two_way(raw != 0, "out", "in")),
        // KVM_TRACE_MMIO_READ_UNSATISFIED, _READ and _WRITE (include/trace/events/kvm.h).
        "@kvm_mmio" => {
            let name = match raw {
                0 => "unsatisfied-read",
                1 => "read",
                2 => "write",
                _ => {
                    return Err(format!(
                        "bpftrace saw a kvm_mmio type {raw}, which has no name"
                    ));
                }
            };
            ("kvm_mmio", name.to_owned())
        }
        "@kvm_halt_poll_ns" => ("kvm_halt_poll_ns", two_way(raw != 0, "grow", "shrink")),
        "@kvm_vcpu_wakeup" => ("kvm_vcpu_wakeup", two_way(raw != 0, "waited", "polled")),
        _ => {
            return Err(format!(
                "bpftrace printed a map {map} the script does not have"
            ));
        }
    })
}
