//! The real MariaDB server of the MySQL tests: the one `cargo xtask mariadb up` or
//! `cargo xtask test` started on 127.0.0.1:3307, described by its manifest (format in
//! `xtask/src/mariadb.rs`). Tests connect over TCP as user `setmov`, who may do anything in
//! databases named `setmov_*`; [`MariaDb::query`] runs SQL as root over the server's socket for
//! set-up and assertions. [`MariaDb::stop`] and [`MariaDb::start`] make outages: stop by PID,
//! start again with the manifest's exact command line.
//!
//! Stopping the server affects every test that uses it: `cargo xtask test` runs tests one at a
//! time, and a test that stops the server must start it again before it ends (or panics: the
//! next [`MariaDb::from_manifest`] then starts it again).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const MANIFEST: &str = "/var/lib/setmov-mariadb/mariadb.json";
const PREPARE: &str = "run `cargo xtask mariadb up` or `cargo xtask test`";
/// A first start after initialisation creates InnoDB's files; later ones take a second or two.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// InnoDB flushes before it exits.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The test server, as its manifest describes it.
#[derive(Clone, Debug)]
pub struct MariaDb {
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
    program: PathBuf,
    args: Vec<String>,
}

impl MariaDb {
    /// The prepared server. `Err(reason)` when it is not prepared (not root, no manifest):
    /// callers pass it to `setmov_tests::skip`. A server that is prepared but not running (a
    /// test stopped it and failed before starting it again) is started again; panics when that
    /// fails.
    pub fn from_manifest() -> Result<MariaDb, String> {
        if !crate::is_root() {
            return Err(
                "the test MariaDB needs root (its password file and admin socket are root's)"
                    .into(),
            );
        }
        let text = fs::read_to_string(MANIFEST)
            .map_err(|e| format!("no test MariaDB prepared ({MANIFEST}: {e}): {PREPARE}"))?;
        let server = MariaDb::parse(&text).map_err(|e| format!("{MANIFEST}: {e}: {PREPARE}"))?;
        if server.pid().is_none() {
            eprintln!(
                "the test MariaDB is prepared but does not run (a test stopped it and failed?): \
                 starting it again"
            );
            server.start();
        } else if !server.answers() {
            server.wait_until_ready(Instant::now());
        }
        Ok(server)
    }

    fn parse(text: &str) -> Result<MariaDb, String> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let field = |value: &serde_json::Value, key: &str| {
            value[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no text field {key:?}"))
        };
        let command = &json["command"];
        Ok(MariaDb {
            host: field(&json, "host")?,
            port: json["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("no port number \"port\"")?,
            user: field(&json, "user")?,
            password_file: field(&json, "password_file")?.into(),
            tls_user: field(&json, "tls_user")?,
            ca_file: field(&json, "ca_file")?.into(),
            database: field(&json, "database")?,
            socket: field(&json, "socket")?.into(),
            pid_file: field(&json, "pid_file")?.into(),
            datadir: field(&json, "datadir")?.into(),
            log: field(&json, "log")?.into(),
            program: field(command, "program")?.into(),
            args: command["args"]
                .as_array()
                .ok_or("no list \"command.args\"")?
                .iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or("an argument in \"command.args\" is not text")?,
        })
    }

    /// `mysql://setmov@127.0.0.1:3307/<database>`: never contains the password (see
    /// [`MariaDb::password_file`]).
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://{}@{}:{}/{database}",
            self.user, self.host, self.port
        )
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// 3307.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `setmov`, the account tests connect as (over TCP, with the password).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `setmov_test`, the database that always exists.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The file holding the `setmov` user's password (and a newline), readable by root only.
    /// Like [`MariaDb::url`] for the account the server accepts only over TLS (same
    /// password).
    pub fn tls_url(&self, database: &str) -> String {
        format!(
            "mysql://{}@{}:{}/{database}",
            self.tls_user, self.host, self.port
        )
    }

    /// The test CA the server's certificate chains to.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    pub fn password(&self) -> String {
        fs::read_to_string(&self.password_file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.password_file.display()))
            .trim()
            .to_owned()
    }

    /// Drops and creates database `setmov_t_<name>` (empty, no schema); returns its name.
    /// `name`: lowercase letters, digits and underscores.
    pub fn fresh_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database name {name:?} must be 1 to 40 lowercase letters, digits and underscores"
        );
        let database = format!("setmov_t_{name}");
        self.query(
            "",
            &format!("DROP DATABASE IF EXISTS `{database}`; CREATE DATABASE `{database}`;"),
        );
        database
    }

    /// Runs SQL (one or more statements) as root over the socket, in `database` unless it is
    /// empty, and returns the rows as tab-separated lines (mariadb's batch format: NULL reads
    /// `NULL`, a tab or newline inside a value `\t` or `\n`). Panics when the SQL fails.
    pub fn query(&self, database: &str, sql: &str) -> Vec<String> {
        let mut command = Command::new("mariadb");
        command
            .arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names"]);
        if !database.is_empty() {
            command.arg(format!("--database={database}"));
        }
        let out = run_with_input(&mut command, sql)
            .unwrap_or_else(|e| panic!("cannot run mariadb (package mariadb-client): {e}"));
        assert!(
            out.status.success(),
            "SQL as root in {database:?} failed ({}): {}\nSQL: {sql}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The running server's PID: the PID file's, or any mariadbd on the manifest's data
    /// directory; `None` when none runs.
    pub fn pid(&self) -> Option<u32> {
        if let Some(pid) = fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            && self.is_ours(pid)
        {
            return Some(pid);
        }
        fs::read_dir("/proc")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| self.is_ours(pid))
    }

    /// Stops the server by PID: SIGTERM, then waits until the process is gone and the port
    /// refuses connections. Panics when it does not run or does not stop.
    pub fn stop(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("the test MariaDB does not run: nothing to stop"));
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
            .unwrap_or_else(|e| panic!("cannot send SIGTERM to mariadbd {pid}: {e}"));
        let began = Instant::now();
        while self.is_ours(pid) || self.port_open() {
            if began.elapsed() > STOP_TIMEOUT {
                panic!(
                    "mariadbd {pid} still {} {STOP_TIMEOUT:?} after SIGTERM; {}",
                    if self.is_ours(pid) {
                        "runs"
                    } else {
                        "gone, but something accepts on its port"
                    },
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server by PID with SIGKILL (a crash: no flush, no clean shutdown), then waits
    /// until the process is gone and the port refuses connections. The next [`MariaDb::start`]
    /// runs InnoDB's crash recovery. Panics when it does not run or does not die.
    pub fn kill(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("the test MariaDB does not run: nothing to kill"));
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("cannot send SIGKILL to mariadbd {pid}: {e}"));
        let began = Instant::now();
        while self.is_ours(pid) || self.port_open() {
            assert!(
                began.elapsed() < STOP_TIMEOUT,
                "mariadbd {pid} still there {STOP_TIMEOUT:?} after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again with the manifest's command line (detached in its own session,
    /// as xtask does) and waits until it accepts connections. Panics when it already runs or
    /// does not come up.
    pub fn start(&self) {
        if let Some(pid) = self.pid() {
            panic!("the test MariaDB already runs (pid {pid})");
        }
        assert!(
            !self.port_open(),
            "something else accepts connections on {}:{}",
            self.host,
            self.port
        );
        // /run is emptied at boot while the manifest stays: the server needs its folder back,
        // owned by the user that owns the data.
        if let Some(run) = self.socket.parent()
            && !run.exists()
        {
            let owner = fs::metadata(&self.datadir)
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", self.datadir.display()));
            fs::create_dir_all(run)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", run.display()));
            std::os::unix::fs::chown(run, Some(owner.uid()), Some(owner.gid()))
                .unwrap_or_else(|e| panic!("cannot chown {}: {e}", run.display()));
        }
        let began = Instant::now();
        let status = Command::new("setsid")
            .arg("--fork")
            .arg(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run setsid {}: {e}", self.program.display()));
        assert!(
            status.success(),
            "setsid --fork {} failed: {status}",
            self.program.display()
        );
        self.wait_until_ready(began);
    }

    /// Waits until the server answers on its socket and its port; panics, with the end of its
    /// log, when it exits or the time is up.
    fn wait_until_ready(&self, began: Instant) {
        loop {
            if self.pings() {
                break;
            }
            // The forked child needs a moment to become mariadbd.
            let exited = began.elapsed() > Duration::from_secs(3) && self.pid().is_none();
            if exited || began.elapsed() > START_TIMEOUT {
                panic!(
                    "mariadbd {} {:.1} s after its start; {}",
                    if exited { "exited" } else { "does not answer" },
                    began.elapsed().as_secs_f64(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            self.answers(),
            "mariadbd answers on its socket but not on {}:{}; {}",
            self.host,
            self.port,
            self.log_tail()
        );
    }

    /// `mariadb-admin ping` as root over the socket.
    fn pings(&self) -> bool {
        Command::new("mariadb-admin")
            .arg("--no-defaults")
            .arg("--protocol=socket")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--connect-timeout=2", "ping"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn address(&self) -> SocketAddr {
        format!("{}:{}", self.host, self.port)
            .parse()
            .unwrap_or_else(|e| panic!("{}:{} is no address: {e}", self.host, self.port))
    }

    /// Whether anything accepts TCP connections on the server's port.
    fn port_open(&self) -> bool {
        TcpStream::connect_timeout(&self.address(), Duration::from_secs(1)).is_ok()
    }

    /// Whether a MySQL-protocol server answers on the port: its first packet has sequence 0
    /// and is a greeting (protocol 10) or an error (0xff).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address(), Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).is_ok() && head[3] == 0 && matches!(head[4], 10 | 0xff)
    }

    /// Whether `pid` is a mariadbd on the manifest's data directory (a zombie's command line
    /// is empty: an exited server is not).
    fn is_ours(&self, pid: u32) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let wanted = format!("--datadir={}", self.datadir.display());
        let mut args = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned());
        args.next()
            .is_some_and(|p| Path::new(&p).file_name().is_some_and(|n| n == "mariadbd"))
            && args.any(|a| a == wanted)
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("[Warning] Aborted connection"))
            .collect();
        format!(
            "{} ends with:\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }
}

/// Runs `command` with `input` on its stdin (SQL never goes on a command line) and collects
/// its output.
pub fn run_with_input(command: &mut Command, input: &str) -> std::io::Result<std::process::Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST_TEXT: &str = r#"{
      "host": "127.0.0.1", "port": 3307, "user": "setmov",
      "password_file": "/var/lib/setmov-mariadb/test-password", "database": "setmov_test",
      "tls_user": "setmov_tls", "ca_file": "/var/lib/setmov-mariadb/tls/ca.pem",
      "socket": "/run/setmov-mariadb/mariadbd.sock", "pid_file": "/run/setmov-mariadb/mariadbd.pid",
      "datadir": "/var/lib/setmov-mariadb/data", "log": "/var/lib/setmov-mariadb/mariadbd.err",
      "command": {"program": "/usr/sbin/mariadbd",
                  "args": ["--no-defaults", "--datadir=/var/lib/setmov-mariadb/data"]}
    }"#;

    #[test]
    fn the_manifest_gives_a_url_without_the_password() -> Result<(), String> {
        let server = MariaDb::parse(MANIFEST_TEXT)?;
        assert_eq!(
            server.url("setmov_t_x"),
            "mysql://setmov@127.0.0.1:3307/setmov_t_x"
        );
        assert_eq!(
            server.tls_url("setmov_t_x"),
            "mysql://setmov_tls@127.0.0.1:3307/setmov_t_x"
        );
        assert_eq!(server.port(), 3307);
        assert_eq!(server.database(), "setmov_test");
        assert_eq!(
            server.password_file(),
            Path::new("/var/lib/setmov-mariadb/test-password")
        );
        assert_eq!(server.args.len(), 2);
        assert!(MariaDb::parse(r#"{"host": "127.0.0.1"}"#).is_err());
        Ok(())
    }
}
