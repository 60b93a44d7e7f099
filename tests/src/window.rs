//! One window of the live host tests, the same for SETMOV and for the reference tools.
//!
//! The window: `setmov run` at 1 s is started first; the test waits until just after one of
//! its ticks and starts the reference tools there, each for one report of `WINDOW_SECS`. The
//! monitor's ticks stored for the next `WINDOW_SECS` seconds cover the same window but for the
//! tools' start-up (tens of ms at each end), so background activity (other tests, builds)
//! counts on both sides and the rates agree over the window, not only the load's totals.
//! Every figure is read back from the database and summed as Σ figure × Δt; a figure that must
//! exist and is NULL on any tick fails the test.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::wait_until;

/// The reference tools' one report covers this long; the load takes a few seconds of it.
pub const WINDOW_SECS: u64 = 12;

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Sleeps until `unix` (Unix seconds), if that is still to come.
pub fn sleep_until(unix: f64) {
    let left = unix - unix_now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

/// A stored time (ISO 8601 text, UTC) as Unix seconds, in SQL.
fn unix_secs(alias: &str) -> String {
    format!("((julianday({alias}.time) - 2440587.5) * 86400.0)")
}

/// The monitor's ticks `WINDOW_SECS` after the tick at `start` (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: f64,
}

impl Window {
    /// Waits until `table` holds two ticks, then until 3 ms after the monitor's next tick (its
    /// reading takes well under a millisecond): the reference tools start there, and read
    /// their first values within a few ms. Those ms at each end are all the windows differ
    /// by; a burst of background I/O of 1 GB/s would move 1 % of it across them.
    pub fn after_next_tick(db: &Path, table: &str) -> Window {
        let conn = rusqlite::Connection::open(db).expect("db");
        let sql = format!("SELECT COUNT(*), MAX({}) FROM {table} t", unix_secs("t"));
        let mut last = None;
        wait_until("the monitor's first ticks", || {
            let (ticks, time): (i64, Option<f64>) = conn
                .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap_or((0, None));
            last = time.filter(|_| ticks >= 2);
            last.is_some()
        });
        let mut start = last.expect("a tick");
        while start < unix_now() + 0.2 {
            start += 1.0;
        }
        sleep_until(start + 0.003);
        Window { start }
    }

    /// The window's end, in Unix seconds.
    pub fn end(&self) -> f64 {
        self.start + WINDOW_SECS as f64
    }

    /// Whether a row's tick (of table `alias`) closes an interval inside the window.
    pub fn holds(&self, alias: &str) -> String {
        format!(
            "{} BETWEEN {} AND {}",
            unix_secs(alias),
            self.start + 0.5,
            self.end() + 0.5
        )
    }

    /// Whether a row's tick (of table `alias`) closes an interval inside the window or opens
    /// the first (the tick at its start), and that tick's instant in Unix seconds.
    pub fn holds_from_opening(&self, alias: &str) -> (String, String) {
        let at = unix_secs(alias);
        let holds = format!("{at} BETWEEN {} AND {}", self.start - 0.5, self.end() + 0.5);
        (holds, at)
    }

    /// Σ figure × Δt over the window's ticks, for the rows of `from` that match `filter`
    /// (`clock`: the alias of the table whose `time` and `interval_s` count). Every figure must
    /// be non-NULL on every row (SUM would skip a NULL and so hide it) and the rows' Δt must
    /// add up to the window (no tick missing).
    pub fn sums(
        &self,
        db: &Path,
        from: &str,
        clock: &str,
        filter: &str,
        figures: &[&str],
    ) -> Vec<f64> {
        self.sums_of(db, from, clock, filter, figures, true)
    }

    /// [`Window::sums`] over rows that only some ticks have (a latency row exists only when a
    /// request completed): no tick is required.
    pub fn sparse_sums(
        &self,
        db: &Path,
        from: &str,
        clock: &str,
        filter: &str,
        figures: &[&str],
    ) -> Vec<f64> {
        self.sums_of(db, from, clock, filter, figures, false)
    }

    fn sums_of(
        &self,
        db: &Path,
        from: &str,
        clock: &str,
        filter: &str,
        figures: &[&str],
        every_tick: bool,
    ) -> Vec<f64> {
        let conn = rusqlite::Connection::open(db).expect("db");
        let sums: Vec<String> = figures
            .iter()
            .map(|f| format!("TOTAL(({f}) * {clock}.interval_s)"))
            .chain(figures.iter().map(|f| format!("TOTAL(({f}) IS NULL)")))
            .collect();
        let sql = format!(
            "SELECT TOTAL({clock}.interval_s), {} FROM {from} WHERE {} AND ({filter})",
            sums.join(", "),
            self.holds(clock)
        );
        let row: Vec<f64> = conn
            .query_row(&sql, [], |r| {
                (0..=2 * figures.len()).map(|i| r.get(i)).collect()
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let covered = row[0];
        assert!(
            !every_tick || (covered - WINDOW_SECS as f64).abs() <= 0.15,
            "the stored ticks of {filter} cover {covered} s of the {WINDOW_SECS} s window"
        );
        for (figure, nulls) in figures.iter().zip(&row[1 + figures.len()..]) {
            assert!(
                *nulls == 0.0,
                "{figure} is NULL on {nulls} ticks ({filter})"
            );
        }
        row[1..=figures.len()].to_vec()
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpftrace's `nsecs` (bpf_ktime_get_ns).
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    u64::try_from(now.tv_sec()).expect("seconds") * 1_000_000_000
        + u64::try_from(now.tv_nsec()).expect("nanoseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: f64 = 1_800_000_000.0;

    /// A database whose table `ticks` has one row a second, closing 1 s intervals, from
    /// `START - 3` to `START + WINDOW_SECS + 3`, with `figure` = `figure_at(second)`.
    fn ticks(figure_at: impl Fn(i64) -> Option<f64>) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let conn = rusqlite::Connection::open(file.path()).expect("db");
        conn.execute(
            "CREATE TABLE ticks (time TEXT, interval_s REAL, figure REAL)",
            [],
        )
        .expect("table");
        for second in -3..=WINDOW_SECS as i64 + 3 {
            let at = START as i64 + second;
            conn.execute(
                "INSERT INTO ticks VALUES \
                 (strftime('%Y-%m-%dT%H:%M:%SZ', ?1, 'unixepoch'), 1.0, ?2)",
                rusqlite::params![at, figure_at(second)],
            )
            .expect("row");
        }
        file
    }

    #[test]
    fn the_window_sums_the_ticks_that_close_its_intervals() {
        let db = ticks(|second| Some(second as f64));
        let window = Window { start: START };
        let ours = window.sums(db.path(), "ticks t", "t", "1", &["t.figure", "1"]);
        // Seconds 1 to 12 close the window's intervals: Σ 1..=12 = 78, 12 s covered.
        assert_eq!(ours, [78.0, WINDOW_SECS as f64]);
    }

    #[test]
    #[should_panic(expected = "t.figure is NULL on 1 ticks")]
    fn a_null_figure_in_the_window_fails() {
        let db = ticks(|second| (second != 5).then_some(1.0));
        Window { start: START }.sums(db.path(), "ticks t", "t", "1", &["t.figure"]);
    }

    #[test]
    #[should_panic(expected = "cover 11 s of the 12 s window")]
    fn a_missing_tick_fails_unless_the_rows_are_sparse() {
        let db = ticks(|second| Some(second as f64));
        let window = Window { start: START };
        let odd = "t.figure != 7";
        assert_eq!(
            window.sparse_sums(db.path(), "ticks t", "t", odd, &["t.figure"]),
            [71.0]
        );
        window.sums(db.path(), "ticks t", "t", odd, &["t.figure"]);
    }
}
