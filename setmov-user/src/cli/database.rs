//! The database options every command that stores or reads ticks shares, and opening the
//! store they name.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::values::{MIB, TIB, size_within};
use crate::store::location::{self, DatabaseLocation};
use crate::store::mysql::{MysqlConfig, MysqlStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{AnyStore, StoreError};

/// Where the embedded database lives unless `--database` says otherwise.
pub const DEFAULT_DATABASE: &str = "/var/lib/setmov/setmov.db";

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Where ticks are stored: a SQLite file (the default, created with its schema when
    /// missing), or a MySQL/MariaDB server as `mysql://user@host[:port]/database` (or
    /// `mariadb://`). Never shown with a password.
    #[arg(
        long,
        help_heading = "Database",
        value_name = "FILE|URL",
        env = "SETMOV_DATABASE",
        hide_env_values = true,
        default_value = DEFAULT_DATABASE
    )]
    pub database: String,

    /// File holding the MySQL password (one line). Keeps it out of the process list.
    #[arg(long, help_heading = "Database", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// The MySQL password, from the environment only (never a command-line option).
    #[arg(
        long = "database-password-from-env",
        env = "SETMOV_DATABASE_PASSWORD",
        hide = true,
        hide_env_values = true
    )]
    pub database_password: Option<String>,

    /// Require TLS to the MySQL server, its certificate verified against the system's roots
    /// or --database-ca.
    #[arg(long, help_heading = "Database")]
    pub database_tls: bool,

    /// CA certificate (PEM) the MySQL server's certificate must chain to; implies TLS.
    #[arg(long, help_heading = "Database", value_name = "FILE")]
    pub database_ca: Option<PathBuf>,

    /// Where ticks wait while the MySQL server cannot be reached; replayed in order when it
    /// answers again, also after a restart of the monitor.
    #[arg(long, help_heading = "Database", value_name = "DIR", default_value = DEFAULT_SPOOL_DIR)]
    pub spool_dir: PathBuf,

    /// Most disk the spool may use, e.g. `512MiB`, `2GiB` (from 1MiB to 16TiB); past it the
    /// oldest ticks are dropped, each drop logged.
    #[arg(long, help_heading = "Database", value_name = "SIZE", default_value = "1GiB", value_parser = size_within(MIB, 16 * TIB))]
    pub spool_max: u64,
}

/// Where MySQL ticks wait during an outage unless `--spool-dir` says otherwise.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/setmov/spool";

impl DatabaseArgs {
    /// What `--database` names; a URL-like value of another scheme is an error.
    pub(crate) fn location(&self) -> Result<DatabaseLocation, StoreError> {
        DatabaseLocation::parse(&self.database)
    }

    /// A SQLite file must already be there to be read (it would be created empty otherwise).
    pub(crate) fn must_exist(&self) -> anyhow::Result<()> {
        if let DatabaseLocation::Sqlite(path) = self.location()?
            && !path.exists()
        {
            bail!(
                "no database at {} (run `setmov run` first, or give --database)",
                path.display()
            );
        }
        Ok(())
    }

    /// How to reach the server at `url` (from [`DatabaseLocation::Mysql`]).
    pub(crate) fn mysql_config(&self, url: String) -> anyhow::Result<MysqlConfig> {
        if location::holds_secret(&self.database) {
            tracing::warn!(
                "the --database URL holds a password, which the process list shows to every \
                 user: prefer --database-password-file or SETMOV_DATABASE_PASSWORD"
            );
        }
        let password = match (&self.database_password_file, &self.database_password) {
            (Some(file), _) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| {
                        format!("cannot read the database password file {}", file.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, Some(password)) => Some(password.clone()),
            (None, None) => None,
        };
        Ok(MysqlConfig {
            spool_dir: spool_dir(&self.spool_dir, &url),
            url,
            password,
            tls: self.database_tls || self.database_ca.is_some(),
            ca_file: self.database_ca.clone(),
            spool_max_bytes: self.spool_max,
        })
    }

    /// Opens the store: SQLite, or MySQL (see [`MysqlStore::open`]).
    pub(crate) async fn open(&self) -> anyhow::Result<AnyStore> {
        match self.location()? {
            DatabaseLocation::Mysql { url } => Ok(AnyStore::Mysql(Box::new(
                MysqlStore::open(self.mysql_config(url)?).await?,
            ))),
            DatabaseLocation::Sqlite(path) => Ok(AnyStore::Sqlite(SqliteStore::open(&path)?)),
        }
    }
}

/// The spool of one database: under the default folder, a subfolder per server and database,
/// so that ticks spooled for one are never replayed into another. A folder given with
/// `--spool-dir` is used as it is.
fn spool_dir(dir: &Path, url: &str) -> PathBuf {
    if dir != Path::new(DEFAULT_SPOOL_DIR) {
        return dir.to_owned();
    }
    dir.join(location::file_name(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_database_gets_its_own_default_spool() {
        let default = Path::new(DEFAULT_SPOOL_DIR);
        assert_eq!(
            spool_dir(default, "mysql://setmov:pw@db.example:3306/fleet"),
            default.join("setmov_db.example_3306_fleet")
        );
        let given = Path::new("/srv/spool");
        assert_eq!(spool_dir(given, "mysql://u@h/d"), given);
    }
}
