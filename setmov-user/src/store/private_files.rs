//! Files and folders for root's eyes only: the database and the spool hold VM names and usage.
//! Their modes are set explicitly, so the umask of whoever started `setmov` does not decide
//! who may read them.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

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

/// Opens `path` for writing, emptied, created with [`FILE_MODE`] if missing.
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
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
        create_file(&file).expect("file");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(readable_by_others(&file).expect("mode"), None);

        let empty = nested.join("e");
        assert!(create_empty_file(&empty).expect("created"));
        assert!(!create_empty_file(&empty).expect("there already"));
        fs::set_permissions(&empty, Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(readable_by_others(&empty).expect("mode"), Some(0o644));
    }
}
