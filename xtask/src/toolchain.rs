//! The eBPF toolchain: rust-src for `-Z build-std=core` and bpf-linker built against rustc's
//! own LLVM (Debian ships other LLVM versions). Each step checks first, so repeating is cheap.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The bpf-linker release that matches aya 0.14 and rustc 1.95's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup(root: &Path) -> anyhow::Result<()> {
    super::packages::ensure()?;
    super::packages::ensure_promtool()?;
    if !installed("cargo-nextest", &["--version"], "cargo-nextest") {
        eprintln!("xtask: installing cargo-nextest (the test runner)");
        super::run(cargo().args(["install", "--locked", "cargo-nextest"]))?;
    }
    let sysroot = rustc_sysroot()?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: installing rust-src (the eBPF crate builds core from source)");
        super::run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }
    if bpf_linker_installed() {
        return Ok(());
    }
    install_bpf_linker(root, &sysroot)
}

fn rustc_sysroot() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc")?;
    if !out.status.success() {
        bail!("rustc --print sysroot failed");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Whether `program args` runs and prints `expected`.
pub fn installed(program: &str, args: &[&str], expected: &str) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(expected))
}

fn bpf_linker_installed() -> bool {
    installed("bpf-linker", &["--version"], BPF_LINKER_VERSION)
}

/// rustc ships `libLLVM.so.<major>.<minor>-rust-<version>`; bpf-linker links against it through
/// a prefix folder holding `lib64/libLLVM.so` and the versioned name, both pointing at it.
fn install_bpf_linker(root: &Path, sysroot: &Path) -> anyhow::Result<()> {
    let lib_dir = sysroot.join("lib");
    let library = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let major = llvm_major(&library)
        .with_context(|| format!("cannot read the LLVM version from {library}"))?;
    let prefix = root.join("target/xtask/llvm-prefix");
    let prefix_lib = prefix.join("lib64");
    std::fs::create_dir_all(&prefix_lib)?;
    for link in ["libLLVM.so", library.as_str()] {
        let path = prefix_lib.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(lib_dir.join(&library), &path)
            .with_context(|| format!("cannot link {}", path.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM {major} (a few minutes)"
    );
    let feature = format!("llvm-{major}");
    super::run(
        cargo()
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "--locked", "--no-default-features", "--features"])
            .arg(&feature)
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}")),
    )?;
    if !bpf_linker_installed() {
        bail!("bpf-linker was installed but is not on PATH (add ~/.cargo/bin to PATH)");
    }
    Ok(())
}

/// `libLLVM.so.22.1-rust-1.95.0-stable` → 22.
fn llvm_major(library: &str) -> Option<u32> {
    library
        .strip_prefix("libLLVM.so.")?
        .split(['.', '-'])
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_comes_from_the_library_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.95.0-stable"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19-rust-1.83.0-stable"), Some(19));
        assert_eq!(llvm_major("libLLVM-22-rust-1.95.0-stable.so"), None);
    }
}
