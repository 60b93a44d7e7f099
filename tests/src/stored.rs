//! What a live test reads back from the monitor's SQLite database: rows of one VM (or of any
//! one-parameter query), Σ rate × Δt over its sampled T4 rows, the tick after an instant, and
//! arithmetic on stored times (RFC 3339 text, UTC).

use std::path::Path;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};

/// The rows of `sql`, whose one parameter `?1` is `param` (mostly a VM's UUID), each column
/// read as a `T` (NULL as None).
pub fn query<T: FromSql>(db: &Path, sql: &str, param: &str) -> Vec<Vec<Option<T>>> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn.prepare(sql).expect("sql");
    let columns = stmt.column_count();
    stmt.query_map([param], |r| (0..columns).map(|i| r.get(i)).collect())
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// A stored value of any type as text (numbers in Rust's formatting), for rows that mix
/// names, times and figures: `query::<Cell>`. It reads as the `&str` it holds. (No table the
/// tests read has a blob; one would fail the read.)
#[derive(Clone, PartialEq, Eq)]
pub struct Cell(pub String);

impl FromSql for Cell {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Integer(v) => Ok(Cell(v.to_string())),
            ValueRef::Real(v) => Ok(Cell(v.to_string())),
            ValueRef::Text(t) => Ok(Cell(String::from_utf8_lossy(t).into_owned())),
            ValueRef::Null | ValueRef::Blob(_) => Err(FromSqlError::InvalidType),
        }
    }
}

impl std::ops::Deref for Cell {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A cell as a number; NaN when it is NULL or not a number.
pub fn num(cell: &Option<Cell>) -> f64 {
    cell.as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Σ rate × Δt over a VM's sampled rows: what the figures account for over the run.
pub fn integral(db: &Path, rate_column: &str, uuid: &str) -> f64 {
    let sql = format!(
        "SELECT interval_s, {rate_column} FROM vm_usage \
         WHERE uuid = ?1 AND missing IS NULL AND interval_s IS NOT NULL"
    );
    query::<f64>(db, &sql, uuid)
        .iter()
        // A row without the rate (a device libvirt did not list in the previous sample) adds
        // nothing; the totals checked against the workload show that nothing went missing.
        .map(|r| r[0].unwrap_or(0.0) * r[1].unwrap_or(0.0))
        .sum()
}

/// The stored rows stamped after `from` up to `to` (stored times).
#[derive(Clone, Debug)]
pub struct Span {
    pub from: String,
    pub to: String,
}

/// Σ of each expression over the sampled T4 rows of `uuid` in the `span` (`tables` names
/// `vm_usage u`, maybe LEFT JOINed to a per-device table); a rate times `u.interval_s` gives
/// what the stored figures account for over the span. Panics when a sampled row lacks an
/// expression's value (a missing figure must not read as 0), or when the span has fewer than
/// `min_rows` rows.
pub fn window_sums(
    conn: &rusqlite::Connection,
    tables: &str,
    exprs: &[String],
    uuid: &str,
    span: &Span,
    min_rows: i64,
) -> Vec<f64> {
    let columns: String = exprs
        .iter()
        .map(|e| format!(", COUNT({e}), SUM({e})"))
        .collect();
    let sql = format!(
        "SELECT COUNT(*){columns} FROM {tables} WHERE u.uuid = ?1 AND u.time > ?2 \
         AND u.time <= ?3 AND u.missing IS NULL AND u.interval_s IS NOT NULL"
    );
    conn.query_row(&sql, [uuid, &span.from, &span.to], |r| {
        let rows: i64 = r.get(0)?;
        assert!(rows >= min_rows, "{rows} sampled rows in the window: {sql}");
        exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let present: i64 = r.get(1 + 2 * i)?;
                assert_eq!(present, rows, "{e} is missing from sampled rows");
                r.get(2 + 2 * i)
            })
            .collect()
    })
    .expect("window sums")
}

/// Waits until the monitor has stored a row of `uuid` stamped after now (so sampled after
/// the call) and returns that row's time.
pub fn tick_after(db: &Path, uuid: &str) -> String {
    let now = setmov::store::format_time(time::OffsetDateTime::now_utc());
    let mut found = None;
    crate::wait_until("a row stamped after now", || {
        let conn = rusqlite::Connection::open(db).expect("db");
        found = conn
            .query_row(
                "SELECT MIN(time) FROM vm_usage WHERE uuid = ?1 AND time > ?2",
                [uuid, now.as_str()],
                |r| r.get(0),
            )
            // Until the monitor has made its tables, there is no row to find.
            .unwrap_or(None);
        found.is_some()
    });
    found.expect("a row")
}

/// Now, in stored-time syntax.
pub fn now() -> String {
    setmov::store::format_time(time::OffsetDateTime::now_utc())
}

/// A stored time (RFC 3339), parsed; panics when it is not one.
fn parse(t: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t}: {e}"))
}

/// A stored time (RFC 3339) in Unix seconds.
pub fn unix_of(t: &str) -> f64 {
    parse(t).unix_timestamp_nanos() as f64 / 1e9
}

/// `t` (stored-time syntax) moved by `secs`.
pub fn shifted(t: &str, secs: f64) -> String {
    setmov::store::format_time(parse(t) + time::Duration::seconds_f64(secs))
}

/// Seconds from stored time `a` to stored time `b`.
pub fn seconds_between(a: &str, b: &str) -> f64 {
    (parse(b) - parse(a)).as_seconds_f64()
}
