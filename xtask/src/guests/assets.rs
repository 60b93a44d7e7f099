//! The guests' boot files: Debian's cloud kernel and its virtio modules, fetched once, and a
//! busybox initramfs, rebuilt whenever its inputs change.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{ASSETS, one_line};
use crate::packages;

const INIT: &str = include_str!("../../guests/init");

/// The kernel's virtio drivers, in the order they must be loaded (`/lib/modules/order`).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_balloon",
];

/// Fetches the kernel once, and rebuilds the initramfs whenever its inputs changed.
pub(super) fn build_assets() -> anyhow::Result<()> {
    let assets = Path::new(ASSETS);
    for dir in [
        assets.to_path_buf(),
        assets.join("disks"),
        assets.join("consoles"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // qemu runs as libvirt-qemu: it must traverse these folders.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    let release = match fs::read_to_string(assets.join("kernel-release")) {
        Ok(release) => release.trim().to_owned(),
        Err(_) => fetch_kernel(assets)?,
    };
    let stamp = format!("{release}\n{MODULES:?}\n{INIT}");
    let stamp_path = assets.join("initrd.stamp");
    if fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str())
        || !assets.join("initrd.img").exists()
    {
        build_initrd(assets)?;
        fs::write(&stamp_path, stamp)?;
    }
    Ok(())
}

/// Downloads the Debian cloud kernel package, keeps its vmlinuz and virtio modules, and
/// returns the kernel release.
fn fetch_kernel(assets: &Path) -> anyhow::Result<String> {
    let package = packages::with_package_lists(cloud_kernel_package)?;
    eprintln!("xtask: fetching {package} for the test guests");
    let work = tempfile::tempdir()?;
    packages::with_package_lists(|| {
        // The sandbox user _apt cannot write into a root-only temporary folder.
        packages::apt(
            Command::new("apt-get")
                .current_dir(work.path())
                .args(["-o", "APT::Sandbox::User=root", "download", "--quiet"])
                .arg(&package),
        )
    })?;
    let deb = fs::read_dir(work.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb of {package}"))?;
    let tree = work.path().join("tree");
    crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;

    let vmlinuz = fs::read_dir(tree.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| file_name(p).starts_with("vmlinuz-"))
        .with_context(|| format!("no boot/vmlinuz-* in {package}"))?;
    let release = file_name(&vmlinuz)
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let module_tree = tree.join("lib/modules").join(&release);
    let modules = assets.join("modules");
    fs::create_dir_all(&modules)?;
    fs::set_permissions(&modules, fs::Permissions::from_mode(0o755))?;
    for name in MODULES {
        let found = find_module(&module_tree, name)?
            .with_context(|| format!("no module {name} in {package}"))?;
        copy_module(&found, &modules.join(format!("{name}.ko")))?;
    }
    copy_readable(&vmlinuz, &assets.join("vmlinuz"))?;
    // Written last: its presence means the kernel and its modules are complete.
    fs::write(assets.join("kernel-release"), &release)?;
    Ok(release)
}

/// `linux-image-<release>-cloud-amd64`, the package `linux-image-cloud-amd64` points to.
fn cloud_kernel_package() -> anyhow::Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-cloud-amd64"])
        .output()
        .context("cannot run apt-cache")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .context("apt-cache knows no kernel that linux-image-cloud-amd64 depends on")
}

/// `NAME.ko` or `NAME.ko.xz` anywhere under `dir`.
fn find_module(dir: &Path, name: &str) -> anyhow::Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, name)? {
                return Ok(Some(found));
            }
        } else if [format!("{name}.ko"), format!("{name}.ko.xz")].contains(&file_name(&path)) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Copies a module, decompressing a `.ko.xz` (newer Debian kernels; bookworm's are plain `.ko`,
/// and the initramfs's busybox insmod takes only those).
fn copy_module(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.extension().is_some_and(|x| x == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(from)
            .output()
            .context("cannot run xz")?;
        if !out.status.success() {
            bail!(
                "cannot decompress {}: {}",
                from.display(),
                one_line(&out.stderr)
            );
        }
        fs::write(to, out.stdout).with_context(|| format!("cannot write {}", to.display()))?;
        fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
        Ok(())
    } else {
        copy_readable(from, to)
    }
}

/// The initramfs: static busybox, `/init`, the modules and their load order, as gzipped cpio.
fn build_initrd(assets: &Path) -> anyhow::Result<()> {
    let stage = tempfile::tempdir()?;
    let root = stage.path();
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("lib/modules"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("cannot copy /bin/busybox (package busybox-static)")?;
    fs::write(root.join("init"), INIT)?;
    for executable in ["bin/busybox", "init"] {
        fs::set_permissions(root.join(executable), fs::Permissions::from_mode(0o755))?;
    }
    let mut entries = vec![
        ".".to_owned(),
        "bin".into(),
        "bin/busybox".into(),
        "init".into(),
        "lib".into(),
        "lib/modules".into(),
        "lib/modules/order".into(),
    ];
    fs::write(root.join("lib/modules/order"), MODULES.join("\n") + "\n")?;
    for name in MODULES {
        let file = format!("lib/modules/{name}.ko");
        fs::copy(
            assets.join("modules").join(format!("{name}.ko")),
            root.join(&file),
        )?;
        entries.push(file);
    }

    let partial = assets.join("initrd.img.partial");
    let mut cpio = Command::new("cpio")
        .args(["--create", "--format=newc", "--owner=0:0", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&partial)?)
        .spawn()
        .context("cannot run cpio")?;
    cpio.stdin
        .take()
        .context("no stdin for cpio")?
        .write_all((entries.join("\n") + "\n").as_bytes())?;
    let status = cpio.wait()?;
    if !status.success() {
        bail!("cpio failed to pack the initramfs: {status}");
    }
    let gzip = Command::new("gzip")
        .args(["-9", "--no-name", "--stdout"])
        .arg(&partial)
        .output()
        .context("cannot run gzip")?;
    if !gzip.status.success() {
        bail!("gzip failed on the initramfs: {}", one_line(&gzip.stderr));
    }
    fs::remove_file(&partial)?;
    let initrd = assets.join("initrd.img");
    fs::write(&initrd, gzip.stdout)?;
    fs::set_permissions(&initrd, fs::Permissions::from_mode(0o644))?;
    eprintln!(
        "xtask: built {} ({} KiB)",
        initrd.display(),
        fs::metadata(&initrd)?.len() / 1024
    );
    Ok(())
}

fn copy_readable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_in_the_tree_and_decompressed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let tree = dir.path().join("kernel/drivers/virtio");
        fs::create_dir_all(&tree)?;
        fs::write(tree.join("virtio.ko"), "plain")?;
        fs::write(tree.join("virtio_ring.ko"), "packed")?;
        crate::run(Command::new("xz").arg(tree.join("virtio_ring.ko")))?;

        let plain = find_module(dir.path(), "virtio")?.context("virtio.ko")?;
        let packed = find_module(dir.path(), "virtio_ring")?.context("virtio_ring.ko.xz")?;
        assert_eq!(find_module(dir.path(), "virtio_net")?, None);
        assert_eq!(file_name(&packed), "virtio_ring.ko.xz");
        for (found, expected) in [(plain, "plain"), (packed, "packed")] {
            let copy = dir.path().join("copy.ko");
            copy_module(&found, &copy)?;
            assert_eq!(fs::read_to_string(&copy)?, expected);
        }
        Ok(())
    }
}
