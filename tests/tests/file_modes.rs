//! What `setmov run` creates is private whatever the umask it is started with: the SQLite
//! database and its -wal and -shm files 0600, the folder made for it 0700, and so the spool's
//! folders and files. An existing database others can read is warned about, once.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use setmov_tests::{fixture, wait_until};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

const WARNING: &str = "is readable by other users";

/// `setmov run ARGS` started under `umask`, sampling the captured golden tree.
fn run(umask: &str, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("umask {umask} && exec \"$@\""), "sh", SETMOV])
        .args([
            "run",
            "--no-ebpf",
            "--no-libvirt",
            "--host-ip",
            "198.51.100.1",
        ])
        .arg("--proc-root")
        .arg(fixture("golden/t1"))
        .args(args)
        .env("SETMOV_CONFIG", setmov_tests::NO_CONFIG)
        .env_remove("SETMOV_DATABASE");
    command
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_new_database_and_its_folder_are_private_whatever_the_umask() {
    for umask in ["022", "000"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("sub/deeper");
        let db = folder.join("x.db");
        let child = run(
            umask,
            &["--interval", "100ms", "--count", "40", "--database"],
        )
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setmov starts");
        let wal = folder.join("x.db-wal");
        let shm = folder.join("x.db-shm");
        // SQLite removes them when the last connection closes: look while the run writes.
        wait_until("the -wal and -shm files", || wal.exists() && shm.exists());
        for file in [&db, &wal, &shm] {
            assert_eq!(mode(file), 0o600, "umask {umask}: {}", file.display());
        }
        let out = child.wait_with_output().expect("run ends");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(mode(&folder), 0o700, "umask {umask}");
        assert_eq!(mode(&dir.path().join("sub")), 0o700, "umask {umask}");
        assert_eq!(mode(&db), 0o600, "umask {umask}");
        assert!(!stderr(&out).contains(WARNING), "{}", stderr(&out));
    }
}

#[test]
fn an_existing_database_others_can_read_is_warned_about_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("x.db");
    let db_arg = db.display().to_string();
    let first = run("022", &["--count", "1", "--database", &db_arg])
        .output()
        .expect("setmov starts");
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let again = run(
        "022",
        &["--count", "3", "--interval", "100ms", "--database", &db_arg],
    )
    .output()
    .expect("setmov starts");
    assert!(again.status.success(), "{}", stderr(&again));
    let log = stderr(&again);
    assert_eq!(log.matches(WARNING).count(), 1, "{log}");
    assert!(
        log.contains("(mode 0644)") && log.contains(&db_arg),
        "{log}"
    );
    // Its mode is the operator's to change, not setmov's.
    assert_eq!(mode(&db), 0o644);
}

#[test]
fn the_spool_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool/inner");
    // A server that refuses the connection: the tick waits in the spool.
    let out = run(
        "000",
        &["--count", "1", "--database", "mysql://u@127.0.0.1:1/db"],
    )
    .arg("--spool-dir")
    .arg(&spool)
    .output()
    .expect("setmov starts");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&dir.path().join("spool")), 0o700);
    assert_eq!(mode(&spool), 0o700);
    let ticks: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!ticks.is_empty(), "no tick spooled: {}", stderr(&out));
    for tick in ticks {
        assert_eq!(mode(&tick), 0o600, "{}", tick.display());
    }
}
