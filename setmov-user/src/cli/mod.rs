//! The `setmov` command line: argument parsing and the edges (signals, exit codes).

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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
use crate::show::{self, Format};
use crate::store::AnyStore;
use crate::store::mysql::{MysqlConfig, MysqlStore};
use crate::store::rollup::{self, Level, Retention, RollupQuery};
use crate::store::sqlite::SqliteStore;
use crate::store::{HostUsageQuery, Store, VmUsageQuery};
use crate::stream::{StreamFormat, write_stream};
use crate::vm::libvirt::LibvirtCollector;

/// Where the embedded database lives unless `--database` says otherwise.
pub const DEFAULT_DATABASE: &str = "/var/lib/setmov/setmov.db";

pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
pub const DEFAULT_LIBVIRT_RUN_DIR: &str = "/run/libvirt/qemu";

/// Shortest interval accepted: below it a tick costs more than it tells.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

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
  setmov top                          a live view of the host and its VMs, virt-top style
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
    /// CPU, network, disk and I/O latency, with time and unit axes and a legend.
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
pub struct DatabaseArgs {
    /// Where ticks are stored: a SQLite file (the default, created with its schema when
    /// missing), or a MySQL/MariaDB server as `mysql://user@host[:port]/database`.
    #[arg(
        long,
        help_heading = "Database",
        value_name = "FILE|URL",
        env = "SETMOV_DATABASE",
        default_value = DEFAULT_DATABASE
    )]
    pub database: String,

    /// File holding the MySQL password (one line). Keeps it out of the process list.
    #[arg(long, help_heading = "Database", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// The MySQL password, from the environment only (never a command-line option).
    #[arg(
        long = "database-password-from-env",
        env = "SETMOV_DATABASE_PASSWORD",
        hide = true,
        hide_env_values = true
    )]
    pub database_password: Option<String>,

    /// Require TLS to the MySQL server, its certificate verified against the system's roots
    /// or --database-ca.
    #[arg(long, help_heading = "Database")]
    pub database_tls: bool,

    /// CA certificate (PEM) the MySQL server's certificate must chain to; implies TLS.
    #[arg(long, help_heading = "Database", value_name = "FILE")]
    pub database_ca: Option<PathBuf>,

    /// Where ticks wait while the MySQL server cannot be reached; replayed in order when it
    /// answers again, also after a restart of the monitor.
    #[arg(long, help_heading = "Database", value_name = "DIR", default_value = DEFAULT_SPOOL_DIR)]
    pub spool_dir: PathBuf,

    /// Most disk the spool may use, e.g. `512MiB`, `2GiB`; past it the oldest ticks are
    /// dropped, each drop logged.
    #[arg(long, help_heading = "Database", value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub spool_max: u64,
}

/// Where MySQL ticks wait during an outage unless `--spool-dir` says otherwise.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/setmov/spool";

impl DatabaseArgs {
    /// A SQLite file must already be there to be read (it would be created empty otherwise).
    fn must_exist(&self) -> anyhow::Result<()> {
        if !self.is_mysql() && !std::path::Path::new(&self.database).exists() {
            bail!(
                "no database at {} (run `setmov run` first, or give --database)",
                self.database
            );
        }
        Ok(())
    }

    fn is_mysql(&self) -> bool {
        self.database.starts_with("mysql://")
    }

    fn mysql_config(&self) -> anyhow::Result<MysqlConfig> {
        if crate::store::mysql::redact(&self.database) != self.database {
            tracing::warn!(
                "the --database URL holds a password, which the process list shows to every \
                 user: prefer --database-password-file or SETMOV_DATABASE_PASSWORD"
            );
        }
        let password = match (&self.database_password_file, &self.database_password) {
            (Some(file), _) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| {
                        format!("cannot read the database password file {}", file.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, Some(password)) => Some(password.clone()),
            (None, None) => None,
        };
        Ok(MysqlConfig {
            url: self.database.clone(),
            password,
            tls: self.database_tls || self.database_ca.is_some(),
            ca_file: self.database_ca.clone(),
            spool_dir: spool_dir(&self.spool_dir, &self.database),
            spool_max_bytes: self.spool_max,
        })
    }

    /// Opens the store: SQLite, or MySQL (see [`MysqlStore::open`]).
    async fn open(&self) -> anyhow::Result<AnyStore> {
        if self.is_mysql() {
            Ok(AnyStore::Mysql(Box::new(
                MysqlStore::open(self.mysql_config()?).await?,
            )))
        } else {
            Ok(AnyStore::Sqlite(SqliteStore::open(std::path::Path::new(
                &self.database,
            ))?))
        }
    }
}

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

/// How long rows are kept: a duration, or for ever (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<Duration>);

/// `14d`, `12h`, or `forever`.
fn parse_age(text: &str) -> Result<Age, String> {
    if text == "forever" {
        return Ok(Age(None));
    }
    humantime::parse_duration(text)
        .map(|d| Age(Some(d)))
        .map_err(|e| format!("`{text}` is not an age such as 14d, 12h or forever: {e}"))
}

/// The spool of one database: under the default folder, a subfolder per server and database,
/// so that ticks spooled for one are never replayed into another. A folder given with
/// `--spool-dir` is used as it is.
fn spool_dir(dir: &std::path::Path, url: &str) -> PathBuf {
    if dir != std::path::Path::new(DEFAULT_SPOOL_DIR) {
        return dir.to_owned();
    }
    let target = crate::store::mysql::redact(url);
    let name: String = target
        .trim_start_matches("mysql://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(name)
}

/// `512MiB`, `2GiB`, `1000000` (bytes).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 512MiB or 2GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Time between samples, e.g. `1s`, `100ms`, `5m`. At least 10ms.
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
    #[arg(
        value_name = "DIR",
        help_heading = "Sampling",
        long,
        default_value = "/proc"
    )]
    pub proc_root: PathBuf,

    /// This host's IP address as stored (T1 primary key). Default: the address of the
    /// default-route interface.
    #[arg(value_name = "IP", help_heading = "Sampling", long)]
    pub host_ip: Option<String>,

    /// This host's name as stored. Default: `<proc-root>/sys/kernel/hostname`.
    #[arg(value_name = "NAME", help_heading = "Sampling", long)]
    pub host_name: Option<String>,

    /// Block device name prefixes not to sample, comma-separated; `''` samples every device.
    #[arg(value_name = "PREFIXES", help_heading = "Sampling", long, value_delimiter = ',', default_values_t = DEFAULT_SKIPPED_DISK_PREFIXES.iter().map(|s| s.to_string()))]
    pub skip_disks: Vec<String>,

    /// Interface name prefixes left out of the host network total (still stored per
    /// interface), comma-separated; `''` counts every interface.
    #[arg(value_name = "PREFIXES", help_heading = "Sampling", long, value_delimiter = ',', default_values_t = DEFAULT_NET_TOTAL_EXCLUDED_PREFIXES.iter().map(|s| s.to_string()))]
    pub net_total_exclude: Vec<String>,

    /// Do not load the eBPF programs.
    #[arg(help_heading = "Sources", long)]
    pub no_ebpf: bool,

    /// How long raw ticks are kept (`forever` keeps them); per-minute and per-hour rollups
    /// summarise them for longer analysis.
    #[arg(help_heading = "Storage", long, value_name = "AGE", default_value = "14d", value_parser = parse_age)]
    pub retain_raw: Age,

    /// How long per-minute rollups are kept.
    #[arg(help_heading = "Storage", long, value_name = "AGE", default_value = "90d", value_parser = parse_age)]
    pub retain_minutes: Age,

    /// How long per-hour rollups are kept.
    #[arg(help_heading = "Storage", long, value_name = "AGE", default_value = "forever", value_parser = parse_age)]
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
pub struct ShowArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How many of the newest rows to print (printed oldest first).
    #[arg(value_name = "N", long, short = 'n', default_value_t = 20)]
    pub limit: u32,

    /// Only rows of this host IP.
    #[arg(value_name = "IP", long)]
    pub host: Option<String>,

    /// Print VM rows (T4) instead of host rows.
    #[arg(long)]
    pub vms: bool,

    /// With --vms: only this VM (name or UUID).
    #[arg(value_name = "NAME|UUID", long, requires = "vms")]
    pub vm: Option<String>,

    /// Only rows from this long ago on, e.g. `2h`, `3d`, `30d`. Without --level the window
    /// picks the rows: raw ticks up to 6 hours, per-minute rollups up to a week, per-hour
    /// beyond.
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,

    /// Which rows: raw ticks, or per-minute or per-hour rollups (mean, 95th percentile and
    /// maximum of each figure).
    #[arg(long, value_enum)]
    pub level: Option<ShowLevel>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Only this host IP (and its VMs).
    #[arg(value_name = "IP", long)]
    pub host: Option<String>,

    /// Only this VM (name or UUID); no host lines.
    #[arg(value_name = "NAME|UUID", long)]
    pub vm: Option<String>,

    /// Start of the window, as an age: `24h`, `7d`, `30d`.
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub since: Duration,

    /// End of the window, as an age (`0s` is now).
    #[arg(long, value_name = "AGE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub until: Duration,

    /// Which rows to read; by default the window picks them (raw up to 6 hours, per-minute
    /// rollups up to a week, per-hour beyond).
    #[arg(long, value_enum)]
    pub level: Option<ShowLevel>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The host to plot (its IP).
    #[arg(
        value_name = "IP",
        long,
        conflicts_with = "vm",
        required_unless_present = "vm"
    )]
    pub host: Option<String>,

    /// The VM to plot (name or UUID).
    #[arg(value_name = "NAME|UUID", long)]
    pub vm: Option<String>,

    /// Start of the window, as an age: `1h`, `7d`.
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: Duration,

    /// End of the window, as an age (`0s` is now).
    #[arg(long, value_name = "AGE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub until: Duration,

    /// Which rows to plot; by default the window picks them.
    #[arg(long, value_enum)]
    pub level: Option<ShowLevel>,

    /// Folder for the charts (`<name>-<chart>.svg`) and `index.html`; made if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Time between samples, e.g. `1s`, `500ms`; `+` and `-` change it while running.
    #[arg(value_name = "DURATION", help_heading = "Sampling", long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// The procfs tree to read.
    #[arg(
        value_name = "DIR",
        help_heading = "Sampling",
        long,
        default_value = "/proc"
    )]
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
    /// on shared storage.
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub disk_limit: u64,

    /// Folder for the results: the recording, mem-knee.json and mem-knee.svg.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MigratePlanArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The window of observed load, as an age: `7d`, `30d`.
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,

    /// A host is overloaded when its 95th percentile CPU load is above this share of its CPUs.
    #[arg(long, value_name = "PERCENT", default_value_t = 80.0)]
    pub threshold: f64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Only this host IP.
    #[arg(value_name = "IP", long)]
    pub host: Option<String>,

    /// The window of observed use, as an age: `7d`, `30d`.
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,

    /// vCPUs the plan may give per logical CPU of a host.
    #[arg(long, value_name = "RATIO", default_value_t = 4.0)]
    pub vcpus_per_cpu: f64,

    /// Memory each host keeps for itself, e.g. `1GiB`.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub host_reserve: u64,

    /// Also write the plan as a `virsh` script to this file (to review, then run by hand).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowLevel {
    Raw,
    Minute,
    Hour,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 1s or 100ms)"))?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN_INTERVAL)
        ));
    }
    Ok(d)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_database_gets_its_own_default_spool() {
        let default = std::path::Path::new(DEFAULT_SPOOL_DIR);
        assert_eq!(
            spool_dir(default, "mysql://setmov:pw@db.example:3306/fleet"),
            default.join("setmov_db.example_3306_fleet")
        );
        let given = std::path::Path::new("/srv/spool");
        assert_eq!(spool_dir(given, "mysql://u@h/d"), given);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
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

    #[test]
    fn intervals_parse_with_units_and_a_floor() {
        assert_eq!(parse_interval("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("1ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
