//! Progress of long operations (migrations, spool replay, experiments, big reports): a bar on a
//! terminal, plain log lines otherwise (a pipe, a file, the journal).
//!
//! Every bar is drawn through one [`MultiProgress`], and log lines and summary lines are
//! written through [`suspend`], so they never cut through a bar.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Log mode: at most one line per this much time between the first and the last.
const LOG_EVERY: Duration = Duration::from_secs(10);

static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Runs `write` with the bars taken off the terminal, so that its output starts on a clean line.
pub fn suspend<R>(write: impl FnOnce() -> R) -> R {
    BARS.suspend(write)
}

/// A `tracing` writer for stderr that goes around the bars.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| std::io::stderr().write_all(buf)).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One long operation.
pub struct Progress {
    what: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_logged: Instant,
    /// `None` in log mode.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// An operation of `total` steps: a bar on a terminal.
    pub fn steps(what: &str, total: u64) -> Progress {
        Progress::start(what, Some(total), display())
    }

    /// An operation of unknown length: a spinner with the time spent on a terminal.
    pub fn spinner(what: &str) -> Progress {
        Progress::start(what, None, display())
    }

    fn start(what: &str, total: Option<u64>, display: Display) -> Progress {
        let shared = matches!(display, Display::Terminal);
        let target = match display {
            Display::Log => None,
            Display::Terminal => Some(ProgressDrawTarget::hidden()),
            #[cfg(test)]
            Display::Custom(target) => Some(target),
        };
        let bar = target.map(|target| {
            let bar = match total {
                Some(total) => ProgressBar::with_draw_target(Some(total), target).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} {elapsed} (ETA {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::with_draw_target(None, target).with_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            // Drawn through the shared set, so that log lines go around it.
            let bar = if shared { BARS.add(bar) } else { bar };
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            match total {
                Some(total) => tracing::info!("{what}: 0/{total}"),
                None => tracing::info!("{what} ..."),
            }
        }
        let now = Instant::now();
        Progress {
            what: what.to_owned(),
            total,
            done: 0,
            started: now,
            last_logged: now,
            bar,
        }
    }

    /// What is being done now (shown beside the bar, or in the next log line).
    pub fn set_step(&mut self, step: &str) {
        self.what = step.to_owned();
        match &self.bar {
            Some(bar) => bar.set_message(step.to_owned()),
            None => tracing::info!("{step}"),
        }
    }

    /// `steps` more are done.
    pub fn advance(&mut self, steps: u64) {
        self.done += steps;
        match &self.bar {
            Some(bar) => bar.inc(steps),
            None if self.last_logged.elapsed() >= LOG_EVERY => {
                self.last_logged = Instant::now();
                match self.total {
                    Some(total) => tracing::info!("{}: {}/{total}", self.what, self.done),
                    None => tracing::info!("{}: {} done", self.what, self.done),
                }
            }
            None => {}
        }
    }

    /// Ends the operation; `outcome` stays as a log line either way.
    pub fn finish(self, outcome: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            BARS.remove(bar);
        }
        tracing::info!(
            "{outcome} ({})",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
            ))
        );
    }
}

impl Drop for Progress {
    /// An operation abandoned by an error takes its bar away with it.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            BARS.remove(&bar);
        }
    }
}

/// How progress is shown.
enum Display {
    /// Log lines.
    Log,
    /// A bar on stderr, a terminal.
    Terminal,
    /// A bar drawn elsewhere (tests).
    #[cfg(test)]
    Custom(ProgressDrawTarget),
}

/// A bar when stderr is a terminal; the journal, pipes and files get log lines.
fn display() -> Display {
    if std::io::stderr().is_terminal() {
        Display::Terminal
    } else {
        Display::Log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what is logged while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn without_a_terminal_progress_is_a_few_log_lines() {
        let log = logged(|| {
            let mut p = Progress::start("replaying the spool", Some(3), Display::Log);
            p.advance(1);
            p.advance(2);
            p.finish("replayed 3 ticks");
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines[0], " INFO replaying the spool: 0/3");
        assert!(lines[1].starts_with(" INFO replayed 3 ticks ("), "{log}");
        assert_eq!(lines.len(), 2, "quick steps are not each logged: {log}");
    }

    #[test]
    fn on_a_terminal_it_is_a_bar_with_its_message() {
        let term = indicatif::InMemoryTerm::new(4, 100);
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let mut p = Progress::start("applying migrations", Some(4), Display::Custom(target));
        p.advance(2);
        if let Some(bar) = &p.bar {
            bar.force_draw();
        }
        let screen = term.contents();
        assert!(
            screen.starts_with("applying migrations [===============>") && screen.contains("2/4"),
            "{screen:?}"
        );
        p.finish("applied 4 migrations");
        assert_eq!(term.contents().trim(), "", "the bar is cleared");
    }
}
