//! What the fuzz targets share: a scratch folder kept for the whole process, into which each
//! input is written as the file a reader expects, so that the readers run exactly as they do on
//! a real `/proc`, run folder, tracefs or spool. One folder per process and one rewrite per
//! input keep the targets fast.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use setmov::host::read::HostReader;

/// The process's scratch folder; removed when the fuzzer exits normally.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("setmov-fuzz-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a scratch folder: {e}"))
    })
    .path()
}

/// Writes `contents` to `relative` below the scratch folder, creating its parent folders.
pub fn write(relative: &str, contents: &[u8]) -> PathBuf {
    let path = scratch().join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    std::fs::write(&path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Reads a proc root whose file `relative` (`stat`, `meminfo`, `diskstats`, `net/dev`) is
/// `input`, with the reader `setmov run --proc-root` uses. The other files are absent (an
/// empty `stat` lets the reader start), which the reader reports as problems and goes on.
pub fn read_proc_file(relative: &str, input: &[u8]) {
    let root = scratch().join("proc");
    if relative != "stat" && !root.join("stat").exists() {
        write("proc/stat", b"");
    }
    write(&format!("proc/{relative}"), input);
    // Skipped prefixes as the default configuration has them, so the filter runs too.
    let skipped = vec!["loop".to_owned(), "ram".to_owned()];
    let reader = HostReader::new(&root, skipped)
        .unwrap_or_else(|e| panic!("the scratch proc root does not open: {e}"));
    std::hint::black_box(reader.read());
}
