//! `/proc/meminfo`, the fields the usage equations need. Our own parser rather than procfs's:
//! procfs 0.18 panics on a name that ends in a multi-byte character and multiplies by 1024
//! unchecked (found by fuzzing, `cargo xtask fuzz proc_meminfo`), and it refuses a file that
//! lacks any of two dozen fields we never read.

use std::io::BufRead;

use super::snapshot::MemInfo;

/// What is wrong with a meminfo file.
#[derive(Debug, thiserror::Error)]
pub enum MeminfoError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("line {line} ({name}): {problem}")]
    Malformed {
        line: usize,
        name: &'static str,
        problem: &'static str,
    },
    #[error("it has no {0} line")]
    Missing(&'static str),
}

/// Reads `MemTotal`, `MemFree`, `Buffers`, `Cached` (required), `MemAvailable` and
/// `SReclaimable`, in bytes. Lines of other fields are not looked at.
pub fn parse_meminfo(reader: impl BufRead) -> Result<MemInfo, MeminfoError> {
    let (mut total, mut free, mut buffers, mut cached) = (None, None, None, None);
    let (mut available, mut s_reclaimable) = (None, None);
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let (name, slot) = match name.trim() {
            "MemTotal" => ("MemTotal", &mut total),
            "MemFree" => ("MemFree", &mut free),
            "MemAvailable" => ("MemAvailable", &mut available),
            "Buffers" => ("Buffers", &mut buffers),
            "Cached" => ("Cached", &mut cached),
            "SReclaimable" => ("SReclaimable", &mut s_reclaimable),
            _ => continue,
        };
        let malformed = |problem| MeminfoError::Malformed {
            line: index + 1,
            name,
            problem,
        };
        *slot = Some(bytes(rest).map_err(malformed)?);
    }
    Ok(MemInfo {
        total: total.ok_or(MeminfoError::Missing("MemTotal"))?,
        free: free.ok_or(MeminfoError::Missing("MemFree"))?,
        buffers: buffers.ok_or(MeminfoError::Missing("Buffers"))?,
        cached: cached.ok_or(MeminfoError::Missing("Cached"))?,
        available,
        s_reclaimable,
    })
}

/// `   16000 kB` → 16384000. The kernel writes these fields in kB; a bare number is taken as
/// bytes, as procfs does.
fn bytes(value: &str) -> Result<u64, &'static str> {
    let mut words = value.split_whitespace();
    let number: u64 = words
        .next()
        .ok_or("no value")?
        .parse()
        .map_err(|_| "the value is not a whole number")?;
    let bytes = match words.next() {
        None => number,
        Some("kB") => number.checked_mul(1024).ok_or("the value is too large")?,
        Some(_) => return Err("the unit is not kB"),
    };
    if words.next().is_some() {
        return Err("more than a value and its unit");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MemInfo, MeminfoError> {
        parse_meminfo(text.as_bytes())
    }

    const FIELDS: &str = "MemTotal:       16000 kB\nMemFree:         4000 kB\n\
MemAvailable:    9000 kB\nBuffers:          500 kB\nCached:          3500 kB\n\
SReclaimable:     300 kB\n";

    #[test]
    fn the_needed_fields_come_in_bytes() {
        let text =
            format!("{FIELDS}SwapCached: 0 kB\nShmem: 7 kB\nHugePages_Total: 0\nweird line\n");
        let mem = parse(&text).expect("valid");
        assert_eq!(
            mem,
            MemInfo {
                total: 16000 * 1024,
                free: 4000 * 1024,
                buffers: 500 * 1024,
                cached: 3500 * 1024,
                available: Some(9000 * 1024),
                s_reclaimable: Some(300 * 1024),
            }
        );
    }

    #[test]
    fn mem_available_and_s_reclaimable_are_optional_the_others_are_not() {
        let old = FIELDS
            .replace("MemAvailable:    9000 kB\n", "")
            .replace("SReclaimable:     300 kB\n", "");
        let mem = parse(&old).expect("valid");
        assert_eq!((mem.available, mem.s_reclaimable), (None, None));
        let err = parse(&FIELDS.replace("300 kB", "3x0 kB")).expect_err("malformed");
        assert_eq!(
            err.to_string(),
            "line 6 (SReclaimable): the value is not a whole number"
        );
        let err = parse(&FIELDS.replace("Cached", "Cachet")).expect_err("no Cached");
        assert_eq!(err.to_string(), "it has no Cached line");
    }

    #[test]
    fn a_malformed_needed_field_says_which_line() {
        let err = parse(&FIELDS.replace("500 kB", "500 MB")).expect_err("unit");
        assert_eq!(err.to_string(), "line 4 (Buffers): the unit is not kB");
        let err = parse(&FIELDS.replace("4000", "-1")).expect_err("sign");
        assert_eq!(
            err.to_string(),
            "line 2 (MemFree): the value is not a whole number"
        );
    }

    /// Inputs that panicked procfs's parser, which this one replaced (fuzzing, proc_meminfo).
    #[test]
    fn fuzzed_inputs_that_crashed_procfs_are_errors() {
        // The input as the fuzzer found it: a field name ending in 'þ' on line 2 (procfs cut
        // off its last byte, inside the character).
        let crash = b"MAAemTotal:       16777217 kB\nMemFree:\xc3\xbe         8388608 kB\n\
MemAvailable:   12582912 kB\nBuffers:          489317 kB\n\
Ca\xa3\x97\x9a\x9b\xc5\xdf\xdf\xdf       2097152\x90 kB\nSw::ap \x00CacheNFSkB\nSUn\nreclaim    0 \nkB\n";
        let err = parse_meminfo(&crash[..]).expect_err("malformed");
        assert_eq!(
            err.to_string(),
            "line 2 (MemFree): the value is not a whole number"
        );
        // The same shape on a name we do not read is skipped.
        let text = format!("Memþ:       1 kB\n{FIELDS}");
        assert_eq!(parse(&text).expect("valid").total, 16000 * 1024);
        // procfs multiplied by 1024 without a check.
        let huge = FIELDS.replace("16000", "18446744073709551615");
        let err = parse(&huge).expect_err("overflow");
        assert_eq!(err.to_string(), "line 1 (MemTotal): the value is too large");
    }
}
