//! `setmov recommend`: right-size each VM's vCPUs and memory from what it used.

use anyhow::{Context, bail};

use super::{ago, print, vms_of_host};
use crate::analysis;
use crate::analysis::recommend::Capacity;
use crate::analysis::recommend_script::virsh_script;
use crate::cli::RecommendArgs;
use crate::show;
use crate::store::Store;

pub async fn recommend(args: RecommendArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    if !(args.vcpus_per_cpu.is_finite() && args.vcpus_per_cpu > 0.0) {
        bail!("--vcpus-per-cpu must be a positive number");
    }
    let until = time::OffsetDateTime::now_utc();
    let since = ago(until, args.since)?;
    let mut store = database.open().await?;
    let mut plans = Vec::new();
    for host in store.hosts().await? {
        if args.host.as_ref().is_some_and(|h| *h != host.host_ip) {
            continue;
        }
        let query = vms_of_host(&host.host_ip, since, until);
        let vms = store.report(&query).await?;
        let capacity = host
            .cpus
            .zip(host.memory_bytes)
            .map(|(cpus, memory)| Capacity {
                vcpus: (f64::from(cpus) * args.vcpus_per_cpu).floor() as u32,
                memory_bytes: memory.saturating_sub(args.host_reserve),
            });
        plans.push((host.host_ip, analysis::recommend::plan(&vms, capacity)));
    }
    if let Some(path) = &args.script {
        std::fs::write(path, virsh_script(&plans))
            .with_context(|| format!("cannot write the script {}", path.display()))?;
        tracing::info!("wrote the plan as virsh commands to {}", path.display());
    }
    let text = show::render_plans(&plans, args.format)?;
    print(&text)
}
