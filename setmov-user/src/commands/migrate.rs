//! `setmov migrate`: create or update the schema of the database.

use crate::cli::DatabaseArgs;
use crate::store::mysql::MysqlStore;
use crate::store::sqlite::SqliteStore;

pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    if !args.is_mysql() {
        let store = SqliteStore::open(std::path::Path::new(&args.database))?;
        tracing::info!("{} is up to date", store.path().display());
        return Ok(());
    }
    let config = args.mysql_config()?;
    let applied = MysqlStore::migrate(&config).await?;
    tracing::info!(
        "{}: {applied} migrations applied, the schema is up to date",
        crate::store::mysql::redact(&config.url)
    );
    Ok(())
}
