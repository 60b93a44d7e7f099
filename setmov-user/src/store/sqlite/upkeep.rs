//! After each tick: the rollups of the buckets that are complete, and the purge of rows past
//! their retention.

use rusqlite::{Connection, Transaction, params};
use time::OffsetDateTime;

use super::write::{Conflict, write_rows};
use super::{OpenDatabase, SqliteStore};
use crate::store::rollup::{
    HOST_FIGURES, Level, RawTick, Retention, VM_FIGURES, raw_host_sql, raw_vm_sql, rollup_rows,
};
use crate::store::{StoreError, format_time, purge_statements};

impl SqliteStore {
    /// The blocking half of [`Store::maintain`](crate::store::Store::maintain).
    pub fn maintain_blocking(
        &self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let OpenDatabase { conn, upkeep, .. } = &mut *guard;
        let upkeep = upkeep.entry(host_ip.to_owned()).or_default();
        for level in Level::ALL {
            let due = upkeep.due_buckets(level, now, || first_bucket(conn, host_ip, level));
            let Some(&last) = due.last() else {
                continue;
            };
            let tx = conn.transaction()?;
            for bucket in due {
                roll_up_bucket(&tx, host_ip, level, bucket)?;
            }
            tx.commit()?;
            upkeep.rolled_up(level, last);
        }
        if upkeep.purge_due(now) {
            let tx = conn.transaction()?;
            for (sql, at) in purge_statements(now, retention) {
                tx.execute(sql, params![host_ip, format_time(at)])?;
            }
            tx.commit()?;
        }
        Ok(())
    }
}

/// The bucket after the newest rollup of `host_ip` at `level`, or the one holding its oldest
/// raw row; `None` when it has no rows at all.
fn first_bucket(conn: &Connection, host_ip: &str, level: Level) -> Option<OffsetDateTime> {
    let seconds = |sql: &str| -> Option<i64> {
        conn.query_row(sql, [host_ip], |r| r.get::<_, Option<i64>>(0))
            .ok()
            .flatten()
    };
    let rolled = format!(
        "SELECT CAST(strftime('%s', MAX(time)) AS INTEGER) FROM host_usage{} WHERE host_ip = ?1",
        level.suffix()
    );
    if let Some(last) = seconds(&rolled) {
        let span = i64::try_from(level.span().as_secs()).unwrap_or(60);
        return OffsetDateTime::from_unix_timestamp(last.checked_add(span)?).ok();
    }
    seconds("SELECT CAST(strftime('%s', MIN(time)) AS INTEGER) FROM host_usage WHERE host_ip = ?1")
        .and_then(|first| OffsetDateTime::from_unix_timestamp(first).ok())
}

/// Rolls up one bucket of a host and its VMs from their raw rows.
fn roll_up_bucket(
    tx: &Transaction,
    host_ip: &str,
    level: Level,
    bucket: OffsetDateTime,
) -> Result<(), StoreError> {
    let span = level.time_span();
    let (from, to) = (format_time(bucket), format_time(bucket + span));
    for (sql, table, owner, figures) in [
        (raw_host_sql(), "host_usage", "host_ip", HOST_FIGURES),
        (raw_vm_sql(), "vm_usage", "uuid", VM_FIGURES),
    ] {
        let mut stmt = tx.prepare_cached(&sql)?;
        let raw = stmt
            .query_map(params![host_ip, from, to], |r| {
                let values = (2..2 + figures.len())
                    .map(|i| r.get::<_, Option<f64>>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RawTick {
                    owner: r.get(0)?,
                    interval_s: r.get(1)?,
                    values,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let table = format!("{table}{}", level.suffix());
        let rows = rollup_rows(&table, owner, figures, &from, raw);
        write_rows(tx, &rows, Conflict::Replace)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{tick, vm};
    use super::*;
    use crate::analysis::ReportQuery;
    use crate::analysis::report;
    use crate::usage::vm::vm_usage;
    use crate::vm::stats::{DomainState, DomainStats};

    #[test]
    fn complete_minutes_are_rolled_up_and_old_rows_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        // Ticks every 20 s from 00:00:00 to 00:02:40: minutes 0 and 1 are complete at 00:02:40.
        for n in 0..9u64 {
            let mut t = tick(n + 1, i64::try_from(n).expect("small") * 20_000);
            let mut sample = vm(Some(DomainState::Running), false);
            sample.usage = Some(vm_usage(None, &DomainStats::default(), 1.0, 2));
            // One tick with an eBPF figure: the rollup's CPU ready is that tick's alone.
            if n == 1 {
                sample.ebpf = Some(crate::usage::ebpf::VmEbpfFigures {
                    interval_secs: 20.0,
                    block: crate::ebpf::BlockTotals::default(),
                    block_rates: None,
                    latency: Vec::new(),
                    cpu_ready: Some(crate::usage::ebpf::CpuReady {
                        pct: 12.5,
                        p99_us: None,
                        waits: 3,
                    }),
                    kvm_events: Vec::new(),
                    nics: Vec::new(),
                });
            }
            t.vms = vec![sample];
            if let Some(host) = &mut t.host_sample
                && let Some(cpu) = &mut host.usage.cpu
            {
                cpu.busy_pct = (n * 10) as f64;
            }
            store.write_tick_blocking(&t).expect("write");
        }
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(160);
        let keep_all = Retention {
            raw: None,
            minute: None,
            hour: None,
        };
        store
            .maintain_blocking("192.0.2.2", now, &keep_all)
            .expect("maintain");
        // Again: nothing new is due, nothing changes.
        store
            .maintain_blocking("192.0.2.2", now, &keep_all)
            .expect("maintain again");
        let state = store.lock().expect("lock");
        let minutes: Vec<(String, u32, f64, f64, f64)> = state
            .conn
            .prepare("SELECT time, samples, cpu_pct_avg, cpu_pct_max, cpu_pct_p95 FROM host_usage_1m ORDER BY time")
            .expect("sql")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            minutes,
            [
                ("1970-01-01T00:00:00.000Z".to_owned(), 3, 10.0, 20.0, 20.0),
                ("1970-01-01T00:01:00.000Z".to_owned(), 3, 40.0, 50.0, 50.0),
            ]
        );
        let vm_minutes: u32 = state
            .conn
            .query_row("SELECT SUM(samples) FROM vm_usage_1m", [], |r| r.get(0))
            .expect("vm rollups");
        assert_eq!(vm_minutes, 6);
        let ready: Vec<Option<f64>> = state
            .conn
            .prepare("SELECT cpu_ready_pct_avg FROM vm_usage_1m ORDER BY time")
            .expect("sql")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            ready,
            [Some(12.5), None],
            "eBPF figures where ticks had them"
        );
        drop(state);

        // A report over the same window, from the raw ticks and from the minute rollups.
        let query = |level| ReportQuery {
            level,
            vms: false,
            host_ip: None,
            vm: None,
            since: OffsetDateTime::UNIX_EPOCH,
            until: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(120),
        };
        let cpu = |level| {
            let samples = store
                .report_samples_blocking(&query(level))
                .expect("report rows");
            let report = report::report(false, samples);
            (report[0].ticks, report[0].figures["cpu_pct"])
        };
        let (ticks, raw) = cpu(None);
        assert_eq!((ticks, raw.mean, raw.max), (6, 25.0, 50.0));
        let (ticks, minutes) = cpu(Some(Level::Minute));
        assert_eq!((ticks, minutes.mean, minutes.max), (6, 25.0, 50.0));
        // From the minutes' distributions: within their relative error of the raw p95.
        let error = (minutes.p95 - raw.p95).abs() / raw.p95;
        assert!(error <= crate::store::sketch::RELATIVE_ERROR, "{minutes:?}");
        let mut vm_query = query(Some(Level::Minute));
        vm_query.vms = true;
        let vms = report::report(
            true,
            store.report_samples_blocking(&vm_query).expect("vm rows"),
        );
        assert_eq!(vms[0].owner, "desk-1");
        assert_eq!(vms[0].figures["cpu_ready_pct"].max, 12.5);

        // A day later with one hour of raw rows kept: the raw rows go, the rollups stay.
        let later = now + time::Duration::days(1);
        let short = Retention {
            raw: Some(std::time::Duration::from_secs(3600)),
            minute: None,
            hour: None,
        };
        store
            .maintain_blocking("192.0.2.2", later, &short)
            .expect("purge");
        let state = store.lock().expect("lock");
        let counts: (u32, u32, u32, u32) = state
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM host_usage), (SELECT COUNT(*) FROM host_cpu_usage),
                        (SELECT COUNT(*) FROM vm_usage), (SELECT COUNT(*) FROM host_usage_1m)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("counts");
        // The minute holding the last ticks was rolled up before they went.
        assert_eq!(counts, (0, 0, 0, 3));
    }
}
