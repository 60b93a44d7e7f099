//! `setmov plot`: charts of a host or a VM over a window, as SVG files and one HTML page.

use anyhow::{Context, bail};

use super::{chosen_level, window};
use crate::analysis::{self, ReportQuery};
use crate::cli::PlotArgs;
use crate::store::Store;
use crate::store::rollup::Level;

pub async fn plot(args: PlotArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    let (since, until) = window(args.since, args.until)?;
    let level = chosen_level(args.level, since, until);
    let query = ReportQuery {
        level,
        vms: args.vm.is_some(),
        host_ip: args.host.clone(),
        vm: args.vm.clone(),
        since,
        until,
    };
    let mut store = database.open().await?;
    let samples = store.report_samples(&query).await?;
    let Some(owner) = samples.first().map(|s| s.owner.clone()) else {
        bail!(
            "no rows for {} in the window",
            args.vm.or(args.host).unwrap_or_default()
        );
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
