//! `setmov report` and `setmov recommend` on synthetic stored series with known answers: a
//! day of per-minute rollups for four VMs of one host, written as the monitor writes them.

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, params};
use setmov::store::format_time;
use setmov::store::sketch::RELATIVE_ERROR;
use setmov::store::sqlite::SqliteStore;
use time::OffsetDateTime;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");
const HOST: &str = "192.0.2.5";
const GIB: f64 = 1_073_741_824.0;

/// name, vCPUs, per-vCPU CPU %, memory GiB, used GiB, usable GiB, swap-in B/s, disk B/s.
type Vm = (&'static str, f64, f64, f64, f64, f64, f64, f64);

const VMS: [Vm; 4] = [
    // Asleep: no CPU, no disk, no network.
    ("idle-desk", 2.0, 0.5, 2.0, 0.4, 1.5, 0.0, 0.0),
    // One of its four vCPUs busy all day.
    ("one-of-four", 4.0, 25.0, 4.0, 1.0, 2.8, 0.0, 2e6),
    // Saturated CPU, memory exhausted and swapping.
    ("starved", 2.0, 98.0, 2.0, 1.98, 0.02, 65536.0, 4e6),
    // Steady at half of its single vCPU, its memory 5 % under what its allocation holds with
    // the headroom (p95 read from rollups is within 1 %).
    ("steady", 1.0, 50.0, 1.25, 0.95, 0.2, 0.0, 1e6),
];

/// One minute's 60 ticks (1 s apart) of a figure whose day has p95 `v`: an ordinary minute
/// holds 0.4 `v` throughout; every tenth is a peak of 29 ticks at (18 − `peak_max`)/29 `v`, 30
/// at `v` and one at `peak_max` × `v` (mean 0.8 `v`). Over the day's 86,400 ticks the report
/// then reads mean 0.44 `v`, median 0.4 `v`, p95 `v` (the 82,080th tick: 77,760 ordinary ones,
/// then 29 low and 30 at `v` in each of the 144 peaks) and maximum `peak_max` × `v`: all
/// different, so a test tells which statistic a figure comes from. `cap` bounds every tick
/// (CPU at 100 %).
fn shaped(v: f64, peak: bool, peak_max: f64, cap: f64) -> Vec<f64> {
    let ticks = if peak {
        let low = (18.0 - peak_max) / 29.0 * v;
        [vec![low; 29], vec![v; 30], vec![peak_max * v]].concat()
    } else {
        vec![0.4 * v; 60]
    };
    ticks.into_iter().map(|t| t.min(cap)).collect()
}

/// The columns the monitor writes for a figure over a minute of `ticks`.
fn rollup_values(figure: &str, ticks: &[f64]) -> Vec<(String, SqlValue)> {
    let timed: Vec<(f64, f64)> = ticks.iter().map(|&t| (t, 1.0)).collect();
    let s = setmov::store::rollup::summarize(&timed).expect("ticks");
    [
        ("avg", SqlValue::Real(s.avg)),
        ("max", SqlValue::Real(s.max)),
        ("p95", SqlValue::Real(s.p95)),
        ("n", SqlValue::Integer(i64::try_from(s.n).expect("60"))),
        ("secs", SqlValue::Real(s.secs)),
        ("sketch", SqlValue::Blob(s.sketch.encode())),
    ]
    .into_iter()
    .map(|(stat, value)| (format!("{figure}_{stat}"), value))
    .collect()
}

/// A database holding a day of per-minute rollups, ending now.
fn database(dir: &Path) -> String {
    let path = dir.join("analysis.db");
    drop(SqliteStore::open(&path).expect("store"));
    let mut conn = Connection::open(&path).expect("connection");
    conn.execute(
        "INSERT INTO hosts (host_ip, host_name, vmc, cpus, memory_bytes)
         VALUES (?1, 'hv', 4, 2, ?2)",
        params![HOST, 16u64 << 30],
    )
    .expect("host");
    let tx = conn.transaction().expect("transaction");
    let now = OffsetDateTime::now_utc();
    for (i, (name, vcpus, cpu, mem, used, usable, swap, disk)) in VMS.iter().enumerate() {
        let uuid = format!("5e7a0000-0000-4000-8000-{i:012}");
        tx.execute(
            "INSERT INTO vms (uuid, host_ip, name, state) VALUES (?1, ?2, ?3, 'running')",
            params![uuid, HOST, name],
        )
        .expect("vm");
        let net = if *disk > 0.0 { 1e6 } else { 0.0 };
        for minute in 1..=1440 {
            let time = format_time(now - time::Duration::minutes(minute));
            let peak = minute % 10 == 0;
            // CPU peaks at twice its p95 (at most 100 %), memory at 1.1 times, the rest 1.2.
            let figures = [
                ("vcpus", vec![*vcpus; 60]),
                ("cpu_vcpu_pct", shaped(*cpu, peak, 2.0, 100.0)),
                ("mem_alloc_bytes", vec![mem * GIB; 60]),
                ("mem_used_bytes", shaped(used * GIB, peak, 1.1, f64::MAX)),
                (
                    "mem_usable_bytes",
                    shaped(usable * GIB, peak, 1.1, f64::MAX),
                ),
                ("swap_in_bytes_s", shaped(*swap, peak, 1.2, f64::MAX)),
                ("disk_write_bytes_s", shaped(*disk, peak, 1.2, f64::MAX)),
                ("net_rx_bps", shaped(net, peak, 1.2, f64::MAX)),
            ];
            let mut columns = vec![
                ("time".to_owned(), SqlValue::Text(time)),
                ("uuid".to_owned(), SqlValue::Text(uuid.clone())),
                ("samples".to_owned(), SqlValue::Integer(60)),
            ];
            for (figure, ticks) in &figures {
                columns.extend(rollup_values(figure, ticks));
            }
            let (names, values): (Vec<String>, Vec<SqlValue>) = columns.into_iter().unzip();
            let marks = vec!["?"; names.len()].join(", ");
            tx.execute(
                &format!(
                    "INSERT INTO vm_usage_1m ({}) VALUES ({marks})",
                    names.join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .expect("rollup row");
        }
    }
    tx.commit().expect("commit");
    path.display().to_string()
}

fn setmov(args: &[&str]) -> String {
    let out = setmov_tests::setmov_command(SETMOV)
        .args(args)
        .output()
        .expect("setmov runs");
    assert!(
        out.status.success(),
        "setmov {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_report_gives_each_vm_its_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(dir.path());
    let json = setmov(&[
        "report",
        "--database",
        &db,
        "--since",
        "2d",
        "--format",
        "json",
    ]);
    let lines: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON");
    let cpu = |vm: &str| {
        lines
            .iter()
            .find(|l| l["owner"] == vm && l["figure"] == "cpu_vcpu_pct")
            .unwrap_or_else(|| panic!("no CPU line for {vm}: {json}"))
            .clone()
    };
    // Over the day's ticks: mean, median, p95 and maximum 0.44, 0.4, 1 and 2 × 25 %; the
    // percentiles from the minutes' distributions, within their relative error.
    let one = cpu("one-of-four");
    let stats = ["mean", "p50", "p95", "max"].map(|k| one[k].as_f64().expect(k));
    let close = |got: f64, want: f64| (got - want).abs() <= RELATIVE_ERROR * want + 1e-9;
    assert!(
        close(stats[0], 11.0) && close(stats[1], 10.0) && close(stats[2], 25.0),
        "{one}"
    );
    assert_eq!(stats[3], 50.0, "{one}");
    assert_eq!(one["ticks"].as_u64(), Some(1440 * 60));
    assert_eq!(one["n"].as_u64(), Some(1440 * 60));
    assert_eq!(cpu("starved")["max"].as_f64(), Some(100.0));
    let p95 = cpu("starved")["p95"].as_f64().expect("p95");
    assert!(close(p95, 98.0), "{p95}");
    let table = setmov(&["report", "--database", &db, "--since", "2d"]);
    assert!(
        table.contains("one-of-four") && table.contains("11.0%") && table.contains("50.0%"),
        "{table}"
    );
}

#[test]
fn recommendations_follow_the_rule_and_the_plan_fits_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(dir.path());
    let script = dir.path().join("plan.sh");
    let json = setmov(&[
        "recommend",
        "--database",
        &db,
        "--since",
        "2d",
        "--format",
        "json",
        "--script",
        &script.display().to_string(),
    ]);
    let plans: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON");
    assert_eq!(plans.len(), 1, "{json}");
    let plan = &plans[0];
    let vm = |name: &str| {
        plan["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("no {name}: {json}"))
            .clone()
    };
    assert_eq!(vm("idle-desk")["idle"], true);
    assert_eq!(vm("one-of-four")["recommended_vcpus"], 2);
    let starved = vm("starved");
    assert_eq!(starved["starved"], true);
    let number = |key: &str| {
        starved[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}: {starved}"))
    };
    assert!(number("recommended_vcpus") > number("vcpus"), "{starved}");
    assert!(
        number("recommended_memory_bytes") > number("memory_bytes"),
        "{starved}"
    );
    assert_eq!(vm("steady")["recommended_vcpus"], 1);
    // Two CPUs × 4 vCPUs each, 16 GiB less 1 GiB for the host.
    assert_eq!(plan["capacity"]["vcpus"], 8);
    let planned = |key: &str| {
        plan[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}: {json}"))
    };
    assert!(planned("vcpus_planned") <= 8, "{json}");
    assert!(planned("memory_planned") <= 15 << 30, "{json}");

    let script = std::fs::read_to_string(&script).expect("script");
    // VMs by UUID (see tests/recommend_script.rs): one-of-four is the second, steady the last.
    assert!(
        script.contains("virsh setvcpus 5e7a0000-0000-4000-8000-000000000001 2 --config"),
        "{script}"
    );
    assert!(
        !script.contains("5e7a0000-0000-4000-8000-000000000003"),
        "nothing to change for steady: {script}"
    );
    let table = setmov(&["recommend", "--database", &db, "--since", "2d"]);
    assert!(
        table.contains("one-of-four") && table.contains("4 → 2"),
        "{table}"
    );
}

#[test]
fn plot_writes_a_chart_per_figure_group_and_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(dir.path());
    let out = dir.path().join("charts");
    let out_arg = out.display().to_string();
    setmov(&[
        "plot",
        "--database",
        &db,
        "--vm",
        "starved",
        "--since",
        "2d",
        "--out",
        &out_arg,
    ]);
    let cpu = std::fs::read_to_string(out.join("starved-cpu.svg")).expect("CPU chart");
    assert!(
        cpu.starts_with("<svg") && cpu.contains("CPU per vCPU"),
        "{cpu}"
    );
    // A day of minutes: one line of 1440 points.
    let points = cpu
        .split("points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map_or(0, |points| points.split(' ').count());
    assert_eq!(points, 1440);
    let page = std::fs::read_to_string(out.join("index.html")).expect("page");
    let charts = std::fs::read_dir(&out)
        .expect("out")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "svg"))
        })
        .count();
    assert_eq!(page.matches("<svg ").count(), charts);
    assert!(charts >= 3, "CPU, network and disk at least");
}

/// Three hosts of 8 CPUs with a day of per-hour rollups: `a` holds two VMs busy in office
/// hours (8 CPUs at their peak), `b` a night batch VM, `c` another office VM.
fn fleet(dir: &Path) -> String {
    let path = dir.join("fleet.db");
    drop(SqliteStore::open(&path).expect("store"));
    let mut conn = Connection::open(&path).expect("connection");
    let tx = conn.transaction().expect("transaction");
    for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        tx.execute(
            "INSERT INTO hosts (host_ip, host_name, vmc, cpus, memory_bytes)
             VALUES (?1, ?1, 1, 8, ?2)",
            params![host, 32u64 << 30],
        )
        .expect("host");
    }
    // name, host, base CPUs, extra CPUs at the peak, peak hours.
    let vms = [
        ("office-1", "10.0.0.1", 0.5, 3.5, 8..18),
        ("office-2", "10.0.0.1", 0.5, 3.5, 8..18),
        ("batch", "10.0.0.2", 0.5, 4.0, 0..6),
        ("office-3", "10.0.0.3", 0.5, 3.0, 8..18),
    ];
    let now = OffsetDateTime::now_utc();
    for (i, (name, host, base, peak, hours)) in vms.iter().enumerate() {
        let uuid = format!("f1ee0000-0000-4000-8000-{i:012}");
        tx.execute(
            "INSERT INTO vms (uuid, host_ip, name, state) VALUES (?1, ?2, ?3, 'running')",
            params![uuid, host, name],
        )
        .expect("vm");
        for ago in 1..=24i64 {
            let start = now - time::Duration::hours(ago);
            let cpus = if hours.contains(&start.hour()) {
                base + peak
            } else {
                *base
            };
            // Share of the host's 8 CPUs, in percent.
            let share = cpus / 8.0 * 100.0;
            // Within the hour it peaks above its mean.
            tx.execute(
                "INSERT INTO vm_usage_1h (time, uuid, samples, cpu_pct_avg, cpu_pct_max,
                    cpu_pct_p95, mem_alloc_bytes_avg, mem_alloc_bytes_max, mem_alloc_bytes_p95)
                 VALUES (?1, ?2, 3600, ?3, ?4, ?5, ?6, ?6, ?6)",
                params![
                    format_time(start),
                    uuid,
                    share,
                    1.3 * share,
                    1.2 * share,
                    2.0 * GIB
                ],
            )
            .expect("rollup row");
        }
    }
    tx.commit().expect("commit");
    path.display().to_string()
}

#[test]
fn the_migration_plan_moves_an_office_vm_to_the_night_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fleet(dir.path());
    let json = setmov(&[
        "migrate-plan",
        "--database",
        &db,
        "--since",
        "8d",
        "--format",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let moves = plan["moves"].as_array().expect("moves");
    assert_eq!(moves.len(), 1, "one move is enough: {json}");
    let m = &moves[0];
    assert!(
        m["vm"].as_str().is_some_and(|v| v.starts_with("office-")) && m["from"] == "10.0.0.1",
        "{json}"
    );
    assert_eq!(m["to"], "10.0.0.2", "the host that peaks at night: {json}");
    for (host, level) in plan["after"].as_object().expect("after") {
        let level = level.as_f64().unwrap_or_else(|| panic!("{host}: {json}"));
        assert!(level <= 0.8, "{host} still overloaded: {json}");
    }
    // The plan reads each hour's mean: host a's two office VMs fill its 8 CPUs at their peak
    // (their hours' maxima, 1.3 times, would read 1.3).
    assert_eq!(plan["before"]["10.0.0.1"].as_f64(), Some(1.0), "{json}");
    let table = setmov(&["migrate-plan", "--database", &db, "--since", "8d"]);
    assert!(
        table.contains("1. move office-") && table.contains("different times"),
        "{table}"
    );
}
