//! The values options take beside plain numbers and paths: intervals, ages, row levels and sizes.
//!
//! Each is range-checked here, when the command line or the configuration file is parsed, so
//! that no command meets a value its date or size arithmetic cannot hold: a value out of range
//! is a usage error (exit 2) naming the bound.

use std::time::Duration;

/// Shortest interval accepted: below it a tick costs more than it tells.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest interval accepted: a monitor that samples less than daily sees nothing.
const MAX_INTERVAL: Duration = Duration::from_secs(DAY);

/// Longest age or retention accepted: older than any stored tick, and far from where date
/// arithmetic overflows (the year 9999).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(100 * YEAR);
/// Shortest retention accepted: the per-hour rollups are computed from the raw ticks of the
/// hour before, so these must outlive it.
const MIN_RETENTION: Duration = Duration::from_secs(2 * HOUR);

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// A year as humantime counts it (`1y` is 365.25 days), so that `100y` is within 100 years.
const YEAR: u64 = 31_557_600;

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const TIB: u64 = 1 << 40;

/// `1s`, `100ms`, `5m`: at least [`MIN_INTERVAL`], at most [`MAX_INTERVAL`].
pub(super) fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 1s or 100ms)"))?;
    within(d, MIN_INTERVAL, MAX_INTERVAL)
}

/// How long rows are kept: a duration, or for ever (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<Duration>);

/// A retention: `14d`, `12h`, or `forever`; at least [`MIN_RETENTION`], at most [`MAX_AGE`].
pub(super) fn parse_retention(text: &str) -> Result<Age, String> {
    if text == "forever" {
        return Ok(Age(None));
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not an age such as 14d, 12h or forever: {e}"))?;
    within(d, MIN_RETENTION, MAX_AGE).map(|d| Age(Some(d)))
}

/// The start of a window, as an age back from now: `2h`, `7d`; more than zero, at most
/// [`MAX_AGE`].
pub(super) fn parse_since(text: &str) -> Result<Duration, String> {
    let d = parse_age(text)?;
    if d.is_zero() {
        return Err("must reach back further than now (e.g. 1h or 7d)".to_owned());
    }
    Ok(d)
}

/// The end of a window, as an age back from now (`0s` is now); at most [`MAX_AGE`].
pub(super) fn parse_until(text: &str) -> Result<Duration, String> {
    parse_age(text)
}

fn parse_age(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not an age such as 2h, 7d or 30d: {e}"))?;
    within(d, Duration::ZERO, MAX_AGE)
}

/// `d` when `min <= d <= max`, else the bound it crosses, in words.
fn within(d: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if d < min {
        Err(format!("must be at least {}", duration_words(min)))
    } else if d > max {
        Err(format!("at most {}", duration_words(max)))
    } else {
        Ok(d)
    }
}

/// A bound as a reader says it: `100 years`, `1 day`, `2 hours`, `10ms`.
fn duration_words(d: Duration) -> String {
    let secs = d.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if d.subsec_nanos() != 0 || secs == 0 {
        humantime::format_duration(d).to_string()
    } else if secs.is_multiple_of(YEAR) {
        plural(secs / YEAR, "year")
    } else if secs.is_multiple_of(DAY) {
        plural(secs / DAY, "day")
    } else if secs.is_multiple_of(HOUR) {
        plural(secs / HOUR, "hour")
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Which stored rows to read: raw ticks, or per-minute or per-hour rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowLevel {
    Raw,
    Minute,
    Hour,
}

/// A parser of sizes (see [`parse_size`]) from `min` to `max` bytes, for clap.
pub(super) fn size_within(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let size = parse_size(text)?;
        if size < min {
            Err(format!("must be at least {}", size_words(min)))
        } else if size > max {
            Err(format!("at most {}", size_words(max)))
        } else {
            Ok(size)
        }
    }
}

/// A bound in the largest binary unit that divides it: `1MiB`, `16TiB`, `0B`.
fn size_words(bytes: u64) -> String {
    [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)]
        .into_iter()
        .find(|&(_, shift)| bytes != 0 && bytes.trailing_zeros() >= shift)
        .map_or_else(
            || format!("{bytes}B"),
            |(unit, shift)| format!("{}{unit}", bytes >> shift),
        )
}

/// `512MiB`, `2GiB`, `1000000` (bytes).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512MiB or 2GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn intervals_parse_with_units_a_floor_and_a_ceiling() {
        assert_eq!(parse_interval("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1ms"), Err("must be at least 10ms".into()));
        assert_eq!(parse_interval("2d"), Err("at most 1 day".into()));
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("-1s").is_err());
    }

    #[test]
    fn ages_are_bounded_by_a_century() {
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * DAY)));
        assert_eq!(parse_since("100y"), Ok(MAX_AGE));
        assert_eq!(parse_since("20000y"), Err("at most 100 years".into()));
        assert!(parse_since("0s").is_err());
        assert!(parse_since("-1d").is_err());
        assert_eq!(parse_until("0s"), Ok(Duration::ZERO));
        assert!(parse_until("101y").is_err());
        // Past u64 seconds: humantime's own error.
        assert!(parse_since("99999999999999999999999y").is_err());
    }

    #[test]
    fn retentions_outlive_the_hour_rollups_and_a_century_at_most() {
        assert_eq!(parse_retention("forever"), Ok(Age(None)));
        assert_eq!(
            parse_retention("14d"),
            Ok(Age(Some(Duration::from_secs(14 * DAY))))
        );
        assert_eq!(parse_retention("20000y"), Err("at most 100 years".into()));
        assert_eq!(
            parse_retention("0s"),
            Err("must be at least 2 hours".into())
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let spool = size_within(MIB, 16 * TIB);
        assert_eq!(spool("1GiB"), Ok(1 << 30));
        assert_eq!(spool("0"), Err("must be at least 1MiB".into()));
        assert_eq!(spool("17TiB"), Err("at most 16TiB".into()));
        assert!(spool("-1GiB").is_err());
        assert_eq!(size_words(0), "0B");
        assert_eq!(size_words(1536), "1536B");
        assert_eq!(size_words(3 << 30), "3GiB");
    }
}
