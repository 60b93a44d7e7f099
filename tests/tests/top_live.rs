//! `setmov top` as a user sees it: the real binary in a real terminal (tmux), watching a real
//! TCG guest, driven by keys. Without tmux, or for the guest test without the test guests
//! (`cargo xtask guests up` or `cargo xtask test`), these tests skip loudly (and fail under
//! SETMOV_REQUIRE_ALL=1).

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use setmov_tests::guests::{Guest, Workload};
use setmov_tests::skip;

const BOOT: Duration = Duration::from_secs(90);
/// How long the view may take to show what a key or a tick should change.
const SHOWN: Duration = Duration::from_secs(20);

/// A tmux server of this test's own (its own socket: a user's tmux is never touched) running
/// one 200×50 pane; killed on drop. The pane stays after its program exits, so that its exit
/// status and screen can be checked.
struct Pane {
    socket: String,
    /// The pane's process: setmov itself.
    pid: String,
    _config: tempfile::NamedTempFile,
}

impl Pane {
    /// `None` (after a loud skip) when tmux is not installed.
    fn start(args: &str) -> Option<Pane> {
        Pane::start_with("", args)
    }

    /// [`Pane::start`] with `environment` (`NAME=value ...`) set for setmov.
    fn start_with(environment: &str, args: &str) -> Option<Pane> {
        if Command::new("tmux").arg("-V").output().is_err() {
            skip("tmux is not installed (`cargo xtask setup` installs it)");
            return None;
        }
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "setmov-top-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let mut config = tempfile::NamedTempFile::new().expect("tmux config");
        config
            .write_all(b"set -g remain-on-exit on\nset -g status off\n")
            .expect("write the tmux config");
        // `exec`, so that the pane's process is setmov itself and gets the signals sent to it.
        let command = format!(
            "SETMOV_CONFIG={} {environment} exec {} {args}",
            setmov_tests::NO_CONFIG,
            env!("CARGO_BIN_EXE_setmov-cli")
        );
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f"])
            .arg(config.path())
            .args(["new-session", "-d", "-x", "200", "-y", "50", "-s", "top"])
            .arg(&command)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed: {status}");
        let mut pane = Pane {
            socket,
            pid: String::new(),
            _config: config,
        };
        pane.pid = pane.status("#{pane_pid}");
        Some(pane)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    /// The screen with the lines scrolled off it, wrapped lines joined. (tmux scrolls the
    /// screen by one line to say "Pane is dead".)
    fn screen_and_history(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "top"])
    }

    /// A tmux format of the pane, e.g. `#{pane_dead_status}`.
    fn status(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "top", format])
            .trim()
            .to_owned()
    }

    /// Keys by tmux name (`Enter`, `Escape`) or single characters.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "top", "-l", text]);
    }

    /// Waits until the screen shows `what` (checked by `shown`); returns that screen. Only a
    /// screen that stays the same for a moment counts: a capture can catch a frame half drawn.
    fn wait_for(&self, what: &str, shown: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if shown(&screen) {
                std::thread::sleep(Duration::from_millis(50));
                if self.screen() == screen {
                    return screen;
                }
                continue;
            }
            assert!(
                start.elapsed() < SHOWN,
                "the view did not show {what} within {SHOWN:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the program to end; returns its exit status (`signal N` when killed).
    fn wait_exit(&self) -> String {
        let start = Instant::now();
        loop {
            // Dead: tmux read the terminal to its end, so the screen is final.
            if self.status("#{pane_dead}") == "1" {
                let status = self.status("#{pane_dead_status}");
                if !status.is_empty() {
                    return status;
                }
                // tmux here often misses the exit (SIGCHLD) and leaves the process unreaped,
                // even `sleep` killed by a signal; its status is in /proc meanwhile.
                if let Some(status) = unreaped_exit_status(&self.pid) {
                    return status;
                }
            }
            assert!(
                start.elapsed() < SHOWN,
                "setmov top did not exit; it shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// After exit: the alternate screen was left and the view's screen is gone (the pane
    /// shows its empty normal screen, or tmux's "Pane is dead").
    fn assert_terminal_restored(&self) {
        assert_eq!(
            self.status("#{alternate_on}"),
            "0",
            "still in the alternate screen"
        );
        let screen = self.screen();
        assert!(
            !screen.contains("setmov top")
                && screen
                    .lines()
                    .all(|l| l.is_empty() || l.starts_with("Pane is dead")),
            "the view's screen is still there:\n{screen}"
        );
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The exit status of a process that has exited but not been reaped: field 52 of its
/// `/proc/PID/stat`, in waitpid's form.
fn unreaped_exit_status(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields from the third (the state) on, after the command name in parentheses.
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    let code: i32 = fields.get(52 - 3)?.parse().ok()?;
    Some(match code & 0x7f {
        0 => (code >> 8).to_string(),
        signal => format!("signal {signal}"),
    })
}

/// The number after `tick ` on the header line.
fn tick_number(screen: &str) -> u64 {
    screen
        .lines()
        .next()
        .and_then(|l| l.split_once("tick "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tick number in:\n{screen}"))
}

/// The cells of the table row of `name` (the selection marker left out).
fn row_of<'a>(screen: &'a str, name: &str) -> Option<Vec<&'a str>> {
    screen
        .lines()
        .find(|l| {
            l.trim_start_matches(['>', ' '])
                .starts_with(&format!("{name} "))
        })
        .map(|l| {
            l.trim_start_matches(['>', ' '])
                .split_whitespace()
                .collect()
        })
}

/// The column headers of the table.
fn headers(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .find(|l| l.contains("NAME"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

/// N of `PAUSED (+N ticks)`.
fn ticks_while_paused(screen: &str) -> Option<u64> {
    let (_, rest) = screen.split_once("PAUSED (+")?;
    rest.split_once(' ')?.0.parse().ok()
}

/// Lines of the table between its header and the first empty line.
fn table_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.contains("NAME"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// The CPU% cell (third, after name and state) of the guest's row, once it is a figure.
fn cpu_figure(screen: &str, name: &str) -> Option<f64> {
    row_of(screen, name)?.get(2)?.parse().ok()
}

#[test]
fn top_shows_a_burning_guest_and_obeys_its_keys() {
    let guest = match Guest::start(
        "top-burn",
        &Workload {
            burn_secs: -1,
            ..Workload::default()
        },
    ) {
        Ok(guest) => guest,
        Err(reason) => {
            skip(&reason);
            return;
        }
    };
    guest
        .wait_for("SETMOV: burn-start", BOOT)
        .expect("burn starts");
    let Some(pane) = Pane::start("top --interval 500ms --no-ebpf") else {
        return;
    };
    let name = guest.name();

    // The guest with a CPU figure: one busy vCPU of the host's cores.
    let screen = pane.wait_for("the guest's CPU figure", |s| {
        cpu_figure(s, name).is_some_and(|cpu| cpu > 10.0)
    });
    let header = screen.lines().next().unwrap_or_default();
    assert!(
        header.contains("every 500ms") && header.contains("eBPF off"),
        "{header}"
    );
    assert!(
        headers(&screen).contains(&"CPU%▼"),
        "sorted by CPU at start:\n{screen}"
    );
    // No eBPF: latency and KVM events are marked, never 0, and the footer says why.
    let row = row_of(&screen, name).expect("the guest's row");
    assert_eq!(row.iter().filter(|c| **c == "n/a").count(), 2, "{row:?}");
    assert!(screen.contains("IO P99, KVM/s n/a: eBPF is off: --no-ebpf given"));

    // s: sorted by the next column.
    pane.keys(&["s"]);
    pane.wait_for("the sort on VCPU%", |s| {
        let headers = headers(s);
        headers.contains(&"VCPU%▼") && headers.contains(&"CPU%")
    });

    // /NAME Enter: only the guest.
    pane.keys(&["/"]);
    pane.type_text(name);
    pane.wait_for("the filter being typed", |s| {
        s.contains(&format!("filter: {name}"))
    });
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("the filter applied", |s| {
        s.lines()
            .next()
            .is_some_and(|l| l.contains(&format!("filter \"{name}\"")))
    });
    let rows = table_rows(&screen);
    assert_eq!(rows.len(), 1, "{screen}");
    assert!(rows[0].contains(name), "{screen}");

    // p: the display stays on one tick while ticks go on arriving.
    pane.keys(&["p"]);
    let paused = pane.wait_for("PAUSED", |s| s.contains("PAUSED"));
    std::thread::sleep(Duration::from_millis(1_600));
    let later = pane.wait_for("ticks counted while paused", |s| {
        ticks_while_paused(s).is_some_and(|n| n >= 2)
    });
    assert_eq!(tick_number(&later), tick_number(&paused), "{later}");
    assert_eq!(
        row_of(&later, name),
        row_of(&paused, name),
        "the figures changed while paused"
    );

    // +: the sampler now ticks every second (slots count from start: 2 a second before).
    pane.keys(&["+"]);
    pane.wait_for("the new interval", |s| {
        s.lines().next().is_some_and(|l| l.contains("every 1s"))
    });
    pane.keys(&["p"]);
    let resumed = pane.wait_for("the display going on", |s| {
        !s.contains("PAUSED") && tick_number(s) > tick_number(&paused)
    });
    std::thread::sleep(Duration::from_millis(4_000));
    let now = pane.wait_for("a whole frame", |_| true);
    let four_seconds_on = tick_number(&now) - tick_number(&resumed);
    assert!(
        (2..=5).contains(&four_seconds_on),
        "{four_seconds_on} ticks in 4 s at 1 s"
    );

    // Enter: the detail of the selected (only) VM, with its history.
    pane.keys(&["Enter"]);
    let detail = pane.wait_for("the detail pane", |s| {
        s.contains(guest.uuid())
            && s.contains("CPU % per vCPU: now")
            && s.contains("IO p99 latency: n/a (eBPF is off: --no-ebpf given)")
    });
    assert!(!detail.contains("NAME"), "{detail}");

    // Esc: back to the table.
    pane.keys(&["Escape"]);
    pane.wait_for("the table again", |s| {
        s.contains("NAME") && !s.contains(guest.uuid())
    });

    // q: exits 0 and gives the terminal back.
    pane.keys(&["q"]);
    assert_eq!(pane.wait_exit(), "0", "exit status of setmov top");
    pane.assert_terminal_restored();
}

#[test]
fn sigterm_ends_top_and_restores_the_terminal() {
    let Some(pane) = Pane::start("top --interval 200ms --no-ebpf --no-libvirt") else {
        return;
    };
    let screen = pane.wait_for("a host tick", |s| s.contains("tick ") && s.contains("CPU "));
    assert!(
        screen.contains("VM table n/a: --no-libvirt given") && screen.contains("VMs n/a"),
        "{screen}"
    );
    assert_eq!(pane.status("#{alternate_on}"), "1");
    let pid = pane.status("#{pane_pid}");
    let kill = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(kill.is_ok_and(|s| s.success()), "cannot signal setmov top");
    assert_eq!(pane.wait_exit(), "0", "exit status after SIGTERM");
    pane.assert_terminal_restored();
}

/// A panic while the view runs (here the test-only trigger of the `test-panic-in-top` feature,
/// on its third tick) gives the terminal back and ends the process with 101: under `script`,
/// which records every byte written to the terminal, the alternate screen is left and the
/// cursor shown again after the view last hid it, and the panic message reaches the user.
#[test]
fn a_panic_in_top_gives_the_terminal_back_and_exits_101() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typescript = dir.path().join("typescript");
    let command = format!(
        "SETMOV_CONFIG={} SETMOV_TEST_PANIC_IN_TOP=1 exec {} top --interval 200ms --no-ebpf \
         --no-libvirt",
        setmov_tests::NO_CONFIG,
        env!("CARGO_BIN_EXE_setmov-cli")
    );
    // Its input stays open (a pipe nobody writes) until it ends.
    let mut script = match Command::new("script")
        .args(["--quiet", "--return", "--flush", "--command", &command])
        .arg(&typescript)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        Ok(script) => script,
        Err(e) => return skip(&format!("cannot run script (util-linux): {e}")),
    };
    let status = script.wait().expect("script");
    assert_eq!(status.code(), Some(101), "exit status after a panic");
    let bytes = std::fs::read(&typescript).expect("typescript");
    let last = |sequence: &[u8]| bytes.windows(sequence.len()).rposition(|w| w == sequence);
    let (entered, left) = (last(b"\x1b[?1049h"), last(b"\x1b[?1049l"));
    let (hidden, shown) = (last(b"\x1b[?25l"), last(b"\x1b[?25h"));
    assert!(
        entered.is_some() && left > entered,
        "the alternate screen was not left: {entered:?} {left:?}"
    );
    assert!(
        hidden.is_some() && shown > hidden,
        "the cursor stays hidden: hidden at {hidden:?}, shown at {shown:?}"
    );
    let text = String::from_utf8_lossy(&bytes);
    let message = text.find("a test panic (SETMOV_TEST_PANIC_IN_TOP)");
    assert!(
        message.is_some_and(|at| left.is_some_and(|l| at > l)),
        "the panic message, after the view was left:\n{text}"
    );
}

#[test]
fn log_messages_go_to_the_bottom_line_and_after_exit_never_over_the_view() {
    let Some(pane) = Pane::start(
        "top --interval 200ms --no-ebpf --libvirt-uri qemu+unix:///system?socket=/nonexistent",
    ) else {
        return;
    };
    let warning = "WARN cannot connect to libvirt at qemu+unix:///system?socket=/nonexistent";
    let screen = pane.wait_for("the warning", |s| {
        s.lines().last().is_some_and(|l| l.starts_with(warning))
    });
    assert_eq!(screen.matches("WARN").count(), 1, "{screen}");
    assert!(
        screen.contains("libvirt does not answer: no VMs to show yet") && screen.contains("VMs –"),
        "{screen}"
    );
    pane.keys(&["q"]);
    assert_eq!(pane.wait_exit(), "0", "exit status of setmov top");
    let after = pane.screen_and_history();
    assert!(
        after.contains(&format!("setmov top: {warning}")),
        "the warning is not repeated after exit:\n{after}"
    );
    assert_eq!(pane.status("#{alternate_on}"), "0");
}

#[test]
fn without_a_terminal_top_says_so_and_exits_2() {
    let out = setmov_tests::setmov_command(env!("CARGO_BIN_EXE_setmov-cli"))
        .args(["top", "--no-ebpf", "--no-libvirt"])
        .output()
        .expect("setmov starts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("setmov top draws on a terminal, and its standard output is not one"),
        "{err}"
    );
    // Nothing was sent to the terminal it does not have.
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
}
