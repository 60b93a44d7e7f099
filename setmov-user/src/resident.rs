//! What a long-running monitor keeps resident once it has started.
//!
//! Most of the monitor's resident set is code and read-only data mapped from files: its own
//! executable and the sixty-odd libraries libvirt's client brings. Most of those pages are
//! mapped without being used: start-up runs much code that never runs again (argument parsing,
//! migrations, the eBPF loader, every library's relocations and constructors), and a page
//! fault on a file mapping maps the 64 KiB around the page from the page cache
//! ("fault-around"). [`release_file_pages`] unmaps the pages of this process's read-only file
//! mappings: they stay in the page cache (shared with libvirtd and every other process that
//! maps them), and the ticks map back only what they use, as minor faults. This executable's
//! own code is left mapped: the ticks run a good part of it, and mapping that back fault by
//! fault would delay the tick that follows (by milliseconds in a debug build), which would
//! then read its counters later than its stored instant says.
//!
//! A page of such a mapping that holds its own copy (a library's relocated read-only data, or
//! a breakpoint a debugger or a uprobe wrote) is anonymous memory: unmapping it would lose the
//! copy, so it is kept, found through `/proc/self/pagemap`.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// `/proc/PID/pagemap`: an entry per page, whose bit 63 says it is present and bit 61 that it
/// is a page of a file (or shared memory), not an anonymous copy.
const PAGEMAP_PRESENT: u64 = 1 << 63;
const PAGEMAP_FILE_OR_SHARED: u64 = 1 << 61;
const PAGE_SIZE: usize = 4096;

/// A private, read-only mapping of a file, as `/proc/PID/maps` lists it.
#[derive(Debug, PartialEq, Eq)]
struct FileMapping {
    start: usize,
    end: usize,
}

/// What [`release_file_pages`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Mappings looked at.
    pub mappings: usize,
    /// Bytes unmapped (page-cache pages, present or not).
    pub bytes: usize,
    /// Bytes kept because they hold an anonymous copy.
    pub kept_bytes: usize,
}

/// Unmaps the page-cache pages of this process's private read-only file mappings (its
/// executable's read-only data, the libraries' code and data), keeping pages that hold an
/// anonymous copy. Nothing is lost: the next access maps the same page again.
pub fn release_file_pages() -> std::io::Result<Released> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut released = Released::default();
    for mapping in read_only_file_mappings(&maps, &exe) {
        released.mappings += 1;
        let entries = page_entries(&pagemap, &mapping)?;
        for (start, end) in releasable_runs(mapping.start, &entries) {
            // SAFETY: [start, end) lies in a private mapping of a file that is not writable,
            // and none of its pages holds an anonymous copy (checked just before; a mapping
            // that cannot be written gains none). MADV_DONTNEED drops the page table entries
            // only: the next access maps the file's page from the page cache again, with the
            // same bytes.
            let result = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
            if result != 0 {
                return Err(std::io::Error::last_os_error());
            }
            released.bytes += end - start;
        }
        released.kept_bytes +=
            entries.iter().filter(|e| is_anonymous_copy(**e)).count() * PAGE_SIZE;
    }
    Ok(released)
}

/// The private, not writable, file-backed mappings in `maps` (the format of `/proc/PID/maps`),
/// but for the code of executable `exe`.
fn read_only_file_mappings(maps: &str, exe: &Path) -> Vec<FileMapping> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let inode = fields.nth(2)?;
            let path = fields.next()?;
            // Not writable and private ("r--p", "r-xp"), and a file's (an inode, a path that
            // is not a pseudo-mapping such as [vdso]).
            let mut perms = perms.chars();
            let (_, write, execute, private) =
                (perms.next()?, perms.next()?, perms.next()?, perms.next()?);
            if write != '-' || private != 'p' || inode == "0" || path.starts_with('[') {
                return None;
            }
            if execute == 'x' && Path::new(path) == exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let mapping = FileMapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
            };
            (mapping.start < mapping.end && mapping.start.is_multiple_of(PAGE_SIZE))
                .then_some(mapping)
        })
        .collect()
}

/// The pagemap entries of `mapping`'s pages.
fn page_entries(pagemap: &File, mapping: &FileMapping) -> std::io::Result<Vec<u64>> {
    let pages = (mapping.end - mapping.start) / PAGE_SIZE;
    let mut bytes = vec![0u8; pages * 8];
    let offset = (mapping.start / PAGE_SIZE * 8) as u64;
    pagemap.read_exact_at(&mut bytes, offset)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|entry| u64::from_ne_bytes(entry.try_into().unwrap_or_default()))
        .collect())
}

fn is_anonymous_copy(entry: u64) -> bool {
    entry & PAGEMAP_PRESENT != 0 && entry & PAGEMAP_FILE_OR_SHARED == 0
}

/// The address ranges of pages that may be unmapped, of a mapping at `start` whose pages have
/// pagemap `entries`: the longest runs of pages holding no anonymous copy that contain a
/// present page.
fn releasable_runs(start: usize, entries: &[u64]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut run: Option<(usize, bool)> = None;
    for (index, entry) in entries
        .iter()
        .chain(std::iter::once(&PAGEMAP_PRESENT))
        .enumerate()
    {
        let at = start + index * PAGE_SIZE;
        let is_end = index == entries.len();
        if is_end || is_anonymous_copy(*entry) {
            if let Some((from, true)) = run.take() {
                runs.push((from, at));
            }
            run = None;
            continue;
        }
        let present = entry & PAGEMAP_PRESENT != 0;
        run = Some(match run {
            Some((from, any)) => (from, any || present),
            None => (at, present),
        });
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: u64 = PAGEMAP_PRESENT | PAGEMAP_FILE_OR_SHARED;
    const ANON: u64 = PAGEMAP_PRESENT;

    #[test]
    fn private_read_only_file_mappings_but_this_programs_code_are_taken() {
        let maps = "\
55d0c8a00000-55d0c8b00000 r--p 00000000 fe:01 1234                       /usr/bin/setmov
55d0c8b00000-55d0c9000000 r-xp 00100000 fe:01 1234                       /usr/bin/setmov
55d0c9000000-55d0c9100000 rw-p 00600000 fe:01 1234                       /usr/bin/setmov
55d0ca000000-55d0ca100000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:01 99                         /usr/lib/x86_64-linux-gnu/libvirt.so.0
7f0000200000-7f0000300000 r--s 00000000 00:0f 1041                       anon_inode:bpf-map
7f0000400000-7f0000500000 r--p 00000000 00:00 0
7ffc0000000-7ffc0002000 r-xp 00000000 00:00 0                            [vdso]
malformed line
";
        assert_eq!(
            read_only_file_mappings(maps, Path::new("/usr/bin/setmov")),
            vec![
                FileMapping {
                    start: 0x55d0_c8a0_0000,
                    end: 0x55d0_c8b0_0000
                },
                FileMapping {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_0010_0000
                },
            ]
        );
    }

    #[test]
    fn anonymous_copies_split_the_runs_and_unmapped_runs_are_left() {
        let at = |page: usize| 0x1000_0000 + page * PAGE_SIZE;
        assert_eq!(
            releasable_runs(
                at(0),
                &[FILE, 0, ANON, FILE, FILE, ANON, 0, 0, ANON, 0, FILE]
            ),
            vec![(at(0), at(2)), (at(3), at(5)), (at(9), at(11))]
        );
        assert_eq!(releasable_runs(at(0), &[]), Vec::new());
        assert_eq!(releasable_runs(at(0), &[ANON, ANON]), Vec::new());
    }

    #[test]
    fn the_running_tests_pages_are_released_and_it_runs_on() {
        let rss_file_kib = || {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                .expect("RssFile")
        };
        let before = rss_file_kib();
        let released = release_file_pages().expect("release");
        let after = rss_file_kib();
        assert!(released.mappings > 0 && released.bytes > 0, "{released:?}");
        assert!(
            after < before,
            "RssFile {before} kB before, {after} kB after"
        );
        // The released code and data come back on the next access, this test's included.
        let again = release_file_pages().expect("release again");
        assert_eq!(again.mappings, released.mappings);
    }
}
