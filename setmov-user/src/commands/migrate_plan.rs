//! `setmov migrate-plan`: VM moves from overloaded hosts to hosts with room.

use anyhow::bail;

use super::{ago, print, vms_of_host};
use crate::analysis;
use crate::analysis::migrate::HostLoad;
use crate::cli::MigratePlanArgs;
use crate::show;
use crate::store::Store;

pub async fn migrate_plan(args: MigratePlanArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    if !(args.threshold > 0.0 && args.threshold <= 100.0) {
        bail!("--threshold is a percentage between 0 and 100");
    }
    let until = time::OffsetDateTime::now_utc();
    let since = ago(until, args.since)?;
    let mut store = database.open().await?;
    let mut hosts = Vec::new();
    let mut samples = Vec::new();
    for host in store.hosts().await? {
        let (Some(cpus), Some(memory)) = (host.cpus, host.memory_bytes) else {
            tracing::warn!(
                "{}: its capacity is unknown (libvirt never answered): left out of the plan",
                host.host_ip
            );
            continue;
        };
        let query = vms_of_host(&host.host_ip, since, until);
        for sample in store.report_samples(&query).await? {
            samples.push((host.host_ip.clone(), cpus, sample));
        }
        hosts.push(HostLoad {
            name: host.host_ip,
            cpus,
            memory_bytes: memory,
        });
    }
    let vms = analysis::vm_loads(&samples);
    let plan = analysis::migrate::plan(&hosts, &vms, args.threshold / 100.0);
    let text = show::render_migration(&plan, args.format)?;
    print(&text)
}
