//! Which migrations of `migrations/mysql` a database has and this build knows.

use mysql_async::prelude::Queryable;

use super::{StoreError, decode, decode_error, mysql_error};

pub(super) mod embedded {
    refinery::embed_migrations!("../migrations/mysql");
}

/// The highest migration this build has.
pub(super) fn known_version() -> u32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| u32::try_from(m.version()).unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// The highest migration applied, `None` when the database has no SETMOV schema. A version
/// this build does not know is an error.
pub(super) async fn schema_version(
    mut conn: mysql_async::Conn,
    target: &str,
) -> Result<Option<u32>, StoreError> {
    let mut first = async |sql: &str| -> Result<Option<u64>, StoreError> {
        let row: Option<mysql_async::Row> = conn
            .query_first(sql)
            .await
            .map_err(|e| mysql_error(target, &e))?;
        row.map_or(Ok(None), |row| {
            decode::nullable(&row, 0).map_err(decode_error(target))
        })
    };
    let has_history = first(
        "SELECT COUNT(*) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name = 'refinery_schema_history'",
    )
    .await?;
    if has_history.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let version = first("SELECT MAX(version) FROM refinery_schema_history")
        .await?
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let known = known_version();
    if let Some(found) = version.filter(|v| *v > known) {
        return Err(StoreError::NewerSchema {
            target: target.to_owned(),
            found,
            known,
        });
    }
    Ok(version)
}
