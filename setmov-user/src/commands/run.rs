//! `setmov run`: sample the host and its VMs, store every tick, and stream or export them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use tokio::sync::watch;

use super::host_identity;
use super::sources::{EbpfStatus, SourceOff, SourceOptions, SourceStatus, start_sources};
use crate::cli::RunArgs;
use crate::sampler::{self, SamplerConfig, Stop, Subscriber};
use crate::store::AnyStore;
use crate::store::rollup::Retention;
use crate::stream::write_stream;

fn non_empty(prefixes: Vec<String>) -> Vec<String> {
    prefixes.into_iter().filter(|p| !p.is_empty()).collect()
}

/// When start-up's pages are given back ([`crate::resident`]): once sampling has begun, late
/// enough that no start-up work is left running.
const RELEASE_START_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(3);
/// How often pages are given back again: the rollups and purges that run every minute or
/// hour, and the heap's churn, would otherwise leave their pages behind for good.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Gives back, once start-up is over and then every [`RELEASE_EVERY`], what the ticks do not
/// use: the pages of code and read-only data mapped from files (they stay in the page cache;
/// the next access maps them again), and the heap's free pages.
async fn release_unused_pages() {
    let mut every = tokio::time::interval_at(
        tokio::time::Instant::now() + RELEASE_START_UP_AFTER,
        RELEASE_EVERY,
    );
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // Milliseconds of system calls: off the workers that run the ticks.
        let _ = tokio::task::spawn_blocking(release_unused_pages_now).await;
    }
}

fn release_unused_pages_now() {
    match crate::resident::release_file_pages() {
        Ok(released) => tracing::debug!(
            "pages given back: {} KiB of {} read-only file mappings unmapped ({} KiB holding \
             their own copies kept)",
            released.bytes / 1024,
            released.mappings,
            released.kept_bytes / 1024
        ),
        Err(error) => tracing::debug!("pages not given back: {error}"),
    }
    // SAFETY: glibc's malloc_trim only returns free heap memory to the system.
    unsafe { libc::malloc_trim(0) };
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Watched before anything else: a signal during start-up (migrations, the eBPF load) stops
    // the run before its first tick rather than killing it half-way.
    let (stop_tx, stop) = watch::channel(Stop::Run);
    let stop_sender = Arc::new(stop_tx);
    let sampling = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop_sender), Arc::clone(&sampling))?;
    let (sources, status) = start_sources(SourceOptions {
        proc_root: &args.proc_root,
        skipped_disks: non_empty(args.skip_disks),
        libvirt_uri: &args.libvirt_uri,
        libvirt_run_dir: &args.libvirt_run_dir,
        no_libvirt: args.no_libvirt,
        no_ebpf: args.no_ebpf,
        bpf_stats: args.bpf_stats,
    })?;
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
    if *stop.borrow() != Stop::Run {
        tracing::info!("stopped during start-up, before the first tick");
        return Ok(());
    }
    log_sources(&status);
    give_up_capabilities();
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
    if let Some(mut server) = prometheus {
        if store.is_some() {
            server.count_writes(Arc::clone(&outputs.writer_counts));
        }
        let (subscriber, rx) = Subscriber::new("Prometheus exporter");
        outputs.subscribers.push(subscriber);
        tokio::spawn(server.serve(rx));
    }
    if args.stream {
        let (subscriber, rx) = Subscriber::new("stream output");
        outputs.subscribers.push(subscriber);
        let format = args.format;
        let stop_tx = Arc::clone(&stop_sender);
        // Its own thread: a slow reader blocks the writes (and then misses ticks), never the
        // sampling. A reader gone away ends the run, as a filter's would.
        std::thread::Builder::new()
            .name("setmov-stream".into())
            .spawn(move || {
                if let Err(e) = write_stream(rx, format, &mut std::io::stdout().lock()) {
                    tracing::info!("stdout closed ({e}): stopping");
                    stop_tx.send_if_modified(finish);
                }
            })
            .context("cannot start the stream writer")?;
    }
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
    sampling.store(true, Ordering::Relaxed);
    tokio::spawn(release_unused_pages());
    let report = sampler::run(config, identity, sources, store, outputs, stop).await;
    tracing::info!(
        "stopped after {} ticks: {} written, {} quarantined, {} kept for the next start, {} lost",
        report.ticks,
        report.written,
        report.quarantined,
        report.kept,
        report.lost
    );
    // A panic ends the run non-zero (systemd restarts the monitor), never silently.
    if let Some(failure) = report.task_failure {
        bail!(
            "{failure}; stopped after {} ticks: {} written, {} lost",
            report.ticks,
            report.written,
            report.lost
        );
    }
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

/// Says at start which sources are off and why; the monitor then runs on the others.
fn log_sources(status: &SourceStatus) {
    match &status.ebpf {
        EbpfStatus::On {
            attached,
            disabled,
            run_stats,
        } => {
            tracing::info!("eBPF is on: attached {}", attached.join(", "));
            for reason in disabled {
                tracing::warn!("{reason}");
            }
            match run_stats {
                Some(Ok(())) => tracing::info!("BPF statistics are on (--bpf-stats)"),
                Some(Err(e)) => tracing::warn!("{e}; --bpf-stats has no effect"),
                None => {}
            }
        }
        EbpfStatus::Off(off @ SourceOff::NotWanted(_)) => {
            tracing::info!("eBPF is off: {off}; sampling procfs alone");
        }
        EbpfStatus::Off(SourceOff::NotLoaded(e)) if e.is_missing_prerequisite() => {
            tracing::warn!("{e}; sampling procfs alone");
        }
        EbpfStatus::Off(SourceOff::NotLoaded(e)) => {
            tracing::error!("{e}; sampling procfs alone");
        }
    }
    if let Some(off) = &status.vms_off {
        tracing::info!("VMs are not sampled: {off}");
    }
}

/// Start-up is over (probes attached, store open, exporter bound): what is left needs no
/// capability (crate::privileges). A monitor that cannot drop them runs on.
fn give_up_capabilities() {
    use crate::privileges::{PrivilegeError, drop_capabilities};
    match drop_capabilities() {
        Ok((held, threads)) => {
            tracing::info!("capabilities given up in all {threads} threads: {held}");
        }
        Err(e @ PrivilegeError::Unprivileged(_)) => tracing::info!("{e}"),
        Err(e) => tracing::warn!("{e}; running on with the capabilities left"),
    }
}

/// Turns `stop` from [`Stop::Run`] to [`Stop::Finish`]; `true` if it changed.
fn finish(stop: &mut Stop) -> bool {
    let running = *stop == Stop::Run;
    if running {
        *stop = Stop::Finish;
    }
    running
}

/// Watches SIGINT, SIGTERM and SIGHUP (a graceful stop, as SIGTERM: `run` has no configuration
/// to reload). The first finishes the current tick and writes what is waiting; a second stops
/// at once: what is unwritten is kept for the next start, or counted lost. A second signal
/// before sampling has begun exits at once.
fn watch_signals(stop: Arc<watch::Sender<Stop>>, sampling: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch =
        |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("cannot watch {name}"));
    let mut interrupt = watch(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut hangup = watch(SignalKind::hangup(), "SIGHUP")?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            if stop.send_if_modified(finish) {
                tracing::info!("{name}: finishing the current tick (again to stop at once)");
            } else {
                tracing::warn!("{name} again: stopping at once");
                stop.send_replace(Stop::Now);
                if !sampling.load(Ordering::Relaxed) {
                    // Not sampling yet: nothing to write.
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(())
}
