//! What `show`, `report`, `plot`, `recommend` and `migrate-plan` read back from the file.

use rusqlite::params;
use rusqlite::types::ValueRef;

use super::SqliteStore;
use super::write::SqlValue;
use crate::analysis::report::{
    self, FigureRef, FigureSample, OwnerReport, ReportFold, ReportSample,
};
use crate::analysis::{REPORT_STATS, ReportQuery, report_params, report_sql};
use crate::store::minute_report::{self, HourCover};
use crate::store::rollup::{
    HOST_FIGURES, Level, RollupQuery, RollupRow, SHOWN_STATS, VM_FIGURES, rollup_query_params,
    rollup_query_sql,
};
use crate::store::rows::{HostRow, Value};
use crate::store::{
    HostUsageQuery, HostUsageRow, StoreError, VmUsageQuery, VmUsageRow, format_time,
};

impl SqliteStore {
    /// The blocking half of [`Store::recent_host_usage`](crate::store::Store::recent_host_usage).
    pub fn recent_host_usage_blocking(
        &self,
        query: &HostUsageQuery,
    ) -> Result<Vec<HostUsageRow>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(
            "SELECT host_ip, time, interval_s, late_ms, cpu_pct, mem_used_pct,
                    disk_read_bytes_s, disk_write_bytes_s, net_rx_bps, net_tx_bps
             FROM host_usage WHERE (?1 IS NULL OR host_ip = ?1) AND (?3 IS NULL OR time >= ?3)
             ORDER BY time DESC LIMIT ?2",
        )?;
        let since = query.since.map(format_time);
        let mut rows = stmt
            .query_map(params![query.host_ip, query.limit, since], |r| {
                Ok(HostUsageRow {
                    host_ip: r.get(0)?,
                    time: r.get(1)?,
                    interval_s: r.get(2)?,
                    late_ms: r.get(3)?,
                    cpu_pct: r.get(4)?,
                    mem_used_pct: r.get(5)?,
                    disk_read_bytes_s: r.get(6)?,
                    disk_write_bytes_s: r.get(7)?,
                    net_rx_bps: r.get(8)?,
                    net_tx_bps: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The blocking half of [`Store::recent_vm_usage`](crate::store::Store::recent_vm_usage).
    pub fn recent_vm_usage_blocking(
        &self,
        query: &VmUsageQuery,
    ) -> Result<Vec<VmUsageRow>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(
            "SELECT u.uuid, v.name, v.host_ip, u.time, u.state, u.missing, u.vcpus, u.cpu_pct,
                    u.cpu_vcpu_pct, u.steal_pct, u.mem_alloc_bytes, u.mem_used_pct, u.mem_source,
                    u.rss_bytes, u.disk_read_bytes_s, u.disk_write_bytes_s, u.net_rx_bps,
                    u.net_tx_bps
             FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
             WHERE (?1 IS NULL OR v.host_ip = ?1) AND (?2 IS NULL OR v.name = ?2 OR v.uuid = ?2)
               AND (?4 IS NULL OR u.time >= ?4)
             ORDER BY u.time DESC, v.name DESC LIMIT ?3",
        )?;
        let since = query.since.map(format_time);
        let mut rows = stmt
            .query_map(params![query.host_ip, query.vm, query.limit, since], |r| {
                Ok(VmUsageRow {
                    uuid: r.get(0)?,
                    name: r.get(1)?,
                    host_ip: r.get(2)?,
                    time: r.get(3)?,
                    state: r.get(4)?,
                    missing: r.get(5)?,
                    vcpus: r.get(6)?,
                    cpu_pct: r.get(7)?,
                    cpu_vcpu_pct: r.get(8)?,
                    steal_pct: r.get(9)?,
                    mem_alloc_bytes: r.get(10)?,
                    mem_used_pct: r.get(11)?,
                    mem_source: r.get(12)?,
                    rss_bytes: r.get(13)?,
                    disk_read_bytes_s: r.get(14)?,
                    disk_write_bytes_s: r.get(15)?,
                    net_rx_bps: r.get(16)?,
                    net_tx_bps: r.get(17)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The blocking half of [`Store::rollups`](crate::store::Store::rollups).
    pub fn rollups_blocking(&self, q: &RollupQuery) -> Result<Vec<RollupRow>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state
            .conn
            .prepare(&rollup_query_sql(q.vms, q.level, str::to_owned))?;
        let figures = SHOWN_STATS.len()
            * if q.vms {
                VM_FIGURES.len()
            } else {
                HOST_FIGURES.len()
            };
        let row = |r: &rusqlite::Row<'_>| {
            let values = (4..4 + figures)
                .map(|i| r.get::<_, Option<f64>>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RollupRow::new(
                q.vms,
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                values,
            ))
        };
        let params = rollup_query_params(q, q.since.map(format_time));
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter().map(SqlValue)), row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().rev().collect())
    }

    /// The blocking half of [`Store::hosts`](crate::store::Store::hosts).
    pub fn hosts_blocking(&self) -> Result<Vec<HostRow>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(
            "SELECT host_ip, host_name, mac, vmc, cpus, memory_bytes FROM hosts ORDER BY host_ip",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HostRow {
                    host_ip: r.get(0)?,
                    host_name: r.get(1)?,
                    mac: r.get(2)?,
                    vmc: r.get(3)?,
                    cpus: r.get(4)?,
                    memory_bytes: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The blocking half of [`Store::report_samples`](crate::store::Store::report_samples).
    pub fn report_samples_blocking(
        &self,
        q: &ReportQuery,
    ) -> Result<Vec<ReportSample>, StoreError> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(&report_sql(q, unix_seconds))?;
        let figures = report::figures(q.vms).len();
        let row = |r: &rusqlite::Row<'_>| {
            let mut values = Vec::with_capacity(figures);
            for f in 0..figures {
                let at = 4 + REPORT_STATS * f;
                values.push(FigureSample::from_columns(
                    r.get(at)?,
                    r.get(at + 1)?,
                    r.get(at + 2)?,
                    r.get(at + 3)?,
                    r.get(at + 4)?,
                ));
            }
            Ok(ReportSample {
                time: r.get(0)?,
                owner: r.get(1)?,
                uuid: r.get(2)?,
                ticks: r.get(3)?,
                bucket: q.level.is_some(),
                values,
            })
        };
        let params = report_params(q, format_time(q.since), format_time(q.until));
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter().map(SqlValue)), row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The blocking half of [`Store::report`](crate::store::Store::report): each row is folded
    /// as it is read, its distributions borrowed from SQLite rather than copied. Minute reports
    /// read whole hours from hour rows where those stand for their minutes ([`minute_report`]).
    pub fn report_blocking(&self, q: &ReportQuery) -> Result<Vec<OwnerReport>, StoreError> {
        if q.level == Some(Level::Minute) {
            return self.minute_report_blocking(q);
        }
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(&report_sql(q, unix_seconds))?;
        let params = report_params(q, format_time(q.since), format_time(q.until));
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(SqlValue)))?;
        let mut fold = ReportFold::new(q.vms);
        while let Some(r) = rows.next()? {
            fold_row(&mut fold, r, q.level.is_some())?;
        }
        Ok(fold.finish())
    }

    /// [`SqliteStore::report_blocking`] at the minute level: the hour rows of the window's
    /// whole hours that stand for their minutes, then the minute rows of the rest.
    fn minute_report_blocking(&self, q: &ReportQuery) -> Result<Vec<OwnerReport>, StoreError> {
        let state = self.lock()?;
        let conn = &state.conn;
        let mut stmt = conn.prepare(&minute_report::oldest_minute_sql(unix_seconds))?;
        let params = minute_report::host_params(q);
        let hosts = stmt
            .query_map(
                rusqlite::params_from_iter(params.iter().map(SqlValue)),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<Result<Vec<(String, Option<i64>)>, _>>()?;
        let mut cover = HourCover::new(q, hosts);
        let mut fold = ReportFold::new(q.vms);
        let figures = fold.figure_count();
        let host_figures = report::figures(false).len();
        if let Some(hours) = minute_report::whole_hours(q, false) {
            let mut stmt = conn.prepare(&report_sql(&hours, unix_seconds))?;
            let params = report_params(&hours, format_time(hours.since), format_time(hours.until));
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(SqlValue)))?;
            // The hosts' hour rows decide which hours are taken, also for a report of VMs.
            while let Some(r) = rows.next()? {
                let kept = kept_distributions(host_figures, r);
                if cover.take_host_hour(&r.get::<_, String>(1)?, r.get(0)?, kept) && !q.vms {
                    fold_row(&mut fold, r, true)?;
                }
            }
        }
        if let Some(hours) = minute_report::whole_hours(q, true).filter(|_| q.vms) {
            let mut stmt = conn.prepare(&minute_report::vm_hours_sql(unix_seconds))?;
            let params = report_params(&hours, format_time(hours.since), format_time(hours.until));
            let host_column = minute_report::vm_hours_host_column(figures);
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(SqlValue)))?;
            while let Some(r) = rows.next()? {
                let (host, uuid): (String, String) = (r.get(host_column)?, r.get(2)?);
                let kept = kept_distributions(figures, r);
                if cover.take_vm_hour(&host, &uuid, r.get(0)?, kept) {
                    fold_row(&mut fold, r, true)?;
                }
            }
        }
        let mut read_minutes = |sql: &str, params: &[Value]| -> Result<(), StoreError> {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(SqlValue)))?;
            while let Some(r) = rows.next()? {
                fold_row(&mut fold, r, true)?;
            }
            Ok(())
        };
        for (host, since, until) in cover.minute_spans() {
            let minutes = ReportQuery {
                host_ip: Some(host),
                since,
                until,
                ..q.clone()
            };
            let params = report_params(&minutes, format_time(since), format_time(until));
            read_minutes(&report_sql(&minutes, unix_seconds), &params)?;
        }
        let vm_minutes = minute_report::vm_minutes_sql(unix_seconds);
        for (uuid, since, until) in cover.vm_minute_spans() {
            let params = [
                uuid.into(),
                format_time(since).into(),
                format_time(until).into(),
            ];
            read_minutes(&vm_minutes, &params)?;
        }
        Ok(fold.finish())
    }
}

/// Whether a rollup row of [`report_sql`]'s columns kept its distributions
/// ([`minute_report::kept_distributions`]).
fn kept_distributions(figures: usize, r: &rusqlite::Row<'_>) -> bool {
    minute_report::kept_distributions(
        figures,
        |at| r.get_ref(at).is_ok_and(|v| v != ValueRef::Null),
        |at| matches!(r.get_ref(at), Ok(ValueRef::Blob(_))),
    )
}

/// `column` as whole seconds since the epoch.
fn unix_seconds(column: &str) -> String {
    format!("CAST(strftime('%s', {column}) AS INTEGER)")
}

/// Folds one row of [`report_sql`]'s columns, its distributions borrowed.
fn fold_row(fold: &mut ReportFold, r: &rusqlite::Row<'_>, bucket: bool) -> rusqlite::Result<()> {
    let (owner, uuid): (String, Option<String>) = (r.get(1)?, r.get(2)?);
    fold.row(&owner, uuid.as_deref(), r.get(3)?, bucket);
    for f in 0..fold.figure_count() {
        let at = 4 + REPORT_STATS * f;
        let (Some(mean), Some(max)) = (r.get(at)?, r.get(at + 1)?) else {
            continue;
        };
        fold.figure(
            f,
            FigureRef {
                mean,
                max,
                n: r.get(at + 2)?,
                secs: r.get(at + 3)?,
                // Anything but bytes is no distribution: the bucket reads as approximate.
                sketch: match r.get_ref(at + 4)? {
                    ValueRef::Blob(bytes) => Some(bytes),
                    _ => None,
                },
            },
        );
    }
    Ok(())
}
