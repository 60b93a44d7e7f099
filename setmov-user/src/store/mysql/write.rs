//! The write of a tick: its rows in one transaction, and what a refusal is.

use std::collections::HashSet;

use mysql_async::TxOpts;
use mysql_async::prelude::Queryable;

use super::{MysqlStore, ROWS_PER_STATEMENT, WRITE_TIMEOUT, decode, to_mysql};
use crate::store::WriteOutcome;
use crate::store::rows::{Rows, TickRows, VmRow};

impl MysqlStore {
    /// Writes one tick's rows, or says why not.
    async fn try_write(&mut self, rows: &TickRows) -> Result<(), WriteFailure> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.write_rows(rows)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if is_refusal(&e) => Err(WriteFailure::Refused(e.to_string())),
            Ok(Err(e)) => Err(WriteFailure::Outage(e.to_string())),
            Err(_) => Err(WriteFailure::Outage(format!(
                "a tick's write took longer than {}",
                humantime::format_duration(WRITE_TIMEOUT)
            ))),
        }
    }

    /// Writes one tick's rows. One the server refuses is written once more with its T1 and
    /// T3 rows (someone may have deleted them), then set aside in the quarantine. `Err` is an
    /// outage, with why.
    pub(super) async fn write_or_quarantine(
        &mut self,
        rows: &TickRows,
    ) -> Result<WriteOutcome, String> {
        let refusal = match self.try_write(rows).await {
            Ok(()) => return Ok(WriteOutcome::Stored),
            Err(WriteFailure::Outage(reason)) => return Err(reason),
            Err(WriteFailure::Refused(reason)) => reason,
        };
        self.written_host = None;
        self.written_vms.clear();
        match self.try_write(rows).await {
            Ok(()) => {
                tracing::info!(
                    "tick {}: wrote the host and VM rows again ({refusal})",
                    rows.seq
                );
                return Ok(WriteOutcome::Stored);
            }
            Err(WriteFailure::Outage(reason)) => return Err(reason),
            Err(WriteFailure::Refused(_)) => {}
        }
        let target = self.target.clone();
        match self.quarantine().and_then(|q| q.put_tick(rows, &refusal)) {
            Ok(file) => {
                tracing::error!(
                    "database {target} refused tick {} ({refusal}): set aside in {}",
                    rows.seq,
                    file.display()
                );
                Ok(WriteOutcome::Quarantined)
            }
            // Kept in the spool, to be set aside when the quarantine can take it.
            Err(e) => Err(format!("it refused a tick ({refusal}) and {e}")),
        }
    }

    async fn write_rows(&mut self, rows: &TickRows) -> Result<(), mysql_async::Error> {
        let mut conn = self.pool.get_conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let host_changed = self.written_host.as_ref() != Some(&rows.host);
        if host_changed {
            let h = &rows.host;
            // What this tick did not know (libvirt unreachable) keeps the stored value.
            tx.exec_drop(
                "INSERT INTO hosts (host_ip, host_name, vmc, mac, cpus, memory_bytes)
                 VALUES (?, ?, COALESCE(?, 0), ?, ?, ?)
                 ON DUPLICATE KEY UPDATE host_name = VALUES(host_name), mac = VALUES(mac),
                     vmc = COALESCE(?, vmc), cpus = COALESCE(?, cpus),
                     memory_bytes = COALESCE(?, memory_bytes)",
                (
                    &h.host_ip,
                    &h.host_name,
                    h.vmc,
                    &h.mac,
                    h.cpus,
                    h.memory_bytes,
                    h.vmc,
                    h.cpus,
                    h.memory_bytes,
                ),
            )
            .await?;
        }
        let changed_vms: Vec<&VmRow> = rows
            .vms
            .iter()
            .filter(|vm| self.written_vms.get(&vm.uuid) != Some(*vm))
            .collect();
        // A tick older than rows already stored for a VM (a spool replayed late, after another
        // host wrote the VM it had migrated to) leaves the VM's T3 row as the newer tick left
        // it, and stays out of the cache so that a newer tick of this host writes it again.
        let overtaken = vms_with_newer_rows(&mut tx, &changed_vms, &rows.time).await?;
        let changed_vms: Vec<&VmRow> = changed_vms
            .into_iter()
            .filter(|vm| !overtaken.contains(&vm.uuid))
            .collect();
        for chunk in changed_vms.chunks(ROWS_PER_STATEMENT) {
            let mut params = Vec::with_capacity(chunk.len() * 5);
            for vm in chunk {
                params.extend([
                    vm.uuid.as_str().into(),
                    vm.host_ip.as_str().into(),
                    vm.name.as_str().into(),
                    vm.state.as_str().into(),
                    if rows.running.contains(&vm.uuid) {
                        rows.time.as_str().into()
                    } else {
                        mysql_async::Value::NULL
                    },
                ]);
            }
            // A state libvirt could not tell (`unknown`) keeps the stored one; the last
            // connect time never moves back (a replayed tick is older than the stored one).
            let sql = format!(
                "INSERT INTO vms (uuid, host_ip, name, state, lct) VALUES {}
                 ON DUPLICATE KEY UPDATE host_ip = VALUES(host_ip), name = VALUES(name),
                     state = IF(VALUES(state) = 'unknown', state, VALUES(state)),
                     lct = GREATEST(COALESCE(lct, VALUES(lct)), COALESCE(VALUES(lct), lct))",
                placeholders(5, chunk.len())
            );
            tx.exec_drop(sql, params).await?;
        }
        for chunk in rows.running.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE vms SET lct = GREATEST(COALESCE(lct, ?), ?) WHERE uuid IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut params: Vec<mysql_async::Value> =
                vec![rows.time.as_str().into(), rows.time.as_str().into()];
            params.extend(chunk.iter().map(|uuid| uuid.as_str().into()));
            tx.exec_drop(sql, params).await?;
        }
        for table in &rows.tables {
            write_rows(&mut tx, table, Conflict::Keep).await?;
        }
        tx.commit().await?;
        if host_changed {
            self.written_host = Some(rows.host.clone());
        }
        for vm in changed_vms {
            self.written_vms.insert(vm.uuid.clone(), vm.clone());
        }
        Ok(())
    }
}

/// The UUIDs among `vms` that have T4 rows later than `time`: for them a tick at `time` is late.
async fn vms_with_newer_rows(
    tx: &mut mysql_async::Transaction<'_>,
    vms: &[&VmRow],
    time: &str,
) -> Result<HashSet<String>, mysql_async::Error> {
    let mut newer = HashSet::new();
    for chunk in vms.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT DISTINCT uuid FROM vm_usage WHERE time > ? AND uuid IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut params: Vec<mysql_async::Value> = vec![time.into()];
        params.extend(chunk.iter().map(|vm| vm.uuid.as_str().into()));
        let found: Vec<mysql_async::Row> = tx.exec(sql, params).await?;
        for row in &found {
            // A CHAR column always reads as text; were it not to, the write fails (and the tick
            // is spooled) rather than guess.
            let uuid = decode::value::<String>(row, 0)
                .map_err(|e| mysql_async::Error::Other(Box::new(e)))?;
            newer.insert(uuid);
        }
    }
    Ok(newer)
}

/// `(?, ?), (?, ?)` for `rows` rows of `columns` values.
pub(super) fn placeholders(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// What happens to a row whose key is already there.
#[derive(Clone, Copy)]
pub(super) enum Conflict {
    /// It is left as it is (a replayed tick).
    Keep,
    /// It is replaced (a rollup computed again).
    Replace,
}

pub(super) async fn write_rows(
    tx: &mut mysql_async::Transaction<'_>,
    table: &Rows,
    conflict: Conflict,
) -> Result<(), mysql_async::Error> {
    let Some(first) = table.columns.first() else {
        return Ok(());
    };
    for chunk in table.rows.chunks(ROWS_PER_STATEMENT) {
        let columns = table.columns.join(", ");
        let values = placeholders(table.columns.len(), chunk.len());
        let sql = match conflict {
            // The no-op update makes a row already there (a replayed tick) not an error.
            Conflict::Keep => format!(
                "INSERT INTO {} ({columns}) VALUES {values} ON DUPLICATE KEY UPDATE {first} = {first}",
                table.table
            ),
            Conflict::Replace => {
                format!("REPLACE INTO {} ({columns}) VALUES {values}", table.table)
            }
        };
        let params: Vec<mysql_async::Value> = chunk.iter().flatten().map(to_mysql).collect();
        tx.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// Why a tick's write failed.
enum WriteFailure {
    /// The server, or the way to it: the tick is kept and tried again.
    Outage(String),
    /// The server refused what the tick holds: writing it again would fail again.
    Refused(String),
}

/// Whether the server refused a write for what it holds: SQLSTATE class 22 (data exception: a
/// value too long or out of range) or 23 (integrity constraint violation).
fn is_refusal(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.state.starts_with("22") || s.state.starts_with("23"))
}
