//! Builds the eBPF object (package `setmov-ebpf`, for `bpfel-unknown-none`) with aya-build and
//! sets `cfg(setmov_ebpf)` so `src/ebpf.rs` embeds it.
//!
//! Without the eBPF toolchain (bpf-linker on PATH and the rust-src component), or with
//! `SETMOV_NO_EBPF=1`, setmov is built without eBPF: a cargo warning says why and the same
//! reason reaches the program as `SETMOV_EBPF_OFF_REASON`. A toolchain that is present but
//! fails to build the object is an error, never a silent fallback.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Set to anything but "" or "0" to build without eBPF even where the toolchain exists.
const NO_EBPF: &str = "SETMOV_NO_EBPF";
/// aya-build's own switch: it skips the build but leaves no object, so it means "off" here too.
const AYA_BUILD_SKIP: &str = "AYA_BUILD_SKIP";
const EBPF_PACKAGE: &str = "setmov-ebpf";
/// rustup toolchain for the eBPF build. Stable needs RUSTC_BOOTSTRAP=1 for `-Z build-std=core`.
const TOOLCHAIN: &str = "stable";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(setmov_ebpf)");
    println!("cargo::rerun-if-env-changed={NO_EBPF}");
    println!("cargo::rerun-if-env-changed={AYA_BUILD_SKIP}");
    println!("cargo::rerun-if-env-changed=PATH");
    // The store embeds the migrations at compile time; a new or changed file must rebuild it.
    println!("cargo::rerun-if-changed=../migrations");

    if let Some(reason) = toolchain_missing() {
        // Both lines below must stay one line.
        let reason = reason.replace(['\r', '\n'], " ");
        println!(
            "cargo::warning=eBPF is off in this build because {reason}; setmov will run \
             without its eBPF probes (install bpf-linker and rust-src, then rebuild)"
        );
        println!("cargo::rustc-env=SETMOV_EBPF_OFF_REASON={reason}");
        return Ok(());
    }

    // SAFETY: the build script has started no thread yet. aya-build reads RUSTC_BOOTSTRAP to
    // add `-Z build-std=core`, and its cargo child inherits both variables. Quiet keeps that
    // child's progress lines out of the warnings aya-build makes of its stderr; compiler
    // messages and errors still come through.
    unsafe {
        env::set_var("RUSTC_BOOTSTRAP", "1");
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    let root_dir = ebpf_package_dir()?;
    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(TOOLCHAIN),
    )?;
    println!("cargo::rustc-cfg=setmov_ebpf");
    Ok(())
}

fn switched_on(name: &str) -> bool {
    env::var_os(name).is_some_and(|value| !value.is_empty() && value != "0")
}

/// Why the eBPF object cannot be built here, or None when it can.
fn toolchain_missing() -> Option<String> {
    if switched_on(NO_EBPF) {
        return Some(format!("{NO_EBPF} is set"));
    }
    if switched_on(AYA_BUILD_SKIP) {
        return Some(format!("{AYA_BUILD_SKIP} is set"));
    }

    match which::which("bpf-linker") {
        Ok(linker) => println!("cargo::rerun-if-changed={}", linker.display()),
        Err(_) => {
            // Rebuild once bpf-linker is installed into any PATH directory.
            for dir in env::split_paths(&env::var_os("PATH").unwrap_or_default()) {
                if dir.is_dir() {
                    println!("cargo::rerun-if-changed={}", dir.display());
                }
            }
            return Some("bpf-linker is not on PATH".to_owned());
        }
    }

    let sysroot = match sysroot() {
        Ok(sysroot) => sysroot,
        Err(err) => {
            return Some(format!("the {TOOLCHAIN} toolchain cannot be run ({err:#})"));
        }
    };
    // rustup rewrites this file whenever a component is added or removed. (A missing path
    // would make cargo rerun this script on every build.)
    let components = sysroot.join("lib/rustlib/components");
    if components.is_file() {
        println!("cargo::rerun-if-changed={}", components.display());
    }
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Some(format!(
            "the rust-src component of the {TOOLCHAIN} toolchain is missing"
        ));
    }
    None
}

/// Sysroot of the toolchain aya-build will use: `rustup run stable` when rustup exists,
/// else the rustc on PATH (as aya-build does).
fn sysroot() -> anyhow::Result<PathBuf> {
    let mut cmd = match which::which("rustup") {
        Ok(rustup) => {
            let mut cmd = Command::new(rustup);
            cmd.args(["run", TOOLCHAIN, "rustc"]);
            cmd
        }
        Err(_) => Command::new("rustc"),
    };
    let output = cmd
        .args(["--print", "sysroot"])
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        return Err(anyhow!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let sysroot = String::from_utf8(output.stdout).context("sysroot is not UTF-8")?;
    Ok(PathBuf::from(sysroot.trim()))
}

/// Directory of the eBPF package, found in the workspace metadata as aya-template does. Also
/// asks cargo to rerun this script when the package's path dependencies or the lock file
/// change: aya-build only watches the package's own directory.
fn ebpf_package_dir() -> anyhow::Result<String> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} is not in the workspace"))?;
    for dependency in &package.dependencies {
        if let Some(path) = &dependency.path {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    println!(
        "cargo::rerun-if-changed={}",
        metadata.workspace_root.join("Cargo.lock")
    );
    let dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", package.manifest_path))?;
    Ok(dir.to_string())
}
