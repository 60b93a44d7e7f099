//! The write of a tick: its rows in one transaction, and what a refusal is.

use std::collections::HashMap;
use std::fmt::Write as _;

use rusqlite::{Connection, ErrorCode, params};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::rows::{HostRow, Rows, TickRows, Value, VmRow};

impl SqliteStore {
    /// Writes one tick's rows in one transaction.
    pub(super) fn write_rows_blocking(&self, rows: &TickRows) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let state = &mut *guard;
        // What libvirt could not tell this tick (it was unreachable) keeps its last value.
        let last = state.written_host.clone();
        let host = HostRow {
            vmc: rows.host.vmc.or(last.as_ref().and_then(|h| h.vmc)),
            cpus: rows.host.cpus.or(last.as_ref().and_then(|h| h.cpus)),
            memory_bytes: rows
                .host
                .memory_bytes
                .or(last.as_ref().and_then(|h| h.memory_bytes)),
            ..rows.host.clone()
        };
        // T1 changes rarely; writing it only when it does saves a page write per tick.
        let host_changed = last.as_ref() != Some(&host);
        let conn = &state.conn;
        // BEGIN and COMMIT as cached statements: `Connection::transaction` parses their text
        // again on every tick.
        conn.prepare_cached("BEGIN")?.execute([])?;
        let written = write_in_transaction(conn, rows, &host, host_changed, &state.written_vms)
            .and_then(|t3_written| {
                conn.prepare_cached("COMMIT")?.execute([])?;
                Ok(t3_written)
            });
        let t3_written = match written {
            Ok(t3_written) => t3_written,
            Err(e) => {
                // A failed statement or COMMIT (busy) leaves the transaction open: end it,
                // unless SQLite already rolled it back.
                if !conn.is_autocommit()
                    && let Err(rollback) = conn.execute_batch("ROLLBACK")
                {
                    tracing::debug!("rollback after a failed tick write: {rollback}");
                }
                return Err(e);
            }
        };
        // Only a committed tick changes what T1 and T3 hold.
        for vm in t3_written {
            state.written_vms.insert(vm.uuid.clone(), vm);
        }
        if host_changed {
            state.written_host = Some(host);
        }
        Ok(())
    }

    /// Forgets which T1 and T3 rows were written, so that the next write writes them again
    /// (someone may have deleted them).
    pub(super) fn forget_written(&self) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        state.written_host = None;
        state.written_vms.clear();
        Ok(())
    }
}

/// The statements of one tick's write, inside the transaction the caller opened; returns the
/// T3 rows written.
fn write_in_transaction(
    conn: &Connection,
    rows: &TickRows,
    host: &HostRow,
    host_changed: bool,
    written_vms: &HashMap<String, VmRow>,
) -> Result<Vec<VmRow>, StoreError> {
    if host_changed {
        conn.prepare_cached(
            "INSERT INTO hosts (host_ip, host_name, vmc, mac, cpus, memory_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (host_ip) DO UPDATE SET host_name = excluded.host_name,
                 vmc = excluded.vmc, mac = excluded.mac, cpus = excluded.cpus,
                 memory_bytes = excluded.memory_bytes",
        )?
        .execute(params![
            host.host_ip,
            host.host_name,
            host.vmc.unwrap_or(0),
            host.mac,
            host.cpus,
            host.memory_bytes
        ])?;
    }
    // T3 changes rarely too (name, state, host); the last connect time of the running VMs
    // whose row is unchanged is set below.
    let mut t3_written = Vec::new();
    for vm in &rows.vms {
        if written_vms.get(&vm.uuid) == Some(vm) {
            continue;
        }
        // The state may be unknown this tick (libvirt unreachable): the stored one stays.
        conn.prepare_cached(
            "INSERT INTO vms (uuid, host_ip, name, state, lct) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (uuid) DO UPDATE SET host_ip = excluded.host_ip,
                 name = excluded.name,
                 state = CASE WHEN excluded.state = 'unknown' THEN vms.state
                              ELSE excluded.state END,
                 lct = COALESCE(excluded.lct, vms.lct)",
        )?
        .execute(params![
            vm.uuid,
            vm.host_ip,
            vm.name,
            vm.state,
            rows.running.contains(&vm.uuid).then_some(&rows.time)
        ])?;
        t3_written.push(vm.clone());
    }
    // One cached statement per running VM: cheaper than one statement over a JSON list of
    // them (serialising the list, json_each and the IN set cost more than the lookups).
    let mut lct = conn.prepare_cached("UPDATE vms SET lct = ?1 WHERE uuid = ?2")?;
    for uuid in &rows.running {
        if !t3_written.iter().any(|vm| &vm.uuid == uuid) {
            lct.execute(params![rows.time, uuid])?;
        }
    }
    for table in &rows.tables {
        write_rows(conn, table, Conflict::Keep)?;
    }
    Ok(t3_written)
}

/// Whether SQLite refused a write for what it holds (a constraint, a value too big or of the
/// wrong type): writing the same rows again would fail again. Anything else (busy, locked,
/// full, an I/O error) may pass.
pub(super) fn is_refusal(e: &StoreError) -> bool {
    match e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
            failure.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
        ),
        StoreError::Sql(rusqlite::Error::ToSqlConversionFailure(_)) => true,
        _ => false,
    }
}

/// What happens to a row whose key is already there.
#[derive(Clone, Copy)]
pub(super) enum Conflict {
    /// It is left as it is (a replayed tick).
    Keep,
    /// It is replaced (a rollup computed again).
    Replace,
}

/// Writes every row of `table`.
pub(super) fn write_rows(
    tx: &Connection,
    table: &Rows,
    conflict: Conflict,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(&insert_sql(table, conflict))?;
    for row in &table.rows {
        stmt.execute(rusqlite::params_from_iter(row.iter().map(SqlValue)))?;
    }
    Ok(())
}

/// The statement that writes a row of `table`, built into one string: it is the key of the
/// statement cache, built for every table on every tick (one allocation per column before).
fn insert_sql(table: &Rows, conflict: Conflict) -> String {
    let (verb, tail) = match conflict {
        Conflict::Keep => ("INSERT", " ON CONFLICT DO NOTHING"),
        Conflict::Replace => ("REPLACE", ""),
    };
    let names: usize = table.columns.iter().map(|c| c.len() + 6).sum();
    let mut sql = String::with_capacity(verb.len() + table.table.len() + names + tail.len() + 24);
    sql.push_str(verb);
    sql.push_str(" INTO ");
    sql.push_str(&table.table);
    sql.push_str(" (");
    for (i, column) in table.columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(column);
    }
    sql.push_str(") VALUES (");
    for i in 1..=table.columns.len() {
        if i > 1 {
            sql.push_str(", ");
        }
        // Writing into a String cannot fail.
        let _ = write!(sql, "?{i}");
    }
    sql.push(')');
    sql.push_str(tail);
    sql
}

/// A [`Value`] as SQLite takes it.
pub(super) struct SqlValue<'a>(pub(super) &'a Value);

impl rusqlite::ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::tick;
    use super::*;
    use crate::store::{Store, WriteOutcome};

    fn count(db: &std::path::Path, sql: &str) -> i64 {
        let conn = Connection::open(db).expect("open");
        conn.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    #[test]
    fn the_insert_statement_names_every_column_once() {
        let table = Rows {
            table: "vm_nic_usage".into(),
            columns: vec!["time".into(), "uuid".into(), "iface".into()],
            rows: Vec::new(),
        };
        assert_eq!(
            insert_sql(&table, Conflict::Keep),
            "INSERT INTO vm_nic_usage (time, uuid, iface) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            insert_sql(&table, Conflict::Replace),
            "REPLACE INTO vm_nic_usage (time, uuid, iface) VALUES (?1, ?2, ?3)"
        );
    }

    #[test]
    fn host_rows_deleted_behind_its_back_are_written_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        let store = SqliteStore::open(&db).expect("open");
        store.write_tick_blocking(&tick(1, 1_000)).expect("write");
        // Another process, foreign keys off, deletes the host the store remembers writing.
        let other = Connection::open(&db).expect("open");
        other
            .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM hosts;")
            .expect("delete");
        for seq in 2..=4 {
            let outcome = store
                .write_tick_blocking(&tick(seq, i64::try_from(seq).expect("seq") * 1_000))
                .expect("write");
            assert_eq!(outcome, WriteOutcome::Stored);
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM hosts"), 1);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM host_usage"), 4);
    }

    #[test]
    fn a_tick_the_database_refuses_is_quarantined_and_the_next_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        let store = SqliteStore::open(&db).expect("open");
        let other = Connection::open(&db).expect("open");
        other
            .execute_batch(
                "CREATE TRIGGER refuse_second_two BEFORE INSERT ON host_usage
                 WHEN NEW.time LIKE '%:02.%' BEGIN SELECT RAISE(ABORT, 'no'); END;",
            )
            .expect("trigger");
        let outcomes: Vec<WriteOutcome> = (1..=3)
            .map(|seq| {
                store
                    .write_tick_blocking(&tick(seq, i64::try_from(seq).expect("seq") * 1_000))
                    .expect("write")
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                WriteOutcome::Stored,
                WriteOutcome::Quarantined,
                WriteOutcome::Stored
            ]
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM host_usage"), 2);
        let quarantine = dir.path().join("s.db.quarantine");
        let files: Vec<_> = std::fs::read_dir(&quarantine)
            .expect("quarantine")
            .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
            .collect();
        assert_eq!(files.len(), 1);
        assert!(files[0].contains("no"), "{}", files[0]);
    }

    #[test]
    fn a_locked_database_is_an_outage_not_a_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        let store = SqliteStore::open(&db).expect("open");
        store
            .lock()
            .expect("lock")
            .conn
            .busy_timeout(std::time::Duration::from_millis(50))
            .expect("timeout");
        let other = Connection::open(&db).expect("open");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let e = store
            .write_tick_blocking(&tick(1, 1_000))
            .expect_err("locked");
        assert!(!is_refusal(&e), "{e}");
        other.execute_batch("COMMIT").expect("unlock");
        assert_eq!(
            store.write_tick_blocking(&tick(1, 1_000)).expect("write"),
            WriteOutcome::Stored
        );
    }

    #[tokio::test]
    async fn ticks_kept_at_the_end_of_a_run_are_written_first_by_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        let mut store = SqliteStore::open(&db).expect("open");
        let kept: Vec<Arc<_>> = (1..=3)
            .map(|seq| Arc::new(tick(seq, seq as i64 * 1_000)))
            .collect();
        let place = store.spill(&kept).expect("spill");
        assert_eq!(place, dir.path().join("s.db.kept"));
        drop(store);
        let mut store = SqliteStore::open(&db).expect("reopen");
        store.write_tick(&tick(4, 4_000)).await.expect("write");
        let times: Vec<String> = {
            let conn = Connection::open(&db).expect("open");
            let mut stmt = conn
                .prepare("SELECT time FROM host_usage ORDER BY time")
                .expect("prepare");
            stmt.query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        assert_eq!(times.len(), 4, "{times:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("s.db.kept"))
                .expect("kept")
                .count(),
            0
        );
    }
}
