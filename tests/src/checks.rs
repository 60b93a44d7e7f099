//! Comparisons of stored figures with their references, all printed, failed together: a live
//! test reports every figure that missed, not only the first.

/// The comparisons made so far and those that failed.
#[derive(Default)]
pub struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// `ours` against the `reference`, within `tolerance` (absolute).
    pub fn near(&mut self, what: &str, ours: f64, reference: f64, tolerance: f64) {
        let ok = (ours - reference).abs() <= tolerance;
        eprintln!(
            "  {} {what}: stored {ours:.3}, reference {reference:.3} (±{tolerance:.3})",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.failed.push(format!(
                "{what}: stored {ours}, reference {reference}, tolerance {tolerance}"
            ));
        }
    }

    /// `ours` within the `reference` range, widened by `slack` (float rounding).
    pub fn within(&mut self, what: &str, ours: f64, (lo, hi): (f64, f64), slack: f64) {
        let ok = (lo - slack..=hi + slack).contains(&ours);
        eprintln!(
            "  {} {what}: stored {ours:.3}, libvirt {lo:.3}..{hi:.3}",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            self.failed
                .push(format!("{what}: stored {ours}, libvirt {lo}..{hi}"));
        }
    }

    pub fn that(&mut self, what: &str, ok: bool) {
        eprintln!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failed.push(what.to_owned());
        }
    }

    pub fn finish(self) {
        assert!(self.failed.is_empty(), "{:#?}", self.failed);
    }
}
