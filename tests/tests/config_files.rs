//! The configuration file as an operator meets it: `setmov config check` on a folder of valid
//! and invalid files, each with the exact output expected beside it (`NAME.expected`), and a
//! file that really steers `setmov run`, with the command line and environment winning.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use setmov_tests::fixture;

fn setmov() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_setmov-cli"));
    // Whatever the machine has in /etc/setmov must not leak into these runs.
    command
        .env_remove("SETMOV_CONFIG")
        .env_remove("SETMOV_DATABASE");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(kind)
}

/// Every `*.toml` of `tests/config/KIND` checked from inside the folder (so that messages
/// carry the bare file name): exit code and output exactly as expected.
fn check_folder(kind: &str, exit_code: i32, printed: fn(&Output) -> &[u8]) {
    let dir = config_dir(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{}: too few fixtures", dir.display());
    for file in files {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let expected = std::fs::read_to_string(file.with_extension("expected"))
            .unwrap_or_else(|e| panic!("{name}: no .expected beside it: {e}"));
        let out = setmov()
            .current_dir(&dir)
            .args(["config", "check", &name])
            .output()
            .expect("setmov starts");
        assert_eq!(
            out.status.code(),
            Some(exit_code),
            "{name}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(printed(&out)), expected, "{name}");
    }
}

#[test]
fn valid_files_are_accepted_with_the_count_of_options() {
    check_folder("valid", 0, |o| &o.stdout);
}

#[test]
fn invalid_files_give_the_key_its_line_and_what_is_expected() {
    check_folder("invalid", 2, |o| &o.stderr);
}

#[test]
fn the_default_file_checks_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = setmov()
        .args(["config", "default"])
        .output()
        .expect("setmov starts");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let default = dir.path().join("setmov.toml");
    std::fs::write(&default, &out.stdout).expect("write");
    let check = setmov()
        .args(["config", "check"])
        .arg(&default)
        .output()
        .expect("setmov starts");
    assert!(check.status.success(), "{}", text(&check.stderr));
    // The --config file is the one checked when none is named.
    let by_option = setmov()
        .arg("--config")
        .arg(&default)
        .args(["config", "check"])
        .output()
        .expect("setmov starts");
    assert_eq!(text(&by_option.stdout), text(&check.stdout));
}

#[test]
fn the_file_steers_run_and_the_command_line_and_environment_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (from_file, from_env) = (dir.path().join("file.db"), dir.path().join("env.db"));
    let config = dir.path().join("setmov.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\n[run]\ncount = 2\ninterval = \"100ms\"\nquiet = true\n\
             no-ebpf = true\nno-libvirt = true\nhost-ip = \"198.51.100.9\"\nproc-root = {:?}\n",
            from_file.display().to_string(),
            fixture("golden/t1").display().to_string(),
        ),
    )
    .expect("write");
    let rows = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .expect("db")
            .query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0))
            .expect("count")
    };
    let run = |command: &mut Command| {
        let out = command.output().expect("setmov starts");
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    // Everything from the file: 2 ticks, no summary lines, into the file's database.
    let out = run(setmov().arg("--config").arg(&config).arg("run"));
    assert_eq!(text(&out.stdout), "", "quiet = true");
    assert_eq!(rows(&from_file), 2);
    // The command line wins over the file...
    run(setmov()
        .env("SETMOV_CONFIG", &config)
        .args(["run", "--count", "3"]));
    assert_eq!(rows(&from_file), 5);
    // ... and so does the environment.
    run(setmov()
        .env("SETMOV_CONFIG", &config)
        .env("SETMOV_DATABASE", &from_env)
        .arg("run"));
    assert_eq!((rows(&from_file), rows(&from_env)), (5, 2));
}

#[test]
fn a_named_file_must_exist_and_a_bad_one_stops_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.toml");
    let out = setmov()
        .arg("--config")
        .arg(&missing)
        .args(["show"])
        .output()
        .expect("setmov starts");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!(
            "setmov: cannot read the configuration {}: No such file or directory",
            missing.display()
        )),
        "{}",
        text(&out.stderr)
    );
    let bad = config_dir("invalid").join("unknown-key.toml");
    let out = setmov()
        .arg("--config")
        .arg(&bad)
        .args(["run", "--count", "1"])
        .output()
        .expect("setmov starts");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown key `intervall` in [run]"));
}
