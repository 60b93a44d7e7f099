//! The limits of the exporter's HTTP side and the policy that keeps its connections within
//! them: at most a cap open at once, and when a new one comes at the cap, the one idle the
//! longest is closed to make room (refusing new connections instead would let idle clients
//! fill the listen backlog, and a scraper would wait behind them). What each limit closed is
//! counted, for a warning at most once a minute.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The exporter's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once. Well under the file-descriptor limit: the sampler's /proc
    /// reads, libvirt and the database need descriptors too.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this is closed. hyper's
    /// timer runs from when it waits for a head, so this also bounds how long a keep-alive
    /// connection stays open idle between requests.
    pub header_read_timeout: Duration,
    /// A `/metrics` render that takes longer is answered 503 rather than holding the
    /// connection.
    pub response_budget: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(5),
        response_budget: Duration::from_secs(1),
    };

    /// These limits with at most an eighth of `open_files` (the soft RLIMIT_NOFILE) for
    /// connections, at least one.
    pub fn within_open_files(self, open_files: u64) -> Limits {
        let share = usize::try_from(open_files / 8).unwrap_or(usize::MAX).max(1);
        Limits {
            max_connections: self.max_connections.min(share),
            ..self
        }
    }
}

/// Which connection, in the order they were accepted.
pub type ConnectionId = u64;

/// How many connections each limit closed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Idle connections closed to make room for a new one at the cap.
    pub evicted: u64,
    /// New connections closed at once because every open one had a request in progress.
    pub refused: u64,
    /// Connections closed because no whole request head came within the header-read timeout
    /// (a slow client, or a keep-alive connection left idle).
    pub timed_out: u64,
}

impl Closed {
    fn since(self, earlier: Closed) -> Closed {
        Closed {
            evicted: self.evicted - earlier.evicted,
            refused: self.refused - earlier.refused,
            timed_out: self.timed_out - earlier.timed_out,
        }
    }

    pub fn any(self) -> bool {
        self != Closed::default()
    }
}

struct Open {
    /// Since when no request has been in progress; None while one is.
    idle_since: Option<Instant>,
    /// Tells the connection's task to close the connection.
    close: oneshot::Sender<()>,
}

/// The open connections and the eviction policy; pure (the caller gives the time).
pub struct ConnectionTable {
    max_connections: usize,
    next_id: ConnectionId,
    open: HashMap<ConnectionId, Open>,
    closed: Closed,
    warnings: RateLimit,
    /// The counts at the last warning.
    warned: Closed,
}

impl ConnectionTable {
    pub fn new(max_connections: usize) -> ConnectionTable {
        ConnectionTable {
            max_connections,
            next_id: 0,
            open: HashMap::new(),
            closed: Closed::default(),
            warnings: RateLimit::new(WARNING_PERIOD),
            warned: Closed::default(),
        }
    }

    /// Makes room for a connection accepted at `now` and registers it, idle; the receiver
    /// resolves when the table wants it closed. At the cap, the connection idle the longest
    /// is told to close; when every one is busy, the new one is refused (None).
    pub fn admit(&mut self, now: Instant) -> Option<(ConnectionId, oneshot::Receiver<()>)> {
        if self.open.len() >= self.max_connections {
            let longest_idle = self
                .open
                .iter()
                .filter_map(|(id, open)| open.idle_since.map(|since| (since, *id)))
                .min();
            match longest_idle {
                Some((_, id)) => {
                    if let Some(evicted) = self.open.remove(&id) {
                        // The task may be ending already: then there is nothing to tell.
                        let _ = evicted.close.send(());
                    }
                    self.closed.evicted += 1;
                }
                None => {
                    self.closed.refused += 1;
                    return None;
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let (close, closed) = oneshot::channel();
        self.open.insert(
            id,
            Open {
                idle_since: Some(now),
                close,
            },
        );
        Some((id, closed))
    }

    /// A request on `id` is in progress: it is not evicted until it is answered.
    pub fn busy(&mut self, id: ConnectionId) {
        if let Some(open) = self.open.get_mut(&id) {
            open.idle_since = None;
        }
    }

    /// The request on `id` was answered at `now`.
    pub fn idle(&mut self, id: ConnectionId, now: Instant) {
        if let Some(open) = self.open.get_mut(&id) {
            open.idle_since = Some(now);
        }
    }

    /// `id` closed (by the client, a timeout, or after eviction).
    pub fn remove(&mut self, id: ConnectionId) {
        self.open.remove(&id);
    }

    /// `id` closed by the header-read timeout.
    pub fn timed_out(&mut self, id: ConnectionId) {
        self.remove(id);
        self.closed.timed_out += 1;
    }

    pub fn open(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub fn closed(&self) -> Closed {
        self.closed
    }

    /// What was closed since the last warning, when there is something and the last warning
    /// is at least a minute before `now` (the caller also asks every minute, so that what
    /// was held back is told).
    pub fn warning_due(&mut self, now: Instant) -> Option<Closed> {
        let new = self.closed.since(self.warned);
        if !new.any() || !self.warnings.ready(now) {
            return None;
        }
        self.warned = self.closed;
        Some(new)
    }
}

/// How often a repeated warning is logged at most.
pub const WARNING_PERIOD: Duration = Duration::from_secs(60);

/// Lets an event through at most once a period.
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(period: Duration) -> RateLimit {
        RateLimit { period, last: None }
    }

    /// Whether an event at `now` goes through (then the period starts again).
    pub fn ready(&mut self, now: Instant) -> bool {
        let ready = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.period);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn at_the_cap_the_connection_idle_the_longest_makes_room() {
        let start = Instant::now();
        let mut table = ConnectionTable::new(3);
        let (a, mut a_closed) = table.admit(at(start, 0)).expect("a");
        let (b, mut b_closed) = table.admit(at(start, 1)).expect("b");
        let (c, mut c_closed) = table.admit(at(start, 2)).expect("c");
        // a is answered after b was accepted: b is now the one idle the longest.
        table.busy(a);
        table.idle(a, at(start, 5));
        let (d, _) = table.admit(at(start, 6)).expect("d");
        assert_eq!(table.open(), 3);
        assert_eq!(b_closed.try_recv(), Ok(()), "b is told to close");
        assert_eq!(
            a_closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        // A request in progress keeps its connection: c is busy, so a goes next.
        table.busy(c);
        table.admit(at(start, 7)).expect("e");
        assert_eq!(a_closed.try_recv(), Ok(()));
        assert_eq!(
            c_closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(
            table.closed(),
            Closed {
                evicted: 2,
                ..Closed::default()
            }
        );
        assert!(d > c && b > a, "ids in the order of acceptance");
    }

    #[test]
    fn with_every_connection_busy_a_new_one_is_refused() {
        let now = Instant::now();
        let mut table = ConnectionTable::new(2);
        let (a, _a) = table.admit(now).expect("a");
        let (b, _b) = table.admit(now).expect("b");
        table.busy(a);
        table.busy(b);
        assert!(table.admit(now).is_none());
        assert_eq!(table.open(), 2);
        // One answered, one closed by the client: room again without evicting anything.
        table.idle(a, now);
        table.remove(b);
        assert!(table.admit(now).is_some());
        assert_eq!(
            table.closed(),
            Closed {
                refused: 1,
                ..Closed::default()
            }
        );
    }

    #[test]
    fn warnings_come_at_most_once_a_minute_with_what_was_closed_since() {
        let start = Instant::now();
        let mut table = ConnectionTable::new(1);
        assert_eq!(table.warning_due(start), None, "nothing closed yet");
        let (a, _) = table.admit(start).expect("a");
        table.timed_out(a);
        assert_eq!(
            table.warning_due(start),
            Some(Closed {
                timed_out: 1,
                ..Closed::default()
            })
        );
        table.admit(at(start, 10)).expect("b");
        table.admit(at(start, 20)).expect("c evicts b");
        assert_eq!(table.warning_due(at(start, 30)), None, "within the minute");
        assert_eq!(
            table.warning_due(at(start, 60_000)),
            Some(Closed {
                evicted: 1,
                ..Closed::default()
            }),
            "the eviction held back, not the timeout already told"
        );
        assert_eq!(
            table.closed(),
            Closed {
                evicted: 1,
                refused: 0,
                timed_out: 1
            }
        );
    }

    #[test]
    fn the_cap_stays_well_under_the_open_files_limit() {
        let limits = Limits::DEFAULT;
        assert_eq!(limits.within_open_files(1024).max_connections, 64);
        assert_eq!(limits.within_open_files(256).max_connections, 32);
        assert_eq!(limits.within_open_files(3).max_connections, 1);
        assert_eq!(limits.within_open_files(u64::MAX).max_connections, 64);
    }
}
