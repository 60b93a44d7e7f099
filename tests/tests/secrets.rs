//! A password in a `--database` URL never shows: not on stdout or stderr (where the log goes
//! in these runs), not in the name of any file or folder a run creates, not in what `config
//! check` says, whatever the password holds (`/`, `@`, `:`, percent-encoding) and whichever
//! scheme names the server (`mariadb://` is MySQL).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use setmov_tests::fixture;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// Every password below is made of these, so one search finds any piece of any of them.
const SECRET: &str = "SeKrEt";

/// URLs the driver cannot parse, hosts that do not resolve, one that refuses the connection
/// (an outage: `run` starts and spools), and the test MariaDB with a wrong password.
const URLS: [&str; 6] = [
    "mysql://setmov:SeKrEt1/SeKrEt2@db/fleet",
    "mariadb://user:SeKrEt3@db/x",
    "mysql://u:SeKrEt4%40SeKrEt5@h/db",
    "mysql://u:SeKrEt6@SeKrEt7:SeKrEt8/SeKrEt9@h/db",
    "mariadb://u:SeKrEt10@127.0.0.1:1/db",
    "mysql://setmov:SeKrEt11@127.0.0.1:3307/setmov_test",
];

fn setmov(cwd: &Path) -> Command {
    let mut command = setmov_tests::setmov_command(SETMOV);
    command
        .current_dir(cwd)
        .env_remove("SETMOV_DATABASE")
        .env_remove("SETMOV_DATABASE_PASSWORD")
        .env("SETMOV_LOG", "debug");
    command
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every path under `dir`, folders included.
fn all_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            paths.extend(all_paths(&path));
        }
        paths.push(path);
    }
    paths
}

fn assert_no_secret(what: &str, out: &Output, dir: &Path) {
    let printed = text(out);
    assert!(
        !printed.contains(SECRET),
        "{what}: a password shows\n{printed}"
    );
    for path in all_paths(dir) {
        assert!(
            !path.display().to_string().contains(SECRET),
            "{what}: a password names {}",
            path.display()
        );
    }
}

#[test]
fn run_show_and_migrate_never_show_the_password() {
    for url in URLS {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        let run = setmov(dir.path())
            .args(["run", "--count", "1", "--no-ebpf", "--no-libvirt"])
            .args(["--host-ip", "198.51.100.1", "--database", url])
            .arg("--proc-root")
            .arg(fixture("golden/t1"))
            .arg("--spool-dir")
            .arg(&spool)
            .output()
            .expect("setmov starts");
        assert_no_secret(&format!("run {url}"), &run, dir.path());
        // A server that refuses the connection is an outage: the run goes on and spools its
        // tick, MariaDB's as MySQL's. An unknown host or a wrong password stops it at start.
        if url == URLS[4] {
            assert!(run.status.success(), "{url}: {}", text(&run));
            assert!(
                all_paths(&spool)
                    .iter()
                    .any(|p| p.extension().is_some_and(|e| e == "json")),
                "{url}: no tick spooled\n{}",
                text(&run)
            );
        } else {
            assert_eq!(run.status.code(), Some(2), "{url}: {}", text(&run));
        }
        for command in [&["show"][..], &["migrate"]] {
            let out = setmov(dir.path())
                .args(command)
                .args(["--database", url])
                .arg("--spool-dir")
                .arg(&spool)
                .output()
                .expect("setmov starts");
            assert!(!out.status.success(), "{command:?} {url}: {}", text(&out));
            assert_no_secret(&format!("{command:?} {url}"), &out, dir.path());
        }
    }
}

#[test]
fn the_unparsable_url_is_refused_naming_the_server_not_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = setmov(dir.path())
        .args(["show", "--database", URLS[0]])
        .output()
        .expect("setmov starts");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("mysql://setmov@db/fleet"), "{printed}");
    assert!(printed.contains("percent-encoded"), "{printed}");
}

#[test]
fn another_scheme_is_refused_rather_than_taken_for_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = setmov(dir.path())
        .args(["run", "--count", "1", "--no-ebpf", "--no-libvirt"])
        .args(["--database", "postgres://u:SeKrEt@db/x"])
        .output()
        .expect("setmov starts");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("postgres://u@db/x: not a SQLite file path"),
        "{}",
        text(&out)
    );
    assert_no_secret("postgres", &out, dir.path());
    assert!(all_paths(dir.path()).is_empty(), "nothing created");
}

#[test]
fn the_help_hides_a_database_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = setmov(dir.path())
        .args(["show", "--help"])
        .env("SETMOV_DATABASE", URLS[1])
        .output()
        .expect("setmov starts");
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("--help", &out, dir.path());
}

#[test]
fn config_check_masks_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    for url in URLS {
        // Valid: counted, not repeated.
        std::fs::write(
            dir.path().join("valid.toml"),
            format!("database = {url:?}\n"),
        )
        .expect("write");
        let out = setmov(dir.path())
            .args(["config", "check", "valid.toml"])
            .output()
            .expect("setmov starts");
        assert!(out.status.success(), "{url}: {}", text(&out));
        assert_no_secret(&format!("config check {url}"), &out, dir.path());

        // Invalid: the problem repeats the value, masked.
        std::fs::write(
            dir.path().join("invalid.toml"),
            format!("[run]\ndatabase = [{url:?}, \"/srv/setmov.db\"]\n"),
        )
        .expect("write");
        let out = setmov(dir.path())
            .args(["config", "check", "invalid.toml"])
            .output()
            .expect("setmov starts");
        assert_eq!(out.status.code(), Some(2), "{url}: {}", text(&out));
        assert_no_secret(&format!("config check {url}"), &out, dir.path());
        assert!(
            text(&out).contains("expected one value, not a list"),
            "{url}: {}",
            text(&out)
        );
    }
    let printed = text(
        &setmov(dir.path())
            .args(["config", "check", "invalid.toml"])
            .output()
            .expect("setmov starts"),
    );
    assert!(
        printed.contains(
            r#"[run] database = ["mysql://setmov@127.0.0.1:3307/setmov_test", "/srv/setmov.db"]"#
        ),
        "{printed}"
    );
}
