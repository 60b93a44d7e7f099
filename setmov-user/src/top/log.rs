//! Where `setmov top`'s log messages go. The terminal belongs to the view, so never stderr:
//! to a file when one is given, else the warnings and errors are kept here for the view's
//! status line and printed once the terminal is restored.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Messages kept; older ones are dropped.
const KEPT: usize = 20;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the log file {}: {source}", path.display())]
pub struct LogFileError {
    path: PathBuf,
    source: io::Error,
}

/// Installs the global logger for `setmov top`: into `log_file` with `filter` (tracing
/// syntax), else warnings and errors into the returned [`RecentLog`] and nothing else.
pub fn init(filter: &str, log_file: Option<&Path>) -> Result<Option<RecentLog>, LogFileError> {
    let subscriber = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false);
    let Some(path) = log_file else {
        let recent = RecentLog::default();
        subscriber
            .with_env_filter(EnvFilter::new("warn"))
            .without_time()
            .with_writer(recent.clone())
            .init();
        return Ok(Some(recent));
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogFileError {
            path: path.to_owned(),
            source,
        })?;
    subscriber
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(Mutex::new(file))
        .init();
    Ok(None)
}

/// The newest log messages, shared between the tracing subscriber and the view.
#[derive(Debug, Clone, Default)]
pub struct RecentLog {
    messages: Arc<Mutex<VecDeque<String>>>,
}

impl RecentLog {
    fn messages(&self) -> MutexGuard<'_, VecDeque<String>> {
        // A writer that panicked mid-push leaves a usable queue.
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn newest(&self) -> Option<String> {
        self.messages().back().cloned()
    }

    /// Every kept message, oldest first.
    pub fn all(&self) -> Vec<String> {
        self.messages().iter().cloned().collect()
    }

    fn push(&self, message: &str) {
        let message = message.trim();
        if message.is_empty() {
            return;
        }
        let mut messages = self.messages();
        if messages.len() == KEPT {
            messages.pop_front();
        }
        messages.push_back(message.to_owned());
    }
}

/// Receives one formatted event per write (tracing's fmt layer writes each event at once).
pub struct RecentLogWriter(RecentLog);

impl io::Write for RecentLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RecentLog {
    type Writer = RecentLogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RecentLogWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn keeps_the_newest_messages_one_per_event() {
        let log = RecentLog::default();
        for n in 0..KEPT + 3 {
            let mut writer = log.make_writer();
            writer
                .write_all(format!(" WARN message {n}\n").as_bytes())
                .expect("write");
        }
        assert_eq!(log.newest().as_deref(), Some("WARN message 22"));
        let all = log.all();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0], "WARN message 3");
    }
}
