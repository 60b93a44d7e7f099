//! What a long-running monitor keeps resident once it has started.
//!
//! Most of the monitor's resident set is its own code, and most of that is mapped without being
//! run: a page fault on a file mapping maps the 64 KiB around the page from the page cache
//! ("fault-around"), and reads 128 KiB around it when it is not cached ("read-around"). Start-up
//! also runs much code that never runs again (argument parsing, migrations, the eBPF loader).
//! [`release_startup_code`] marks this executable's mappings as randomly accessed, which turns
//! read-around off for them, and pages them out: the ticks then fault back in only the pages
//! they run, one by one, and the rest stays on disk.

use std::path::Path;

/// Pages this executable's mappings out and turns read-around off for them, once start-up is
/// over; returns the bytes of the mappings advised. Shared libraries are left alone: libvirtd
/// maps the same pages, so dropping them would free nothing. A failure (a kernel without
/// `MADV_PAGEOUT`, before 5.4) is logged at debug level and costs nothing but the memory.
pub fn release_startup_code() -> usize {
    let exe = match std::fs::read_link("/proc/self/exe") {
        Ok(exe) => exe,
        Err(error) => {
            tracing::debug!("cannot find this executable to release its pages: {error}");
            return 0;
        }
    };
    let maps = match std::fs::read_to_string("/proc/self/maps") {
        Ok(maps) => maps,
        Err(error) => {
            tracing::debug!("cannot read /proc/self/maps to release pages: {error}");
            return 0;
        }
    };
    let mut advised = 0;
    for (start, end) in file_mappings(&maps, &exe) {
        let Some(len) = end.checked_sub(start) else {
            continue;
        };
        let advise = |advice: libc::c_int| {
            // SAFETY: the range is a whole mapping of this process, read from /proc/self/maps.
            // MADV_RANDOM only changes how its page faults read ahead, and MADV_PAGEOUT only
            // reclaims its pages (clean file pages, read again on the next access): neither
            // changes what the mapping holds.
            let result = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
            if result != 0 {
                tracing::debug!(
                    "madvise({advice}) on {start:#x}-{end:#x}: {}",
                    std::io::Error::last_os_error()
                );
            }
            result == 0
        };
        if advise(libc::MADV_RANDOM) && advise(libc::MADV_PAGEOUT) {
            advised += len;
        }
    }
    advised
}

/// The address ranges of `maps` (the format of `/proc/PID/maps`) that map the file `path`.
fn file_mappings(maps: &str, path: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            // Permissions, offset, device and inode, then the path after padding.
            let pathname = fields.nth(4)?.trim_start();
            if Path::new(pathname) != path {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_files_mappings_are_taken() {
        let maps = "\
55d0c8a00000-55d0c8b00000 r--p 00000000 fe:01 1234 /usr/bin/setmov
55d0c8b00000-55d0c9000000 r-xp 00100000 fe:01 1234 /usr/bin/setmov
55d0ca000000-55d0ca100000 rw-p 00000000 00:00 0    [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:01 99   /usr/lib/x86_64-linux-gnu/libvirt.so.0
7f0000200000-7f0000300000 r-xp 00000000 fe:01 77   /usr/bin/setmov-other
7f0000400000-7f0000500000 rw-p 00000000 00:00 0
7f0000600000-7f0000700000 r-xp 00000000 fe:01 1234 /usr/bin/setmov (deleted)
malformed line
";
        assert_eq!(
            file_mappings(maps, Path::new("/usr/bin/setmov")),
            vec![
                (0x55d0_c8a0_0000, 0x55d0_c8b0_0000),
                (0x55d0_c8b0_0000, 0x55d0_c900_0000)
            ]
        );
        assert_eq!(file_mappings("", Path::new("/usr/bin/setmov")), Vec::new());
    }

    #[test]
    fn the_running_tests_own_code_is_released_and_runs_on() {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        assert!(!file_mappings(&maps, &exe).is_empty(), "{maps}");
        assert!(release_startup_code() > 0);
        // The released pages come back on the next access.
        assert_eq!(file_mappings("", &exe), Vec::new());
    }
}
