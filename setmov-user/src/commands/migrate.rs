//! `setmov migrate`: create or update the schema of the database.

use crate::cli::DatabaseArgs;
use crate::store::location::{DatabaseLocation, redact};
use crate::store::mysql::MysqlStore;
use crate::store::sqlite::SqliteStore;

pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let url = match args.location()? {
        DatabaseLocation::Sqlite(path) => {
            let store = SqliteStore::open(&path)?;
            tracing::info!("{} is up to date", store.path().display());
            return Ok(());
        }
        DatabaseLocation::Mysql { url } => url,
    };
    let config = args.mysql_config(url)?;
    let applied = MysqlStore::migrate(&config).await?;
    tracing::info!(
        "{}: {applied} migrations applied, the schema is up to date",
        redact(&config.url)
    );
    Ok(())
}
