//! `cargo xtask install`: the release binary, its systemd unit, a default configuration, shell
//! completions and man pages, under a root folder (`/` by default; another one stages a
//! package or a test). The completions, man pages and default configuration are generated
//! by the installed binary itself, from its clap definitions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The unit's template; `@SBINDIR@` becomes the binary's folder.
const UNIT_TEMPLATE: &str = include_str!("../../contrib/systemd/setmov.service");

pub struct InstallOptions {
    /// Everything goes below this folder.
    pub root: PathBuf,
    /// The binary goes to `<prefix>/sbin`, completions and man pages below `<prefix>/share`.
    pub prefix: PathBuf,
    /// The binary to install; `None` builds the release binary first.
    pub binary: Option<PathBuf>,
}

/// Where each installed file goes, below the root.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub binary: PathBuf,
    pub unit: PathBuf,
    pub config: PathBuf,
    pub bash_completion: PathBuf,
    pub zsh_completion: PathBuf,
    pub fish_completion: PathBuf,
    pub man_dir: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, prefix: &Path) -> Layout {
        let under = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
        let share = prefix.join("share");
        Layout {
            binary: under(&prefix.join("sbin/setmov")),
            unit: under(Path::new("/etc/systemd/system/setmov.service")),
            config: under(Path::new("/etc/setmov/setmov.toml")),
            bash_completion: under(&share.join("bash-completion/completions/setmov")),
            zsh_completion: under(&share.join("zsh/site-functions/_setmov")),
            fish_completion: under(&share.join("fish/vendor_completions.d/setmov.fish")),
            man_dir: under(&share.join("man/man1")),
        }
    }
}

/// The unit for a binary installed in `sbin_dir` (as seen on the target system).
pub fn unit_file(sbin_dir: &Path) -> String {
    UNIT_TEMPLATE.replace("@SBINDIR@", &sbin_dir.display().to_string())
}

pub fn install(workspace: &Path, options: &InstallOptions) -> anyhow::Result<()> {
    let built = match &options.binary {
        Some(binary) => binary.clone(),
        None => {
            crate::toolchain::setup(workspace)?;
            crate::cargo(workspace, &["build", "--release", "-p", "setmov-user"])?;
            workspace.join("target/release/setmov")
        }
    };
    let layout = Layout::new(&options.root, &options.prefix);
    copy_executable(&built, &layout.binary)?;
    let installed = &layout.binary;
    write(
        &layout.unit,
        &unit_file(&options.prefix.join("sbin")),
        0o644,
    )?;
    // An operator's configuration is never overwritten.
    if layout.config.exists() {
        eprintln!(
            "xtask: kept the existing {} (`setmov config default` prints the default)",
            layout.config.display()
        );
    } else {
        write(
            &layout.config,
            &output(installed, &["config", "default"])?,
            0o644,
        )?;
    }
    for (shell, path) in [
        ("bash", &layout.bash_completion),
        ("zsh", &layout.zsh_completion),
        ("fish", &layout.fish_completion),
    ] {
        write(path, &output(installed, &["completions", shell])?, 0o644)?;
    }
    crate::run(Command::new(installed).arg("manpages").arg(&layout.man_dir))?;
    for (what, path) in [
        ("binary", &layout.binary),
        ("unit", &layout.unit),
        ("configuration", &layout.config),
        ("completions", &layout.bash_completion),
        ("man pages", &layout.man_dir),
    ] {
        eprintln!("xtask: {what}: {}", path.display());
    }
    if options.root == Path::new("/") && Path::new("/run/systemd/system").exists() {
        crate::run(Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("xtask: start it with `systemctl enable --now setmov`");
    } else if options.root == Path::new("/") {
        eprintln!("xtask: systemd is not running here; the unit is ready for when it is");
    }
    Ok(())
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    create_parent(to)?;
    // Through a temporary name, so that a running setmov keeps its old file.
    let staged = to.with_extension("new");
    fs::copy(from, &staged)
        .with_context(|| format!("cannot copy {} to {}", from.display(), staged.display()))?;
    set_mode(&staged, 0o755)?;
    fs::rename(&staged, to).with_context(|| format!("cannot install {}", to.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    create_parent(path)?;
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    set_mode(path, mode)
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    let parent = path.parent().context("a path without a folder")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// What `binary ARGS` prints, or why it failed.
fn output(binary: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            binary.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_root_holds_everything_and_the_unit_names_the_real_path() {
        let layout = Layout::new(Path::new("/tmp/stage"), Path::new("/usr/local"));
        assert_eq!(layout.binary, Path::new("/tmp/stage/usr/local/sbin/setmov"));
        assert_eq!(
            layout.unit,
            Path::new("/tmp/stage/etc/systemd/system/setmov.service")
        );
        assert_eq!(
            layout.config,
            Path::new("/tmp/stage/etc/setmov/setmov.toml")
        );
        assert_eq!(
            layout.man_dir,
            Path::new("/tmp/stage/usr/local/share/man/man1")
        );
        let unit = unit_file(Path::new("/usr/local/sbin"));
        assert!(unit.contains("\nExecStart=/usr/local/sbin/setmov run --quiet\n"));
        assert!(!unit.contains("@SBINDIR@"), "every placeholder replaced");
    }
}
