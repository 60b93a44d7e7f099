//! Where log lines go: stderr on a terminal or into a pipe, and the journal (with each line's
//! level as its priority) when SETMOV runs as a systemd service.

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where [`init`] sends log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Journal,
}

/// Installs the global logger with `filter` (tracing syntax; `info` when it does not parse).
pub fn init(filter: &str) -> LogTarget {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_the_journal() {
        // Without journald's socket, stderr still reaches the journal, as plain lines.
        if let Ok(journal) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    journal
                        .with_syslog_identifier("setmov".to_owned())
                        .with_priority_mappings(syslog_priorities()),
                )
                .init();
            return LogTarget::Journal;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress::Stderr)
        .with_target(false)
        .init();
    LogTarget::Stderr
}

/// syslog's meaning of each level (tracing-journald's default shifts info to "notice", which
/// would drown real notices in routine lines).
fn syslog_priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// systemd sets `JOURNAL_STREAM=<device>:<inode>` to the stream it connects stderr to; it
/// counts only while stderr is still that stream (a shell may have redirected it since).
fn stderr_is_the_journal() -> bool {
    let Some((device, inode)) = std::env::var("JOURNAL_STREAM")
        .ok()
        .as_deref()
        .and_then(parse_journal_stream)
    else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr())
        .is_ok_and(|stat| stat.st_dev == device && stat.st_ino == inode)
}

/// The device and inode of a `JOURNAL_STREAM` value.
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_journal_stream("8-123456"), None);
        assert_eq!(parse_journal_stream(":1"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
    }
}
