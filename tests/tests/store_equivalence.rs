//! The two stores give the same answers. One live monitor (`src/bin/setmov-two-stores.rs`)
//! writes the same real ticks — three running test guests, eBPF on — into a SQLite file and a
//! MariaDB database for 200 s, so several minute buckets roll up with real VM rows; then the
//! same ticks again on a second host, moved hours back, so hour buckets roll up too. Every
//! reading command then runs against both databases: `show` (raw, minute, hour; hosts and
//! VMs), `report` at every level, `recommend`, `migrate-plan` over windows that pick each level,
//! and `plot`. Their JSON must be equal value for value, and the plots the same charts with the
//! same points. Any difference is a bug in one store.
//!
//! Needs root, the test-guest environment and the test MariaDB (`cargo xtask test` prepares
//! both); without them it skips loudly (and fails under SETMOV_REQUIRE_ALL=1).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use setmov_tests::guests::{Guest, Workload};
use setmov_tests::mariadb::MariaDb;
use setmov_tests::skip;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
const TWO_STORES: &str = env!("CARGO_BIN_EXE_setmov-two-stores");
const LIVE_HOST: &str = "192.0.2.10";
const PAST_HOST: &str = "192.0.2.11";
const TICKS: u32 = 200;

/// The two databases, as `--database` arguments.
struct Databases {
    sqlite: Vec<String>,
    mysql: Vec<String>,
}

impl Databases {
    /// `setmov ARGS` against each database: (SQLite's stdout, MariaDB's stdout).
    fn both(&self, args: &[&str]) -> (String, String) {
        let run = |database: &[String]| {
            let output = setmov_tests::setmov_command(SETMOV)
                .args(args)
                .args(database)
                .env("SETMOV_LOG", "warn")
                .output()
                .expect("cannot run setmov");
            assert!(
                output.status.success(),
                "setmov {args:?} {database:?}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("UTF-8 output")
        };
        (run(&self.sqlite), run(&self.mysql))
    }

    /// Runs `setmov ARGS --format json` against both and asserts the same JSON; returns it.
    fn same_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        let (sqlite, mysql) = self.both(&args);
        let parse = |text: &str, store: &str| -> Value {
            serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("setmov {args:?} on {store}: not JSON ({e}): {text}"))
        };
        let (sqlite, mysql) = (parse(&sqlite, "SQLite"), parse(&mysql, "MariaDB"));
        if let Some(difference) = first_difference("", &sqlite, &mysql) {
            panic!("setmov {args:?}: the stores differ at {difference}");
        }
        sqlite
    }
}

/// Where two JSON values first differ, and how; `None` when they are equal.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (u, v) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                if x.contains_key(k) != y.contains_key(k) {
                    return Some(format!("{path}.{k}: SQLite {u}, MariaDB {v}"));
                }
                first_difference(&format!("{path}.{k}"), u, v)
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() != y.len() => Some(format!(
            "{path}: SQLite {} items, MariaDB {}",
            x.len(),
            y.len()
        )),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(&format!("{path}[{i}]"), u, v)),
        (x, y) if x == y => None,
        (x, y) => Some(format!("{path}: SQLite {x}, MariaDB {y}")),
    }
}

/// The number of items in a JSON array.
fn len(value: &Value) -> usize {
    value.as_array().map_or(0, Vec::len)
}

/// The hosts or VMs (`kind`) a report's rows cover.
fn owners<'a>(report: &'a Value, kind: &str) -> BTreeSet<&'a str> {
    let rows = report.as_array().map(Vec::as_slice).unwrap_or_default();
    rows.iter()
        .filter(|row| row["kind"] == kind)
        .filter_map(|row| row["owner"].as_str())
        .collect()
}

/// Each SVG chart in `dir` by file name, with the number of points of each of its lines (and
/// then of its isolated points, drawn as circles).
fn chart_points(dir: &Path) -> Vec<(String, Vec<usize>)> {
    let mut charts: Vec<(String, Vec<usize>)> = std::fs::read_dir(dir)
        .expect("plot folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .map(|p| {
            let svg = std::fs::read_to_string(&p).expect("chart");
            // Each line is a polyline whose `points` holds "x,y" pairs.
            let mut lines: Vec<usize> = svg
                .split("points=\"")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap_or_default())
                .map(|points| points.split_whitespace().count())
                .collect();
            lines.push(svg.matches("<circle ").count());
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            (name.into_owned(), lines)
        })
        .collect();
    charts.sort();
    charts
}

#[test]
fn sqlite_and_mariadb_give_the_same_answers_on_real_ticks() {
    let db = match MariaDb::from_manifest() {
        Ok(db) => db,
        Err(reason) => return skip(&reason),
    };
    let workloads = [
        (
            "eq-cpu",
            Workload {
                burn_secs: 90,
                ping_count: 300,
                ..Workload::default()
            },
        ),
        (
            "eq-disk",
            Workload {
                // After the monitor's first minute, so that its rows show the I/O.
                delay_secs: 60,
                write_mb: 48,
                read_mb: 48,
                ..Workload::default()
            },
        ),
        (
            "eq-net",
            Workload {
                ping_count: 900,
                ping_size: 1200,
                ..Workload::default()
            },
        ),
    ];
    let mut guests = Vec::new();
    for (name, workload) in &workloads {
        match Guest::start(name, workload) {
            Ok(guest) => guests.push(guest),
            Err(reason) => return skip(&reason),
        }
    }
    for guest in &guests {
        guest
            .wait_for("SETMOV: ready", Duration::from_secs(120))
            .expect("guest boots");
    }

    let name = db.fresh_database("equal");
    let url = db.url(&name);
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("setmov.db");
    let spool = dir.path().join("spool");
    let password_file = db.password_file().display().to_string();
    let databases = Databases {
        sqlite: vec!["--database".into(), sqlite.display().to_string()],
        mysql: vec![
            "--database".into(),
            url.clone(),
            "--database-password-file".into(),
            password_file.clone(),
            "--spool-dir".into(),
            spool.display().to_string(),
        ],
    };
    let migrated = setmov_tests::setmov_command(SETMOV)
        .arg("migrate")
        .args(&databases.mysql)
        .output()
        .expect("setmov migrate");
    assert!(migrated.status.success(), "{migrated:?}");

    let recorded = Command::new(TWO_STORES)
        .args([
            &sqlite.display().to_string(),
            &url,
            &password_file,
            &spool.display().to_string(),
            &TICKS.to_string(),
            "1000",
        ])
        .output()
        .expect("setmov-two-stores");
    let facts = String::from_utf8_lossy(&recorded.stdout);
    assert!(
        recorded.status.success(),
        "{facts}\n{}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    assert_eq!(
        facts.trim(),
        format!("ticks={TICKS} written={TICKS} lost=0 ebpf=on")
    );
    drop(guests);

    // What was written is what the comparisons need: real VM rows with eBPF figures, several
    // minute buckets of the live host, two hour buckets of the moved one.
    let count = |sql: &str| -> u64 {
        let rows = db.query(&name, sql);
        rows.first()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("{sql} gave {rows:?}"))
    };
    let sqlite_count = |sql: &str| -> u64 {
        let conn = rusqlite::Connection::open(&sqlite).expect("SQLite file");
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n.unsigned_abs())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    for sql in [
        "SELECT COUNT(*) FROM host_usage",
        "SELECT COUNT(*) FROM vm_usage",
        "SELECT COUNT(*) FROM vm_ebpf_usage",
        "SELECT COUNT(*) FROM host_usage_1m",
        "SELECT COUNT(*) FROM vm_usage_1m",
        "SELECT COUNT(*) FROM host_usage_1h",
        "SELECT COUNT(*) FROM vm_usage_1h",
    ] {
        assert_eq!(sqlite_count(sql), count(sql), "{sql}");
    }
    assert_eq!(
        count("SELECT COUNT(*) FROM host_usage"),
        2 * u64::from(TICKS)
    );
    assert!(
        count("SELECT COUNT(*) FROM vm_ebpf_usage WHERE kvm_events_s > 0 OR cpu_ready_pct > 0") > 0
    );
    let live_minutes = count(&format!(
        "SELECT COUNT(*) FROM host_usage_1m WHERE host_ip = '{LIVE_HOST}'"
    ));
    assert!(live_minutes >= 3, "{live_minutes} minute buckets");
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) FROM host_usage_1h WHERE host_ip = '{PAST_HOST}'"
        )),
        2
    );
    assert!(
        count("SELECT COUNT(*) FROM vm_usage_1h WHERE vcpus_avg IS NOT NULL") >= 6,
        "hour buckets of the three VMs, their integer figures rolled up"
    );

    // Raw, minute and hour rows as `show` prints them.
    let hosts = databases.same_json(&["show", "-n", "100000"]);
    assert_eq!(len(&hosts), 2 * TICKS as usize);
    let vms = databases.same_json(&["show", "--vms", "-n", "100000"]);
    assert!(len(&vms) >= 6 * TICKS as usize, "{} VM rows", len(&vms));
    for level in ["minute", "hour"] {
        let hosts = databases.same_json(&["show", "--level", level, "-n", "100000"]);
        let vms = databases.same_json(&["show", "--vms", "--level", level, "-n", "100000"]);
        assert!(len(&hosts) >= 2 && len(&vms) >= 6, "{level}");
    }

    // Reports at every level, whole and per host and VM.
    for level in ["raw", "minute", "hour"] {
        let report = databases.same_json(&["report", "--since", "5h", "--level", level]);
        // Hour buckets: the moved host's two are complete; the live host's only if the run
        // crossed an hour.
        let (hosts, vms) = (owners(&report, "host"), owners(&report, "vm"));
        assert!(hosts.contains(PAST_HOST), "{level}: {hosts:?}");
        if level == "hour" {
            assert!(vms.len() == 3 || vms.len() == 6, "{level}: {vms:?}");
        } else {
            assert_eq!(
                (hosts.len(), vms.len()),
                (2, 6),
                "{level}: {hosts:?} {vms:?}"
            );
        }
        databases.same_json(&[
            "report", "--since", "5h", "--level", level, "--host", PAST_HOST,
        ]);
        databases.same_json(&[
            "report",
            "--since",
            "5h",
            "--level",
            level,
            "--vm",
            "setmov-test-eq-disk",
        ]);
    }

    // Sizing and placement over windows that read raw ticks, minutes and hours.
    for since in ["5h", "2d", "30d"] {
        let plans = databases.same_json(&["recommend", "--since", since]);
        let planned: BTreeMap<&str, usize> = plans
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|plan| Some((plan["host"].as_str()?, len(&plan["vms"]))))
            .collect();
        // Over 30 days the plan reads hour buckets, which only the moved host has complete.
        let live_vms = if since == "30d" { 0..=3 } else { 3..=3 };
        assert!(
            planned.get(PAST_HOST) == Some(&3)
                && planned.get(LIVE_HOST).is_some_and(|n| live_vms.contains(n)),
            "recommend --since {since}: {planned:?}"
        );
        // A threshold the burning guest's host is over, so that moves are planned.
        let plan = databases.same_json(&["migrate-plan", "--since", since, "--threshold", "5"]);
        assert_eq!(
            plan["before"].as_object().map(serde_json::Map::len),
            Some(2),
            "migrate-plan --since {since}: {plan}"
        );
    }

    // Charts of a host and a VM, from ticks and from hour buckets.
    for (what, level) in [
        (["--host", LIVE_HOST], "raw"),
        (["--vm", "setmov-test-eq-net"], "raw"),
        (["--host", PAST_HOST], "hour"),
        (["--vm", "setmov-test-eq-cpu-past"], "minute"),
    ] {
        let sqlite_out = dir.path().join("plot-sqlite");
        let mysql_out = dir.path().join("plot-mysql");
        for out in [&sqlite_out, &mysql_out] {
            let _ = std::fs::remove_dir_all(out);
        }
        let run = |out: &Path, database: &[String]| {
            let status = setmov_tests::setmov_command(SETMOV)
                .args(["plot", "--since", "5h", "--level", level])
                .args(what)
                .arg("--out")
                .arg(out)
                .args(database)
                .env("SETMOV_LOG", "warn")
                .status()
                .expect("setmov plot");
            assert!(status.success(), "plot {what:?} {level}");
        };
        run(&sqlite_out, &databases.sqlite);
        run(&mysql_out, &databases.mysql);
        let (a, b) = (chart_points(&sqlite_out), chart_points(&mysql_out));
        assert!(!a.is_empty(), "no chart of {what:?}");
        assert!(
            a.iter().all(|(_, lines)| lines.iter().sum::<usize>() > 0),
            "an empty chart of {what:?}: {a:?}"
        );
        assert_eq!(a, b, "plot {what:?} at level {level}");
    }
}
