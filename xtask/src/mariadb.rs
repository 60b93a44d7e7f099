//! A real MariaDB server for the MySQL store's tests, run without systemd and apart from any
//! MariaDB of the system: its own data directory, socket and port (3307, on loopback only).
//!
//! `up` installs Debian's packages when they are missing, initialises the data directory once
//! (`mariadb-install-db`, root authenticated by unix socket), starts `mariadbd` detached in its
//! own session (`setsid --fork`, so it outlives xtask and nothing waits for it), waits until it
//! answers on 127.0.0.1:3307, then creates what the tests need: user `setmov`@`127.0.0.1` and
//! `setmov`@`localhost` with a random password kept in a file, database `setmov_test`, and all
//! privileges on every `setmov_*` database (tests make and drop their own). Safe to repeat: a
//! server of ours that runs with the same command line is kept. `down` stops the server it
//! started, by PID, and keeps the data directory, so the next `up` takes a second or two.
//!
//! Files:
//! - `/var/lib/setmov-mariadb/data`: the data directory (owned by `mysql`);
//!   `/var/lib/setmov-mariadb/initialised` marks it complete.
//! - `/var/lib/setmov-mariadb/mariadbd.err`: the server's error log, appended to at each start.
//! - `/var/lib/setmov-mariadb/test-password`: the `setmov` user's password (0600, made once).
//! - `/run/setmov-mariadb/mariadbd.sock`, `mariadbd.pid`: the server's socket and PID file.
//! - `/var/lib/setmov-mariadb/mariadb.json`, the manifest, present while the server is up:
//!   `{"host", "port", "user", "password_file", "database", "socket", "pid_file", "datadir",
//!   "log", "command": {"program", "args"}}`. `command` is the exact command line of mariadbd
//!   (started under `setsid --fork` with an empty environment but PATH), so that a test can stop
//!   the server by PID and start it again identically. Admin statements go over `socket` as
//!   root (unix-socket authentication), the tests' own connections over TCP as `user`.
//!
//! A mariadbd is ours when its command line holds `--datadir=` our data directory: only such a
//! process is ever signalled.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::guests::{one_line, poll, remove_file_if_present};
use crate::packages;

const BASE: &str = "/var/lib/setmov-mariadb";
const RUN_DIR: &str = "/run/setmov-mariadb";
const HOST: &str = "127.0.0.1";
/// Not 3306, so that it never clashes with a MariaDB or MySQL of the system.
const PORT: u16 = 3307;
const USER: &str = "setmov";
/// The same password as `USER`, but the server accepts it only over TLS (`REQUIRE SSL`).
const TLS_USER: &str = "setmov_tls";
const DATABASE: &str = "setmov_test";
const PROGRAM: &str = "/usr/sbin/mariadbd";
/// The system user the server runs as (created by the mariadb-server package).
const SERVER_USER: &str = "mysql";
/// How long a start may take before it counts as failed (a first start after initialisation
/// creates InnoDB's files: a few seconds here).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a SIGTERM'd server may take to flush and exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// When set, `down` says nothing unless it fails: after the tests, the test runner's summary
/// must stay the last thing printed.
pub static QUIET_DOWN: AtomicBool = AtomicBool::new(false);

fn say(message: &str) {
    if !QUIET_DOWN.load(Ordering::Relaxed) {
        eprintln!("{message}");
    }
}

/// Where everything lives; `Layout::standard()` outside unit tests.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    base: PathBuf,
    run: PathBuf,
}

impl Layout {
    fn standard() -> Layout {
        Layout {
            base: PathBuf::from(BASE),
            run: PathBuf::from(RUN_DIR),
        }
    }
    fn datadir(&self) -> PathBuf {
        self.base.join("data")
    }
    fn initialised(&self) -> PathBuf {
        self.base.join("initialised")
    }
    fn log(&self) -> PathBuf {
        self.base.join("mariadbd.err")
    }
    fn password_file(&self) -> PathBuf {
        self.base.join("test-password")
    }
    fn manifest(&self) -> PathBuf {
        self.base.join("mariadb.json")
    }
    fn socket(&self) -> PathBuf {
        self.run.join("mariadbd.sock")
    }
    fn pid_file(&self) -> PathBuf {
        self.run.join("mariadbd.pid")
    }
    /// A test CA and the server's certificate (for 127.0.0.1) signed by it.
    fn tls_dir(&self) -> PathBuf {
        self.base.join("tls")
    }
    fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }
    fn server_cert(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }
    fn server_key(&self) -> PathBuf {
        self.tls_dir().join("server-key.pem")
    }
}

/// mariadbd's arguments: no option file of the system is read (`--no-defaults` must come
/// first), TCP on loopback port 3307 only, and our own files.
fn server_args(layout: &Layout) -> Vec<String> {
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

/// Makes the test CA and the server's certificate once (openssl): the CA with
/// `basicConstraints CA:TRUE`, the server's with subjectAltName IP 127.0.0.1, as a client that
/// verifies (rustls) requires.
fn ensure_certificates(layout: &Layout) -> anyhow::Result<()> {
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

/// What the tests read (see the module's documentation).
#[derive(Clone, Debug, PartialEq)]
struct Manifest {
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

impl Manifest {
    fn new(layout: &Layout) -> Manifest {
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

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        fs::write(path, self.to_json()).with_context(|| format!("cannot write {}", path.display()))
    }

    #[cfg(test)]
    fn read(path: &Path) -> anyhow::Result<Manifest> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Manifest::parse(&text).with_context(|| format!("{} is not our manifest", path.display()))
    }
}

/// Installs, initialises, starts and configures the test server (see the module's doc).
pub fn up() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("mariadb up must run as root (it installs packages and starts mariadbd as mysql)");
    }
    let started = Instant::now();
    packages::ensure()?;
    let layout = Layout::standard();
    initialise(&layout)?;
    ensure_certificates(&layout)?;
    let manifest = Manifest::new(&layout);
    let expected: Vec<String> = std::iter::once(PROGRAM.to_owned())
        .chain(manifest.args.iter().cloned())
        .collect();
    match running_pid(&layout) {
        Some(pid) if argv(pid).as_deref() == Some(expected.as_slice()) => {
            eprintln!("xtask: mariadbd already runs (pid {pid})");
            wait_until_accepting(&layout)?;
        }
        Some(pid) => {
            eprintln!("xtask: mariadbd {pid} runs with another command line; restarting it");
            stop_pid(pid, &layout)?;
            start(&layout, &manifest)?;
        }
        None => start(&layout, &manifest)?,
    }
    configure(&layout)?;
    manifest.write(&layout.manifest())?;
    eprintln!(
        "xtask: MariaDB up on {HOST}:{PORT} in {:.1} s; manifest {}",
        started.elapsed().as_secs_f64(),
        layout.manifest().display()
    );
    Ok(())
}

/// What `cargo xtask test` does before the tests: `up` as root; otherwise it only says so, and
/// the MySQL tests skip.
pub fn prepare() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("xtask: not root, so no test MariaDB (the MySQL tests skip)");
        return Ok(());
    }
    up()
}

/// Stops the server of ours (by its PID, never another mariadbd), removes the manifest and the
/// runtime folder, keeps the data. Safe to repeat.
pub fn down() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        say("xtask: not root, so no test MariaDB to stop");
        return Ok(());
    }
    let layout = Layout::standard();
    // The manifest goes first: a test that starts now skips instead of finding no server.
    remove_file_if_present(&layout.manifest())?;
    if let Some(pid) = pid_from_file(&layout.pid_file())
        && !is_ours_pid(pid, &layout)
        && fs::metadata(format!("/proc/{pid}")).is_ok()
    {
        say(&format!(
            "xtask: {} names pid {pid}, not our mariadbd: leaving it alone",
            layout.pid_file().display()
        ));
    }
    let mut stopped = Vec::new();
    // The PID file's process, then any other of ours (one whose PID file was lost).
    while let Some(pid) = running_pid(&layout) {
        if stopped.contains(&pid) {
            bail!("mariadbd {pid} does not stop");
        }
        stop_pid(pid, &layout)?;
        say(&format!("xtask: stopped mariadbd (pid {pid})"));
        stopped.push(pid);
    }
    if layout.run.exists() {
        fs::remove_dir_all(&layout.run)
            .with_context(|| format!("cannot remove {}", layout.run.display()))?;
    }
    say("xtask: MariaDB down");
    Ok(())
}

// ---- set-up ----

/// Makes the data directory with `mariadb-install-db` unless a complete one is there.
fn initialise(layout: &Layout) -> anyhow::Result<()> {
    let datadir = layout.datadir();
    if layout.initialised().exists() && datadir.join("mysql").is_dir() {
        return Ok(());
    }
    fs::create_dir_all(&layout.base)
        .with_context(|| format!("cannot create {}", layout.base.display()))?;
    fs::set_permissions(&layout.base, fs::Permissions::from_mode(0o755))?;
    if datadir.exists() {
        // Left by an initialisation that did not finish: start again.
        if running_pid(layout).is_some() {
            bail!(
                "a mariadbd of ours runs on the incomplete {}: run `cargo xtask mariadb down`",
                datadir.display()
            );
        }
        fs::remove_dir_all(&datadir)
            .with_context(|| format!("cannot remove {}", datadir.display()))?;
    }
    let began = Instant::now();
    eprintln!("xtask: initialising {}", datadir.display());
    let out = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--user={SERVER_USER}"))
        .arg(format!("--datadir={}", datadir.display()))
        .arg("--auth-root-authentication-method=socket")
        .arg("--skip-test-db")
        // Only root@localhost: no account named after this machine.
        .arg("--skip-name-resolve")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .context("cannot run mariadb-install-db (package mariadb-server)")?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        bail!(
            "mariadb-install-db failed ({}); its output ends with:\n{}",
            out.status,
            tail(&text, 15)
        );
    }
    fs::write(layout.initialised(), "")?;
    eprintln!(
        "xtask: initialised {} in {:.1} s",
        datadir.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Starts mariadbd detached and waits until it answers on its socket and port.
fn start(layout: &Layout, manifest: &Manifest) -> anyhow::Result<()> {
    let mysql = nix::unistd::User::from_name(SERVER_USER)
        .context("cannot look up user mysql")?
        .context("no user mysql (package mariadb-server creates it)")?;
    let owner = Some(mysql.uid.as_raw());
    let group = Some(mysql.gid.as_raw());
    fs::create_dir_all(&layout.run)
        .with_context(|| format!("cannot create {}", layout.run.display()))?;
    std::os::unix::fs::chown(&layout.run, owner, group)?;
    fs::set_permissions(&layout.run, fs::Permissions::from_mode(0o755))?;
    // The server opens its log after dropping root.
    let log = layout.log();
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    std::os::unix::fs::chown(&log, owner, group)?;
    // Left by a server that was killed.
    remove_file_if_present(&layout.pid_file())?;
    remove_file_if_present(&layout.socket())?;
    if TcpStream::connect_timeout(&address(), Duration::from_secs(1)).is_ok() {
        bail!(
            "something else already listens on {HOST}:{PORT} (not a mariadbd of ours): \
             stop it first"
        );
    }
    let began = Instant::now();
    let status = Command::new("setsid")
        .arg("--fork")
        .arg(&manifest.program)
        .args(&manifest.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run setsid {}", manifest.program.display()))?;
    if !status.success() {
        bail!(
            "setsid --fork {} failed: {status}",
            manifest.program.display()
        );
    }
    wait_until_accepting(layout)?;
    let pid = running_pid(layout).context("mariadbd answers but no process of ours runs")?;
    eprintln!(
        "xtask: started mariadbd (pid {pid}) on {HOST}:{PORT} in {:.1} s; log {}",
        began.elapsed().as_secs_f64(),
        log.display()
    );
    Ok(())
}

/// Waits until the server answers on its socket, then checks that it answers on its port too.
/// Fails early when no server of ours runs any more. (Probing the port alone would log an
/// "Aborted connection" warning at each try.)
fn wait_until_accepting(layout: &Layout) -> anyhow::Result<()> {
    let began = Instant::now();
    let mut gone = false;
    let ready = poll(START_TIMEOUT, || {
        if pings(layout) {
            return true;
        }
        // The forked child needs a moment to become mariadbd.
        gone = began.elapsed() > Duration::from_secs(3) && running_pid(layout).is_none();
        gone
    }) && !gone;
    let problem = if gone {
        "exited"
    } else if !ready {
        "does not answer on its socket"
    } else if !answers(&address()) {
        "answers on its socket but not on 127.0.0.1:3307"
    } else {
        return Ok(());
    };
    let log = layout.log();
    let text = fs::read_to_string(&log).unwrap_or_default();
    bail!(
        "mariadbd {problem} ({:.1} s after start); {} ends with:\n{}",
        began.elapsed().as_secs_f64(),
        log.display(),
        tail(&text, 15)
    )
}

/// `mariadb-admin ping` as root over the socket: whether the server runs and takes connections.
fn pings(layout: &Layout) -> bool {
    Command::new("mariadb-admin")
        .arg("--no-defaults")
        .arg("--protocol=socket")
        .arg(format!("--socket={}", layout.socket().display()))
        .args(["--user=root", "--connect-timeout=2", "ping"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The password (made once), the `setmov` accounts, the test database and the grants.
fn configure(layout: &Layout) -> anyhow::Result<()> {
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

// ---- processes ----

/// Sends SIGTERM, waits for the process to exit, kills it after `STOP_TIMEOUT`.
fn stop_pid(pid: u32, layout: &Layout) -> anyhow::Result<()> {
    let target = Pid::from_raw(pid as i32);
    kill(target, Signal::SIGTERM).with_context(|| format!("cannot stop mariadbd {pid}"))?;
    if !poll(STOP_TIMEOUT, || !is_ours_pid(pid, layout)) {
        say(&format!(
            "xtask: mariadbd {pid} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it"
        ));
        kill(target, Signal::SIGKILL).with_context(|| format!("cannot kill mariadbd {pid}"))?;
        if !poll(Duration::from_secs(10), || !is_ours_pid(pid, layout)) {
            bail!("mariadbd {pid} survives SIGKILL");
        }
    }
    Ok(())
}

/// The running mariadbd of ours: the PID file's when it is ours, else any process whose command
/// line is ours (its PID file lost).
fn running_pid(layout: &Layout) -> Option<u32> {
    if let Some(pid) = pid_from_file(&layout.pid_file())
        && is_ours_pid(pid, layout)
    {
        return Some(pid);
    }
    fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| is_ours_pid(pid, layout))
}

fn pid_from_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn is_ours_pid(pid: u32, layout: &Layout) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| is_ours(&cmdline, &layout.datadir()))
}

/// Whether a `/proc/PID/cmdline` (arguments separated by NUL) is a mariadbd on `datadir`. A
/// zombie's is empty, so an exited server is never ours.
fn is_ours(cmdline: &[u8], datadir: &Path) -> bool {
    let args = split_cmdline(cmdline);
    let Some((program, rest)) = args.split_first() else {
        return false;
    };
    let wanted = format!("--datadir={}", datadir.display());
    Path::new(program)
        .file_name()
        .is_some_and(|name| name == "mariadbd")
        && rest.contains(&wanted)
}

fn split_cmdline(cmdline: &[u8]) -> Vec<String> {
    cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn argv(pid: u32) -> Option<Vec<String>> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|c| split_cmdline(&c))
}

// ---- the port ----

fn address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], PORT))
}

/// Whether a MySQL-protocol server answers on `address`: its first packet is a greeting or an
/// error (e.g. "Host '127.0.0.1' is not allowed to connect" before any account matches).
fn answers(address: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && is_first_packet(&head)
}

/// Whether five bytes start a server's first packet: 3-byte length, sequence 0, then protocol
/// version 10 (a greeting) or 0xff (an error packet: it answers but refuses us).
fn is_first_packet(head: &[u8]) -> bool {
    head.len() >= 5 && head[3] == 0 && (head[4] == 10 || head[4] == 0xff)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            base: PathBuf::from("/var/lib/setmov-mariadb"),
            run: PathBuf::from("/run/setmov-mariadb"),
        }
    }

    #[test]
    fn the_server_listens_on_loopback_3307_with_our_files_only() {
        let args = server_args(&layout());
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

    #[test]
    fn only_a_mariadbd_on_our_data_directory_is_ours() {
        let datadir = layout().datadir();
        let cmdline = |args: &[&str]| args.join("\0").into_bytes();
        let ours = std::iter::once(PROGRAM.to_owned())
            .chain(server_args(&layout()))
            .collect::<Vec<_>>()
            .join("\0")
            + "\0";
        assert!(is_ours(ours.as_bytes(), &datadir));
        assert!(is_ours(
            &cmdline(&["mariadbd", "--datadir=/var/lib/setmov-mariadb/data"]),
            &datadir
        ));
        // The system's server, another data directory, another program, a zombie.
        assert!(!is_ours(
            &cmdline(&["/usr/sbin/mariadbd", "--datadir=/var/lib/mysql"]),
            &datadir
        ));
        assert!(!is_ours(&cmdline(&["/usr/sbin/mariadbd"]), &datadir));
        assert!(!is_ours(
            &cmdline(&["/bin/sh", "--datadir=/var/lib/setmov-mariadb/data"]),
            &datadir
        ));
        assert!(!is_ours(
            &cmdline(&["mariadbd", "--datadir=/var/lib/setmov-mariadb/data2"]),
            &datadir
        ));
        assert!(!is_ours(b"", &datadir));
    }

    #[test]
    fn a_greeting_or_an_error_packet_means_a_server_answers() {
        // MariaDB 10.11: length 0x5b, sequence 0, protocol 10, then "5.5.5-10.11...".
        assert!(is_first_packet(&[0x5b, 0, 0, 0, 10]));
        // "Host '127.0.0.1' is not allowed to connect to this MariaDB server".
        assert!(is_first_packet(b"D\x00\x00\x00\xffj\x04Host"));
        assert!(!is_first_packet(b"SSH-2.0-OpenSSH"));
        assert!(!is_first_packet(&[0x5b, 0, 0]));
    }

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
