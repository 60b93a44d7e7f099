//! The writer's upkeep on the server: per-minute and per-hour rollups of complete buckets,
//! and the purge of rows older than the retention allows.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Transaction, TxOpts};
use time::OffsetDateTime;

use super::decode::{nullable, value};
use super::write::{Conflict, write_rows};
use super::{MysqlStore, decode_error, mysql_error, mysql_time};
use crate::store::rollup::{
    HOST_FIGURES, Level, RawTick, Retention, VM_FIGURES, raw_host_sql, raw_vm_sql, rollup_rows,
};
use crate::store::{StoreError, purge_statements};

impl MysqlStore {
    pub(super) async fn maintain_now(
        &mut self,
        host_ip: &str,
        now: OffsetDateTime,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        let target = self.target.clone();
        let error = |e: mysql_async::Error| mysql_error(&target, &e);
        let mut conn = self.pool.get_conn().await.map_err(error)?;
        let upkeep = self.upkeep.entry(host_ip.to_owned()).or_default();
        for level in Level::ALL {
            let first = if upkeep.needs_first(level) {
                first_bucket(&mut conn, &target, host_ip, level).await?
            } else {
                None
            };
            let due = upkeep.due_buckets(level, now, || first);
            let Some(&last) = due.last() else {
                continue;
            };
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(error)?;
            for bucket in due {
                roll_up_bucket(&mut tx, &target, host_ip, level, bucket).await?;
            }
            tx.commit().await.map_err(error)?;
            upkeep.rolled_up(level, last);
        }
        if upkeep.purge_due(now) {
            for (sql, at) in purge_statements(now, retention) {
                conn.exec_drop(sql, (host_ip, mysql_time(at)))
                    .await
                    .map_err(error)?;
            }
        }
        Ok(())
    }
}

/// The first column of the one row `sql` gives, as seconds since the epoch; `None` for NULL.
async fn seconds_of_first_row(
    conn: &mut Conn,
    target: &str,
    sql: String,
    host_ip: &str,
) -> Result<Option<i64>, StoreError> {
    let row: Option<Row> = conn
        .exec_first(sql, (host_ip,))
        .await
        .map_err(|e| mysql_error(target, &e))?;
    match row {
        Some(row) => nullable(&row, 0).map_err(decode_error(target)),
        None => Ok(None),
    }
}

/// The bucket after the newest rollup of `host_ip` at `level`, or the one holding its oldest
/// raw row; `None` when it has no rows at all.
async fn first_bucket(
    conn: &mut Conn,
    target: &str,
    host_ip: &str,
    level: Level,
) -> Result<Option<OffsetDateTime>, StoreError> {
    let newest_rollup = format!(
        "SELECT {} FROM host_usage{} WHERE host_ip = ?",
        super::unix_seconds("MAX(time)"),
        level.suffix()
    );
    if let Some(last) = seconds_of_first_row(conn, target, newest_rollup, host_ip).await? {
        let span = i64::try_from(level.span().as_secs()).unwrap_or(60);
        let next = last.checked_add(span);
        return Ok(next.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()));
    }
    let oldest_tick = format!(
        "SELECT {} FROM host_usage WHERE host_ip = ?",
        super::unix_seconds("MIN(time)")
    );
    let first = seconds_of_first_row(conn, target, oldest_tick, host_ip).await?;
    Ok(first.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()))
}

/// Rolls up one bucket of a host and its VMs from their raw rows.
async fn roll_up_bucket(
    tx: &mut Transaction<'_>,
    target: &str,
    host_ip: &str,
    level: Level,
    bucket: OffsetDateTime,
) -> Result<(), StoreError> {
    let error = |e: mysql_async::Error| mysql_error(target, &e);
    let span = level.time_span();
    let (from, to) = (mysql_time(bucket), mysql_time(bucket + span));
    for (sql, table, owner, figures) in [
        (raw_host_sql(), "host_usage", "host_ip", HOST_FIGURES),
        (raw_vm_sql(), "vm_usage", "uuid", VM_FIGURES),
    ] {
        let rows: Vec<Row> = tx.exec(sql, (host_ip, &from, &to)).await.map_err(error)?;
        // Figures such as `vcpus` or `mem_alloc_bytes` are integer columns: read as numbers.
        let raw = rows
            .iter()
            .map(|r| {
                let values = (2..2 + figures.len())
                    .map(|i| nullable::<f64>(r, i))
                    .collect::<Result<_, _>>()?;
                Ok(RawTick {
                    owner: value::<String>(r, 0)?,
                    interval_s: nullable::<f64>(r, 1)?,
                    values,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(decode_error(target))?;
        let table = format!("{table}{}", level.suffix());
        let rows = rollup_rows(&table, owner, figures, &from, raw);
        write_rows(tx, &rows, Conflict::Replace)
            .await
            .map_err(error)?;
    }
    Ok(())
}
