//! The body of each `setmov` command, one module each; [`crate::cli`] parses the command line
//! and calls one of them.

mod completions;
mod config;
mod mem_knee;
mod migrate;
mod migrate_plan;
mod plot;
mod recommend;
mod report;
mod run;
mod show;
pub mod sources;
mod top;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

pub use completions::{completions, manpages};
pub use config::{check_config, print_default_config};
pub use mem_knee::mem_knee;
pub use migrate::migrate;
pub use migrate_plan::migrate_plan;
pub use plot::plot;
pub use recommend::recommend;
pub use report::report;
pub use run::run;
pub use show::show;
pub use top::top;

use crate::analysis::ReportQuery;
use crate::cli::ShowLevel;
use crate::host::identity::{self, HostIdentity};
use crate::store::rollup::{self, Level};

/// Writes a command's output; a closed stdout (piped to `head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The window from `since` ago to `until` ago.
fn window(
    since: Duration,
    until: Duration,
) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc();
    let (since, until) = (ago(now, since)?, ago(now, until)?);
    if since >= until {
        bail!("the window is empty: --since must reach further back than --until");
    }
    Ok((since, until))
}

/// The instant `age` before `now`. The command line bounds ages to a century; this is the
/// last guard against a date before the year -9999.
fn ago(now: time::OffsetDateTime, age: Duration) -> anyhow::Result<time::OffsetDateTime> {
    time::Duration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age))
        .with_context(|| {
            format!(
                "{} ago is before any date this program can hold",
                humantime::format_duration(age)
            )
        })
}

/// The rows `--level` asks for, or those the window suits.
fn chosen_level(
    level: Option<ShowLevel>,
    since: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Option<Level> {
    match level {
        Some(ShowLevel::Raw) => None,
        Some(ShowLevel::Minute) => Some(Level::Minute),
        Some(ShowLevel::Hour) => Some(Level::Hour),
        None => rollup::level_for(until, since),
    }
}

/// The VM rows of one host over a window, at the level the window suits.
fn vms_of_host(
    host_ip: &str,
    since: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> ReportQuery {
    ReportQuery {
        level: rollup::level_for(until, since),
        vms: true,
        host_ip: Some(host_ip.to_owned()),
        vm: None,
        since,
        until,
    }
}

/// This host as `run` stores it: the name and IP given, or the hostname and the address of the
/// default-route interface.
fn host_identity(
    proc_root: &Path,
    ip: Option<String>,
    name: Option<String>,
) -> anyhow::Result<HostIdentity> {
    let hostname = name.unwrap_or_else(|| identity::hostname(proc_root));
    let default_interface = identity::default_route_interface(proc_root);
    let addresses = identity::live_interface_addresses();
    Ok(identity::resolve(
        hostname,
        default_interface.as_deref(),
        &addresses,
        ip.as_deref(),
    )?)
}
