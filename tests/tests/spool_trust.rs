//! The MySQL store's spool read back as untrusted input, against the real MariaDB server (see
//! tests/mysql_store.rs): spool files naming tables or columns with SQL in them are set aside
//! in the quarantine beside the spool and never run, the ticks after them are stored, and a
//! spool folder others may write into stops `setmov run` with one clear error.
//! Without the server these tests skip loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use setmov::store::rows::{HostRow, Rows, TickRows, Value};
use setmov_tests::monitor::RunSummary;
use setmov_tests::mysql_run::{Prepared, Setmov, count, db_args, prepared, real_host_ip};

const SETMOV: Setmov = Setmov(env!("CARGO_BIN_EXE_setmov-cli"));

/// A host no real tick comes from: a row of it in the database would be the crafted file's.
const CRAFTED_HOST: &str = "192.0.2.77";

/// A spool file as an intruder would write it: a tick of [`CRAFTED_HOST`] whose one data table
/// is `table` with `columns`, under a name that sorts before any real tick.
fn plant(spool: &Path, seq: u64, table: &str, columns: &[&str]) -> String {
    let tick = TickRows {
        seq,
        time: "2026-11-30 05:00:00.000".into(),
        host: HostRow {
            host_ip: CRAFTED_HOST.into(),
            host_name: "intruder".into(),
            mac: None,
            vmc: Some(0),
            cpus: None,
            memory_bytes: None,
        },
        vms: Vec::new(),
        running: Vec::new(),
        tables: vec![Rows {
            table: table.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: vec![vec![Value::Text(CRAFTED_HOST.into()); columns.len()]],
        }],
    };
    let name = format!("20261130T050000.000-{seq:020}.json");
    fs::write(spool.join(&name), serde_json::to_vec(&tick).expect("json")).expect("planted");
    name
}

/// A private spool folder inside `top`, so that its quarantine (its sibling) goes with `top`.
fn private_spool(top: &Path) -> PathBuf {
    let spool = top.join("spool");
    fs::create_dir(&spool).expect("spool");
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o700)).expect("chmod");
    spool
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn sql_in_a_spool_file_is_quarantined_never_run_and_later_ticks_are_stored() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool: _,
    }) = prepared(SETMOV, "spool_trust")
    else {
        return;
    };
    let top = tempfile::tempdir().expect("tempdir");
    let spool = private_spool(top.path());
    let crafted_table = plant(&spool, 1, "hosts; DROP TABLE hosts; --", &["host_ip"]);
    let crafted_column = plant(
        &spool,
        2,
        "host_usage",
        &["host_ip", "time) VALUES ('a', 'b'); DROP TABLE vms; --"],
    );
    let args = db_args(
        &db,
        &spool,
        &["--interval", "500ms", "--count", "4", "--no-libvirt"],
    );
    let log = SETMOV.start_monitor(&url, &args).wait();

    for (file, why) in [
        (
            &crafted_table,
            r#"table "hosts; DROP TABLE hosts; --" is not one a tick writes"#,
        ),
        (
            &crafted_column,
            r#"column "time) VALUES ('a', 'b'); DROP TABLE vms; --" is not"#,
        ),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(file.as_str()) && l.contains("set aside"))
            .unwrap_or_else(|| panic!("no line about {file}: {log}"));
        assert!(line.contains("ERROR") && line.contains(why), "{line}");
        eprintln!("{line}");
    }
    let quarantine = top.path().join("spool.quarantine");
    let kept = names(&quarantine);
    eprintln!("quarantine: {kept:?}");
    for file in [&crafted_table, &crafted_column] {
        let moved = kept
            .iter()
            .find(|k| k.ends_with(file.as_str()))
            .unwrap_or_else(|| panic!("{file} is not in the quarantine: {kept:?}"));
        let why = fs::read_to_string(quarantine.join(format!("{moved}.error"))).expect("why");
        assert!(why.contains("is not trusted"), "{why}");
    }
    assert_eq!(kept.len(), 4, "two files and their reasons: {kept:?}");
    assert!(names(&spool).is_empty(), "the spool was not emptied");

    // Nothing of the crafted files ran: the tables are there, no row is the intruder's.
    let tables = count(
        &db,
        &name,
        "SELECT COUNT(*) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name IN ('hosts', 'vms', 'host_usage')",
    );
    assert_eq!(tables, 3);
    let crafted_rows = count(
        &db,
        &name,
        &format!(
            "SELECT (SELECT COUNT(*) FROM hosts WHERE host_ip = '{CRAFTED_HOST}')
                  + (SELECT COUNT(*) FROM host_usage WHERE host_ip = '{CRAFTED_HOST}')"
        ),
    );
    assert_eq!(crafted_rows, 0);
    // The monitor's own ticks, spooled behind them, are all stored.
    let host = real_host_ip(&db, &name);
    let stored = count(
        &db,
        &name,
        &format!("SELECT COUNT(*) FROM host_usage WHERE host_ip = '{host}'"),
    );
    assert_eq!((RunSummary::from_log(&log).ticks, stored), (4, 4), "{log}");
}

#[test]
fn a_spool_folder_others_may_write_into_stops_the_start() {
    let Some(Prepared {
        _server,
        db,
        url,
        spool: _,
        ..
    }) = prepared(SETMOV, "spool_open")
    else {
        return;
    };
    let top = tempfile::tempdir().expect("tempdir");
    let spool = private_spool(top.path());
    fs::set_permissions(&spool, fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut args = vec!["run", "--quiet", "--database", &url];
    let more = db_args(&db, &spool, &["--count", "1", "--no-libvirt"]);
    args.extend(more.iter().map(String::as_str));
    let (ok, log) = SETMOV.output(&args);
    assert!(!ok, "setmov run started with a world-writable spool: {log}");
    let message = format!(
        "spool {}: writable by others (mode 0777); chown root and chmod 700 it",
        spool.display()
    );
    assert_eq!(log.matches(&message).count(), 1, "{log}");
}
