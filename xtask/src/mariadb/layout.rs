//! Where the test server's files are, its command line, and the manifest that tells the tests
//! how to reach it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{BASE, DATABASE, HOST, PORT, PROGRAM, RUN_DIR, SERVER_USER, TLS_USER, USER};

/// Where everything lives; `Layout::standard()` outside unit tests.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Layout {
    pub(super) base: PathBuf,
    pub(super) run: PathBuf,
}

impl Layout {
    pub(super) fn standard() -> Layout {
        Layout {
            base: PathBuf::from(BASE),
            run: PathBuf::from(RUN_DIR),
        }
    }
    pub(super) fn datadir(&self) -> PathBuf {
        self.base.join("data")
    }
    pub(super) fn initialised(&self) -> PathBuf {
        self.base.join("initialised")
    }
    pub(super) fn log(&self) -> PathBuf {
        self.base.join("mariadbd.err")
    }
    pub(super) fn password_file(&self) -> PathBuf {
        self.base.join("test-password")
    }
    pub(super) fn manifest(&self) -> PathBuf {
        self.base.join("mariadb.json")
    }
    pub(super) fn socket(&self) -> PathBuf {
        self.run.join("mariadbd.sock")
    }
    pub(super) fn pid_file(&self) -> PathBuf {
        self.run.join("mariadbd.pid")
    }
    /// A test CA and the server's certificate (for 127.0.0.1) signed by it.
    pub(super) fn tls_dir(&self) -> PathBuf {
        self.base.join("tls")
    }
    pub(super) fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }
    pub(super) fn server_cert(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }
    pub(super) fn server_key(&self) -> PathBuf {
        self.tls_dir().join("server-key.pem")
    }
}

/// mariadbd's arguments: no option file of the system is read (`--no-defaults` must come
/// first), TCP on loopback port 3307 only, and our own files.
pub(super) fn server_args(layout: &Layout) -> Vec<String> {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    vec![
        "--no-defaults".into(),
        format!("--user={SERVER_USER}"),
        format!("--datadir={}", path(layout.datadir())),
        format!("--socket={}", path(layout.socket())),
        format!("--pid-file={}", path(layout.pid_file())),
        format!("--log-error={}", path(layout.log())),
        format!("--bind-address={HOST}"),
        format!("--port={PORT}"),
        // Accounts are matched by address: no DNS look-up at each connection.
        "--skip-name-resolve".into(),
        // What Debian's own configuration sets (compiled-in default: latin1).
        "--character-set-server=utf8mb4".into(),
        "--collation-server=utf8mb4_general_ci".into(),
        // TLS with the test CA's certificate, for the store's TLS test.
        format!("--ssl-ca={}", path(layout.ca_file())),
        format!("--ssl-cert={}", path(layout.server_cert())),
        format!("--ssl-key={}", path(layout.server_key())),
    ]
}

/// What the tests read (see the module's documentation).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Manifest {
    host: String,
    port: u16,
    user: String,
    password_file: PathBuf,
    tls_user: String,
    ca_file: PathBuf,
    database: String,
    socket: PathBuf,
    pid_file: PathBuf,
    datadir: PathBuf,
    log: PathBuf,
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
}

impl Manifest {
    pub(super) fn new(layout: &Layout) -> Manifest {
        Manifest {
            host: HOST.into(),
            port: PORT,
            user: USER.into(),
            password_file: layout.password_file(),
            tls_user: TLS_USER.into(),
            ca_file: layout.ca_file(),
            database: DATABASE.into(),
            socket: layout.socket(),
            pid_file: layout.pid_file(),
            datadir: layout.datadir(),
            log: layout.log(),
            program: PathBuf::from(PROGRAM),
            args: server_args(layout),
        }
    }

    fn to_json(&self) -> String {
        let json = serde_json::json!({
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password_file": self.password_file,
            "tls_user": self.tls_user,
            "ca_file": self.ca_file,
            "database": self.database,
            "socket": self.socket,
            "pid_file": self.pid_file,
            "datadir": self.datadir,
            "log": self.log,
            "command": {"program": self.program, "args": self.args},
        });
        serde_json::to_string_pretty(&json).unwrap_or_default() + "\n"
    }

    /// The test side's reading (tests/src/mariadb.rs), here to prove the format round-trips.
    #[cfg(test)]
    fn parse(text: &str) -> anyhow::Result<Manifest> {
        let json: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
        let text = |value: &serde_json::Value, key: &str| -> anyhow::Result<String> {
            value[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no text field {key:?}"))
        };
        let command = &json["command"];
        Ok(Manifest {
            host: text(&json, "host")?,
            port: json["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .context("no port number \"port\"")?,
            user: text(&json, "user")?,
            password_file: text(&json, "password_file")?.into(),
            tls_user: text(&json, "tls_user")?,
            ca_file: text(&json, "ca_file")?.into(),
            database: text(&json, "database")?,
            socket: text(&json, "socket")?.into(),
            pid_file: text(&json, "pid_file")?.into(),
            datadir: text(&json, "datadir")?.into(),
            log: text(&json, "log")?.into(),
            program: text(command, "program")?.into(),
            args: command["args"]
                .as_array()
                .context("no list \"command.args\"")?
                .iter()
                .map(|a| {
                    a.as_str()
                        .map(str::to_owned)
                        .context("an argument is not text")
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }

    pub(super) fn write(&self, path: &Path) -> anyhow::Result<()> {
        fs::write(path, self.to_json()).with_context(|| format!("cannot write {}", path.display()))
    }

    #[cfg(test)]
    fn read(path: &Path) -> anyhow::Result<Manifest> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Manifest::parse(&text).with_context(|| format!("{} is not our manifest", path.display()))
    }
}

/// The standard layout, spelled out for the tests.
#[cfg(test)]
pub(super) fn test_layout() -> Layout {
    Layout {
        base: PathBuf::from("/var/lib/setmov-mariadb"),
        run: PathBuf::from("/run/setmov-mariadb"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_listens_on_loopback_3307_with_our_files_only() {
        let args = server_args(&test_layout());
        assert_eq!(args[0], "--no-defaults", "must come first to be honoured");
        for expected in [
            "--user=mysql",
            "--datadir=/var/lib/setmov-mariadb/data",
            "--socket=/run/setmov-mariadb/mariadbd.sock",
            "--pid-file=/run/setmov-mariadb/mariadbd.pid",
            "--log-error=/var/lib/setmov-mariadb/mariadbd.err",
            "--bind-address=127.0.0.1",
            "--port=3307",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--skip-networking")));
    }

    #[test]
    fn the_manifest_reads_back_as_written() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = Layout {
            base: dir.path().join("lib"),
            run: dir.path().join("run"),
        };
        let manifest = Manifest::new(&layout);
        let path = dir.path().join("mariadb.json");
        manifest.write(&path)?;
        assert_eq!(Manifest::read(&path)?, manifest);

        let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
        assert_eq!(json["host"], "127.0.0.1");
        assert_eq!(json["port"], 3307);
        assert_eq!(json["user"], "setmov");
        assert_eq!(json["database"], "setmov_test");
        assert_eq!(json["command"]["program"], "/usr/sbin/mariadbd");
        assert_eq!(
            json["command"]["args"].as_array().map(Vec::len),
            Some(server_args(&layout).len())
        );
        assert!(Manifest::parse(r#"{"host": "127.0.0.1"}"#).is_err());
        Ok(())
    }
}
