//! `setmov report`: usage statistics per host and per VM over a window.

use super::{chosen_level, print, window};
use crate::analysis::ReportQuery;
use crate::cli::ReportArgs;
use crate::progress::Progress;
use crate::show;
use crate::store::Store;
use crate::store::rollup::Level;

pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    let (since, until) = window(args.since, args.until)?;
    let level = chosen_level(args.level, since, until);
    let mut store = database.open().await?;
    let mut query = ReportQuery {
        level,
        vms: false,
        host_ip: args.host,
        vm: args.vm,
        since,
        until,
    };
    // Progress for the long windows only: a day of raw or minute rows is quick.
    let mut progress = (until - since > time::Duration::days(1)).then(|| {
        Progress::steps(
            &format!(
                "report over {} of {} rows",
                humantime::format_duration(args.since.saturating_sub(args.until)),
                match level {
                    None => "raw",
                    // Whole hours come from hour rollups: the same figures, fewer rows.
                    Some(Level::Minute) => "per-minute (whole hours per-hour)",
                    Some(Level::Hour) => "per-hour",
                }
            ),
            2,
        )
    });
    let hosts = if query.vm.is_some() {
        Vec::new()
    } else {
        store.report(&query).await?
    };
    if let Some(p) = progress.as_mut() {
        p.advance(1);
    }
    query.vms = true;
    let vms = store.report(&query).await?;
    if let Some(p) = progress {
        p.finish(&format!(
            "report: {} hosts and {} VMs",
            hosts.len(),
            vms.len()
        ));
    }
    let text = show::render_report(&hosts, &vms, args.format)?;
    print(&text)
}
