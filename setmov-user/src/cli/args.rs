//! What the command line accepts: the commands, and the options of those that sample (run,
//! top) or experiment; [`super::read_args`] has the options of those that read stored ticks.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::database::DatabaseArgs;
use super::read_args::{MigratePlanArgs, PlotArgs, RecommendArgs, ReportArgs, ShowArgs};
use super::values::{Age, MIB, TIB, parse_interval, parse_retention, size_within};
use crate::config::DEFAULT_CONFIG;
use crate::host::devices::DEFAULT_SKIPPED_DISK_PREFIXES;
use crate::stream::StreamFormat;

/// The procfs tree `run` and `top` read unless `--proc-root` says otherwise.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
pub const DEFAULT_LIBVIRT_RUN_DIR: &str = "/run/libvirt/qemu";

/// Real-time monitoring of a KVM hypervisor and its VMs.
///
/// SETMOV samples the host (procfs) and every VM (libvirt), adds eBPF tracing of block I/O,
/// network, KVM and scheduler events per qemu process, turns the counters into usage figures
/// with top's and virt-top's equations, stores them (a SQLite file by default, MySQL/MariaDB
/// for fleets) and analyses them, so that each VM can be given what it really needs.
#[derive(Debug, Parser)]
#[command(
    name = "setmov",
    version,
    propagate_version = true,
    after_long_help = "\
Examples:
  setmov run                          sample every second into /var/lib/setmov/setmov.db
  setmov top                          a live view of the host and its VMs, like virt-top
  setmov run --stream --no-store      one CSV record per VM per tick on stdout
  setmov run --prometheus             also serve metrics on http://127.0.0.1:9739/metrics
  setmov show --vms -n 5              the newest stored rows of each VM
  setmov report --since 7d            per-VM statistics over a week
  setmov recommend --script resize.sh right-sizing, with a virsh script to review

Every option can also be set in /etc/setmov/setmov.toml: `setmov config default` prints a
commented one. `setmov <command> --help` describes each command."
)]
pub struct Cli {
    /// Log filter for messages on stderr (tracing syntax, e.g. `info`, `setmov=debug`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SETMOV_LOG",
        default_value = "info,refinery_core=warn"
    )]
    pub log: String,

    /// Configuration file: every option of every command can be set there (see `setmov
    /// config default`). A missing file at the default path is no error.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SETMOV_CONFIG",
        value_name = "FILE",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample the host and its VMs and store every tick (until Ctrl-C or --count).
    ///
    /// Each tick reads procfs, libvirt and the eBPF maps, computes usage over the interval and
    /// writes one host row and one row per VM. A slow source (a locked VM, libvirtd
    /// restarting) never holds up the others; a database outage loses nothing. The ticks can
    /// also be streamed to stdout (--stream) and served to Prometheus (--prometheus).
    Run(RunArgs),
    /// Print the newest stored rows of the host or of its VMs.
    Show(ShowArgs),
    /// Usage statistics per host and per VM over a window.
    ///
    /// Mean, median, 95th percentile and maximum of CPU, memory, disk, network, steal and CPU
    /// ready, and request latency p99; raw rows for short windows, per-minute or per-hour
    /// rollups for long ones.
    Report(ReportArgs),
    /// Charts of a host or a VM over a window, as SVG files and one HTML page.
    ///
    /// CPU, network, disk and I/O latency, with time and unit axes and a legend. Plots this
    /// host unless --host or --vm names another.
    Plot(PlotArgs),
    /// Propose VM moves from overloaded hosts to hosts with room (nothing is applied).
    ///
    /// Needs several hosts in one database. Prefers VMs whose load peaks when the target's does
    /// not, keeps the number of moves small and never moves a volatile VM.
    MigratePlan(MigratePlanArgs),
    /// Right-size each VM's vCPUs and memory from what it used (nothing is applied).
    ///
    /// Flags idle and starved VMs and plans per host within its capacity. Prints a table or
    /// JSON and can write a `virsh` script to review.
    Recommend(RecommendArgs),
    /// Experiments with test guests (see `cargo xtask guests prepare`).
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Create or update the schema of a MySQL/MariaDB database.
    ///
    /// The embedded database is migrated whenever it is opened; a MySQL server is migrated
    /// by this command, so that monitors never change a shared schema on their own.
    Migrate(DatabaseArgs),
    /// A live view of the host and its VMs in the terminal (nothing is stored).
    ///
    /// One row per VM, as virt-top's, sorted, filtered and paused by key; Enter shows a VM's
    /// history as sparklines. Press `?` in it for the keys.
    Top(TopArgs),
    /// Check a configuration file, or print the default one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of setmov and each of its commands into a folder.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file.
    ///
    /// Every key must be an option of a setmov command and every value one that option
    /// accepts. Each problem is printed with its line and column.
    Check {
        /// The file to check [default: the --config file]
        file: Option<PathBuf>,
    },
    /// Print the default configuration, every option commented out with its help and default.
    Default,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Time between samples, e.g. `1s`, `100ms`, `5m`: from 10ms to 1 day.
    #[arg(value_name = "DURATION", help_heading = "Sampling", long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Stop after this many ticks (each stored as one row per host); run forever if absent.
    #[arg(value_name = "N", help_heading = "Sampling", long)]
    pub count: Option<u64>,

    /// Do not print the one-line summary per tick.
    #[arg(help_heading = "Output", long, short)]
    pub quiet: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The procfs tree to read: the live `/proc`, or a captured copy of one.
    #[arg(value_name = "DIR", help_heading = "Sampling", long, default_value = DEFAULT_PROC_ROOT)]
    pub proc_root: PathBuf,

    /// This host's IP address as stored (T1 primary key). Default: the address of the
    /// default-route interface.
    #[arg(value_name = "IP", help_heading = "Sampling", long)]
    pub host_ip: Option<String>,

    /// This host's name as stored (at most 255 characters). Default:
    /// `<proc-root>/sys/kernel/hostname`.
    #[arg(value_name = "NAME", help_heading = "Sampling", long, value_parser = crate::store::fit::check_host_name)]
    pub host_name: Option<String>,

    /// Block device name prefixes not to sample, comma-separated; `''` samples every device.
    #[arg(value_name = "PREFIXES", help_heading = "Sampling", long, value_delimiter = ',', default_values_t = DEFAULT_SKIPPED_DISK_PREFIXES.iter().map(|s| s.to_string()))]
    pub skip_disks: Vec<String>,

    /// Interface name prefixes also left out of the host network total, comma-separated (say, a
    /// storage NIC). The total counts the NICs on a bus from sysfs, never loopback, bonds,
    /// VLANs, bridges, taps, veths or macvtaps, so none is needed for those; every interface
    /// is still stored on its own.
    #[arg(
        value_name = "PREFIXES",
        help_heading = "Sampling",
        long,
        value_delimiter = ','
    )]
    pub net_total_exclude: Vec<String>,

    /// Do not load the eBPF programs.
    #[arg(help_heading = "Sources", long)]
    pub no_ebpf: bool,

    /// How long raw ticks are kept (`forever` keeps them), from 2 hours (the per-hour rollups
    /// are computed from them) to 100 years; per-minute and per-hour rollups summarise them for
    /// longer analysis.
    #[arg(help_heading = "Storage", long, value_name = "AGE", default_value = "14d", value_parser = parse_retention)]
    pub retain_raw: Age,

    /// How long per-minute rollups are kept: from 2 hours to 100 years, or `forever`.
    #[arg(help_heading = "Storage", long, value_name = "AGE", default_value = "90d", value_parser = parse_retention)]
    pub retain_minutes: Age,

    /// How long per-hour rollups are kept: from 2 hours to 100 years, or `forever`.
    #[arg(help_heading = "Storage", long, value_name = "AGE", default_value = "forever", value_parser = parse_retention)]
    pub retain_hours: Age,

    /// Turn on the kernel's BPF statistics and report each eBPF program's mean cost per event
    /// and events per second: logged every 10 s and for the whole run at exit, and stored
    /// with every tick. Costs two clock reads per event while on.
    #[arg(help_heading = "Sources", long, conflicts_with = "no_ebpf")]
    pub bpf_stats: bool,

    /// The libvirt connection to sample VMs through (read-only).
    #[arg(value_name = "URI", help_heading = "Sources", long, env = "SETMOV_LIBVIRT_URI", default_value = DEFAULT_LIBVIRT_URI)]
    pub libvirt_uri: String,

    /// The qemu driver's run folder, where each running domain's PID and vCPU threads are.
    #[arg(value_name = "DIR", help_heading = "Sources", long, default_value = DEFAULT_LIBVIRT_RUN_DIR)]
    pub libvirt_run_dir: PathBuf,

    /// Do not sample VMs through libvirt.
    #[arg(help_heading = "Sources", long)]
    pub no_libvirt: bool,

    /// Write one record per VM per tick to stdout, for piping (like virt-top's --stream),
    /// instead of the summary line. Ends the run when the reader goes away.
    #[arg(help_heading = "Output", long)]
    pub stream: bool,

    /// Record format of --stream: `csv` (a header line first) or `json` (one object per line).
    #[arg(help_heading = "Output", long, value_enum, default_value_t = StreamFormat::Csv, requires = "stream")]
    pub format: StreamFormat,

    /// Do not store the ticks (to only --stream them, for example).
    #[arg(help_heading = "Storage", long)]
    pub no_store: bool,

    /// Serve the figures to Prometheus on http://ADDR/metrics (text format 0.0.4); without
    /// ADDR on 127.0.0.1:9739. The metrics are unauthenticated: an address other than
    /// loopback is served with a warning.
    #[arg(help_heading = "Output", long, value_name = "ADDR", num_args = 0..=1,
          default_missing_value = crate::export::DEFAULT_ADDRESS)]
    pub prometheus: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between samples, e.g. `1s`, `500ms`, from 10ms to 1 day; `+` and `-` change it
    /// while running.
    #[arg(value_name = "DURATION", help_heading = "Sampling", long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// The procfs tree to read.
    #[arg(value_name = "DIR", help_heading = "Sampling", long, default_value = DEFAULT_PROC_ROOT)]
    pub proc_root: PathBuf,

    /// The libvirt connection to sample VMs through (read-only).
    #[arg(value_name = "URI", help_heading = "Sources", long, env = "SETMOV_LIBVIRT_URI", default_value = DEFAULT_LIBVIRT_URI)]
    pub libvirt_uri: String,

    /// Do not load the eBPF programs (no I/O latency, no KVM events).
    #[arg(help_heading = "Sources", long)]
    pub no_ebpf: bool,

    /// Do not sample VMs through libvirt (the host alone).
    #[arg(help_heading = "Sources", long)]
    pub no_libvirt: bool,

    /// Append log messages (filtered by --log) to this file. Without it, warnings and errors
    /// show on the view's bottom line and are printed when it ends; nothing else is logged.
    #[arg(value_name = "FILE", help_heading = "Output", long)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Find the guest memory size past which more memory no longer speeds up reads.
    ///
    /// The same read workload runs in test guests of several memory sizes on a throttled disk,
    /// recorded by SETMOV itself (the paper's Figure 13).
    MemKnee(MemKneeArgs),
}

#[derive(Debug, Args)]
pub struct MemKneeArgs {
    /// Guest memory sizes in MiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [96, 128, 192, 256])]
    pub sizes: Vec<u32>,

    /// MiB of its disk each guest reads again and again.
    #[arg(long, value_name = "MIB", default_value_t = 112)]
    pub working_set: u32,

    /// Read rounds per guest; the first fills the cache.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,

    /// The guests' disk bandwidth (libvirt iotune), so that a cache miss costs what it costs
    /// on shared storage: from 1MiB to 1TiB per second.
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = size_within(MIB, TIB))]
    pub disk_limit: u64,

    /// Folder for the results: the recording, mem-knee.json and mem-knee.svg.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn prometheus_serves_on_loopback_unless_given_an_address() {
        let prometheus = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(run)) => Ok(run.prometheus.map(|a| a.to_string())),
            Ok(_) => panic!("not run"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(prometheus(&["setmov", "run"]), Ok(None));
        let default = Ok(Some("127.0.0.1:9739".to_owned()));
        assert_eq!(prometheus(&["setmov", "run", "--prometheus"]), default);
        assert_eq!(
            prometheus(&["setmov", "run", "--prometheus", "--no-ebpf"]),
            default
        );
        assert_eq!(
            prometheus(&["setmov", "run", "--prometheus", "[::1]:9100"]),
            Ok(Some("[::1]:9100".to_owned()))
        );
        assert!(prometheus(&["setmov", "run", "--prometheus", "localhost"]).is_err());
    }
}
