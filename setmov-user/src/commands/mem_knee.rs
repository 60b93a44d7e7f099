//! `setmov experiment mem-knee`: the guest memory size past which more memory no longer
//! speeds up reads.

use anyhow::Context;

use super::print;
use crate::analysis;
use crate::cli::MemKneeArgs;

pub async fn mem_knee(args: MemKneeArgs) -> anyhow::Result<()> {
    let config = crate::experiment::MemKnee {
        sizes_mib: args.sizes,
        working_set_mib: args.working_set,
        rounds: args.rounds,
        disk_limit_bytes_s: args.disk_limit,
        out: args.out,
    };
    let setmov = std::env::current_exe().context("cannot find this program")?;
    let experiment = config.clone();
    let results =
        tokio::task::spawn_blocking(move || crate::experiment::mem_knee(&experiment, &setmov))
            .await
            .context("the experiment stopped")??;
    let points: Vec<(u32, f64)> = results
        .iter()
        .filter_map(|r| Some((r.memory_mib, r.throughput_mib_s?)))
        .collect();
    let knee = analysis::knee::knee(&points);
    let json = serde_json::json!({
        "working_set_mib": config.working_set_mib,
        "disk_limit_bytes_s": config.disk_limit_bytes_s,
        "sizes": results,
        "knee_mib": knee,
    });
    std::fs::write(
        config.out.join("mem-knee.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let chart = analysis::chart::Chart {
        title: format!(
            "Read throughput of a {} MiB working set by guest memory{}",
            config.working_set_mib,
            knee.map_or_else(String::new, |mib| format!(" (knee: {mib} MiB)"))
        ),
        unit: analysis::chart::Unit::MibPerSecond,
        x_axis: analysis::chart::XAxis::MemoryMib,
        series: vec![analysis::chart::Series {
            label: "warm rounds".into(),
            points: points
                .iter()
                .map(|(mib, t)| (i64::from(*mib), Some(*t)))
                .collect(),
        }],
    };
    std::fs::write(
        config.out.join("mem-knee.svg"),
        analysis::chart::svg(&chart),
    )?;
    let mut text = String::from("memory  warm MiB/s  first round  read from disk (SETMOV)\n");
    for r in &results {
        text.push_str(&format!(
            "{:>4} MiB  {:>10}  {:>10}  {:>12}\n",
            r.memory_mib,
            r.throughput_mib_s
                .map_or_else(|| "-".into(), |t| format!("{t:.1}")),
            r.round_seconds
                .first()
                .map_or_else(|| "-".into(), |s| format!("{s:.2} s")),
            r.disk_read_mib
                .map_or_else(|| "-".into(), |m| format!("{m:.0} MiB"))
        ));
    }
    text.push_str(&match knee {
        Some(mib) => format!(
            "knee: {mib} MiB (the smallest size within {:.0} % of the best throughput)\n",
            analysis::knee::KNEE_SHARE * 100.0
        ),
        None => "knee: none found (no size completed its rounds)\n".into(),
    });
    print(&text)
}
