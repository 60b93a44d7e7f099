//! What `show`, `report`, `plot`, `recommend` and `migrate-plan` read back from the server.
//! Every value goes through [`decode`], so a column type the reader did not expect is an error
//! naming the column, never a panic.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::decode::{DecodeError, nullable, value};
use super::{decode_error, iso, mysql_error, mysql_time, to_mysql, unix_seconds};
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
use crate::store::{HostUsageQuery, HostUsageRow, StoreError, VmUsageQuery, VmUsageRow};

/// Each row read by `read_row`, or the first value that could not be read.
fn decode_all<T>(
    target: &str,
    rows: Vec<Row>,
    read_row: impl Fn(&Row) -> Result<T, DecodeError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(read_row)
        .collect::<Result<_, _>>()
        .map_err(decode_error(target))
}

pub(super) async fn recent_host_usage(
    conn: &mut Conn,
    target: &str,
    query: &HostUsageQuery,
) -> Result<Vec<HostUsageRow>, StoreError> {
    let sql = format!(
        "SELECT host_ip, {}, interval_s, late_ms, cpu_pct, mem_used_pct,
                disk_read_bytes_s, disk_write_bytes_s, net_rx_bps, net_tx_bps
         FROM host_usage WHERE (? IS NULL OR host_ip = ?) AND (? IS NULL OR time >= ?)
         ORDER BY time DESC LIMIT ?",
        iso("time")
    );
    let since = query.since.map(mysql_time);
    let rows: Vec<Row> = conn
        .exec(
            sql,
            (&query.host_ip, &query.host_ip, &since, &since, query.limit),
        )
        .await
        .map_err(|e| mysql_error(target, &e))?;
    let mut out = decode_all(target, rows, |r| {
        Ok(HostUsageRow {
            host_ip: value(r, 0)?,
            time: value(r, 1)?,
            interval_s: value(r, 2)?,
            late_ms: value(r, 3)?,
            cpu_pct: nullable(r, 4)?,
            mem_used_pct: nullable(r, 5)?,
            disk_read_bytes_s: nullable(r, 6)?,
            disk_write_bytes_s: nullable(r, 7)?,
            net_rx_bps: nullable(r, 8)?,
            net_tx_bps: nullable(r, 9)?,
        })
    })?;
    out.reverse();
    Ok(out)
}

pub(super) async fn recent_vm_usage(
    conn: &mut Conn,
    target: &str,
    query: &VmUsageQuery,
) -> Result<Vec<VmUsageRow>, StoreError> {
    let sql = format!(
        "SELECT u.uuid, v.name, v.host_ip, {}, u.state, u.missing, u.vcpus, u.cpu_pct,
                u.cpu_vcpu_pct, u.steal_pct, u.mem_alloc_bytes, u.mem_used_pct,
                u.mem_source, u.rss_bytes, u.disk_read_bytes_s, u.disk_write_bytes_s,
                u.net_rx_bps, u.net_tx_bps
         FROM vm_usage u JOIN vms v ON v.uuid = u.uuid
         WHERE (? IS NULL OR v.host_ip = ?) AND (? IS NULL OR v.name = ? OR v.uuid = ?)
           AND (? IS NULL OR u.time >= ?)
         ORDER BY u.time DESC, v.name DESC LIMIT ?",
        iso("u.time")
    );
    let since = query.since.map(mysql_time);
    let rows: Vec<Row> = conn
        .exec(
            sql,
            (
                &query.host_ip,
                &query.host_ip,
                &query.vm,
                &query.vm,
                &query.vm,
                &since,
                &since,
                query.limit,
            ),
        )
        .await
        .map_err(|e| mysql_error(target, &e))?;
    let mut out = decode_all(target, rows, |r| {
        Ok(VmUsageRow {
            uuid: value(r, 0)?,
            name: value(r, 1)?,
            host_ip: value(r, 2)?,
            time: value(r, 3)?,
            state: value(r, 4)?,
            missing: nullable(r, 5)?,
            vcpus: nullable(r, 6)?,
            cpu_pct: nullable(r, 7)?,
            cpu_vcpu_pct: nullable(r, 8)?,
            steal_pct: nullable(r, 9)?,
            mem_alloc_bytes: nullable(r, 10)?,
            mem_used_pct: nullable(r, 11)?,
            mem_source: nullable(r, 12)?,
            rss_bytes: nullable(r, 13)?,
            disk_read_bytes_s: nullable(r, 14)?,
            disk_write_bytes_s: nullable(r, 15)?,
            net_rx_bps: nullable(r, 16)?,
            net_tx_bps: nullable(r, 17)?,
        })
    })?;
    out.reverse();
    Ok(out)
}

pub(super) async fn rollups(
    conn: &mut Conn,
    target: &str,
    q: &RollupQuery,
) -> Result<Vec<RollupRow>, StoreError> {
    let sql = rollup_query_sql(q.vms, q.level, iso);
    let since = q.since.map(mysql_time);
    let params: Vec<mysql_async::Value> =
        rollup_query_params(q, since).iter().map(to_mysql).collect();
    let rows: Vec<Row> = conn
        .exec(sql, params)
        .await
        .map_err(|e| mysql_error(target, &e))?;
    let figures = SHOWN_STATS.len()
        * if q.vms {
            VM_FIGURES.len()
        } else {
            HOST_FIGURES.len()
        };
    let mut out = decode_all(target, rows, |r| {
        let values = (4..4 + figures)
            .map(|i| nullable(r, i))
            .collect::<Result<_, _>>()?;
        Ok(RollupRow::new(
            q.vms,
            value(r, 0)?,
            nullable(r, 1)?,
            value(r, 2)?,
            value(r, 3)?,
            values,
        ))
    })?;
    out.reverse();
    Ok(out)
}

pub(super) async fn hosts(conn: &mut Conn, target: &str) -> Result<Vec<HostRow>, StoreError> {
    let rows: Vec<Row> = conn
        .query(
            "SELECT host_ip, host_name, mac, vmc, cpus, memory_bytes FROM hosts
             ORDER BY host_ip",
        )
        .await
        .map_err(|e| mysql_error(target, &e))?;
    decode_all(target, rows, |r| {
        Ok(HostRow {
            host_ip: value(r, 0)?,
            host_name: value(r, 1)?,
            mac: nullable(r, 2)?,
            vmc: nullable(r, 3)?,
            cpus: nullable(r, 4)?,
            memory_bytes: nullable(r, 5)?,
        })
    })
}

pub(super) async fn report_samples(
    conn: &mut Conn,
    target: &str,
    q: &ReportQuery,
) -> Result<Vec<ReportSample>, StoreError> {
    let (since, until) = (mysql_time(q.since), mysql_time(q.until));
    let params: Vec<mysql_async::Value> = report_params(q, since, until)
        .iter()
        .map(to_mysql)
        .collect();
    let sql = report_sql(q, unix_seconds);
    let rows: Vec<Row> = conn
        .exec(sql, params)
        .await
        .map_err(|e| mysql_error(target, &e))?;
    let figures = report::figures(q.vms).len();
    decode_all(target, rows, |r| {
        let values = (0..figures)
            .map(|f| {
                let at = 4 + REPORT_STATS * f;
                Ok(FigureSample::from_columns(
                    nullable::<f64>(r, at)?,
                    nullable::<f64>(r, at + 1)?,
                    nullable::<u64>(r, at + 2)?,
                    nullable::<f64>(r, at + 3)?,
                    nullable::<Vec<u8>>(r, at + 4)?,
                ))
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(ReportSample {
            time: value(r, 0)?,
            owner: value(r, 1)?,
            uuid: nullable(r, 2)?,
            ticks: value(r, 3)?,
            bucket: q.level.is_some(),
            values,
        })
    })
}

/// The report over a window, each row folded as it arrives. Minute reports read whole hours
/// from hour rows where those stand for their minutes ([`minute_report`]).
pub(super) async fn report(
    conn: &mut Conn,
    target: &str,
    q: &ReportQuery,
) -> Result<Vec<OwnerReport>, StoreError> {
    let mut fold = ReportFold::new(q.vms);
    if q.level == Some(Level::Minute) {
        minute_report(conn, target, q, &mut fold).await?;
    } else {
        let params = report_params(q, mysql_time(q.since), mysql_time(q.until));
        let sql = report_sql(q, unix_seconds);
        fold_rows(conn, target, sql, params, |r| {
            fold_row(&mut fold, r, q.level.is_some())
        })
        .await?;
    }
    Ok(fold.finish())
}

/// [`report`] at the minute level: the hour rows of the window's whole hours that stand for
/// their minutes, then the minute rows of the rest.
async fn minute_report(
    conn: &mut Conn,
    target: &str,
    q: &ReportQuery,
    fold: &mut ReportFold,
) -> Result<(), StoreError> {
    let params: Vec<mysql_async::Value> =
        minute_report::host_params(q).iter().map(to_mysql).collect();
    let hosts: Vec<Row> = conn
        .exec(minute_report::oldest_minute_sql(unix_seconds), params)
        .await
        .map_err(|e| mysql_error(target, &e))?;
    let hosts = decode_all(target, hosts, |r| Ok((value(r, 0)?, nullable(r, 1)?)))?;
    let mut cover = HourCover::new(q, hosts);
    let figures = fold.figure_count();
    let host_figures = report::figures(false).len();
    // The hosts' hour rows decide which hours are taken, also for a report of VMs.
    if let Some(hours) = minute_report::whole_hours(q, false) {
        let params = report_params(&hours, mysql_time(hours.since), mysql_time(hours.until));
        fold_rows(
            conn,
            target,
            report_sql(&hours, unix_seconds),
            params,
            |r| {
                let kept = kept_distributions(host_figures, r);
                let host: String = value(r, 1)?;
                if cover.take_host_hour(&host, value(r, 0)?, kept) && !q.vms {
                    fold_row(fold, r, true)?;
                }
                Ok(())
            },
        )
        .await?;
    }
    if let Some(hours) = minute_report::whole_hours(q, true).filter(|_| q.vms) {
        let params = report_params(&hours, mysql_time(hours.since), mysql_time(hours.until));
        let host_column = minute_report::vm_hours_host_column(figures);
        let sql = minute_report::vm_hours_sql(unix_seconds);
        fold_rows(conn, target, sql, params, |r| {
            let (host, uuid): (String, String) = (value(r, host_column)?, value(r, 2)?);
            let kept = kept_distributions(figures, r);
            if cover.take_vm_hour(&host, &uuid, value(r, 0)?, kept) {
                fold_row(fold, r, true)?;
            }
            Ok(())
        })
        .await?;
    }
    for (host, since, until) in cover.minute_spans() {
        let minutes = ReportQuery {
            host_ip: Some(host),
            since,
            until,
            ..q.clone()
        };
        let params = report_params(&minutes, mysql_time(since), mysql_time(until));
        let sql = report_sql(&minutes, unix_seconds);
        fold_rows(conn, target, sql, params, |r| fold_row(fold, r, true)).await?;
    }
    let vm_minutes = minute_report::vm_minutes_sql(unix_seconds);
    for (uuid, since, until) in cover.vm_minute_spans() {
        let params = vec![
            uuid.into(),
            mysql_time(since).into(),
            mysql_time(until).into(),
        ];
        fold_rows(conn, target, vm_minutes.clone(), params, |r| {
            fold_row(fold, r, true)
        })
        .await?;
    }
    Ok(())
}

/// Whether a rollup row of [`report_sql`]'s columns kept its distributions
/// ([`minute_report::kept_distributions`]).
fn kept_distributions(figures: usize, r: &Row) -> bool {
    minute_report::kept_distributions(
        figures,
        |at| !matches!(r.as_ref(at), None | Some(mysql_async::Value::NULL)),
        |at| matches!(r.as_ref(at), Some(mysql_async::Value::Bytes(_))),
    )
}

/// Runs `sql` and hands each row to `fold` as it arrives, rather than holding them all.
async fn fold_rows(
    conn: &mut Conn,
    target: &str,
    sql: String,
    params: Vec<Value>,
    mut fold: impl FnMut(&Row) -> Result<(), DecodeError>,
) -> Result<(), StoreError> {
    let params: Vec<mysql_async::Value> = params.iter().map(to_mysql).collect();
    let mut rows = conn
        .exec_iter(sql, params)
        .await
        .map_err(|e| mysql_error(target, &e))?;
    while let Some(r) = rows.next().await.map_err(|e| mysql_error(target, &e))? {
        if let Err(e) = fold(&r) {
            // Leave the connection ready for the next query; the decode error is the news.
            let _ = rows.drop_result().await;
            return Err(decode_error(target)(e));
        }
    }
    Ok(())
}

/// Folds one row of [`report_sql`]'s columns.
fn fold_row(fold: &mut ReportFold, r: &Row, bucket: bool) -> Result<(), DecodeError> {
    let owner: String = value(r, 1)?;
    let uuid: Option<String> = nullable(r, 2)?;
    fold.row(&owner, uuid.as_deref(), value(r, 3)?, bucket);
    for f in 0..fold.figure_count() {
        let at = 4 + REPORT_STATS * f;
        let (Some(mean), Some(max)) = (nullable::<f64>(r, at)?, nullable::<f64>(r, at + 1)?) else {
            continue;
        };
        // Anything but bytes is no distribution: the bucket reads as approximate.
        let sketch = match r.as_ref(at + 4) {
            Some(mysql_async::Value::Bytes(bytes)) => Some(bytes.as_slice()),
            _ => None,
        };
        fold.figure(
            f,
            FigureRef {
                mean,
                max,
                n: nullable::<u64>(r, at + 2)?,
                secs: nullable::<f64>(r, at + 3)?,
                sketch,
            },
        );
    }
    Ok(())
}
