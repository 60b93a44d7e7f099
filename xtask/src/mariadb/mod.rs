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
//!
//! Here the server's life: up, down, initialisation, start and the wait for it to answer; where
//! its files are, its command line and the manifest in `layout.rs`, the certificates and the
//! accounts in `credentials.rs`, which mariadbd is ours in `process.rs`.

mod credentials;
mod layout;
mod process;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::guests::{poll, remove_file_if_present};
use crate::packages;
use credentials::{configure, ensure_certificates};
use layout::{Layout, Manifest};
use process::{argv, is_ours_pid, pid_from_file, running_pid, stop_pid};

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

    #[test]
    fn a_greeting_or_an_error_packet_means_a_server_answers() {
        // MariaDB 10.11: length 0x5b, sequence 0, protocol 10, then "5.5.5-10.11...".
        assert!(is_first_packet(&[0x5b, 0, 0, 0, 10]));
        // "Host '127.0.0.1' is not allowed to connect to this MariaDB server".
        assert!(is_first_packet(b"D\x00\x00\x00\xffj\x04Host"));
        assert!(!is_first_packet(b"SSH-2.0-OpenSSH"));
        assert!(!is_first_packet(&[0x5b, 0, 0]));
    }
}
