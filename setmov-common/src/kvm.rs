//! KVM event counters: per qemu process (tgid), by event kind and reason.
//!
//! KVM tracepoints fire in the vCPU thread that caused them, so the current tgid is the qemu
//! process of the VM. The programs count in [`KVM_EVENTS_MAP`]; the loader turns reason numbers
//! into names with the tables of the tracepoints' format files.

/// Name of the per-CPU hash map of KVM event counts ([`KvmKey`] -> `u64`).
pub const KVM_EVENTS_MAP: &str = "KVM_EVENTS";
/// Capacity of [`KVM_EVENTS_MAP`]. A VM uses one key per (event kind, reason) it has seen,
/// typically 20-60, so this holds a thousand busy VMs. Not preallocated: each live key costs
/// 8 bytes per CPU plus the key.
pub const KVM_EVENTS_MAX_ENTRIES: u32 = 65536;
/// Name of the per-CPU array (one `u64`) counting events that found [`KVM_EVENTS_MAP`] full.
pub const KVM_EVENTS_LOST_MAP: &str = "KVM_EVENTS_LOST";

/// What [`KvmKey::event`] holds: which tracepoint counted, and so how to read the reason.
/// Keys carry it as a plain `u32` (see [`KvmEvent::from_u32`]): the kernel could write any value.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvmEvent {
    /// `kvm:kvm_exit` whose `isa` selects the first `__print_symbolic` table of the format's
    /// print fmt (VMX on x86), or any `kvm_exit` when the format has no such choice. Reason:
    /// `exit_reason`.
    Exit = 1,
    /// `kvm:kvm_exit` of any other `isa`: the print fmt's second table (SVM on x86).
    ExitOtherIsa = 2,
    /// `kvm:kvm_userspace_exit` that returned to user space: reason is `KVM_EXIT_*`.
    UserspaceExit = 3,
    /// `kvm:kvm_userspace_exit` where `KVM_RUN` failed: reason is the errno (4, `EINTR`, is a
    /// signal that made it return early; the print fmt calls that "restart").
    UserspaceExitErrno = 4,
    /// `kvm:kvm_pio`: reason is [`KVM_PIO_IN`] or [`KVM_PIO_OUT`].
    Pio = 5,
    /// `kvm:kvm_mmio`: reason is `type` (unsatisfied-read, read, write).
    Mmio = 6,
    /// `kvm:kvm_halt_poll_ns`: reason is [`KVM_HALT_POLL_SHRINK`] or [`KVM_HALT_POLL_GROW`].
    HaltPollNs = 7,
    /// `kvm:kvm_vcpu_wakeup`: reason is [`KVM_WAKEUP_POLLED`] or [`KVM_WAKEUP_WAITED`].
    VcpuWakeup = 8,
}

impl KvmEvent {
    /// The kind whose discriminant is `value`, if any.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Exit,
            2 => Self::ExitOtherIsa,
            3 => Self::UserspaceExit,
            4 => Self::UserspaceExitErrno,
            5 => Self::Pio,
            6 => Self::Mmio,
            7 => Self::HaltPollNs,
            8 => Self::VcpuWakeup,
            _ => return None,
        })
    }
}

/// `kvm_pio` reason: the guest read a port (`rw` 0).
pub const KVM_PIO_IN: u32 = 0;
/// `kvm_pio` reason: the guest wrote a port (`rw` non-zero).
pub const KVM_PIO_OUT: u32 = 1;
/// `kvm_halt_poll_ns` reason: the halt-polling interval shrank (`grow` false).
pub const KVM_HALT_POLL_SHRINK: u32 = 0;
/// `kvm_halt_poll_ns` reason: the halt-polling interval grew (`grow` true).
pub const KVM_HALT_POLL_GROW: u32 = 1;
/// `kvm_vcpu_wakeup` reason: the halted vCPU was woken while polling (`waited` false).
pub const KVM_WAKEUP_POLLED: u32 = 0;
/// `kvm_vcpu_wakeup` reason: the halted vCPU slept before it was woken (`waited` true).
pub const KVM_WAKEUP_WAITED: u32 = 1;

/// Key of [`KVM_EVENTS_MAP`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvmKey {
    /// Process id (tgid) of the qemu process whose vCPU thread caused the event.
    pub tgid: u32,
    /// A [`KvmEvent`] discriminant.
    pub event: u32,
    /// Reason within the event kind, as the [`KvmEvent`] variant says.
    pub reason: u32,
}

/// Where the `kvm_exit` program finds its inputs, set by the loader from the format file
/// (global `KVM_EXIT_LAYOUT`). `exit_reason_offset` 0 means "not set": nothing is counted.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmExitLayout {
    /// Byte offset of `unsigned int exit_reason`.
    pub exit_reason_offset: u32,
    /// Byte offset of `u32 isa`; 0 when every exit is a [`KvmEvent::Exit`].
    pub isa_offset: u32,
    /// The `isa` value of [`KvmEvent::Exit`]; other values are [`KvmEvent::ExitOtherIsa`].
    pub first_table_isa: u32,
}

/// Where the `kvm_userspace_exit` program finds its inputs (global
/// `KVM_USERSPACE_EXIT_LAYOUT`). `reason_offset` 0 means "not set".
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmUserspaceExitLayout {
    /// Byte offset of `__u32 reason`.
    pub reason_offset: u32,
    /// Byte offset of `int errno`.
    pub errno_offset: u32,
}

/// Where a KVM program whose reason is one record field finds it: `rw` (4 bytes) of
/// `kvm_pio`, `type` (4) of `kvm_mmio`, `grow` (1) of `kvm_halt_poll_ns`, `waited` (1) of
/// `kvm_vcpu_wakeup` (globals `KVM_PIO_LAYOUT`, ...). `offset` 0 means "not set".
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmFieldLayout {
    pub offset: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<KvmKey>(), 12);
        assert_eq!(size_of::<KvmExitLayout>(), 12);
        assert_eq!(size_of::<KvmUserspaceExitLayout>(), 8);
        assert_eq!(size_of::<KvmFieldLayout>(), 4);
    }

    #[test]
    fn event_kinds_round_trip() {
        for event in [
            KvmEvent::Exit,
            KvmEvent::ExitOtherIsa,
            KvmEvent::UserspaceExit,
            KvmEvent::UserspaceExitErrno,
            KvmEvent::Pio,
            KvmEvent::Mmio,
            KvmEvent::HaltPollNs,
            KvmEvent::VcpuWakeup,
        ] {
            assert_eq!(KvmEvent::from_u32(event as u32), Some(event));
        }
        assert_eq!(KvmEvent::from_u32(0), None);
        assert_eq!(KvmEvent::from_u32(9), None);
    }
}
