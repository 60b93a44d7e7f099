//! `setmov plot`: charts of a host or a VM over a window, as SVG files and one HTML page.

use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};

use super::{chosen_level, host_identity, window};
use crate::analysis::{self, ReportQuery};
use crate::cli::{DEFAULT_PROC_ROOT, PlotArgs};
use crate::store::Store;
use crate::store::rollup::Level;

/// Whose rows `plot` draws.
#[derive(Debug, PartialEq, Eq)]
enum PlotSubject {
    /// The VM given with `--vm` (name or UUID).
    Vm(String),
    /// The host given with `--host`.
    Host(String),
    /// Neither given: this host, by the IP `run` stores it under by default.
    ThisHost(String),
}

impl PlotSubject {
    /// The VM or the host asked for; without either, this host as `this_host_ip` tells it
    /// (asked only then).
    fn choose(
        vm: Option<String>,
        host: Option<String>,
        this_host_ip: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<PlotSubject> {
        Ok(match (vm, host) {
            (Some(vm), _) => PlotSubject::Vm(vm),
            (None, Some(host)) => PlotSubject::Host(host),
            (None, None) => PlotSubject::ThisHost(this_host_ip()?),
        })
    }

    /// The rows of the subject over a window, at `level`.
    fn query(
        &self,
        level: Option<Level>,
        since: time::OffsetDateTime,
        until: time::OffsetDateTime,
    ) -> ReportQuery {
        let (vms, host_ip, vm) = match self {
            PlotSubject::Vm(vm) => (true, None, Some(vm.clone())),
            PlotSubject::Host(ip) | PlotSubject::ThisHost(ip) => (false, Some(ip.clone()), None),
        };
        ReportQuery {
            level,
            vms,
            host_ip,
            vm,
            since,
            until,
        }
    }
}

impl fmt::Display for PlotSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotSubject::Vm(name) | PlotSubject::Host(name) => f.write_str(name),
            PlotSubject::ThisHost(ip) => write!(f, "this host ({ip})"),
        }
    }
}

pub async fn plot(args: PlotArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    let (since, until) = window(args.since, args.until)?;
    let level = chosen_level(args.level, since, until);
    let subject = PlotSubject::choose(args.vm, args.host, || {
        Ok(host_identity(Path::new(DEFAULT_PROC_ROOT), None, None)?.ip)
    })?;
    let query = subject.query(level, since, until);
    let mut store = database.open().await?;
    let samples = store.report_samples(&query).await?;
    let Some(owner) = samples.first().map(|s| s.owner.clone()) else {
        let other = match subject {
            PlotSubject::ThisHost(_) => "; --host or --vm plots another",
            PlotSubject::Vm(_) | PlotSubject::Host(_) => "",
        };
        bail!("no rows for {subject} in the window{other}");
    };
    let charts = analysis::charts(query.vms, &owner, &samples);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let slug: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    for chart in &charts {
        let name: String = chart
            .title
            .rsplit(": ")
            .next()
            .unwrap_or_default()
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = args.out.join(format!("{slug}-{name}.svg"));
        std::fs::write(&path, analysis::chart::svg(chart))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let page = args.out.join("index.html");
    let level_name = match level {
        None => "ticks",
        Some(Level::Minute) => "per-minute means",
        Some(Level::Hour) => "per-hour means",
    };
    let title = format!(
        "{owner}, {} to {} UTC ({level_name})",
        crate::store::format_time(since),
        crate::store::format_time(until)
    );
    std::fs::write(&page, analysis::chart::html(&title, &charts))
        .with_context(|| format!("cannot write {}", page.display()))?;
    tracing::info!(
        "{} charts of {owner} in {} (open {})",
        charts.len(),
        args.out.display(),
        page.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_identity() -> anyhow::Result<String> {
        panic!("this host is asked for only when neither --vm nor --host is given")
    }

    #[test]
    fn without_host_or_vm_this_host_is_plotted() {
        let subject = PlotSubject::choose(None, None, || Ok("192.0.2.2".into())).expect("subject");
        assert_eq!(subject, PlotSubject::ThisHost("192.0.2.2".into()));
        let now = time::OffsetDateTime::now_utc();
        let query = subject.query(None, now - time::Duration::hours(1), now);
        assert_eq!(
            (query.vms, query.host_ip.as_deref(), query.vm),
            (false, Some("192.0.2.2"), None)
        );
    }

    #[test]
    fn a_host_or_vm_given_is_plotted_as_given() {
        let host = PlotSubject::choose(None, Some("10.0.0.1".into()), no_identity);
        assert_eq!(host.expect("host"), PlotSubject::Host("10.0.0.1".into()));
        let vm = PlotSubject::choose(Some("desk-1".into()), None, no_identity).expect("vm");
        assert_eq!(vm, PlotSubject::Vm("desk-1".into()));
        let now = time::OffsetDateTime::now_utc();
        let query = vm.query(Some(Level::Minute), now - time::Duration::days(1), now);
        assert_eq!(
            (query.vms, query.host_ip, query.vm.as_deref()),
            (true, None, Some("desk-1"))
        );
    }
}
