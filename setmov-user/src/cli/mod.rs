//! The `setmov` command line: argument parsing and the edges (signals, exit codes).

mod args;
mod database;
mod read_args;
mod values;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser};

pub use args::{
    Cli, Command, ConfigCommand, DEFAULT_LIBVIRT_RUN_DIR, DEFAULT_LIBVIRT_URI, ExperimentCommand,
    MemKneeArgs, RunArgs, TopArgs,
};
pub use database::{DEFAULT_DATABASE, DEFAULT_SPOOL_DIR, DatabaseArgs};
pub use read_args::{MigratePlanArgs, PlotArgs, RecommendArgs, ReportArgs, ShowArgs};
pub use values::{Age, ShowLevel};

use crate::analysis::migrate::HostLoad;
use crate::analysis::recommend::{Capacity, virsh_script};
use crate::analysis::{self, ReportQuery};
use crate::config::{ConfigFile, DEFAULT_CONFIG};
use crate::ebpf::Probes;
use crate::host::devices::{DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES, DEFAULT_SKIPPED_DISK_PREFIXES};
use crate::host::identity::{self, HostIdentity};
use crate::host::read::HostReader;
use crate::logging::LogTarget;
use crate::progress::Progress;
use crate::sampler::{self, SamplerConfig, Sources};
use crate::show;
use crate::store::AnyStore;
use crate::store::mysql::MysqlStore;
use crate::store::rollup::{self, Level, Retention, RollupQuery};
use crate::store::sqlite::SqliteStore;
use crate::store::{HostUsageQuery, Store, VmUsageQuery};
use crate::stream::write_stream;
use crate::vm::libvirt::LibvirtCollector;

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
    let ago = |age: Duration| time::Duration::try_from(age).map(|age| now - age);
    let (since, until) = (ago(since)?, ago(until)?);
    if since >= until {
        bail!("the window is empty: --since must reach further back than --until");
    }
    Ok((since, until))
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

/// Runs the command line; every error ends as one line on stderr and exit code 2.
pub fn main() -> ExitCode {
    let (cli, config) = match parse_with_config(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("setmov: {e}");
            return ExitCode::from(2);
        }
    };
    // `setmov top` owns the terminal: no log line may write over it.
    let (log_target, top_log) = match &cli.command {
        Command::Top(args) => match crate::top::log::init(&cli.log, args.log_file.as_deref()) {
            Ok(recent) => (LogTarget::Stderr, recent),
            Err(e) => {
                eprintln!("setmov: {e}");
                return ExitCode::from(2);
            }
        },
        _ => (crate::logging::init(&cli.log), None),
    };
    if let Some((path, settings)) = config {
        tracing::debug!("{settings} options from {}", path.display());
    }
    // One thread runs every task: each source does its blocking reads off it, so a slow source
    // still cannot hold the others up, and a tick costs a few thread switches instead of a
    // dozen (switches dominate the monitor's own CPU use on a hypervisor).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("setmov: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli, top_log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if log_target == LogTarget::Journal => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("setmov: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The command line, completed by the configuration file (when there is one: its path and how
/// many options it sets). Help, version and command-line errors exit here, as clap does.
fn parse_with_config(
    args: Vec<std::ffi::OsString>,
) -> Result<(Cli, Option<(PathBuf, usize)>), crate::config::ConfigError> {
    let root = Cli::command();
    // A lenient first pass finds the command and the file; the real parse comes after.
    let Ok(first) = root.clone().ignore_errors(true).try_get_matches_from(&args) else {
        return Ok((Cli::parse_from(args), None));
    };
    let mut command = Vec::new();
    let mut matches = &first;
    while let Some((name, sub)) = matches.subcommand() {
        command.push(name);
        matches = sub;
    }
    let path = matches
        .get_one::<PathBuf>("config")
        .cloned()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let chosen = matches!(
        matches.value_source("config"),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    );
    // `config check` reads its file itself; a default file that is not there is no error.
    if command.first() == Some(&"config") || (!chosen && !path.exists()) {
        return Ok((Cli::parse_from(args), None));
    }
    let file = ConfigFile::load(&root, &path)?;
    let mut completed = args;
    completed.extend(file.arguments(&root, &command, matches));
    let mut matches = root.get_matches_from(completed);
    let cli = Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit());
    Ok((cli, Some((path, file.len()))))
}

async fn dispatch(cli: Cli, top_log: Option<crate::top::RecentLog>) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print(&crate::config::default_file(&Cli::command()))
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "setmov", &mut out);
            print(&String::from_utf8_lossy(&out))
        }
        Command::Manpages { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))
        }
        Command::Config(ConfigCommand::Check { file }) => config_check(&file.unwrap_or(cli.config)),
        Command::Run(args) => run(args).await,
        Command::Show(args) => show(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Report(args) => report(args).await,
        Command::Recommend(args) => recommend(args).await,
        Command::Plot(args) => plot(args).await,
        Command::MigratePlan(args) => migrate_plan(args).await,
        Command::Experiment(ExperimentCommand::MemKnee(args)) => mem_knee(args).await,
        Command::Top(args) => top(args, top_log).await,
    }
}

fn config_check(path: &std::path::Path) -> anyhow::Result<()> {
    let file = ConfigFile::load(&Cli::command(), path)?;
    print(&format!(
        "{}: valid, {} option{} set\n",
        path.display(),
        file.len(),
        if file.len() == 1 { "" } else { "s" }
    ))
}

fn non_empty(prefixes: Vec<String>) -> Vec<String> {
    prefixes.into_iter().filter(|p| !p.is_empty()).collect()
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let reader = HostReader::new(&args.proc_root, non_empty(args.skip_disks))?;
    let identity = host_identity(&args.proc_root, args.host_ip, args.host_name)?;
    let store = if args.no_store {
        None
    } else {
        Some(args.database.open().await?)
    };
    // Bound before sampling: a port in use is an error at start.
    let prometheus = match args.prometheus {
        Some(addr) => Some(crate::export::MetricsServer::bind(addr).await?),
        None => None,
    };
    let probe = if args.no_ebpf {
        tracing::info!("eBPF is off: --no-ebpf given; sampling procfs alone");
        None
    } else {
        match Probes::load() {
            Ok(mut probes) => {
                tracing::info!("eBPF is on: attached {}", probes.attached().join(", "));
                for reason in &probes.disabled {
                    tracing::warn!("{reason}");
                }
                if args.bpf_stats {
                    match probes.enable_run_stats() {
                        Ok(()) => tracing::info!("BPF statistics are on (--bpf-stats)"),
                        Err(e) => tracing::warn!("{e}; --bpf-stats has no effect"),
                    }
                }
                Some(probes)
            }
            // Said once, at start: the monitor then runs on procfs alone.
            Err(e) if e.is_missing_prerequisite() => {
                tracing::warn!("{e}; sampling procfs alone");
                None
            }
            Err(e) => {
                tracing::error!("{e}; sampling procfs alone");
                None
            }
        }
    };
    let libvirt = if args.no_libvirt {
        tracing::info!("VMs are not sampled: --no-libvirt given");
        None
    } else {
        Some(LibvirtCollector::new(
            &args.libvirt_uri,
            &args.libvirt_run_dir,
        ))
    };
    tracing::info!(
        "sampling host {} ({}) every {} into {}",
        identity.ip,
        identity.name,
        humantime::format_duration(args.interval),
        store
            .as_ref()
            .map_or_else(|| "no database (--no-store)".to_owned(), AnyStore::describe)
    );
    let mut outputs = sampler::Outputs::default();
    if let Some(server) = prometheus {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        outputs.subscribers.push(tx);
        tokio::spawn(server.serve(rx));
    }
    // Resolves when the stream's reader has gone away: the run ends as a filter's would.
    let (stream_closed_tx, stream_closed) = tokio::sync::oneshot::channel::<()>();
    if args.stream {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        outputs.subscribers.push(tx);
        let format = args.format;
        // Its own thread: a slow reader blocks the writes, never the sampling.
        std::thread::Builder::new()
            .name("setmov-stream".into())
            .spawn(move || {
                if let Err(e) = write_stream(rx, format, &mut std::io::stdout().lock()) {
                    tracing::info!("stdout closed ({e}): stopping");
                    let _ = stream_closed_tx.send(());
                }
            })
            .context("cannot start the stream writer")?;
    }
    let signal = shutdown_signal()?;
    let shutdown = async move {
        tokio::select! {
            () = signal => {}
            Ok(()) = stream_closed => {}
        }
    };
    let config = SamplerConfig {
        interval: args.interval,
        count: args.count,
        print_summary: !args.quiet && !args.stream,
        net_total_excluded: non_empty(args.net_total_exclude),
        retention: Retention {
            raw: args.retain_raw.0,
            minute: args.retain_minutes.0,
            hour: args.retain_hours.0,
        },
    };
    let sources = Sources {
        host: reader,
        libvirt,
        ebpf: probe,
    };
    let report = sampler::run(config, identity, sources, store, outputs, shutdown).await;
    tracing::info!(
        "stopped after {} ticks: {} written, {} lost",
        report.ticks,
        report.written,
        report.lost
    );
    if let Some(failure) = report.writer_failure {
        bail!(
            "the database writer stopped ({failure}); {} ticks were not stored",
            report.lost
        );
    }
    if report.lost > 0 {
        bail!("{} ticks could not be stored", report.lost);
    }
    Ok(())
}

async fn top(args: TopArgs, log: Option<crate::top::RecentLog>) -> anyhow::Result<()> {
    use crate::top::Availability;
    let skipped_disks = DEFAULT_SKIPPED_DISK_PREFIXES.iter().map(|s| s.to_string());
    let reader = HostReader::new(&args.proc_root, skipped_disks.collect())?;
    let identity = host_identity(&args.proc_root, None, None)?;
    // Why a source is off is shown in the view rather than logged.
    let probes = if args.no_ebpf {
        Err("--no-ebpf given".to_owned())
    } else {
        Probes::load().map_err(|e| e.to_string())
    };
    let (libvirt, vms) = if args.no_libvirt {
        (None, Availability::Off("--no-libvirt given".into()))
    } else {
        let collector = LibvirtCollector::new(&args.libvirt_uri, DEFAULT_LIBVIRT_RUN_DIR);
        (Some(collector), Availability::On)
    };
    let coverage = crate::top::Coverage::new(vms, probes.as_ref().map_err(String::as_str));
    let config = SamplerConfig {
        interval: args.interval,
        count: None,
        print_summary: false,
        net_total_excluded: DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        retention: Retention::default(),
    };
    let sources = Sources {
        host: reader,
        libvirt,
        ebpf: probes.ok(),
    };
    let result = crate::top::run(config, identity, sources, coverage, log.clone()).await;
    // What was logged while the view had the terminal.
    for message in log.map(|l| l.all()).unwrap_or_default() {
        eprintln!("setmov top: {message}");
    }
    Ok(result?)
}

fn host_identity(
    proc_root: &std::path::Path,
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

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: finishing the current tick"),
            _ = terminate.recv() => tracing::info!("SIGTERM: finishing the current tick"),
        }
    })
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
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
                    Some(Level::Minute) => "per-minute",
                    Some(Level::Hour) => "per-hour",
                }
            ),
            2,
        )
    });
    let hosts = if query.vm.is_some() {
        Vec::new()
    } else {
        analysis::report::report(false, store.report_samples(&query).await?)
    };
    if let Some(p) = progress.as_mut() {
        p.advance(1);
    }
    query.vms = true;
    let vms = analysis::report::report(true, store.report_samples(&query).await?);
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

async fn mem_knee(args: MemKneeArgs) -> anyhow::Result<()> {
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

async fn migrate_plan(args: MigratePlanArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    if !(args.threshold > 0.0 && args.threshold <= 100.0) {
        bail!("--threshold is a percentage between 0 and 100");
    }
    let until = time::OffsetDateTime::now_utc();
    let since = until - time::Duration::try_from(args.since)?;
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
        let query = ReportQuery {
            level: rollup::level_for(until, since),
            vms: true,
            host_ip: Some(host.host_ip.clone()),
            vm: None,
            since,
            until,
        };
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

async fn plot(args: PlotArgs) -> anyhow::Result<()> {
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

async fn recommend(args: RecommendArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    if !(args.vcpus_per_cpu.is_finite() && args.vcpus_per_cpu > 0.0) {
        bail!("--vcpus-per-cpu must be a positive number");
    }
    let until = time::OffsetDateTime::now_utc();
    let since = until - time::Duration::try_from(args.since)?;
    let mut store = database.open().await?;
    let mut plans = Vec::new();
    for host in store.hosts().await? {
        if args.host.as_ref().is_some_and(|h| *h != host.host_ip) {
            continue;
        }
        let query = ReportQuery {
            level: rollup::level_for(until, since),
            vms: true,
            host_ip: Some(host.host_ip.clone()),
            vm: None,
            since,
            until,
        };
        let vms = analysis::report::report(true, store.report_samples(&query).await?);
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
        let script: String = plans.iter().map(|(_, p)| virsh_script(p)).collect();
        std::fs::write(path, script)
            .with_context(|| format!("cannot write the script {}", path.display()))?;
        tracing::info!("wrote the plan as virsh commands to {}", path.display());
    }
    let text = show::render_plans(&plans, args.format)?;
    print(&text)
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    if !args.is_mysql() {
        let store = SqliteStore::open(std::path::Path::new(&args.database))?;
        tracing::info!("{} is up to date", store.path().display());
        return Ok(());
    }
    let config = args.mysql_config()?;
    let applied = MysqlStore::migrate(&config).await?;
    tracing::info!(
        "{}: {applied} migrations applied, the schema is up to date",
        crate::store::mysql::redact(&config.url)
    );
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let database = &args.database;
    database.must_exist()?;
    let mut store = database.open().await?;
    let now = time::OffsetDateTime::now_utc();
    let since = args
        .since
        .and_then(|age| time::Duration::try_from(age).ok())
        .map(|age| now - age);
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
