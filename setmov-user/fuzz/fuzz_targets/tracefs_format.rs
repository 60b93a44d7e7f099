//! A tracepoint's tracefs `format` file through the field parser. The file is read as UTF-8
//! text (`read_format`), so other bytes never reach the parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = std::hint::black_box(setmov::ebpf::format::parse_format(text));
    }
});
