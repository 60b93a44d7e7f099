//! Files and folders for root's eyes only: the database and the spool hold VM names and usage.
//! Their modes are set explicitly, so the umask of whoever started `setmov` does not decide
//! who may read them.
//!
//! Files in a folder others might reach (the spool and its quarantine) are written without
//! ever following a link: created new (`O_CREAT|O_EXCL|O_NOFOLLOW`) under a temporary name,
//! synced, renamed, and the folder synced, so a crash leaves a whole file or none.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use nix::libc;

/// Files: read and written by their owner only.
pub const FILE_MODE: u32 = 0o600;
/// Folders: entered by their owner only.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, each [`DIR_MODE`]; folders already there are left
/// as they are. Like [`fs::create_dir_all`], an error if `dir` is there but no folder.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for folder in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(folder) {
            // The mode given to mkdir is reduced by the umask.
            Ok(()) => fs::set_permissions(folder, Permissions::from_mode(DIR_MODE))?,
            // Created meanwhile by another process: not ours to change.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if dir.is_dir() || dir.as_os_str().is_empty() {
        Ok(())
    } else {
        Err(io::ErrorKind::NotADirectory.into())
    }
}

/// Creates `path` empty with [`FILE_MODE`] unless it exists; `true` if it was created.
pub fn create_empty_file(path: &Path) -> io::Result<bool> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The mode bits of `path` that let users other than its owner read it, if any.
pub fn readable_by_others(path: &Path) -> io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o044 != 0).then_some(mode))
}

/// Why `dir` may not hold files others must not plant or change, if it may not: it must be a
/// folder itself (not a link to one), owned by root or by us, and writable by its owner only.
pub fn untrusted_dir(dir: &Path) -> io::Result<Option<String>> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(Some(
            "is a symbolic link; give the folder it points to".to_owned(),
        ));
    }
    if !meta.is_dir() {
        return Ok(Some("is not a folder".to_owned()));
    }
    let mut problems = Vec::new();
    let owner = meta.uid();
    if owner != 0 && owner != nix::unistd::geteuid().as_raw() {
        problems.push(format!("owned by uid {owner}"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        problems.push(format!("writable by others (mode {:04o})", mode & 0o777));
    }
    Ok((!problems.is_empty())
        .then(|| format!("{}; chown root and chmod 700 it", problems.join(", "))))
}

/// Creates `path` with [`FILE_MODE`] for writing; an error if anything is there already, a
/// link included (which is not followed).
pub fn create_new_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Reads the regular file `path`; a link (not followed), a FIFO (not waited on) or anything
/// else that is not a regular file is an error of kind [`io::ErrorKind::InvalidData`].
pub fn read_regular_file(path: &Path) -> io::Result<Vec<u8>> {
    let not_regular = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_regular("a symbolic link"));
        }
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes `bytes` as `dir/name` ([`FILE_MODE`]) so that a crash leaves the whole file or
/// none: through a new temporary file `.name.tmp`, synced, renamed, and `dir` synced.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let (temporary, mut file) = create_temporary(dir, name)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temporary, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(path)
}

/// Temporary names tried before giving up: `.name.tmp`, then `.name.PID-N.tmp`.
const TEMPORARY_NAMES: u32 = 8;

/// Whether `name` is one of [`write_atomically`]'s temporary names.
pub fn is_temporary(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".") && name.ends_with(b".tmp")
}

/// A new temporary file for `dir/name`. Something already at a temporary name (left by a
/// crash, or planted) is never written through: it is removed, unless a folder, and the next
/// name is tried.
fn create_temporary(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    for attempt in 0..TEMPORARY_NAMES {
        let temporary = dir.join(if attempt == 0 {
            format!(".{name}.tmp")
        } else {
            format!(".{name}.{}-{attempt}.tmp", std::process::id())
        });
        match create_new_file(&temporary) {
            Ok(file) => return Ok((temporary, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let found = fs::symlink_metadata(&temporary).map(|m| m.file_type());
                let removed = match found {
                    Ok(kind) if !kind.is_dir() => fs::remove_file(&temporary).is_ok(),
                    _ => false,
                };
                tracing::warn!(
                    "{}: {} was in the way ({}); another temporary name is used",
                    temporary.display(),
                    match found {
                        Ok(kind) if kind.is_symlink() => "a symbolic link",
                        Ok(kind) if kind.is_file() => "a file",
                        _ => "something",
                    },
                    if removed { "removed" } else { "left alone" }
                );
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free temporary name for {name} in {}", dir.display()),
    ))
}

/// Makes the names in `dir` (files created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn created_files_and_folders_are_private() {
        let top = tempfile::tempdir().expect("tempdir");
        let nested = top.path().join("a/b");
        create_dir_all(&nested).expect("folders");
        assert_eq!(mode(&top.path().join("a")), DIR_MODE);
        assert_eq!(mode(&nested), DIR_MODE);
        // A folder already there keeps its mode.
        fs::set_permissions(&nested, Permissions::from_mode(0o755)).expect("chmod");
        create_dir_all(&nested).expect("again");
        assert_eq!(mode(&nested), 0o755);
        let not_a_folder = top.path().join("a/file");
        fs::write(&not_a_folder, b"").expect("file");
        create_dir_all(&not_a_folder).expect_err("a file is no folder");

        let file = nested.join("f");
        create_new_file(&file).expect("file");
        create_new_file(&file).expect_err("there already");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(readable_by_others(&file).expect("mode"), None);

        let empty = nested.join("e");
        assert!(create_empty_file(&empty).expect("created"));
        assert!(!create_empty_file(&empty).expect("there already"));
        fs::set_permissions(&empty, Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(readable_by_others(&empty).expect("mode"), Some(0o644));
    }
}
