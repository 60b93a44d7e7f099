//! The `setmov` command as a user runs it: run, show, plot, signals, and bad input.

use std::path::Path;
use std::process::{Command, Output};

use setmov_tests::monitor::{Monitor, RunSummary};
use setmov_tests::{fixture, wait_until};

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

fn setmov() -> Command {
    setmov_tests::setmov_command(SETMOV)
}

fn output(command: &mut Command) -> Output {
    command.output().expect("setmov starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails on any sign of a panic or backtrace: bad input must end in a clear message.
fn assert_clean_failure(out: &Output, expected: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn run_on_a_captured_tree_then_show_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let run = output(
        setmov()
            .args(["run", "--count", "3", "--interval", "100ms", "--no-ebpf"])
            .args(["--host-ip", "198.51.100.1"])
            .arg("--proc-root")
            .arg(fixture("golden/t1"))
            .arg("--database")
            .arg(&db),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let summary = String::from_utf8_lossy(&run.stdout);
    assert_eq!(summary.lines().count(), 3, "{summary}");
    // The same tree read twice: counters did not move, so no rate, but memory is known.
    assert!(
        summary
            .lines()
            .all(|l| l.contains("198.51.100.1 cpu n/a mem  50.0%")),
        "{summary}"
    );

    let json = output(
        setmov()
            .args(["show", "--format", "json", "--database"])
            .arg(&db),
    );
    assert!(json.status.success(), "{}", stderr(&json));
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["host_ip"], "198.51.100.1");
        assert_eq!(row["cpu_pct"], serde_json::Value::Null);
        assert_eq!(row["mem_used_pct"], 50.0);
        let interval = row["interval_s"].as_f64().expect("interval");
        assert!((0.05..0.5).contains(&interval), "{interval}");
    }

    let csv = output(
        setmov()
            .args(["show", "--format", "csv", "-n", "2", "--database"])
            .arg(&db),
    );
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("host_ip,time,"));

    let table = output(setmov().args(["show", "--database"]).arg(&db));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("time"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
}

/// T2 rows in the SQLite file `db`; 0 while it is not there yet (never creates it).
fn stored_ticks(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| conn.query_row("SELECT COUNT(*) FROM host_usage", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// A run at 100 ms ended by `stop` (a signal) once it has stored 5 ticks: it must exit 0 having
/// stored every tick it says it took, and say that none was lost. Returns its log.
fn stop_a_run_after_5_ticks(stop: impl FnOnce(Monitor) -> String) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let monitor = Monitor::start(SETMOV, &db, &["--interval", "100ms", "--no-ebpf"]);
    wait_until("5 stored ticks", || stored_ticks(&db) >= 5);
    let log = stop(monitor);
    let rows = stored_ticks(&db);
    assert_eq!(
        RunSummary::from_log(&log),
        RunSummary {
            ticks: rows,
            written: rows,
            ..RunSummary::default()
        },
        "{log}"
    );
    log
}

#[test]
fn sigint_stops_a_run_cleanly_and_keeps_every_tick() {
    let log = stop_a_run_after_5_ticks(Monitor::stop);
    assert!(log.contains("SIGINT: finishing the current tick"), "{log}");
}

/// What systemd sends on `systemctl stop`.
#[test]
fn sigterm_stops_a_run_cleanly_and_keeps_every_tick() {
    let log = stop_a_run_after_5_ticks(Monitor::terminate);
    assert!(log.contains("SIGTERM: finishing the current tick"), "{log}");
}

/// `run` has nothing to reload: SIGHUP (a closed terminal, a careless `kill -HUP`) is a
/// graceful stop.
#[test]
fn sighup_stops_a_run_cleanly_and_keeps_every_tick() {
    let log = stop_a_run_after_5_ticks(|m| m.signal("-HUP"));
    assert!(log.contains("SIGHUP: finishing the current tick"), "{log}");
}

/// Signals are watched from the start: one that comes while the store is still being opened
/// (here a MySQL server that accepts the connection and never greets, so opening waits out its
/// 5 s timeout) stops the run before its first tick, with exit 0, instead of killing it
/// half-way through its start-up.
#[test]
fn a_signal_during_start_up_stops_the_run_before_its_first_tick() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let port = silent.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let child = setmov()
        .args(["run", "--no-ebpf", "--no-libvirt", "--interval", "100ms"])
        .arg("--database")
        .arg(format!("mysql://setmov@127.0.0.1:{port}/silent"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setmov starts");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(kill.is_ok_and(|s| s.success()));
    let out = child.wait_with_output().expect("setmov ends");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {log}", out.status);
    assert!(log.contains("SIGTERM: finishing the current tick"), "{log}");
    assert!(
        log.contains("stopped during start-up, before the first tick"),
        "{log}"
    );
    drop(silent);
}

#[test]
fn plot_without_host_or_vm_plots_the_host_run_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, charts) = (dir.path().join("setmov.db"), dir.path().join("charts"));
    // The live host under the identity run gives it by default.
    let mut run = setmov();
    run.args(["run", "--count", "2", "--interval", "100ms", "--quiet"])
        .args(["--no-ebpf", "--no-libvirt", "--database"])
        .arg(&db);
    let run = output(&mut run);
    assert!(run.status.success(), "{}", stderr(&run));
    let conn = rusqlite::Connection::open(&db).expect("db");
    let host_ip: String = conn
        .query_row("SELECT host_ip FROM hosts", [], |r| r.get(0))
        .expect("the host run sampled");
    let plot = output(
        setmov()
            .args(["plot", "--database"])
            .arg(&db)
            .arg("--out")
            .arg(&charts),
    );
    let err = stderr(&plot);
    assert!(plot.status.success(), "{err}");
    assert!(err.contains(&format!("charts of {host_ip} in")), "{err}");
    assert!(charts.join("index.html").exists(), "{err}");
}

#[test]
fn help_explains_every_option() {
    let out = output(setmov().args(["run", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--interval",
        "--count",
        "--quiet",
        "--database",
        "--proc-root",
        "--host-ip",
        "--host-name",
        "--skip-disks",
        "--net-total-exclude",
        "--no-ebpf",
        "--log",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
    let out = output(setmov().args(["show", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--database", "--limit", "--host", "--format"] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    assert_clean_failure(
        &output(setmov().args(["run", "--interval", "1ms"])),
        "must be at least 10ms",
    );
    assert_clean_failure(
        &output(setmov().args(["run", "--interval", "soon"])),
        "invalid value 'soon'",
    );
    assert_clean_failure(
        &output(setmov().args(["run", "--count", "-3"])),
        "unexpected argument",
    );
    assert_clean_failure(
        &output(setmov().args(["show", "--format", "xml"])),
        "invalid value 'xml'",
    );
}

#[test]
fn unreadable_paths_and_unwritable_databases_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_clean_failure(
        &output(
            setmov()
                .args(["run", "--count", "1", "--proc-root", "/nonexistent/proc"])
                .arg("--database")
                .arg(dir.path().join("a.db")),
        ),
        "/nonexistent/proc is not a readable procfs tree",
    );
    assert_clean_failure(
        &output(setmov().args([
            "run",
            "--count",
            "1",
            "--no-ebpf",
            "--database",
            "/dev/null/setmov.db",
        ])),
        "cannot create database folder /dev/null",
    );
    let not_a_db = dir.path().join("text.db");
    std::fs::write(
        &not_a_db,
        "this is not a database, just a text file of some length",
    )
    .expect("write");
    assert_clean_failure(
        &output(
            setmov()
                .args(["run", "--count", "1", "--no-ebpf", "--database"])
                .arg(&not_a_db),
        ),
        "text.db",
    );
    assert_clean_failure(
        &output(
            setmov()
                .args(["show", "--database"])
                .arg(dir.path().join("missing.db")),
        ),
        "no database at",
    );
}

#[test]
fn ages_durations_and_sizes_out_of_range_exit_2_with_their_bound() {
    let cases: &[(&[&str], &str)] = &[
        // Each used to panic (report, show, plot, recommend, migrate-plan) or to poison the
        // store and lose every tick after the first (run --retain-raw).
        (&["report", "--since", "20000y"], "at most 100 years"),
        (&["report", "--until", "101y"], "at most 100 years"),
        (
            &["report", "--since", "0s"],
            "must reach back further than now",
        ),
        (&["show", "--since", "20000y"], "at most 100 years"),
        (
            &["plot", "--since", "20000y", "--out", "/nonexistent"],
            "at most 100 years",
        ),
        (&["recommend", "--since", "20000y"], "at most 100 years"),
        (&["migrate-plan", "--since", "20000y"], "at most 100 years"),
        (&["run", "--retain-raw", "20000y"], "at most 100 years"),
        (
            &["run", "--retain-minutes", "0s"],
            "must be at least 2 hours",
        ),
        (&["run", "--retain-hours=-1d"], "is not an age"),
        (&["run", "--interval", "2d"], "at most 1 day"),
        (&["run", "--interval", "0s"], "must be at least 10ms"),
        (&["run", "--interval=-1s"], "invalid value '-1s'"),
        (
            &["top", "--interval", "9999999999999999999999s"],
            "invalid value",
        ),
        (&["run", "--spool-max", "0"], "must be at least 1MiB"),
        (&["run", "--spool-max", "17TiB"], "at most 16TiB"),
        (&["run", "--spool-max", "99999999999TiB"], "is too large"),
        (&["run", "--spool-max=-1GiB"], "is not a size"),
        (
            &["recommend", "--host-reserve", "2000TiB"],
            "at most 1024TiB",
        ),
        (
            &[
                "experiment",
                "mem-knee",
                "--disk-limit",
                "0",
                "--out",
                "/nonexistent",
            ],
            "must be at least 1MiB",
        ),
    ];
    for (args, expected) in cases {
        assert_clean_failure(&output(setmov().args(*args)), expected);
    }
    // MySQL keeps 255 characters of a host name: a longer one is refused at start, not by the
    // database on every tick.
    let long_name = "h".repeat(256);
    assert_clean_failure(
        &output(setmov().args(["run", "--host-name", &long_name])),
        "at most 255 characters",
    );
}

#[test]
fn the_configuration_file_is_held_to_the_same_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("setmov.toml");
    std::fs::write(&config, "[report]\nsince = \"20000y\"\n").expect("write");
    let out = output(setmov().env("SETMOV_CONFIG", &config).arg("report"));
    assert_clean_failure(&out, "since = \"20000y\"");
    assert!(
        stderr(&out).contains("at most 100 years"),
        "{}",
        stderr(&out)
    );
}

/// A run of the captured tree whose `task` panics on its third tick (the test-only trigger of
/// feature `test-panic-in-run`): the run must end at once, non-zero, with the panic in its log
/// and every tick counted. Returns the log and the ticks stored.
fn run_with_a_panic_in(task: &str) -> (String, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let out = output(
        setmov()
            .env("SETMOV_TEST_PANIC_IN_RUN", task)
            .args([
                "run",
                "--count",
                "50",
                "--interval",
                "50ms",
                "--no-ebpf",
                "--no-libvirt",
            ])
            .args(["--host-ip", "198.51.100.1", "--quiet"])
            .arg("--proc-root")
            .arg(fixture("golden/t1"))
            .arg("--database")
            .arg(&db),
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "exit code: {log}");
    let summary = RunSummary::from_log(&log);
    assert!(summary.ticks < 50, "stopped at once: {log}");
    assert_eq!(summary.written, stored_ticks(&db), "{log}");
    assert_eq!(summary.written + summary.lost, summary.ticks, "{log}");
    (log, summary.written)
}

#[test]
fn a_source_that_panics_ends_the_run_non_zero_and_what_was_sampled_is_stored() {
    let (log, written) = run_with_a_panic_in("host");
    assert!(
        log.contains("the host source task panicked: a test panic (SETMOV_TEST_PANIC_IN_RUN=host)")
            && log.contains("stopping the run"),
        "{log}"
    );
    assert_eq!(written, 2, "ticks 1 and 2 are stored: {log}");
}

#[test]
fn a_writer_that_panics_ends_the_run_non_zero_with_what_was_lost() {
    let (log, written) = run_with_a_panic_in("writer");
    assert!(
        log.contains("the database writer stopped: it panicked: a test panic"),
        "{log}"
    );
    assert_eq!(written, 2, "{log}");
}

#[test]
fn control_characters_in_a_stored_vm_name_are_shown_escaped() {
    use setmov::store::Store;
    use setmov::vm::stats::DomainState;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let mut tick = setmov_tests::ticks::host_tick(1, time::Duration::seconds(60), 1.0, 5.0);
    let name = "evil\n\x1b[2J\tname, \"quoted\"";
    tick.vms = vec![setmov_tests::ticks::vm_sample(
        "3f9a7c1e-0000-4000-8000-0000000000e1",
        name,
        DomainState::Running,
        1.0,
        12.0,
    )];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut store = setmov::store::sqlite::SqliteStore::open(&db).expect("store");
        store.write_tick(&tick).await.expect("write");
    });
    let show = |format: &str| {
        let out = output(
            setmov()
                .args(["show", "--vms", "--format", format, "--database"])
                .arg(&db),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let escaped = "evil\\n\\x1b[2J\\tname";
    let table = show("table");
    assert!(
        !table.contains('\x1b') && !table.contains('\t'),
        "{table:?}"
    );
    assert_eq!(table.lines().count(), 2, "a header and one row: {table:?}");
    assert!(table.contains(escaped), "{table:?}");
    let csv = show("csv");
    assert_eq!(csv.lines().count(), 2, "a header and one record: {csv:?}");
    assert!(
        csv.contains(&format!("\"{escaped}, \"\"quoted\"\"\"")),
        "quoted as CSV requires: {csv:?}"
    );
    // JSON keeps the name as it is, escaped the JSON way.
    let json: serde_json::Value = serde_json::from_str(&show("json")).expect("json");
    assert_eq!(json[0]["name"], name, "{json}");
}
