//! `<proc-root>/diskstats` through the host reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| setmov_fuzz::read_proc_file("diskstats", input));
