//! The `setmov` command line: [`main`] parses it ([`Cli`], completed by the configuration
//! file), dispatches to one command of [`crate::commands`] and turns its error into a line on
//! stderr and exit code 2.

mod args;
mod database;
mod read_args;
mod values;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

pub use args::{
    Cli, Command, ConfigCommand, DEFAULT_LIBVIRT_RUN_DIR, DEFAULT_LIBVIRT_URI, DEFAULT_PROC_ROOT,
    ExperimentCommand, MemKneeArgs, RunArgs, TopArgs,
};
pub use database::{DEFAULT_DATABASE, DEFAULT_SPOOL_DIR, DatabaseArgs};
pub use read_args::{MigratePlanArgs, PlotArgs, RecommendArgs, ReportArgs, ShowArgs};
pub use values::{Age, ShowLevel};

use crate::commands;
use crate::config::{ConfigFile, DEFAULT_CONFIG};
use crate::logging::LogTarget;

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
    let result = runtime.block_on(dispatch(cli, top_log));
    // A database call still waiting on a lock (a write given up at the end of a run) must not
    // hold the exit: its transaction is rolled back when the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
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

/// Runs the one command the command line names.
async fn dispatch(cli: Cli, top_log: Option<crate::top::RecentLog>) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => commands::run(args).await,
        Command::Show(args) => commands::show(args).await,
        Command::Report(args) => commands::report(args).await,
        Command::Plot(args) => commands::plot(args).await,
        Command::MigratePlan(args) => commands::migrate_plan(args).await,
        Command::Recommend(args) => commands::recommend(args).await,
        Command::Experiment(ExperimentCommand::MemKnee(args)) => commands::mem_knee(args).await,
        Command::Migrate(args) => commands::migrate(args).await,
        Command::Top(args) => commands::top(args, top_log).await,
        Command::Config(ConfigCommand::Check { file }) => {
            commands::check_config(&file.unwrap_or(cli.config))
        }
        Command::Config(ConfigCommand::Default) => commands::print_default_config(),
        Command::Completions { shell } => commands::completions(shell),
        Command::Manpages { dir } => commands::manpages(&dir),
    }
}
