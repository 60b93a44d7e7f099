//! `setmov config check` and `setmov config default`: the configuration file.

use std::path::Path;

use clap::CommandFactory;

use super::print;
use crate::cli::Cli;
use crate::config::ConfigFile;

pub fn check_config(path: &Path) -> anyhow::Result<()> {
    let file = ConfigFile::load(&Cli::command(), path)?;
    print(&format!(
        "{}: valid, {} option{} set\n",
        path.display(),
        file.len(),
        if file.len() == 1 { "" } else { "s" }
    ))
}

/// The default configuration, every option commented out with its help and default.
pub fn print_default_config() -> anyhow::Result<()> {
    print(&crate::config::default_file(&Cli::command()))
}
