//! A spooled tick (the MySQL store's spool) through `Spool::open`, `front` and `pop_front`:
//! the input is the one `*.json` file in a scratch spool.
#![no_main]

use setmov::store::spool::Spool;

/// The spool's bound; larger than any input, so nothing is dropped.
const MAX_BYTES: u64 = 1 << 30;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    setmov_fuzz::write("spool/20261130T060000.123-00000000000000000042.json", input);
    let dir = setmov_fuzz::scratch().join("spool");
    let mut spool = Spool::open(&dir, MAX_BYTES)
        .unwrap_or_else(|e| panic!("the scratch spool does not open: {e}"));
    let _ = std::hint::black_box(spool.front());
    spool
        .pop_front()
        .unwrap_or_else(|e| panic!("the scratch spool's tick is not removed: {e}"));
});
