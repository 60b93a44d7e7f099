//! A configuration file through the checker `setmov config check` runs on its text.
#![no_main]

use std::sync::OnceLock;

use clap::CommandFactory;
use setmov::cli::Cli;
use setmov::config::ConfigFile;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    static COMMAND: OnceLock<clap::Command> = OnceLock::new();
    let command = COMMAND.get_or_init(Cli::command);
    // The file is read as UTF-8 text (`ConfigFile::load`), so other bytes never reach the
    // checker.
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = std::hint::black_box(ConfigFile::parse(command, "fuzz.toml", text));
    }
});
