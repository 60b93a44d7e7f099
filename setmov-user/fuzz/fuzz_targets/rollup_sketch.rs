//! A rollup's stored distribution (`<figure>_sketch`, read back from the database) through
//! `Sketch::decode` and `merge_encoded`: an error or a sketch, never a panic; a sketch that
//! reads encodes back to one that reads the same, and answers every quantile.
#![no_main]

use setmov::store::sketch::Sketch;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Ok(sketch) = Sketch::decode(input) else {
        let mut unchanged = Sketch::new();
        unchanged.add(1.0);
        let before = unchanged.clone();
        assert!(unchanged.merge_encoded(input).is_err());
        assert_eq!(unchanged, before, "a malformed sketch added something");
        return;
    };
    let again = Sketch::decode(&sketch.encode()).expect("its own encoding reads");
    assert_eq!(again, sketch);
    for q in [0.0, 0.5, 0.99, 1.0] {
        let value = sketch.quantile(q);
        assert_eq!(value.is_some(), sketch.count() > 0);
    }
    let mut twice = sketch.clone();
    twice.merge_encoded(input).expect("it read once");
    assert_eq!(twice.count(), sketch.count().saturating_mul(2));
});
