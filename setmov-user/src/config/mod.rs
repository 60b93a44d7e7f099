//! The configuration file (`/etc/setmov/setmov.toml` unless `--config` or `SETMOV_CONFIG` say
//! otherwise): every command-line option can be set there by its long name.
//!
//! Keys at the top of the file apply to every command that has the option (`database = ...`
//! once for `run`, `show`, `report`, ...); a `[command]` table (`[run]`, `[experiment.mem-knee]`)
//! applies to that command only and wins over the top. The command line and the environment
//! win over the file. The file is checked against the clap definitions themselves, so a new
//! option is settable here without further code, and every value goes through the same parser
//! as on the command line. Hidden options (the password from the environment) cannot be set.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml_edit::{Item, Table, Value};

use crate::store::location::redact;

mod default_file;
pub use default_file::default_file;

/// Where the configuration is read from by default; a missing default file is no error.
pub const DEFAULT_CONFIG: &str = "/etc/setmov/setmov.toml";

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Every problem found, one per line, each with the file, line and column.
    #[error("invalid configuration\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// One option set by the file.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    /// The command path of its table: empty at the top, `["experiment", "mem-knee"]`.
    table: Vec<String>,
    /// The option's long name.
    key: String,
    /// What it passes on the command line: no value for a flag set to true.
    values: Vec<String>,
    /// A flag set to false passes nothing, but still overrides the top of the file.
    enabled: bool,
}

/// A checked configuration file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigFile {
    settings: Vec<Setting>,
}

impl ConfigFile {
    /// Reads and checks `path` against `root` (the whole `setmov` command).
    pub fn load(root: &Command, path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ConfigFile::parse(root, &path.display().to_string(), &text)
    }

    /// Checks `text` (named `origin` in messages) against `root`.
    pub fn parse(root: &Command, origin: &str, text: &str) -> Result<ConfigFile, ConfigError> {
        let document = toml_edit::Document::parse(text).map_err(|e| {
            let at = e.span().map_or(String::new(), |s| position(text, &s));
            ConfigError::Invalid(vec![format!(
                "{origin}{at}: not valid TOML: {}",
                e.message()
            )])
        })?;
        let mut root = root.clone();
        root.build();
        let mut check = Checker {
            origin,
            text,
            settings: Vec::new(),
            problems: Vec::new(),
        };
        check.table(&root, &[], document.as_table());
        if check.problems.is_empty() {
            Ok(ConfigFile {
                settings: check.settings,
            })
        } else {
            Err(ConfigError::Invalid(check.problems))
        }
    }

    /// How many options the file sets.
    pub fn len(&self) -> usize {
        self.settings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    /// The arguments to append to the command line of `command` (its path below `setmov`,
    /// whose parsed arguments are `matches`): the file's options that the command line and the
    /// environment left at their defaults, with the command's own table over the top.
    pub fn arguments(
        &self,
        root: &Command,
        command: &[&str],
        matches: &ArgMatches,
    ) -> Vec<OsString> {
        let mut root = root.clone();
        root.build();
        let Some(target) = find_command(&root, command) else {
            return Vec::new();
        };
        let mut chosen: Vec<&Setting> = Vec::new();
        // Later (deeper) tables override earlier ones.
        for table in (0..=command.len()).filter_map(|depth| command.get(..depth)) {
            for setting in self.settings.iter().filter(|s| s.table == table) {
                if target
                    .get_arguments()
                    .any(|a| a.get_long() == Some(&setting.key))
                {
                    chosen.retain(|c| c.key != setting.key);
                    chosen.push(setting);
                }
            }
        }
        let mut arguments = Vec::new();
        for setting in chosen {
            let Some(arg) = target
                .get_arguments()
                .find(|a| a.get_long() == Some(&setting.key))
            else {
                continue;
            };
            let given = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if given || !setting.enabled {
                continue;
            }
            if setting.values.is_empty() {
                arguments.push(OsString::from(format!("--{}", setting.key)));
            }
            for value in &setting.values {
                arguments.push(OsString::from(format!("--{}={value}", setting.key)));
            }
        }
        arguments
    }
}

struct Checker<'a> {
    origin: &'a str,
    text: &'a str,
    settings: Vec<Setting>,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn problem(&mut self, span: Option<Range<usize>>, message: String) {
        let at = span.map_or(String::new(), |s| position(self.text, &s));
        self.problems
            .push(format!("{}{at}: {message}", self.origin));
    }

    /// Checks the table of `command` (at `path` below the root; the root itself when empty).
    fn table(&mut self, command: &Command, path: &[String], table: &Table) {
        let name = table_name(path);
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{name} ")
        };
        for (key, item) in table.iter() {
            let span = table
                .key(key)
                .and_then(toml_edit::Key::span)
                .or_else(|| item.span());
            if let Some(sub) = command.find_subcommand(key).filter(|s| s.get_name() == key) {
                let mut sub_path = path.to_vec();
                sub_path.push(key.to_owned());
                match item {
                    Item::Table(t) => self.table(sub, &sub_path, t),
                    Item::Value(Value::InlineTable(t)) => {
                        self.table(sub, &sub_path, &t.clone().into_table());
                    }
                    _ => self.problem(
                        span,
                        format!(
                            "`{key}` is a command: its options go in a [{}] table",
                            sub_path.join(".")
                        ),
                    ),
                }
                continue;
            }
            // At the top an option may belong to any command; in a table, to its command.
            let commands: Vec<&Command> = if path.is_empty() {
                all_commands(command)
            } else {
                vec![command]
            };
            let holders: Vec<(&Command, &Arg)> = commands
                .iter()
                .filter_map(|c| {
                    settable(c)
                        .find(|a| a.get_long() == Some(key))
                        .map(|a| (*c, a))
                })
                .collect();
            if holders.is_empty() {
                let message = self.unknown_key(key, &name, &commands, command, path.is_empty());
                self.problem(span, message);
                continue;
            }
            let value_span = item.span().or(span.clone());
            let Some(setting) = self.setting(path, key, item, &holders, &prefix, value_span) else {
                continue;
            };
            self.settings.push(setting);
        }
    }

    fn unknown_key(
        &self,
        key: &str,
        table: &str,
        commands: &[&Command],
        command: &Command,
        at_top: bool,
    ) -> String {
        let mut options: Vec<&str> = commands
            .iter()
            .flat_map(|c| settable(c).filter_map(Arg::get_long))
            .collect();
        options.sort_unstable();
        options.dedup();
        // Commands with something to set (not `help`, `completions`, ...).
        let tables: Vec<String> = command
            .get_subcommands()
            .filter(|s| s.get_name() != "config")
            .filter(|s| {
                all_commands(s)
                    .iter()
                    .any(|c| settable(c).any(|a| !a.is_global_set()))
            })
            .map(|s| s.get_name().to_owned())
            .collect();
        let mut message = if at_top {
            format!("unknown key `{key}` at the top of the file")
        } else {
            format!("unknown key `{key}` in {table}")
        };
        let best = options
            .iter()
            .copied()
            .chain(tables.iter().map(String::as_str))
            .map(|o| (strsim::jaro_winkler(key, o), o))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, suggestion)) = best {
            let _ = write!(message, " (did you mean `{suggestion}`?)");
        }
        if at_top {
            let _ = write!(
                message,
                "; expected a long option of a setmov command, or a table: {}",
                tables
                    .iter()
                    .map(|t| format!("[{t}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            let _ = write!(message, "; expected one of: {}", options.join(", "));
            if !tables.is_empty() {
                let _ = write!(message, "; or a table [{}]", tables.join("], ["));
            }
        }
        message
    }

    /// The setting `key = item`, checked by the option's own parser in every command that
    /// has it; `None` (and a problem recorded) when it does not fit.
    fn setting(
        &mut self,
        path: &[String],
        key: &str,
        item: &Item,
        holders: &[(&Command, &Arg)],
        // `[run] ` in a table, nothing at the top.
        table: &str,
        span: Option<Range<usize>>,
    ) -> Option<Setting> {
        let shown = item
            .as_value()
            .map_or_else(|| "a table".to_owned(), shown_value);
        let (_, first) = holders.first()?;
        let is_flag = matches!(first.get_action(), ArgAction::SetTrue);
        let many = matches!(first.get_action(), ArgAction::Append);
        // An option whose value may be left out (`--prometheus` alone) is also a switch.
        let value_optional = first
            .get_num_args()
            .is_some_and(|n| n.min_values() == 0 && n.takes_values());
        let value = item.as_value();
        let (values, enabled) = match value {
            Some(Value::Boolean(b)) if is_flag || value_optional => (Vec::new(), *b.value()),
            _ if is_flag => {
                self.problem(
                    span,
                    format!("{table}{key} = {shown}: expected true or false"),
                );
                return None;
            }
            Some(Value::Array(items)) if many => {
                let mut values = Vec::new();
                for v in items.iter() {
                    match scalar(v) {
                        Some(s) => values.push(s),
                        None => {
                            self.problem(
                                span,
                                format!(
                                    "{table}{key} = {shown}: expected a list of strings or numbers"
                                ),
                            );
                            return None;
                        }
                    }
                }
                (values, true)
            }
            Some(Value::Array(_)) => {
                self.problem(
                    span,
                    format!("{table}{key} = {shown}: expected one value, not a list"),
                );
                return None;
            }
            Some(v) => match scalar(v) {
                Some(s) => (vec![s], true),
                None => {
                    self.problem(
                        span,
                        format!("{table}{key} = {shown}: expected a string or a number"),
                    );
                    return None;
                }
            },
            None => {
                self.problem(span, format!("{table}{key} is a table: expected a value"));
                return None;
            }
        };
        // Every command that has the option must accept the value.
        let mut refused: Vec<(&Command, &Arg, clap::Error)> = Vec::new();
        for (command, arg) in holders {
            let parts = values
                .iter()
                .flat_map(|value| match arg.get_value_delimiter() {
                    Some(d) => value.split(d).collect(),
                    None => vec![value.as_str()],
                });
            if let Some(e) = parts
                .filter_map(|p| parse_value(command, arg, p).err())
                .next()
            {
                refused.push((command, arg, e));
            }
        }
        if let Some((_, arg, e)) = refused.first() {
            let scope = if refused.len() < holders.len() {
                let names: Vec<String> = refused
                    .iter()
                    .map(|(c, _, _)| format!("`setmov {}`", command_path(c)))
                    .collect();
                format!(" (for {})", names.join(", "))
            } else {
                String::new()
            };
            let mut message = format!("{table}{key} = {shown}{scope}: {}", clap_reason(e));
            if let Some(help) = arg.get_help() {
                let help = help.to_string();
                let _ = write!(
                    message,
                    " ({key}: {})",
                    help.lines().next().unwrap_or_default()
                );
            }
            self.problem(span, message);
            return None;
        }
        Some(Setting {
            table: path.to_vec(),
            key: key.to_owned(),
            values,
            enabled,
        })
    }
}

/// A value as a problem repeats it: as written, but a URL that may hold a password (a
/// database's) only redacted.
fn shown_value(value: &Value) -> String {
    let needs_redaction = |v: &Value| v.as_str().is_some_and(|s| redact(s) != s);
    match value {
        Value::String(s) if needs_redaction(value) => format!("{:?}", redact(s.value())),
        Value::Array(items) if items.iter().any(needs_redaction) => {
            let shown: Vec<String> = items.iter().map(shown_value).collect();
            format!("[{}]", shown.join(", "))
        }
        _ => value.to_string().trim().to_owned(),
    }
}

/// A TOML scalar as it would be written on the command line.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        Value::Float(f) => Some(f.value().to_string()),
        Value::Boolean(b) => Some(b.value().to_string()),
        _ => None,
    }
}

/// Parses `value` as `arg` of `command` would on the command line. The option goes alone into
/// a command of its own: the real one may require options the file does not set.
fn parse_value(command: &Command, arg: &Arg, value: &str) -> Result<(), clap::Error> {
    let long = arg.get_long().unwrap_or_default();
    let mut option = Arg::new(arg.get_id().clone())
        .long(long.to_owned())
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Set)
        .allow_hyphen_values(true);
    if let Some(names) = arg.get_value_names() {
        option = option.value_names(names.to_vec());
    }
    Command::new(command.get_name().to_owned())
        .arg(option)
        .try_get_matches_from([OsString::from("setmov"), format!("--{long}={value}").into()])
        .map(drop)
}

/// clap's reason for refusing a value: its first paragraph without the `error:` prefix, on
/// one line (it includes the possible values of a choice).
fn clap_reason(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let text = paragraph.join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_owned()
}

/// The options a file may set: long ones that are shown in the help.
fn settable(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !a.is_hide_set()
            && !matches!(a.get_id().as_str(), "help" | "version" | "config")
    })
}

/// `command` and every command below it.
fn all_commands(command: &Command) -> Vec<&Command> {
    let mut all = vec![command];
    for sub in command.get_subcommands() {
        all.extend(all_commands(sub));
    }
    all
}

fn find_command<'a>(root: &'a Command, path: &[&str]) -> Option<&'a Command> {
    path.iter()
        .try_fold(root, |command, name| command.find_subcommand(name))
}

fn command_path(command: &Command) -> String {
    command
        .get_bin_name()
        .map(|b| b.trim_start_matches("setmov ").to_owned())
        .unwrap_or_else(|| command.get_name().to_owned())
}

fn table_name(path: &[String]) -> String {
    if path.is_empty() {
        "the top of the file".to_owned()
    } else {
        format!("[{}]", path.join("."))
    }
}

/// `:line:column` of a byte offset, both from 1.
fn position(text: &str, span: &Range<usize>) -> String {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(":{line}:{column}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn check(text: &str) -> Result<ConfigFile, String> {
        ConfigFile::parse(&Cli::command(), "setmov.toml", text).map_err(|e| e.to_string())
    }

    /// The arguments the file adds to `setmov ARGS`.
    fn added(text: &str, args: &[&str]) -> Vec<String> {
        let file = check(text).expect("valid");
        let root = Cli::command();
        let mut argv = vec!["setmov"];
        argv.extend(args);
        // Leniently, as the real first pass: the file may give a required option.
        let matches = root
            .clone()
            .ignore_errors(true)
            .try_get_matches_from(argv)
            .expect("parses");
        let mut command = Vec::new();
        let mut deepest = &matches;
        while let Some((name, sub)) = deepest.subcommand() {
            command.push(name);
            deepest = sub;
        }
        file.arguments(&root, &command, deepest)
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn the_default_file_is_valid_and_so_is_every_default_in_it() {
        let default = default_file(&Cli::command());
        assert_eq!(check(&default).map(|f| f.len()), Ok(0));
        // Uncomment every option that has a real default (not a `<PLACEHOLDER>`).
        let uncommented: String = default
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(setting) if setting.contains(" = ") && !setting.contains("\"<") => {
                    format!("{setting}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let file = check(&uncommented).expect("the defaults are valid");
        assert!(file.len() > 30, "{}", file.len());
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_and_tables_win_over_the_top() {
        let text = r#"
            database = "/srv/setmov.db"
            since = "2h"
            [run]
            interval = "500ms"
            quiet = true
            skip-disks = ["loop", "sr"]
            [report]
            since = "3d"
            [experiment.mem-knee]
            sizes = [64, 128]
            out = "/srv/knee"
        "#;
        assert_eq!(
            added(text, &["run", "--interval", "2s"]),
            [
                "--database=/srv/setmov.db",
                "--quiet",
                "--skip-disks=loop",
                "--skip-disks=sr"
            ]
        );
        assert_eq!(
            added(text, &["report"]),
            ["--database=/srv/setmov.db", "--since=3d"]
        );
        assert_eq!(
            added(text, &["show", "--since", "5m"]),
            ["--database=/srv/setmov.db"]
        );
        assert_eq!(
            added(text, &["experiment", "mem-knee"]),
            ["--sizes=64", "--sizes=128", "--out=/srv/knee"]
        );
    }

    #[test]
    fn an_option_with_an_optional_value_is_also_a_switch() {
        assert_eq!(
            added("[run]\nprometheus = true\n", &["run"]),
            ["--prometheus"]
        );
        assert_eq!(
            added("[run]\nprometheus = \"0.0.0.0:9739\"\n", &["run"]),
            ["--prometheus=0.0.0.0:9739"]
        );
        assert!(added("[run]\nprometheus = false\n", &["run"]).is_empty());
    }

    #[test]
    fn a_flag_set_false_in_a_table_overrides_the_top() {
        let text = "database-tls = true\n[show]\ndatabase-tls = false\n";
        assert_eq!(added(text, &["report"]), ["--database-tls"]);
        assert!(added(text, &["show"]).is_empty());
    }

    #[test]
    fn problems_give_the_key_its_line_and_what_is_expected() {
        let problems = check(
            "[run]\nintervall = \"2s\"\ninterval = \"fast\"\nquiet = 1\nskip-disks = \"loop\"\n\
             [show]\nformat = \"xml\"\nlimit = [1]\n[nope]\n",
        )
        .expect_err("invalid");
        let lines: Vec<&str> = problems.lines().collect();
        assert_eq!(lines[0], "invalid configuration");
        assert!(
            lines[1].starts_with(
                "setmov.toml:2:1: unknown key `intervall` in [run] (did you mean `interval`?); \
                 expected one of: bpf-stats, count, database,"
            ),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "setmov.toml:3:12: [run] interval = \"fast\": invalid value 'fast' for \
             '--interval <DURATION>': expected number at 0 (try e.g. 1s or 100ms) (interval: \
             Time between samples, e.g. `1s`, `100ms`, `5m`: from 10ms to 1 day)"
        );
        assert_eq!(
            lines[3],
            "setmov.toml:4:9: [run] quiet = 1: expected true or false"
        );
        assert_eq!(
            lines[4],
            "setmov.toml:7:10: [show] format = \"xml\": invalid value 'xml' for \
             '--format <FORMAT>' [possible values: table, json, csv] (format: Output format)"
        );
        assert_eq!(
            lines[5],
            "setmov.toml:8:9: [show] limit = [1]: expected one value, not a list"
        );
        assert!(lines[6].starts_with("setmov.toml:9:2: unknown key `nope` at the top of the file"));
        assert_eq!(lines.len(), 7, "{problems}");
    }

    #[test]
    fn ages_durations_and_sizes_out_of_range_are_problems() {
        let problems = check(
            "retain-raw = \"20000y\"\n[report]\nsince = \"20000y\"\n[run]\ninterval = \"0s\"\n\
             spool-max = \"99999TiB\"\n",
        )
        .expect_err("invalid");
        let lines: Vec<&str> = problems.lines().skip(1).collect();
        let expected = [
            (
                "setmov.toml:1:14: retain-raw = \"20000y\"",
                "at most 100 years",
            ),
            (
                "setmov.toml:3:9: [report] since = \"20000y\"",
                "at most 100 years",
            ),
            (
                "setmov.toml:5:12: [run] interval = \"0s\"",
                "must be at least 10ms",
            ),
            (
                "setmov.toml:6:13: [run] spool-max = \"99999TiB\"",
                "at most 16TiB",
            ),
        ];
        assert_eq!(lines.len(), expected.len(), "{problems}");
        for (line, (start, reason)) in lines.iter().zip(expected) {
            assert!(line.starts_with(start) && line.contains(reason), "{line}");
        }
    }

    #[test]
    fn broken_toml_is_reported_with_its_position() {
        let e = check("[run]\ninterval = \n").expect_err("invalid");
        assert!(
            e.starts_with("invalid configuration\nsetmov.toml:2:"),
            "{e}"
        );
    }

    #[test]
    fn hidden_options_cannot_be_set() {
        let e = check("database-password-from-env = \"secret\"\n").expect_err("hidden");
        assert!(
            e.contains("unknown key `database-password-from-env`"),
            "{e}"
        );
        assert!(!e.contains("secret"), "the value is never repeated: {e}");
    }
}
