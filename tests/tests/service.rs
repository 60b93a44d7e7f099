//! SETMOV as a systemd service: what `cargo xtask install` lays down (checked by systemd's
//! own tools), the unit's capabilities really being enough and each of them needed, and log
//! lines reaching the journal with their levels. This machine has no systemd running as PID 1,
//! so the unit is checked offline (`systemd-analyze verify` and `security --offline`) and its
//! capability set is applied with `setpriv`, as systemd would apply it.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use setmov_tests::guests::{Guest, Workload};
use setmov_tests::{fixture, is_root, skip};

const BIN: &str = env!("CARGO_BIN_EXE_setmov-cli");
/// The unit's exposure as `systemd-analyze security` rates it: 0 is locked down, 10 exposed.
/// Up to 3.9 systemd calls "OK".
const MAX_EXPOSURE: f64 = 3.0;

/// The guest tests compete for the two cores.
static MACHINE: Mutex<()> = Mutex::new(());

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeed(command: &mut Command) -> Output {
    let out = command.output().expect("starts");
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// `cargo xtask install --root ROOT` with the test build of setmov.
fn install(root: &Path) {
    succeed(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .args(["xtask", "install", "--binary", BIN, "--root"])
            .arg(root),
    );
}

#[test]
fn install_lays_down_a_valid_hardened_unit_config_completions_and_man_pages() {
    if !is_root() {
        return skip("systemd-analyze and the staged install need root");
    }
    let stage = tempfile::tempdir().expect("tempdir");
    let root = stage.path();
    install(root);
    let sbin = root.join("usr/local/sbin");
    let unit = root.join("etc/systemd/system/setmov.service");
    let config = root.join("etc/setmov/setmov.toml");
    assert!(sbin.join("setmov").is_file());

    // systemd's parser accepts every line (it only warns on unknown keys, so the output must
    // be empty too). ExecStart must exist: point it at the staged binary.
    let staged_unit = stage.path().join("setmov.service");
    let unit_text = std::fs::read_to_string(&unit).expect("unit");
    std::fs::write(
        &staged_unit,
        unit_text.replace("/usr/local/sbin", &sbin.display().to_string()),
    )
    .expect("write");
    let verify = succeed(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&staged_unit),
    );
    assert_eq!(
        text(&verify.stdout) + &text(&verify.stderr),
        "",
        "systemd-analyze verify has remarks"
    );
    let security = succeed(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg("setmov.service"),
    );
    let report = text(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for setmov.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= MAX_EXPOSURE, "{report}");

    // The default configuration checks clean, and a second install keeps an edited one.
    succeed(Command::new(BIN).args(["config", "check"]).arg(&config));
    std::fs::write(&config, "[run]\ninterval = \"2s\"\n").expect("edit");
    install(root);
    assert_eq!(
        std::fs::read_to_string(&config).expect("config"),
        "[run]\ninterval = \"2s\"\n"
    );

    // Completions load in their shells; the man pages render.
    let share = root.join("usr/local/share");
    let bash = share.join("bash-completion/completions/setmov");
    let loaded = succeed(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {}; complete -p setmov", bash.display())),
    );
    assert!(
        text(&loaded.stdout).contains("setmov"),
        "{}",
        text(&loaded.stdout)
    );
    for file in [
        "zsh/site-functions/_setmov",
        "fish/vendor_completions.d/setmov.fish",
    ] {
        let script = std::fs::read_to_string(share.join(file)).expect(file);
        for command in ["run", "report", "config"] {
            assert!(script.contains(command), "{file} lacks {command}");
        }
    }
    for page in ["setmov.1", "setmov-run.1", "setmov-config-check.1"] {
        let man = succeed(
            Command::new("man")
                .arg("-l")
                .arg(share.join("man/man1").join(page))
                .env("MANWIDTH", "100")
                .env("MANPAGER", "cat"),
        );
        let rendered = text(&man.stdout);
        assert!(
            rendered.contains("SYNOPSIS") && rendered.contains("OPTIONS"),
            "{page}: {rendered}"
        );
    }
}

/// The capabilities the unit keeps, as `setpriv` spells them (`+bpf,+perfmon`).
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(workspace().join("contrib/systemd/setmov.service"))
        .expect("unit template");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a capability bounding set");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `setmov run` as root with only `capabilities` (setpriv syntax, "" for none).
fn run_with(capabilities: &str, db: &Path) -> String {
    let bounding = if capabilities.is_empty() {
        "-all".to_owned()
    } else {
        format!("-all,{capabilities}")
    };
    let out = succeed(
        Command::new("setpriv")
            .args(["--bounding-set", &bounding, "--inh-caps", "-all", BIN])
            .args(["run", "--quiet", "--count", "6", "--interval", "500ms"])
            .arg("--database")
            .arg(db)
            .env("SETMOV_LOG", "info"),
    );
    text(&out.stderr)
}

fn vm_rows_with_figures(db: &Path, uuid: &str) -> i64 {
    rusqlite::Connection::open(db)
        .expect("db")
        .query_row(
            "SELECT COUNT(*) FROM vm_usage WHERE uuid = ?1 AND cpu_pct IS NOT NULL \
             AND rss_bytes IS NOT NULL",
            [uuid],
            |r| r.get(0),
        )
        .expect("count")
}

#[test]
fn the_units_two_capabilities_are_enough_and_each_is_needed() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return skip("running with a reduced capability set needs root");
    }
    let guest = match Guest::start("caps", &Workload::default()) {
        Ok(guest) => guest,
        Err(reason) => return skip(&reason),
    };
    guest
        .wait_for("SETMOV: ready", Duration::from_secs(90))
        .expect("boots");
    let capabilities = unit_capabilities();
    assert_eq!(capabilities, "+bpf,+perfmon");
    let dir = tempfile::tempdir().expect("tempdir");

    let db = dir.path().join("unit.db");
    let log = run_with(&capabilities, &db);
    eprintln!("with {capabilities}:\n{log}");
    assert!(log.contains("eBPF is on: attached"), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    // libvirt, the qemu process's files and procfs need no capability beyond root's uid.
    assert!(vm_rows_with_figures(&db, guest.uuid()) >= 4, "{log}");

    for fewer in ["+bpf", "+perfmon"] {
        let db = dir.path().join(format!("{fewer}.db"));
        let log = run_with(fewer, &db);
        assert!(
            log.contains("eBPF is off: it needs root (CAP_BPF and CAP_PERFMON"),
            "with {fewer} alone: {log}"
        );
        assert!(vm_rows_with_figures(&db, guest.uuid()) >= 4, "{log}");
    }
}

/// The fields of one message in journald's native protocol: `KEY=value` lines, or `KEY`, a
/// little-endian 64-bit length and the raw value for values with newlines.
fn journal_fields(mut datagram: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !datagram.is_empty() {
        let end = datagram.iter().position(|b| *b == b'\n').expect("a line");
        let line = &datagram[..end];
        datagram = &datagram[end + 1..];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.push((text(&line[..eq]), text(&line[eq + 1..])));
        } else {
            let (size, rest) = datagram.split_at(8);
            let size = u64::from_le_bytes(size.try_into().expect("8 bytes")) as usize;
            fields.push((text(line), text(&rest[..size])));
            datagram = &rest[size + 1..];
        }
    }
    fields
}

/// Runs `setmov ARGS` with stderr connected as systemd connects it to the journal, in a mount
/// namespace of its own where journald's folder is `journal_dir` (holding the test's socket):
/// a journald of the machine is neither needed nor disturbed, and nothing is left in /run.
/// Returns its exit status and the messages `journal` received, each as its fields.
fn run_under_journal(
    journal: &UnixDatagram,
    journal_dir: &Path,
    args: &[&str],
) -> (std::process::ExitStatus, Vec<Vec<(String, String)>>) {
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let stat = nix::sys::stat::fstat(&write_end).expect("fstat");
    // A private /run (tmpfs) with the test's folder as /run/systemd/journal, then setmov.
    let script = r#"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal &&
        mount --bind "$1" /run/systemd/journal && shift && exec "$@""#;
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(journal_dir)
        .arg(BIN)
        .args(args)
        .env("SETMOV_CONFIG", setmov_tests::NO_CONFIG)
        .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .env("SETMOV_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::from(write_end)))
        .status()
        .expect("setmov starts");
    drop(read_end);
    // Everything was sent before it exited: collect until the socket is quiet.
    journal
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut messages = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while let Ok(n) = journal.recv(&mut buffer) {
        messages.push(journal_fields(&buffer[..n]));
    }
    (status, messages)
}

fn field(fields: &[(String, String)], key: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// (PRIORITY, MESSAGE) of the message starting with `start`.
fn message(messages: &[Vec<(String, String)>], start: &str) -> (String, String) {
    messages
        .iter()
        .find(|m| field(m, "MESSAGE").starts_with(start))
        .map(|m| (field(m, "PRIORITY"), field(m, "SYSLOG_IDENTIFIER")))
        .unwrap_or_else(|| panic!("no message {start:?} among {messages:?}"))
}

#[test]
fn under_systemd_log_lines_reach_the_journal_with_their_levels() {
    if !is_root() {
        return skip("a mount namespace standing in for journald's folder needs root");
    }
    // The test's journald: a datagram socket named as journald's, in a folder of its own.
    let journal_dir = tempfile::tempdir().expect("tempdir");
    let journal = UnixDatagram::bind(journal_dir.path().join("socket")).expect("bind");

    let tree = fixture("golden/t1").display().to_string();
    let (status, messages) = run_under_journal(
        &journal,
        journal_dir.path(),
        &[
            "run",
            "--count",
            "2",
            "--interval",
            "100ms",
            "--no-ebpf",
            "--no-libvirt",
            "--no-store",
            "--quiet",
            "--host-ip",
            "198.51.100.3",
            "--proc-root",
            &tree,
        ],
    );
    assert!(status.success());
    // info is priority 6, and every message names its program.
    assert_eq!(
        message(&messages, "stopped after 2 ticks"),
        ("6".to_owned(), "setmov".to_owned())
    );
    // A failure is logged as an error (3) rather than printed.
    let (status, messages) = run_under_journal(
        &journal,
        journal_dir.path(),
        &["show", "--database", "/nonexistent/setmov.db"],
    );
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        message(&messages, "no database at /nonexistent/setmov.db"),
        ("3".to_owned(), "setmov".to_owned())
    );
}
