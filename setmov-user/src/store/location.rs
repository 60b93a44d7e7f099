//! What a `--database` value names, and the one way such a value is ever shown.
//!
//! A value is a SQLite file path unless it looks like a URL: `scheme://…`, `scheme:/…`, or
//! anything holding `://`. A URL-like value may carry a password, possibly one the URL parser
//! cannot even read (`mysql://u:pa/ss@db/x`), so it is never printed, logged or used in a file
//! name as given: [`redact`] keeps the scheme, a plain user name and what follows the last `@`
//! (host, port, database), and masks everything else. A plain path is shown as it is.

use std::path::PathBuf;

use super::StoreError;

/// Stands for whatever was masked.
const MASK: &str = "***";

/// Where ticks are kept, as `--database` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(PathBuf),
    /// A MySQL or MariaDB server; the URL as the driver reads it (`mariadb://` turned into
    /// `mysql://`). Shown only through [`redact`].
    Mysql {
        url: String,
    },
}

impl DatabaseLocation {
    /// `mysql://` and `mariadb://` name a server, any other URL-like value is refused (rather
    /// than becoming a file whose path holds a password), everything else is a SQLite file.
    pub fn parse(value: &str) -> Result<DatabaseLocation, StoreError> {
        let Some(url) = UrlLike::split(value) else {
            return Ok(DatabaseLocation::Sqlite(PathBuf::from(value)));
        };
        if ["mysql", "mariadb"]
            .iter()
            .any(|known| url.scheme.eq_ignore_ascii_case(known))
        {
            return Ok(DatabaseLocation::Mysql {
                url: format!("mysql:{}{}", url.slashes, url.rest),
            });
        }
        Err(StoreError::Config(format!(
            "--database {}: not a SQLite file path nor a mysql:// or mariadb:// URL",
            redact(value)
        )))
    }
}

/// A value split at its scheme: `mysql` `//` `user:pw@host/db`.
struct UrlLike<'a> {
    scheme: &'a str,
    slashes: &'a str,
    rest: &'a str,
}

impl<'a> UrlLike<'a> {
    fn split(value: &'a str) -> Option<UrlLike<'a>> {
        let (scheme, after) = match value.find("://") {
            Some(at) => (&value[..at], &value[at + 1..]),
            None => {
                let (scheme, after) = value.split_once(':')?;
                if !is_scheme(scheme) || !after.starts_with('/') {
                    return None;
                }
                (scheme, after)
            }
        };
        let rest = after.trim_start_matches('/');
        Some(UrlLike {
            scheme,
            slashes: &after[..after.len() - rest.len()],
            rest,
        })
    }

    /// The user name, if the URL names one made of ordinary characters, and where the host
    /// starts. `None` for the user with credentials present means they are masked whole.
    fn user_and_host(&self) -> (Option<Option<&'a str>>, &'a str) {
        let Some((credentials, host)) = self.rest.rsplit_once('@') else {
            return (None, self.rest);
        };
        let user = credentials.split(':').next().filter(|user| {
            !user.is_empty()
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-%".contains(c))
        });
        (Some(user), host)
    }
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `value` fit to be shown: a plain path as it is; a URL-like value without its password,
/// user name if odd, query and fragment: `mysql://setmov:s3cret@db:3306/fleet` →
/// `mysql://setmov@db:3306/fleet`, `mysql://setmov:pa/ss@db/fleet` → `mysql://setmov@db/fleet`,
/// `mysql://a/b:c@db/x` → `mysql://***@db/x`.
pub fn redact(value: &str) -> String {
    let Some(url) = UrlLike::split(value) else {
        return value.to_owned();
    };
    let scheme = if is_scheme(url.scheme) {
        url.scheme
    } else {
        MASK
    };
    let (user, host) = url.user_and_host();
    let credentials = match user {
        None => String::new(),
        Some(Some(user)) => format!("{user}@"),
        Some(None) => format!("{MASK}@"),
    };
    let (host, extra) = host.split_at(host.find(['?', '#']).unwrap_or(host.len()));
    // Without an `@` a password may still hide where the port goes (`mysql://u:pw`, the host
    // forgotten): a port that is not a number is masked with all that follows.
    let authority = host.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((name, port)) if user.is_none() && !port.chars().all(|c| c.is_ascii_digit()) => {
            format!("{name}:{MASK}")
        }
        _ => host.to_owned(),
    };
    let extra = if extra.is_empty() { "" } else { "?***" };
    format!("{scheme}:{}{credentials}{host}{extra}", url.slashes)
}

/// Whether `value` carries anything [`redact`] masks or drops beside a plain user name: a
/// password, most likely.
pub fn holds_secret(value: &str) -> bool {
    let Some(url) = UrlLike::split(value) else {
        return false;
    };
    match url.rest.rsplit_once('@') {
        Some((credentials, _)) => url.user_and_host().0 != Some(Some(credentials)),
        None => redact(value) != value,
    }
}

/// A file name for what `value` names, from its redacted form without the scheme: the same
/// server and database give the same name whatever the scheme or password.
pub fn file_name(value: &str) -> String {
    let shown = redact(value);
    let target = UrlLike::split(&shown).map_or(shown.as_str(), |url| url.rest);
    target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown_whatever_they_hold() {
        for (value, shown) in [
            (
                "mysql://setmov:s3cret@db.example:3307/fleet",
                "mysql://setmov@db.example:3307/fleet",
            ),
            (
                "mysql://setmov@127.0.0.1/fleet",
                "mysql://setmov@127.0.0.1/fleet",
            ),
            ("mysql://setmov:pa/ss@db/fleet", "mysql://setmov@db/fleet"),
            ("mysql://u:p@ss@h/d", "mysql://u@h/d"),
            ("mysql://u:p%40ss@h/db", "mysql://u@h/db"),
            ("mysql://u:p@s:s/w@h/db", "mysql://u@h/db"),
            ("mariadb://user:secret@db/x", "mariadb://user@db/x"),
            ("mysql://a/b:secret@db/x", "mysql://***@db/x"),
            ("mysql://u:pa#ss@h/db", "mysql://u@h/db"),
            ("mysql://u@h/db?password=secret", "mysql://u@h/db?***"),
            ("mysql://u:secret", "mysql://u:***"),
            ("mysql://u:secret/x", "mysql://u:***"),
            ("mysql://h:3306/db", "mysql://h:3306/db"),
            ("mysql:/u:secret@h/db", "mysql:/u@h/db"),
            ("postgres://u:secret@h/db", "postgres://u@h/db"),
            ("odd scheme://u:secret@h/db", "***://u@h/db"),
            ("/var/lib/setmov/setmov.db", "/var/lib/setmov/setmov.db"),
            ("relative.db", "relative.db"),
        ] {
            assert_eq!(redact(value), shown, "{value}");
            assert!(!redact(value).contains("secret"), "{value}");
        }
    }

    #[test]
    fn a_secret_is_told_apart_from_a_user_name() {
        assert!(holds_secret("mysql://setmov:pw@db/fleet"));
        assert!(holds_secret("mysql://a/b@db/fleet"));
        assert!(holds_secret("mysql://u:secret"));
        assert!(!holds_secret("mysql://setmov@db/fleet"));
        assert!(!holds_secret("mysql://db:3306/fleet"));
        assert!(!holds_secret("/srv/user:pw@x.db"));
    }

    #[test]
    fn mysql_and_mariadb_name_a_server_and_other_urls_are_refused() {
        assert_eq!(
            DatabaseLocation::parse("mariadb://user:secret@db/x").expect("mariadb"),
            DatabaseLocation::Mysql {
                url: "mysql://user:secret@db/x".into()
            }
        );
        assert_eq!(
            DatabaseLocation::parse("MySQL://u@h/d").expect("mysql"),
            DatabaseLocation::Mysql {
                url: "mysql://u@h/d".into()
            }
        );
        assert_eq!(
            DatabaseLocation::parse("/srv/setmov.db").expect("path"),
            DatabaseLocation::Sqlite(PathBuf::from("/srv/setmov.db"))
        );
        assert_eq!(
            DatabaseLocation::parse("backup:2026.db").expect("a colon in a file name"),
            DatabaseLocation::Sqlite(PathBuf::from("backup:2026.db"))
        );
        let err = DatabaseLocation::parse("postgres://u:secret@h/db").expect_err("refused");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("postgres://u@h/db"), "{err}");
    }

    #[test]
    fn file_names_leave_out_scheme_and_password() {
        assert_eq!(
            file_name("mysql://setmov:pw@db.example:3306/fleet"),
            "setmov_db.example_3306_fleet"
        );
        assert_eq!(
            file_name("mariadb://setmov:other@db.example:3306/fleet"),
            "setmov_db.example_3306_fleet"
        );
        assert_eq!(file_name("mysql://u:pa/ss@db/fleet"), "u_db_fleet");
    }
}
