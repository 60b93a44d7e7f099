//! The eBPF source: reads every probe's maps once per tick and reports the interval's deltas.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::assemble::{Report, Source};
use super::{SourceMessage, Tick};
use crate::ebpf::{DropDevice, EbpfError, Probes, ProgramRunStats};
use crate::usage::ebpf::{EbpfSnapshot, ebpf_interval, program_costs};

/// How often the eBPF source drops the counters of exited processes from its maps.
const FORGET_DEAD_EVERY: Duration = Duration::from_secs(10);
/// How often `--bpf-stats` logs the programs' costs.
const LOG_COSTS_EVERY: Duration = Duration::from_secs(10);

/// Reads the probes on every tick. `vcpu_tids` (from the VM source) are the threads whose
/// run-queue wait the scheduler probe watches.
pub(super) async fn ebpf_source(
    mut probes: Probes,
    mut ticks: watch::Receiver<Option<Tick>>,
    reports: mpsc::Sender<SourceMessage>,
    mut vcpu_tids: Option<watch::Receiver<Vec<u32>>>,
) {
    let mut prev_at = Instant::now();
    let mut prev = read_snapshot(&probes);
    let mut last_forget = prev_at;
    let mut reported_lost = 0;
    let mut reported_unpaired = 0;
    let mut device_names = DeviceNames::default();
    // `--bpf-stats`: the statistics at start and at the last log line.
    let stats_start = probes
        .run_stats_enabled()
        .then(|| (prev_at, probes.run_stats()));
    let mut stats_logged = stats_start.clone();
    while ticks.changed().await.is_ok() {
        let Some(tick) = *ticks.borrow_and_update() else {
            continue;
        };
        if let (Some(sched), Some(tids)) = (&mut probes.sched, &mut vcpu_tids)
            && tids.has_changed().unwrap_or(false)
        {
            let tids = tids.borrow_and_update().clone();
            if let Err(e) = sched.watch(&tids) {
                tracing::warn!("eBPF: cannot watch the vCPU threads: {e}");
            }
        }
        let at = Instant::now();
        probes.flush_logs();
        let now = read_snapshot(&probes);
        let interval = prev
            .as_ref()
            .zip(now.as_ref())
            .and_then(|(p, n)| ebpf_interval(p, n, at.duration_since(prev_at).as_secs_f64()));
        let interval = interval.map(|mut interval| {
            let devs: Vec<u32> = interval
                .latency_by_device
                .keys()
                .map(|key| key.dev)
                .chain(interval.block_by_device.keys().copied())
                .collect();
            for dev in devs {
                if let Some(name) = device_names.get(dev) {
                    interval.device_names.insert(dev, name);
                }
            }
            Box::new(interval)
        });
        (prev_at, prev) = (at, now);
        // Right after a read, so what the exited processes did is already counted.
        if at.duration_since(last_forget) >= FORGET_DEAD_EVERY {
            last_forget = at;
            forget_the_gone(&mut probes);
            if let Some(block) = &probes.block {
                match block.lost_events() {
                    Ok(lost) if lost > reported_lost => {
                        tracing::warn!("eBPF: {lost} block events not counted: the map was full");
                        reported_lost = lost;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("eBPF: cannot read the lost-event counter: {e}"),
                }
                let pairing = block.pairing().map(|by_device| {
                    by_device.values().fold(Default::default(), |sum, p| {
                        crate::ebpf::add_pairing(&sum, p)
                    })
                });
                match pairing {
                    Ok(p) if p.unpaired > reported_unpaired => {
                        tracing::info!(
                            "eBPF: {} block completions since start had no request to pair, so \
                             no latency ({} requests collided with another in flight to the same \
                             sector, {} of them found every slot taken)",
                            p.unpaired,
                            p.collided,
                            p.overflowed
                        );
                        reported_unpaired = p.unpaired;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("eBPF: cannot read the pairing counters: {e}"),
                }
            }
        }
        if let Some((logged_at, logged)) = &mut stats_logged
            && at.duration_since(*logged_at) >= LOG_COSTS_EVERY
        {
            let stats = probes.run_stats();
            log_costs("last", at.duration_since(*logged_at), logged, &stats);
            (*logged_at, *logged) = (at, stats);
        }
        let message = SourceMessage::Report {
            seq: tick.seq,
            time: tick.time,
            report: Report::Ebpf(interval),
        };
        if reports.send(message).await.is_err() {
            return;
        }
    }
    if let Some((started, start)) = &stats_start {
        log_costs("whole run,", started.elapsed(), start, &probes.run_stats());
    }
    let _ = reports.send(SourceMessage::Stopped(Source::Ebpf)).await;
}

/// One line per program: events per second and mean ns per event over `window`.
fn log_costs(what: &str, window: Duration, prev: &[ProgramRunStats], now: &[ProgramRunStats]) {
    for cost in program_costs(prev, now, window.as_secs_f64()) {
        let mean = cost
            .mean_ns
            .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"));
        tracing::info!(
            "bpf-stats ({what} {:.0} s): {} {:.1} events/s, {mean} ns/event",
            window.as_secs_f64(),
            cost.program,
            cost.events_per_sec
        );
    }
}

/// Drops the counters of exited processes and vanished devices (what they did stays in the
/// intervals already reported).
fn forget_the_gone(probes: &mut Probes) {
    let proc_root = Path::new("/proc");
    if let Some(block) = &mut probes.block
        && let Err(e) = block.forget_dead_tgids(proc_root)
    {
        tracing::warn!("eBPF: cannot drop exited processes from the block maps: {e}");
    }
    if let Some(kvm) = &mut probes.kvm
        && let Err(e) = kvm.forget_dead_tgids(proc_root)
    {
        tracing::warn!("eBPF: cannot drop exited processes from the KVM map: {e}");
    }
    if let Some(net) = &mut probes.net
        && let Err(e) = net.forget_vanished_devices(Path::new("/sys/class/net"))
    {
        tracing::warn!("eBPF: cannot drop vanished devices from the net maps: {e}");
    }
}

/// Every probe's maps; `None` (logged) when one could not be read, so that a half-read tick
/// never passes for a quiet one.
fn read_snapshot(probes: &Probes) -> Option<EbpfSnapshot> {
    let read = || -> Result<EbpfSnapshot, EbpfError> {
        let mut snapshot = EbpfSnapshot::default();
        if let Some(block) = &probes.block {
            snapshot.block_by_device = block.totals_by_device()?;
            snapshot.block_by_tgid = block.per_tgid()?;
            snapshot.latency_by_device = block.latency_by_device()?;
            snapshot.latency_by_tgid = block.latency_by_tgid()?;
            snapshot.pairing = block.pairing()?;
        }
        if let Some(kvm) = &probes.kvm {
            snapshot.kvm_by_tgid = kvm.per_tgid()?;
        }
        if let Some(net) = &probes.net {
            snapshot.net_devices = net.devices()?;
            snapshot.net_drops = net
                .drops()?
                .into_iter()
                .map(|(cause, count)| {
                    let device = match cause.device {
                        DropDevice::Ifindex(ifindex) => interface_name(ifindex),
                        DropDevice::Name(name) => name,
                    };
                    ((device, cause.reason), count)
                })
                .collect();
        }
        if let Some(sched) = &probes.sched {
            snapshot.sched_on = true;
            snapshot.runq_by_tid = sched.per_tid()?;
        }
        if probes.run_stats_enabled() {
            snapshot.programs = probes.run_stats();
        }
        Ok(snapshot)
    };
    read()
        .map_err(|e| tracing::warn!("eBPF: cannot read the maps: {e}"))
        .ok()
}

/// The name of network interface `ifindex`; "" when unknown (0, or gone).
fn interface_name(ifindex: u32) -> String {
    if ifindex == 0 {
        return String::new();
    }
    nix::net::if_::if_indextoname(ifindex)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Block device names by kernel `dev_t`, from `/sys/dev/block/MAJOR:MINOR/uevent`, asked once
/// per device. A partition (`DEVTYPE=partition`; bios on kernels without `block_io_start`
/// carry one) goes by its disk's name, the folder its sysfs folder is in, so that the host
/// total finds it among the whole disks.
#[derive(Default)]
struct DeviceNames {
    known: HashMap<u32, Option<String>>,
}

impl DeviceNames {
    fn get(&mut self, dev: u32) -> Option<String> {
        self.known
            .entry(dev)
            .or_insert_with(|| {
                let (major, minor) = setmov_common::dev_major_minor(dev);
                let sys = format!("/sys/dev/block/{major}:{minor}");
                let uevent = std::fs::read_to_string(format!("{sys}/uevent")).ok()?;
                if uevent.lines().any(|line| line == "DEVTYPE=partition") {
                    let link = std::fs::read_link(&sys).ok()?;
                    let disk = link.parent()?.file_name()?;
                    return Some(disk.to_string_lossy().into_owned());
                }
                devname_of_uevent(&uevent)
            })
            .clone()
    }
}

/// The `DEVNAME=` of a sysfs `uevent` file.
fn devname_of_uevent(uevent: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|line| line.strip_prefix("DEVNAME="))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_name_from_uevent() {
        let uevent = "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n";
        assert_eq!(devname_of_uevent(uevent).as_deref(), Some("vda"));
        assert_eq!(devname_of_uevent("MAJOR=7\n"), None);
    }
}
