//! The edge of `setmov top`: the terminal, the keyboard, signals and the sampler.
//!
//! The runtime has one thread: the sampler's tasks and this loop share it. The loop only
//! waits on channels (ticks, keys, signals) and draws, which takes well under a millisecond,
//! so sampling is never held up.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;
use ratatui::DefaultTerminal;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::app::{Action, App, Coverage, handle_key};
use super::log::RecentLog;
use super::view;
use crate::host::identity::HostIdentity;
use crate::sampler::{self, Outputs, SamplerConfig, Sources, Stop, Subscriber};
use crate::store::{AnyStore, TickRecord};

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("setmov top draws on a terminal, and its standard output is not one")]
    NotATerminal,
    #[error("cannot use the terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("cannot watch {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: io::Error,
    },
}

/// Shows every tick of the sampler until `q`, Ctrl-C, SIGINT, SIGTERM or SIGHUP. The terminal
/// is restored whatever happens: on return, on error, and on a panic, which ends the process.
pub async fn run(
    config: SamplerConfig,
    identity: HostIdentity,
    sources: Sources,
    coverage: Coverage,
    log: Option<RecentLog>,
) -> Result<(), TopError> {
    let mut signals = Signals::new()?;
    let terminal = TerminalGuard::enter()?;
    let (subscriber, ticks) = Subscriber::new("live view");
    let (interval_tx, interval_rx) = watch::channel(config.interval);
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let app = App::new(coverage, config.interval);
    let outputs = Outputs {
        subscribers: vec![subscriber],
        interval: Some(interval_rx),
        ..Outputs::default()
    };
    let sampler = sampler::run(
        config,
        identity,
        sources,
        None::<AnyStore>,
        outputs,
        stop_rx,
    );
    let view = async move {
        let mut terminal = terminal;
        let result = show(
            &mut terminal.0,
            app,
            ticks,
            interval_tx,
            &mut signals,
            log.as_ref(),
        )
        .await;
        // The terminal is the user's again before the sampler finishes its last tick.
        drop(terminal);
        stop_tx.send_replace(Stop::Finish);
        result
    };
    let (_, result) = tokio::join!(sampler, view);
    result
}

async fn show(
    terminal: &mut DefaultTerminal,
    mut app: App,
    mut ticks: mpsc::Receiver<Arc<TickRecord>>,
    interval: watch::Sender<Duration>,
    signals: &mut Signals,
    log: Option<&RecentLog>,
) -> Result<(), TopError> {
    let mut keys = EventStream::new();
    #[cfg(feature = "test-panic-in-top")]
    let mut panic_in = std::env::var_os("SETMOV_TEST_PANIC_IN_TOP").map(|_| 3u32);
    loop {
        app.set_warning(log.and_then(RecentLog::newest));
        terminal
            .draw(|frame| view::render(&app, frame))
            .map_err(TopError::Terminal)?;
        tokio::select! {
            tick = ticks.recv() => match tick {
                Some(tick) => {
                    app.ingest(tick);
                    #[cfg(feature = "test-panic-in-top")]
                    if let Some(left) = panic_in.as_mut() {
                        *left -= 1;
                        assert!(*left > 0, "a test panic (SETMOV_TEST_PANIC_IN_TOP)");
                    }
                }
                // The sampler stopped.
                None => return Ok(()),
            },
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    match handle_key(&mut app, key) {
                        Action::Continue => {}
                        Action::Quit => return Ok(()),
                        Action::SetInterval(new) => {
                            interval.send_replace(new);
                        }
                    }
                }
                // A resize or anything else: drawn again above.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(TopError::Terminal(e)),
                None => return Ok(()),
            },
            name = signals.next() => {
                tracing::info!("{name}: quitting");
                return Ok(());
            }
        }
    }
}

/// The raw-mode alternate screen, given back to the user on drop.
struct TerminalGuard(DefaultTerminal);

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard, TopError> {
        if !io::stdout().is_terminal() {
            return Err(TopError::NotATerminal);
        }
        // Also installs ratatui's panic hook, which restores the terminal before the panic
        // message is printed.
        let terminal = match ratatui::try_init() {
            Ok(terminal) => terminal,
            Err(e) => {
                if crossterm::terminal::is_raw_mode_enabled().unwrap_or(true) {
                    ratatui::restore();
                }
                return Err(TopError::Terminal(e));
            }
        };
        // A panic anywhere, a sampler task included, has given the terminal back: the view
        // cannot go on drawing, so the process ends.
        let restore_and_report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_and_report(info);
            // ratatui's hook leaves raw mode and the alternate screen but not the hidden
            // cursor the view drew with: show it on the normal screen, as the normal way out
            // does.
            let _ = crossterm::execute!(io::stdout(), crossterm::cursor::Show);
            std::process::exit(101);
        }));
        Ok(TerminalGuard(terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        ratatui::restore();
    }
}

/// The signals that end the view as `q` does.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> Result<Signals, TopError> {
        let watch = |kind, signal_name| {
            signal(kind).map_err(|source| TopError::Signal {
                signal: signal_name,
                source,
            })
        };
        Ok(Signals {
            interrupt: watch(SignalKind::interrupt(), "SIGINT")?,
            terminate: watch(SignalKind::terminate(), "SIGTERM")?,
            hangup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The name of the next signal.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}
