//! The KVM tracepoints' `format` files, print fmt included (`__print_symbolic` tables), through
//! the reader the KVM probe starts with: the input is every KVM tracepoint's format file in a
//! scratch tracefs, so each tracepoint's own checks run on it.
#![no_main]

use setmov::ebpf::format::format_path;
use setmov::ebpf::kvm::{KvmEventKind, KvmLayouts};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let tracefs = setmov_fuzz::scratch().join("tracing");
    for kind in KvmEventKind::ALL {
        let path = format_path(&tracefs, "kvm", kind.tracepoint());
        let relative = path.strip_prefix(setmov_fuzz::scratch()).unwrap_or(&path);
        setmov_fuzz::write(&relative.to_string_lossy(), input);
    }
    let _ = std::hint::black_box(KvmLayouts::read(&tracefs));
});
