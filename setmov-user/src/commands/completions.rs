//! `setmov completions` and `setmov manpages`: what shells and `man` read.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::print;
use crate::cli::Cli;

/// A shell completion script, on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "setmov", &mut out);
    print(&String::from_utf8_lossy(&out))
}

/// The man pages of setmov and each of its commands, into `dir` (made if missing).
pub fn manpages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}
