//! The options of the commands that read stored ticks: show, report, plot, migrate-plan and
//! recommend.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::database::DatabaseArgs;
use super::values::{ShowLevel, TIB, parse_since, parse_until, size_within};
use crate::show::Format;

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How many of the newest rows to print (printed oldest first).
    #[arg(value_name = "N", long, short = 'n', default_value_t = 20)]
    pub limit: u32,

    /// Only rows of this host IP.
    #[arg(value_name = "IP", long)]
    pub host: Option<String>,

    /// Print VM rows (T4) instead of host rows.
    #[arg(long)]
    pub vms: bool,

    /// With --vms: only this VM (name or UUID).
    #[arg(value_name = "NAME|UUID", long, requires = "vms")]
    pub vm: Option<String>,

    /// Only rows from this long ago on, e.g. `2h`, `3d`, `30d` (at most 100 years). Without
    /// --level the window picks the rows: raw ticks up to 6 hours, per-minute rollups up to a
    /// week, per-hour beyond.
    #[arg(long, value_name = "AGE", value_parser = parse_since)]
    pub since: Option<Duration>,

    /// Which rows: raw ticks, or per-minute or per-hour rollups (mean, 95th percentile and
    /// maximum of each figure).
    #[arg(long, value_enum)]
    pub level: Option<ShowLevel>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Only this host IP (and its VMs).
    #[arg(value_name = "IP", long)]
    pub host: Option<String>,

    /// Only this VM (name or UUID); no host lines.
    #[arg(value_name = "NAME|UUID", long)]
    pub vm: Option<String>,

    /// Start of the window, as an age: `24h`, `7d`, `30d` (at most 100 years).
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = parse_since)]
    pub since: Duration,

    /// End of the window, as an age (`0s` is now; at most 100 years).
    #[arg(long, value_name = "AGE", default_value = "0s", value_parser = parse_until)]
    pub until: Duration,

    /// Which rows to read; by default the window picks them (raw up to 6 hours, per-minute
    /// rollups up to a week, per-hour beyond). `minute` reads the window's whole hours from the
    /// hour rollups that hold exactly their minutes' ticks (the same figures, 60 times fewer
    /// rows) and minute rollups for the rest.
    #[arg(long, value_enum)]
    pub level: Option<ShowLevel>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The host to plot (its IP). Without --host or --vm: this host, as `setmov run` stores it
    /// by default (the address of its default-route interface).
    #[arg(value_name = "IP", long, conflicts_with = "vm")]
    pub host: Option<String>,

    /// The VM to plot (name or UUID).
    #[arg(value_name = "NAME|UUID", long)]
    pub vm: Option<String>,

    /// Start of the window, as an age: `1h`, `7d` (at most 100 years).
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_since)]
    pub since: Duration,

    /// End of the window, as an age (`0s` is now; at most 100 years).
    #[arg(long, value_name = "AGE", default_value = "0s", value_parser = parse_until)]
    pub until: Duration,

    /// Which rows to plot; by default the window picks them.
    #[arg(long, value_enum)]
    pub level: Option<ShowLevel>,

    /// Folder for the charts (`<name>-<chart>.svg`) and `index.html`; made if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MigratePlanArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The window of observed load, as an age: `7d`, `30d` (at most 100 years).
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_since)]
    pub since: Duration,

    /// A host is overloaded when its 95th percentile CPU load is above this share of its CPUs.
    #[arg(long, value_name = "PERCENT", default_value_t = 80.0)]
    pub threshold: f64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Only this host IP.
    #[arg(value_name = "IP", long)]
    pub host: Option<String>,

    /// The window of observed use, as an age: `7d`, `30d` (at most 100 years).
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_since)]
    pub since: Duration,

    /// vCPUs the plan may give per logical CPU of a host.
    #[arg(long, value_name = "RATIO", default_value_t = 4.0)]
    pub vcpus_per_cpu: f64,

    /// Memory each host keeps for itself, e.g. `1GiB` (at most 1024TiB).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = size_within(0, 1024 * TIB))]
    pub host_reserve: u64,

    /// Also write the plan as a `virsh` script to this file, to review, then run by hand on
    /// the hosts: each host's section runs only on the machine that has the host's address
    /// and is skipped elsewhere; VMs are addressed by UUID.
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}
