//! SETMOV's kernel side: tracepoint programs that aggregate per process, device and thread
//! in kernel maps. Nothing is sent to user space per event: the loader reads the maps once per
//! tick.
//!
//! Built for the host too (as a normal binary) only so that `cargo check`/`clippy` cover it.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

mod block;
mod kvm;
mod net;
mod sched;

/// `bpf_map_update_elem` returns `-EEXIST` when `BPF_NOEXIST` finds the key already there.
const EEXIST: i32 = 17;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "setmov-ebpf is an eBPF object built by setmov-user's build script and loaded by setmov"
    );
    std::process::exit(2);
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
