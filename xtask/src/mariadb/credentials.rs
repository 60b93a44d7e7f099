//! What the tests log in with: a test CA and the server's certificate, the `setmov` accounts
//! with their password, and the test database.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::layout::Layout;
use super::{DATABASE, HOST, SERVER_USER, TLS_USER, USER, tail};
use crate::guests::one_line;

/// Makes the test CA and the server's certificate once (openssl): the CA with
/// `basicConstraints CA:TRUE`, the server's with subjectAltName IP 127.0.0.1, as a client that
/// verifies (rustls) requires.
pub(super) fn ensure_certificates(layout: &Layout) -> anyhow::Result<()> {
    if layout.ca_file().exists() && layout.server_cert().exists() && layout.server_key().exists() {
        return Ok(());
    }
    let dir = layout.tls_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .context("cannot run openssl (package openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.first().copied().unwrap_or_default(),
                tail(&String::from_utf8_lossy(&out.stderr), 5)
            );
        }
        Ok(())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=SETMOV test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ])?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    // The server runs as `mysql` and must read its key.
    let status = Command::new("chown")
        .arg(format!("{SERVER_USER}:{SERVER_USER}"))
        .arg(layout.server_key())
        .status()
        .context("cannot run chown")?;
    if !status.success() {
        bail!(
            "cannot give {} to {SERVER_USER}",
            layout.server_key().display()
        );
    }
    eprintln!(
        "xtask: made a test CA and a server certificate in {}",
        dir.display()
    );
    Ok(())
}

/// The password (made once), the `setmov` accounts, the test database and the grants.
pub(super) fn configure(layout: &Layout) -> anyhow::Result<()> {
    let password = password(&layout.password_file())?;
    admin(layout, &setup_sql(&password)).context("cannot create the test user and database")?;
    Ok(())
}

/// Idempotent: the accounts get the password of the file even when they existed before.
fn setup_sql(password: &str) -> String {
    let mut sql = String::new();
    for host in [HOST, "localhost"] {
        let account = format!("'{USER}'@'{host}'");
        sql.push_str(&format!(
            "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}';\n\
             ALTER USER {account} IDENTIFIED BY '{password}';\n\
             GRANT ALL PRIVILEGES ON `setmov\\_%`.* TO {account};\n"
        ));
    }
    let account = format!("'{TLS_USER}'@'{HOST}'");
    sql.push_str(&format!(
        "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}' REQUIRE SSL;\n\
         ALTER USER {account} IDENTIFIED BY '{password}' REQUIRE SSL;\n\
         GRANT ALL PRIVILEGES ON `setmov\\_%`.* TO {account};\n"
    ));
    sql.push_str(&format!("CREATE DATABASE IF NOT EXISTS `{DATABASE}`;\n"));
    sql
}

/// The password in `path`, made (24 random letters and digits, mode 0600) when absent.
fn password(path: &Path) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let password = text.trim();
            if password.len() < 16 || !password.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!(
                    "{} does not hold a password of 16 or more letters and digits: remove it",
                    path.display()
                );
            }
            return Ok(password.to_owned());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let password = random_password()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{password}\n").as_bytes())?;
    Ok(password)
}

fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut urandom = fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?;
    let mut password = String::new();
    while password.len() < 24 {
        let mut bytes = [0u8; 64];
        urandom.read_exact(&mut bytes)?;
        // Only bytes below a multiple of 62, so that every character is equally likely.
        password.extend(
            bytes
                .iter()
                .filter(|&&b| usize::from(b) < ALPHABET.len() * 4)
                .map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
                .take(24 - password.len()),
        );
    }
    Ok(password)
}

/// Runs SQL as root over the socket (statements on stdin, never on the command line).
fn admin(layout: &Layout, sql: &str) -> anyhow::Result<String> {
    let mut child = Command::new("mariadb")
        .arg("--no-defaults")
        .arg("--protocol=socket")
        .arg(format!("--socket={}", layout.socket().display()))
        .args(["--user=root", "--batch", "--skip-column-names"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run mariadb (package mariadb-client)")?;
    child
        .stdin
        .take()
        .context("no stdin for mariadb")?
        .write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("mariadb failed ({}): {}", out.status, one_line(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_password_is_made_once_private_and_reused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("test-password");
        let first = password(&path)?;
        assert_eq!(first.len(), 24);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert_eq!(password(&path)?, first);
        assert_ne!(random_password()?, first);
        fs::write(&path, "x'; DROP USER root; --")?;
        assert!(password(&path).is_err());
        Ok(())
    }

    #[test]
    fn the_setup_statements_are_idempotent_and_grant_only_setmov_databases() {
        let sql = setup_sql("abc123");
        for expected in [
            "CREATE USER IF NOT EXISTS 'setmov'@'127.0.0.1' IDENTIFIED BY 'abc123';",
            "ALTER USER 'setmov'@'localhost' IDENTIFIED BY 'abc123';",
            "GRANT ALL PRIVILEGES ON `setmov\\_%`.* TO 'setmov'@'127.0.0.1';",
            "CREATE DATABASE IF NOT EXISTS `setmov_test`;",
        ] {
            assert!(sql.contains(expected), "{expected} in {sql}");
        }
    }
}
