//! The commented default configuration file (`setmov config default`), written from the
//! command definitions themselves: every settable option, its help and its default.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command};

use super::{all_commands, command_path, settable};

/// The commented default configuration, generated from the command definitions: every
/// settable option with its help and its default.
pub fn default_file(root: &Command) -> String {
    let mut root = root.clone();
    root.build();
    let mut out = String::from(
        "# SETMOV configuration. Read from /etc/setmov/setmov.toml, or the file given by --config\n\
         # or SETMOV_CONFIG. Check it with `setmov config check FILE`.\n\
         #\n\
         # Every command-line option can be set here by its long name. Options at the top apply\n\
         # to every command that has them; a [command] table applies to that command only and\n\
         # wins over the top. The command line and the environment win over this file.\n\
         #\n\
         # Secrets do not belong here: the MySQL password comes from database-password-file or\n\
         # from the environment variable SETMOV_DATABASE_PASSWORD.\n\
         #\n\
         # Every line below is commented out and shows the built-in default.\n\n",
    );
    let mut commands = all_commands(&root);
    commands.retain(|c| c.get_name() != "help" && c.get_name() != "config");
    // Options that several commands share unchanged (the database's) are written once, at the
    // top, where they apply to all of them.
    let entries: Vec<(&Command, &Arg, String)> = commands
        .iter()
        .flat_map(|c| {
            settable(c)
                .filter(|a| std::ptr::eq(*c, &root) || !a.is_global_set())
                .map(|a| (*c, a, default_entry(a)))
        })
        .collect();
    let shared = |arg: &Arg, entry: &str| {
        let same: Vec<&(&Command, &Arg, String)> = entries
            .iter()
            .filter(|(_, a, _)| a.get_long() == arg.get_long())
            .collect();
        same.len() > 1 && same.iter().all(|(_, _, e)| e == entry)
    };
    let mut written_at_top: Vec<&str> = Vec::new();
    for (command, arg, entry) in &entries {
        let key = arg.get_long().unwrap_or_default();
        if (std::ptr::eq(*command, &root) || shared(arg, entry)) && !written_at_top.contains(&key) {
            out.push_str(entry);
            written_at_top.push(key);
        }
    }
    for command in commands.iter().filter(|c| !std::ptr::eq(**c, &root)) {
        let own: Vec<&String> = entries
            .iter()
            .filter(|(c, a, e)| std::ptr::eq(*c, *command) && !shared(a, e))
            .map(|(_, _, e)| e)
            .collect();
        if own.is_empty() {
            continue;
        }
        let _ = writeln!(out, "[{}]", command_path(command).replace(' ', "."));
        for entry in own {
            out.push_str(entry);
        }
    }
    out
}

fn default_entry(arg: &Arg) -> String {
    let key = arg.get_long().unwrap_or_default();
    let mut entry = String::new();
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    for line in wrap(&help, 88) {
        let _ = writeln!(entry, "# {line}");
    }
    if let Some(env) = arg.get_env() {
        let _ = writeln!(entry, "# (environment: {})", env.to_string_lossy());
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let value = match arg.get_action() {
        ArgAction::SetTrue => "false".to_owned(),
        ArgAction::Append => format!(
            "[{}]",
            defaults
                .iter()
                .map(|d| quote(d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => match defaults.first() {
            Some(d) => quote(d),
            None => {
                let name = arg
                    .get_value_names()
                    .and_then(|n| n.first())
                    .map_or("VALUE".to_owned(), ToString::to_string);
                let _ = writeln!(entry, "# (not set by default)");
                format!("\"<{name}>\"")
            }
        },
    };
    let _ = writeln!(entry, "# {key} = {value}\n");
    entry
}

/// `text` in lines of at most `width` characters, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// A TOML value for a default: numbers bare, everything else a string.
fn quote(value: &str) -> String {
    if value.parse::<f64>().is_ok() {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}
