//! The tools an operator checks SETMOV's figures with (sysstat's iostat, mpstat and sar, fio,
//! bpftool), as the live tests run them: in the C locale, one report each, their tables read
//! row by row, and each stored figure printed beside the reference's before it is judged.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use crate::is_root;

/// Why this test cannot run here, if it cannot.
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("namespaces, veth, eBPF and direct I/O on /var/tmp need root".into());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is missing: `cargo xtask setup` installs it"
            ));
        }
    }
    None
}

/// `TOOL ARGS` in the C locale, started now; its output is read when it ends.
pub fn start(tool: &str, args: &[&str]) -> Child {
    Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .env("S_TIME_FORMAT", "ISO")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {tool}: {e}"))
}

/// Waits for a tool [`start`]ed and returns what it printed; panics unless it exited 0.
pub fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One row of a sysstat table: column → value.
pub type Row = BTreeMap<String, f64>;

/// The first table in `text` whose header holds `marker`: its rows by the value of the `key`
/// column (a device, an interface, a CPU), each column → value.
pub fn table(text: &str, marker: &str, key: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut header: Option<(Vec<&str>, usize)> = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.contains(&marker) {
            if !rows.is_empty() {
                break;
            }
            let at = fields
                .iter()
                .position(|f| *f == key)
                .unwrap_or_else(|| panic!("no {key} column beside {marker}: {line}"));
            header = Some((fields, at));
            continue;
        }
        if fields.is_empty() && !rows.is_empty() {
            break;
        }
        let Some((columns, at)) = &header else {
            continue;
        };
        if fields.len() != columns.len() {
            continue;
        }
        let row: Row = columns
            .iter()
            .zip(&fields)
            .skip(at + 1)
            .filter_map(|(c, v)| Some(((*c).to_owned(), v.parse().ok()?)))
            .collect();
        rows.entry(fields[*at].to_owned()).or_insert(row);
    }
    assert!(!rows.is_empty(), "no table under {marker} in:\n{text}");
    rows
}

/// The mean of each figure over every report in `text` whose header holds `marker` (`mpstat
/// -P ALL 1 N`: one table a second), by the `key` column; the tool's own "Average:" tables are
/// left out. Their Average is the ratio of the window's totals, which is not the mean of the
/// seconds' percentages when a CPU's counters do not add up to the same time every second
/// (idle counted to the ns, busy time by ticks); the product stores one percentage a second.
pub fn mean_of_reports(text: &str, marker: &str, key: &str) -> BTreeMap<String, Row> {
    let reports: Vec<BTreeMap<String, Row>> = text
        .split("\n\n")
        .filter(|block| {
            block
                .lines()
                .any(|l| l.split_whitespace().any(|f| f == marker))
                && !block.trim_start().starts_with("Average:")
        })
        .map(|block| table(block, marker, key))
        .collect();
    assert!(!reports.is_empty(), "no report under {marker} in:\n{text}");
    let mut mean: BTreeMap<String, Row> = BTreeMap::new();
    for report in &reports {
        for (name, row) in report {
            let sums = mean.entry(name.clone()).or_default();
            for (column, value) in row {
                *sums.entry(column.clone()).or_default() += value / reports.len() as f64;
            }
        }
    }
    for (name, _) in reports.iter().flat_map(|r| r.iter()) {
        let seen = reports.iter().filter(|r| r.contains_key(name)).count();
        assert_eq!(seen, reports.len(), "{name} is missing from some reports");
    }
    mean
}

/// Prints both and fails unless they agree within `relative` (of the reference).
pub fn assert_close(what: &str, ours: f64, theirs: f64, relative: f64) {
    let error = if theirs == 0.0 {
        ours.abs()
    } else {
        (ours / theirs - 1.0).abs()
    };
    eprintln!(
        "{what}: setmov {ours:.2}, reference {theirs:.2} ({:.2} %)",
        error * 100.0
    );
    assert!(
        error <= relative,
        "{what}: setmov {ours}, reference {theirs}"
    );
}

/// Prints both and fails unless they differ by at most `absolute`.
pub fn assert_within(what: &str, ours: f64, theirs: f64, absolute: f64) {
    eprintln!("{what}: setmov {ours:.2}, reference {theirs:.2}");
    assert!(
        (ours - theirs).abs() <= absolute,
        "{what}: setmov {ours}, reference {theirs} (± {absolute})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `iostat -x -y -d 12 1` in the C locale (sysstat 12).
    const IOSTAT: &str = "\
Linux 6.18.44 (vm) \t2026-12-07 \t_x86_64_\t(2 CPU)


Device            r/s     rkB/s   rrqm/s  %rrqm r_await rareq-sz     w/s     wkB/s   wrqm/s  %wrqm w_await wareq-sz     d/s     dkB/s   drqm/s  %drqm d_await dareq-sz     f/s f_await  aqu-sz  %util
vda           1433.25   5733.00     0.00   0.00    0.08     4.00  614.42   2457.67     0.00   0.00    0.61     4.00    0.00      0.00     0.00   0.00    0.00     0.00    0.25    0.33    0.49  61.87
vdb              0.00      0.00     0.00   0.00    0.00     0.00    1.50      8.00     0.50  25.00    1.22     5.33    0.00      0.00     0.00   0.00    0.00     0.00    0.00    0.00    0.00   0.10


";

    /// `mpstat -P ALL 12 1` with S_TIME_FORMAT=ISO: the report, then its average.
    const MPSTAT: &str = "\
Linux 6.18.44 (vm) \t2026-12-07 \t_x86_64_\t(2 CPU)

02:13:40     CPU    %usr   %nice    %sys %iowait    %irq   %soft  %steal  %guest  %gnice   %idle
02:13:52     all   65.82    0.00   30.61    0.00    0.00    0.00    0.00    0.00    0.00    3.57
02:13:52       0   65.66    0.00   31.31    0.00    0.00    0.00    0.00    0.00    0.00    3.03
02:13:52       1   65.98    0.00   29.90    0.00    0.00    0.00    0.00    0.00    0.00    4.12

Average:     CPU    %usr   %nice    %sys %iowait    %irq   %soft  %steal  %guest  %gnice   %idle
Average:     all   99.00    0.00    1.00    0.00    0.00    0.00    0.00    0.00    0.00    0.00
Average:       0   99.00    0.00    1.00    0.00    0.00    0.00    0.00    0.00    0.00    0.00
Average:       1   99.00    0.00    1.00    0.00    0.00    0.00    0.00    0.00    0.00    0.00
";

    /// `sar -n DEV,EDEV 12 1` with S_TIME_FORMAT=ISO: both reports, then both averages.
    const SAR: &str = "\
Linux 6.18.44 (vm) \t2026-12-07 \t_x86_64_\t(2 CPU)

02:13:41        IFACE   rxpck/s   txpck/s    rxkB/s    txkB/s   rxcmp/s   txcmp/s  rxmcst/s   %ifutil
02:13:53           lo      0.00      0.00      0.00      0.00      0.00      0.00      0.00      0.00
02:13:53      smvsar0     41.67     41.67     41.46     41.46      0.00      0.00      0.00      0.00

02:13:41        IFACE   rxerr/s   txerr/s    coll/s  rxdrop/s  txdrop/s  txcarr/s  rxfram/s  rxfifo/s  txfifo/s
02:13:53           lo      0.00      0.00      0.00      0.00      0.00      0.00      0.00      0.00      0.00
02:13:53      smvsar0      0.00      0.00      0.00     16.67     16.67      0.00      0.00      0.00      0.00

Average:        IFACE   rxpck/s   txpck/s    rxkB/s    txkB/s   rxcmp/s   txcmp/s  rxmcst/s   %ifutil
Average:           lo      9.00      9.00      9.00      9.00      0.00      0.00      0.00      0.00
Average:      smvsar0     99.00     99.00     99.00     99.00      0.00      0.00      0.00      0.00

Average:        IFACE   rxerr/s   txerr/s    coll/s  rxdrop/s  txdrop/s  txcarr/s  rxfram/s  rxfifo/s  txfifo/s
Average:           lo      9.00      9.00      9.00      9.00      9.00      0.00      0.00      0.00      0.00
Average:      smvsar0     99.00     99.00     99.00     99.00     99.00      0.00      0.00      0.00      0.00
";

    #[test]
    fn iostat_rows_are_read_by_device_with_every_column() {
        let rows = table(IOSTAT, "r/s", "Device");
        assert_eq!(rows.keys().collect::<Vec<_>>(), ["vda", "vdb"]);
        let vda = &rows["vda"];
        assert_eq!(vda.len(), 22);
        assert_eq!(vda["r/s"], 1433.25);
        assert_eq!(vda["wkB/s"], 2457.67);
        assert_eq!(vda["r_await"], 0.08);
        assert_eq!(vda["f/s"], 0.25);
        assert_eq!(vda["%util"], 61.87);
        assert_eq!(rows["vdb"]["%wrqm"], 25.0);
    }

    #[test]
    fn mpstat_rows_come_from_the_report_not_its_average() {
        let rows = table(MPSTAT, "%usr", "CPU");
        assert_eq!(rows.keys().collect::<Vec<_>>(), ["0", "1", "all"]);
        assert_eq!(rows["all"]["%usr"], 65.82);
        assert_eq!(rows["1"]["%idle"], 4.12);
        // The time column before the key is no figure.
        assert_eq!(rows["0"].len(), 10);
        assert!(!rows["0"].contains_key("CPU"));
    }

    /// `mpstat -P 1 1 2` in the C locale: two one-second reports, then their average.
    const MPSTAT_SECONDS: &str = "\
Linux 6.18.44 (vm) \t2026-12-07 \t_x86_64_\t(2 CPU)

03:45:01     CPU    %usr   %nice    %sys %iowait    %irq   %soft  %steal  %guest  %gnice   %idle
03:45:02       1   10.00    0.00   20.00    5.00    0.00    0.00    0.00    0.00    0.00   65.00

03:45:02     CPU    %usr   %nice    %sys %iowait    %irq   %soft  %steal  %guest  %gnice   %idle
03:45:03       1   30.00    0.00    0.00    1.00    0.00    0.00    0.00    0.00    0.00   69.00

Average:     CPU    %usr   %nice    %sys %iowait    %irq   %soft  %steal  %guest  %gnice   %idle
Average:       1   99.00    0.00    1.00    0.00    0.00    0.00    0.00    0.00    0.00    0.00
";

    #[test]
    fn the_mean_of_mpstats_seconds_leaves_its_average_out() {
        let mean = mean_of_reports(MPSTAT_SECONDS, "%usr", "CPU");
        assert_eq!(mean.keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!(mean["1"]["%usr"], 20.0);
        assert_eq!(mean["1"]["%sys"], 10.0);
        assert_eq!(mean["1"]["%iowait"], 3.0);
        assert_eq!(mean["1"]["%idle"], 67.0);
    }

    #[test]
    fn sar_dev_and_edev_are_told_apart_by_a_column_of_each() {
        let dev = table(SAR, "rxpck/s", "IFACE");
        let edev = table(SAR, "rxerr/s", "IFACE");
        assert_eq!(dev["smvsar0"]["rxpck/s"], 41.67);
        assert_eq!(dev["smvsar0"]["txkB/s"], 41.46);
        assert!(!dev["smvsar0"].contains_key("rxdrop/s"));
        assert_eq!(edev["smvsar0"]["rxdrop/s"], 16.67);
        assert_eq!(edev["smvsar0"]["txdrop/s"], 16.67);
        assert_eq!(edev["lo"]["rxerr/s"], 0.0);
    }

    #[test]
    #[should_panic(expected = "no table under r/s")]
    fn a_report_without_the_table_fails() {
        table(MPSTAT, "r/s", "Device");
    }

    #[test]
    fn close_is_relative_to_the_reference_and_within_is_absolute() {
        assert_close("1.5 % off", 101.5, 100.0, 0.02);
        assert_close("both zero", 0.0, 0.0, 0.0);
        assert_within("one apart", 199.0, 200.0, 1.0);
    }

    #[test]
    #[should_panic(expected = "setmov 103, reference 100")]
    fn three_percent_is_not_within_two() {
        assert_close("figure", 103.0, 100.0, 0.02);
    }
}
