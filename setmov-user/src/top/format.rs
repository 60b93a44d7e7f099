//! Compact figures for table cells: a few characters each, units in the column header.

/// Steps of 1024 (binary) or 1000 (decimal) with one-letter units: `512`, `4.0K`, `1.5M`.
fn scaled(value: f64, base: f64, units: &[&str]) -> String {
    let mut value = value;
    let mut unit = 0;
    while value.abs() >= base && unit < units.len() - 1 {
        value /= base;
        unit += 1;
    }
    let name = units.get(unit).copied().unwrap_or_default();
    match unit {
        0 => format!("{value:.0}"),
        _ if value.abs() >= 100.0 => format!("{value:.0}{name}"),
        _ => format!("{value:.1}{name}"),
    }
}

/// Bytes (or bytes per second) in binary units: `512`, `4.0K`, `1.5M`, `700M`.
pub fn bytes(value: f64) -> String {
    scaled(value, 1024.0, &["", "K", "M", "G", "T"])
}

/// Bits per second, or events per second, in decimal units: `900`, `16.8k`, `2.4M`.
pub fn decimal(value: f64) -> String {
    scaled(value, 1000.0, &["", "k", "M", "G", "T"])
}

/// A percentage without its sign: `37.5`.
pub fn percent(value: f64) -> String {
    format!("{value:.1}")
}

/// Microseconds as `850µs`, `2.3ms`, `1.2s`.
pub fn latency_us(us: f64) -> String {
    if us.abs() < 1_000.0 {
        format!("{us:.0}µs")
    } else if us.abs() < 1_000_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.1}s", us / 1e6)
    }
}

/// An interval as people write it: `500ms`, `1s`, `1.5s`, `2m`.
pub fn interval(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn figures_fit_a_narrow_cell() {
        assert_eq!(bytes(512.0), "512");
        assert_eq!(bytes(4096.0), "4.0K");
        assert_eq!(bytes(1.5 * 1048576.0), "1.5M");
        assert_eq!(bytes(700.0 * 1048576.0), "700M");
        assert_eq!(decimal(900.0), "900");
        assert_eq!(decimal(16_800.0), "16.8k");
        assert_eq!(decimal(2_400_000.0), "2.4M");
        assert_eq!(latency_us(850.0), "850µs");
        assert_eq!(latency_us(2300.0), "2.3ms");
        assert_eq!(latency_us(1_200_000.0), "1.2s");
        assert_eq!(percent(37.46), "37.5");
    }

    #[test]
    fn intervals_read_as_typed() {
        assert_eq!(interval(Duration::from_millis(500)), "500ms");
        assert_eq!(interval(Duration::from_secs(1)), "1s");
        assert_eq!(interval(Duration::from_millis(1500)), "1.5s");
        assert_eq!(interval(Duration::from_secs(120)), "2m");
    }
}
