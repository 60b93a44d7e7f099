//! libvirt's qemu run files through the reader `--libvirt-run-dir` uses: the input's first line
//! is `NAME.pid`, the rest is the status XML `NAME.xml`.
#![no_main]

const NAME: &str = "fuzz-domain";

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let split = input
        .iter()
        .position(|&b| b == b'\n')
        .map_or(input.len(), |at| at + 1);
    let (pid, xml) = input.split_at(split);
    setmov_fuzz::write(&format!("run/{NAME}.pid"), pid);
    setmov_fuzz::write(&format!("run/{NAME}.xml"), xml);
    let run_dir = setmov_fuzz::scratch().join("run");
    std::hint::black_box(setmov::vm::runfiles::read(&run_dir, NAME));
});
