//! `setmov show`: the newest stored rows of the host or of its VMs.

use super::{ago, print};
use crate::cli::{ShowArgs, ShowLevel};
use crate::show;
use crate::store::rollup::{self, Level, RollupQuery};
use crate::store::{HostUsageQuery, Store, VmUsageQuery};

pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    let mut store = database.open().await?;
    let now = time::OffsetDateTime::now_utc();
    let since = args.since.map(|age| ago(now, age)).transpose()?;
    let level = match (args.level, since) {
        (Some(ShowLevel::Raw), _) | (None, None) => None,
        (Some(ShowLevel::Minute), _) => Some(Level::Minute),
        (Some(ShowLevel::Hour), _) => Some(Level::Hour),
        (None, Some(since)) => rollup::level_for(now, since),
    };
    let text = match level {
        Some(level) => {
            let query = RollupQuery {
                level,
                vms: args.vms,
                host_ip: args.host,
                vm: args.vm,
                since,
                limit: args.limit,
            };
            show::render_rollups(&store.rollups(&query).await?, args.vms, args.format)?
        }
        None if args.vms => {
            let query = VmUsageQuery {
                host_ip: args.host,
                vm: args.vm,
                since,
                limit: args.limit,
            };
            show::render_vms(&store.recent_vm_usage(&query).await?, args.format)?
        }
        None => {
            let query = HostUsageQuery {
                host_ip: args.host,
                since,
                limit: args.limit,
            };
            show::render_hosts(&store.recent_host_usage(&query).await?, args.format)?
        }
    };
    print(&text)
}
