//! `setmov run`: sample the host and its VMs, store every tick, and stream or export them.

use std::future::Future;

use anyhow::{Context, bail};

use super::host_identity;
use crate::cli::RunArgs;
use crate::ebpf::Probes;
use crate::host::read::HostReader;
use crate::sampler::{self, SamplerConfig, Sources};
use crate::store::AnyStore;
use crate::store::rollup::Retention;
use crate::stream::write_stream;
use crate::vm::libvirt::LibvirtCollector;

fn non_empty(prefixes: Vec<String>) -> Vec<String> {
    prefixes.into_iter().filter(|p| !p.is_empty()).collect()
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
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
