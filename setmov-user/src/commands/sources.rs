//! The sources `run` and `top` sample: the host always, VMs and eBPF unless turned off or
//! unavailable, and why each that is off is off, as data (`run` logs it, `top` shows it).

use std::fmt;
use std::path::Path;

use crate::ebpf::{EbpfError, Probes};
use crate::host::read::{HostReader, ProcRootError};
use crate::sampler::Sources;
use crate::vm::libvirt::LibvirtCollector;

/// Which sources to start and where they read, from a command's options.
pub struct SourceOptions<'a> {
    /// The procfs tree the host is read from.
    pub proc_root: &'a Path,
    /// Block device name prefixes not to sample.
    pub skipped_disks: Vec<String>,
    /// The libvirt connection VMs are sampled through.
    pub libvirt_uri: &'a str,
    /// The qemu driver's run folder (each domain's PID and vCPU threads).
    pub libvirt_run_dir: &'a Path,
    /// `--no-libvirt`: VMs are not sampled.
    pub no_libvirt: bool,
    /// `--no-ebpf`: the eBPF programs are not loaded.
    pub no_ebpf: bool,
    /// `--bpf-stats`: the kernel's BPF statistics are turned on with the probes.
    pub bpf_stats: bool,
}

/// Why an optional source is off.
#[derive(Debug)]
pub enum SourceOff {
    /// The option that turns it off was given (its name).
    NotWanted(&'static str),
    /// The eBPF programs could not be loaded.
    NotLoaded(EbpfError),
}

impl fmt::Display for SourceOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceOff::NotWanted(option) => write!(f, "{option} given"),
            SourceOff::NotLoaded(error) => error.fmt(f),
        }
    }
}

/// The eBPF probes that run, or why none does.
#[derive(Debug)]
pub enum EbpfStatus {
    On {
        /// The probes and programs attached.
        attached: Vec<String>,
        /// One sentence per probe, or program of a running probe, that is off, with why.
        disabled: Vec<String>,
        /// What came of `--bpf-stats`; `None` when it was not given.
        run_stats: Option<Result<(), EbpfError>>,
    },
    Off(SourceOff),
}

/// What came of starting the optional sources.
#[derive(Debug)]
pub struct SourceStatus {
    /// Why VMs are not sampled; `None` when they are.
    pub vms_off: Option<SourceOff>,
    pub ebpf: EbpfStatus,
}

/// Starts the sources: the host reader first, so that a wrong `--proc-root` fails before
/// anything is loaded, then the eBPF probes and the libvirt collector unless turned off.
pub fn start_sources(options: SourceOptions<'_>) -> Result<(Sources, SourceStatus), ProcRootError> {
    let host = HostReader::new(options.proc_root, options.skipped_disks)?;
    let (ebpf, ebpf_status) = if options.no_ebpf {
        (None, EbpfStatus::Off(SourceOff::NotWanted("--no-ebpf")))
    } else {
        match Probes::load() {
            Ok(mut probes) => {
                let run_stats = options.bpf_stats.then(|| probes.enable_run_stats());
                let status = EbpfStatus::On {
                    attached: probes.attached(),
                    disabled: probes.disabled.clone(),
                    run_stats,
                };
                (Some(probes), status)
            }
            Err(error) => (None, EbpfStatus::Off(SourceOff::NotLoaded(error))),
        }
    };
    let (libvirt, vms_off) = if options.no_libvirt {
        (None, Some(SourceOff::NotWanted("--no-libvirt")))
    } else {
        let collector = LibvirtCollector::new(options.libvirt_uri, options.libvirt_run_dir);
        (Some(collector), None)
    };
    let sources = Sources {
        host,
        libvirt,
        ebpf,
    };
    let status = SourceStatus {
        vms_off,
        ebpf: ebpf_status,
    };
    Ok((sources, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(proc_root: &Path) -> SourceOptions<'_> {
        SourceOptions {
            proc_root,
            skipped_disks: Vec::new(),
            libvirt_uri: "qemu:///system",
            libvirt_run_dir: Path::new("/run/libvirt/qemu"),
            no_libvirt: true,
            no_ebpf: true,
            bpf_stats: false,
        }
    }

    #[test]
    fn sources_turned_off_name_the_option_that_did_it() {
        let proc_root = tempfile::tempdir().expect("tempdir");
        std::fs::write(proc_root.path().join("stat"), "cpu 1 0 1 8 0 0 0 0 0 0\n").expect("stat");
        let (sources, status) = start_sources(options(proc_root.path())).expect("sources");
        assert!(sources.libvirt.is_none() && sources.ebpf.is_none());
        let vms_off = status.vms_off.map(|off| off.to_string());
        assert_eq!(vms_off.as_deref(), Some("--no-libvirt given"));
        match status.ebpf {
            EbpfStatus::Off(off) => assert_eq!(off.to_string(), "--no-ebpf given"),
            EbpfStatus::On { .. } => panic!("eBPF on despite --no-ebpf"),
        }
    }

    #[test]
    fn a_proc_root_without_stat_is_refused() {
        let error = start_sources(options(Path::new("/nonexistent/proc")))
            .err()
            .expect("no procfs there");
        assert!(
            error
                .to_string()
                .contains("/nonexistent/proc is not a readable procfs tree"),
            "{error}"
        );
    }
}
