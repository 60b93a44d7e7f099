//! The MySQL store's rollups on the real MariaDB server (see tests/mysql_store.rs): complete
//! minutes rolled up and old ticks purged, a tick in a minute's last half second, and the
//! values of minute and hour rollups over ticks of uneven Δt (the check src/rollups.rs runs on
//! both stores), and minute reports against every minute row (src/minute_reports.rs).
//! Without the server these tests skip loudly (and fail under SETMOV_REQUIRE_ALL=1).

use std::time::Duration;

use setmov::store::Store;
use setmov::store::mysql::MysqlStore;
use setmov::store::rollup::Retention;
use setmov_tests::minute_reports::check_minute_reports;
use setmov_tests::mysql_run::{Prepared, Setmov, count, prepared, store_config};
use setmov_tests::rollups::check_rollup_values;
use setmov_tests::runtime;
use setmov_tests::ticks::{HOST_IP, host_tick, instant};
use time::OffsetDateTime;

const SETMOV: Setmov = Setmov(env!("CARGO_BIN_EXE_setmov-cli"));

#[test]
fn complete_minutes_are_rolled_up_and_old_ticks_purged_on_the_server() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "rollup")
    else {
        return;
    };
    let config = store_config(&db, &url, spool.path());
    let runtime = runtime();
    runtime.block_on(async {
        let mut store = MysqlStore::open(config).await.expect("open");
        // Every 20 s from 00:00:00 to 00:02:40: minutes 0 and 1 are complete.
        for n in 0..9u64 {
            let tick = host_tick(
                n + 1,
                time::Duration::seconds(20 * n as i64),
                20.0,
                (n * 10) as f64,
            );
            store.write_tick(&tick).await.expect("write");
        }
        let keep = Retention {
            raw: None,
            minute: None,
            hour: None,
        };
        let now = instant(time::Duration::seconds(160));
        store.maintain(HOST_IP, now, &keep).await.expect("roll up");
        let purge = Retention {
            raw: Some(Duration::from_secs(3600)),
            ..keep
        };
        let later = now + time::Duration::days(1);
        store.maintain(HOST_IP, later, &purge).await.expect("purge");
        store.close().await;
    });
    let minutes = db.query(
        &name,
        "SELECT DATE_FORMAT(time, '%H:%i'), samples, cpu_pct_avg, cpu_pct_max, cpu_pct_p95
         FROM host_usage_1m ORDER BY time",
    );
    assert_eq!(
        minutes,
        [
            "00:00\t3\t10\t20\t20",
            "00:01\t3\t40\t50\t50",
            "00:02\t3\t70\t80\t80"
        ]
    );
    assert_eq!(
        count(&db, &name, "SELECT COUNT(*) FROM host_usage"),
        0,
        "raw rows purged"
    );
    assert_eq!(count(&db, &name, "SELECT COUNT(*) FROM host_usage_1h"), 1);
}

/// MySQL rounds a DATETIME(3) cast to whole seconds; SQLite's `strftime('%s')` floors. A tick
/// at 00:00:59.600 must stay in minute 00:00 (its bucket rolled up, its report time 59), as in
/// the embedded store.
#[test]
fn a_tick_in_a_minutes_last_half_second_stays_in_that_minute() {
    let Some(Prepared {
        _server,
        db,
        name,
        url,
        spool,
    }) = prepared(SETMOV, "half_second")
    else {
        return;
    };
    let config = store_config(&db, &url, spool.path());
    let runtime = runtime();
    let times = runtime.block_on(async {
        let mut store = MysqlStore::open(config).await.expect("open");
        for (seq, millis, cpu) in [(1, 59_600, 10.0), (2, 61_000, 20.0), (3, 121_000, 30.0)] {
            let tick = host_tick(seq, time::Duration::milliseconds(millis), 20.0, cpu);
            store.write_tick(&tick).await.expect("write");
        }
        let now = instant(time::Duration::seconds(180));
        store
            .maintain(HOST_IP, now, &Retention::default())
            .await
            .expect("roll up");
        let query = setmov::analysis::ReportQuery {
            level: None,
            vms: false,
            host_ip: None,
            vm: None,
            since: OffsetDateTime::UNIX_EPOCH,
            until: now,
        };
        let samples = store.report_samples(&query).await.expect("report");
        store.close().await;
        samples.iter().map(|s| s.time).collect::<Vec<_>>()
    });
    assert_eq!(times, [59, 61, 121]);
    let minutes = db.query(
        &name,
        "SELECT DATE_FORMAT(time, '%H:%i'), samples, cpu_pct_avg FROM host_usage_1m ORDER BY time",
    );
    assert_eq!(minutes, ["00:00\t1\t10", "00:01\t1\t20", "00:02\t1\t30"]);
}

#[test]
fn minute_and_hour_rollups_of_uneven_ticks_hold_the_values_computed_by_hand() {
    let Some(Prepared {
        _server,
        db,
        url,
        spool,
        ..
    }) = prepared(SETMOV, "uneven")
    else {
        return;
    };
    runtime().block_on(async {
        let config = store_config(&db, &url, spool.path());
        let mut store = MysqlStore::open(config).await.expect("open");
        check_rollup_values(&mut store).await;
        store.close().await;
    });
}

#[test]
fn a_minute_report_gives_what_every_minute_gives() {
    let Some(Prepared {
        _server,
        db,
        url,
        spool,
        ..
    }) = prepared(SETMOV, "minute_report")
    else {
        return;
    };
    runtime().block_on(async {
        let config = store_config(&db, &url, spool.path());
        let mut store = MysqlStore::open(config).await.expect("open");
        check_minute_reports(&mut store).await;
        store.close().await;
    });
}
