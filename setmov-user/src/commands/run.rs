//! `setmov run`: sample the host and its VMs, store every tick, and stream or export them.

use std::future::Future;

use anyhow::{Context, bail};

use super::host_identity;
use super::sources::{EbpfStatus, SourceOff, SourceOptions, SourceStatus, start_sources};
use crate::cli::RunArgs;
use crate::sampler::{self, SamplerConfig};
use crate::store::AnyStore;
use crate::store::rollup::Retention;
use crate::stream::write_stream;

fn non_empty(prefixes: Vec<String>) -> Vec<String> {
    prefixes.into_iter().filter(|p| !p.is_empty()).collect()
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
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
    log_sources(&status);
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
    let report = sampler::run(config, identity, sources, store, outputs, shutdown).await;
    tracing::info!(
        "stopped after {} ticks: {} written, {} lost",
        report.ticks,
        report.written,
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
