//! The values options take beside plain numbers and paths: intervals, ages, row levels and sizes.

use std::time::Duration;

/// Shortest interval accepted: below it a tick costs more than it tells.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// `1s`, `100ms`, `5m`: at least [`MIN_INTERVAL`].
pub(super) fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 1s or 100ms)"))?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(d)
}

/// How long rows are kept: a duration, or for ever (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<Duration>);

/// `14d`, `12h`, or `forever`.
pub(super) fn parse_age(text: &str) -> Result<Age, String> {
    if text == "forever" {
        return Ok(Age(None));
    }
    humantime::parse_duration(text)
        .map(|d| Age(Some(d)))
        .map_err(|e| format!("`{text}` is not an age such as 14d, 12h or forever: {e}"))
}

/// Which stored rows to read: raw ticks, or per-minute or per-hour rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowLevel {
    Raw,
    Minute,
    Hour,
}

/// `512MiB`, `2GiB`, `1000000` (bytes).
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
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
    fn intervals_parse_with_units_and_a_floor() {
        assert_eq!(parse_interval("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
