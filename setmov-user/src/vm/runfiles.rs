//! The qemu process of a running domain, from the files libvirt's qemu driver keeps in its
//! run folder (`/run/libvirt/qemu`): `NAME.pid` and the status XML `NAME.xml`, whose `<vcpus>`
//! lists each vCPU's thread id. The eBPF layer attributes events to VMs through these.

use std::path::Path;

/// The host-side identity of a domain's qemu process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuProcess {
    pub pid: Option<u32>,
    /// Thread ids of the vCPUs, by vCPU number.
    pub vcpu_tids: Vec<u32>,
}

/// Reads what the run folder says about domain `name`. Missing or unreadable files give
/// empty fields: the domain may have just stopped, or the folder is another driver's.
pub fn read(run_dir: &Path, name: &str) -> QemuProcess {
    let pid = std::fs::read_to_string(run_dir.join(format!("{name}.pid")))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let vcpu_tids = std::fs::read_to_string(run_dir.join(format!("{name}.xml")))
        .ok()
        .map(|xml| vcpu_tids(&xml))
        .unwrap_or_default();
    QemuProcess { pid, vcpu_tids }
}

/// `<domstatus><vcpus><vcpu id='0' pid='4321'/>...` → thread ids ordered by vCPU id.
pub fn vcpu_tids(status_xml: &str) -> Vec<u32> {
    let Ok(doc) = roxmltree::Document::parse(status_xml) else {
        return Vec::new();
    };
    let Some(vcpus) = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("vcpus"))
    else {
        return Vec::new();
    };
    let mut tids: Vec<(u32, u32)> = vcpus
        .children()
        .filter(|n| n.has_tag_name("vcpu"))
        .filter_map(|n| {
            Some((
                n.attribute("id")?.parse().ok()?,
                n.attribute("pid")?.parse().ok()?,
            ))
        })
        .collect();
    tids.sort_unstable();
    tids.into_iter().map(|(_, tid)| tid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = r#"<!-- WARNING: THIS IS AN AUTO-GENERATED FILE. -->
<domstatus state='running' reason='booted' pid='4300'>
  <taint flag='high-privileges'/>
  <monitor path='/var/lib/libvirt/qemu/domain-3-setmov-cpu/monitor.sock' type='unix'/>
  <vcpus>
    <vcpu id='1' pid='4331'/>
    <vcpu id='0' pid='4330'/>
  </vcpus>
  <domain type='qemu' id='3'>
    <name>setmov-cpu</name>
    <vcpu placement='static'>2</vcpu>
  </domain>
</domstatus>
"#;

    #[test]
    fn vcpu_threads_come_in_vcpu_order() {
        assert_eq!(vcpu_tids(STATUS), [4330, 4331]);
    }

    #[test]
    fn broken_or_foreign_xml_gives_nothing() {
        assert!(vcpu_tids("<domstatus><vcpus><vcpu id='x'").is_empty());
        assert!(vcpu_tids("<domain><vcpu>2</vcpu></domain>").is_empty());
    }

    #[test]
    fn pid_and_threads_are_read_from_the_run_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("setmov-cpu.pid"), "4300\n").expect("pid");
        std::fs::write(dir.path().join("setmov-cpu.xml"), STATUS).expect("xml");
        let p = read(dir.path(), "setmov-cpu");
        assert_eq!((p.pid, p.vcpu_tids), (Some(4300), vec![4330, 4331]));
        assert_eq!(read(dir.path(), "gone"), QemuProcess::default());
    }
}
