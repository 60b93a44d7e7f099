//! Value-axis labels of the charts: a figure's unit, with the decimals the axis step needs.

/// How the value axis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Percent,
    BytesPerSecond,
    BitsPerSecond,
    Microseconds,
    PerSecond,
    MibPerSecond,
}

impl Unit {
    /// The label of the axis tick `v` on an axis stepping by `step`, with as many decimals as
    /// the step needs: 0.5 % steps read "0.5 %", "1.0 %", not "0 %", "1 %".
    pub(super) fn format(self, v: f64, step: f64) -> String {
        match self {
            Unit::Percent => format!("{v:.0$} %", label_decimals(step), v = v),
            Unit::BytesPerSecond => format!(
                "{}/s",
                scaled(v, step, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
            ),
            Unit::BitsPerSecond => format!(
                "{}/s",
                scaled(v, step, 1000.0, &["bit", "kbit", "Mbit", "Gbit", "Tbit"])
            ),
            Unit::Microseconds => {
                if v >= 1000.0 {
                    let (v, step) = (v / 1000.0, step / 1000.0);
                    format!("{v:.0$} ms", label_decimals(step), v = v)
                } else {
                    format!("{v:.0$} µs", label_decimals(step), v = v)
                }
            }
            Unit::PerSecond => format!("{v:.0$}/s", label_decimals(step), v = v),
            Unit::MibPerSecond => format!("{v:.0$} MiB/s", label_decimals(step), v = v),
        }
    }
}

/// Decimals that print every multiple of `step` exactly: 0 for 1, 2.5 → 1, 0.0025 → 4. A
/// step with no short decimal form (a decimal step in binary units, 10^6 B = 0.95 MiB) gets
/// enough decimals for neighbouring ticks to read differently.
fn label_decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 0;
    }
    let mut scaled = step;
    for decimals in 0..=6 {
        if (scaled - scaled.round()).abs() <= 1e-9 * scaled.max(1.0) {
            return decimals;
        }
        scaled *= 10.0;
    }
    (-step.log10()).ceil().clamp(0.0, 9.0) as usize
}

/// `v` in the largest of `units` (each `base` times the last) it reaches, with the decimals
/// `step` needs in that unit.
fn scaled(mut v: f64, mut step: f64, base: f64, units: &[&str]) -> String {
    let mut unit = 0;
    while v.abs() >= base && unit + 1 < units.len() {
        v /= base;
        step /= base;
        unit += 1;
    }
    let unit = units.get(unit).copied().unwrap_or_default();
    format!("{v:.0$} {unit}", label_decimals(step), v = v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a label of `unit` reads as, in the unit's base (%, µs, bit/s, /s, MiB/s).
    fn read_back(unit: Unit, label: &str) -> f64 {
        let (number, suffix) = label.split_once(' ').unwrap_or((label, ""));
        let number = number.trim_end_matches("/s");
        let factor = match (unit, suffix) {
            (Unit::Microseconds, "ms") => 1e3,
            (Unit::BitsPerSecond, "kbit/s") => 1e3,
            (Unit::BitsPerSecond, "Mbit/s") => 1e6,
            (Unit::BitsPerSecond, "Gbit/s") => 1e9,
            (Unit::BitsPerSecond, "Tbit/s") => 1e12,
            _ => 1.0,
        };
        number.parse::<f64>().expect(label) * factor
    }

    const STEPS: [f64; 11] = [
        0.001, 0.0025, 0.01, 0.05, 0.5, 1.0, 2.5, 10.0, 1e3, 1e6, 1e9,
    ];

    #[test]
    fn labels_are_distinct_and_read_back_to_the_ticks_for_steps_from_a_thousandth_to_a_billion() {
        let units = [
            Unit::Percent,
            Unit::Microseconds,
            Unit::PerSecond,
            Unit::MibPerSecond,
            Unit::BitsPerSecond,
        ];
        for unit in units {
            for step in STEPS {
                let ticks: Vec<f64> = (0..=6).map(|i| f64::from(i) * step).collect();
                let labels: Vec<String> = ticks.iter().map(|&v| unit.format(v, step)).collect();
                for (tick, label) in ticks.iter().zip(&labels) {
                    let back = read_back(unit, label);
                    assert!(
                        (back - tick).abs() <= 1e-9 * tick.max(1.0),
                        "{unit:?} step {step}: {label:?} reads {back}, tick {tick}"
                    );
                }
                let mut distinct = labels.clone();
                distinct.dedup();
                assert_eq!(distinct, labels, "{unit:?} step {step}");
            }
        }
    }

    #[test]
    fn byte_labels_in_binary_units_stay_distinct_for_decimal_steps() {
        for step in STEPS {
            let labels: Vec<String> = (0..=6)
                .map(|i| Unit::BytesPerSecond.format(f64::from(i) * step, step))
                .collect();
            let mut distinct = labels.clone();
            distinct.dedup();
            assert_eq!(distinct, labels, "step {step}");
        }
        assert_eq!(Unit::BytesPerSecond.format(1536.0, 512.0), "1.5 KiB/s");
    }
}
