//! `setmov recommend --script`: the plans of every host as one shell script of `virsh`
//! commands, safe whatever the database holds. Each host's commands run only on the machine
//! that has its address; VMs are addressed by UUID, never by a name virsh could read as a
//! domain ID; stored text (names, addresses) goes only into comments, its control characters
//! escaped, or into single quotes.

use std::net::Ipv4Addr;

use super::recommend::Plan;

/// Every host's plan as one shell script of `virsh` commands to review and run by hand on the
/// hosts: the new sizes go into each domain's persistent definition and take effect at its next
/// boot. `plans` pairs each plan with its host's address, setmov's key for a host.
///
/// Each host's commands are a section that runs only on the machine that has the host's
/// address and is skipped, with a message, everywhere else. VMs are addressed by UUID: virsh
/// takes a domain argument for an ID first, then a UUID, then a name, so a VM named `7` would
/// be domain 7. Names appear in comments only, control characters escaped.
pub fn virsh_script(plans: &[(String, Plan)]) -> String {
    let mut script = String::from(
        "#!/bin/sh\n\
         # setmov recommend: review before running. Sizes take effect at the next boot\n\
         # of each VM (--config); nothing here touches a running guest. Each host's section\n\
         # runs only on the machine that has the host's address; VMs are addressed by UUID.\n\
         set -eu\n\
         command -v ip >/dev/null || { echo 'setmov: ip (iproute2) is needed to tell which host this is' >&2; exit 1; }\n\
         \n\
         # Whether this machine has the IPv4 address $1 (setmov keys a host by the address of\n\
         # its default-route interface, or --host-ip).\n\
         has_address() {\n\
         \x20   ip -o -4 address show | awk -v want=\"$1\" '{ sub(\"/.*\", \"\", $4); if ($4 == want) found = 1 } END { exit !found }'\n\
         }\n",
    );
    for (host_ip, plan) in plans {
        let (commands, resized) = host_commands(plan);
        let host = comment_text(host_ip);
        script.push('\n');
        if resized == 0 {
            script.push_str(&format!("# Host {host}: nothing to run.\n{commands}"));
        } else if host_ip.parse::<Ipv4Addr>().is_err() {
            // No section could tell that host from another.
            script.push_str(&format!(
                "# Host {host}: left out, its key is not an IPv4 address (see --host-ip).\n"
            ));
        } else {
            let skipped = format!(
                "setmov: skipping the plan of host {host_ip}: this machine does not have that \
                 address"
            );
            script.push_str(&format!(
                "# Host {host_ip}\nif has_address {host_ip}; then\n{commands}else\n    echo {} >&2\nfi\n",
                shell_quote(&skipped)
            ));
        }
    }
    script
}

/// One host's `virsh` commands, each VM's reasons as comments above them, and how many VMs
/// they resize.
fn host_commands(plan: &Plan) -> (String, usize) {
    let mut commands = String::new();
    let mut resized = 0;
    for r in &plan.vms {
        let vcpus = r.recommended_vcpus.filter(|v| Some(*v) != r.vcpus);
        let memory = r
            .recommended_memory_bytes
            .filter(|m| Some(*m) != r.memory_bytes);
        if vcpus.is_none() && memory.is_none() {
            continue;
        }
        let Some(uuid) = r.uuid.as_deref().filter(|u| is_uuid(u)) else {
            commands.push_str(&comment(&format!(
                "{}: no valid UUID stored, not resized",
                r.name
            )));
            continue;
        };
        for reason in &r.reasons {
            commands.push_str(&comment(&format!("{}: {reason}", r.name)));
        }
        resized += 1;
        // The current size may never exceed the maximum: growing raises the maximum first,
        // shrinking lowers the current size first.
        if let Some(v) = vcpus {
            let maximum = format!("    virsh setvcpus {uuid} {v} --config --maximum\n");
            let current = format!("    virsh setvcpus {uuid} {v} --config\n");
            let growing = r.vcpus.is_none_or(|now| v > now);
            commands.push_str(&if growing {
                maximum + &current
            } else {
                current + &maximum
            });
        }
        if let Some(m) = memory {
            let kib = m >> 10;
            let maximum = format!("    virsh setmaxmem {uuid} {kib}KiB --config\n");
            let current = format!("    virsh setmem {uuid} {kib}KiB --config\n");
            let growing = r.memory_bytes.is_none_or(|now| m > now);
            commands.push_str(&if growing {
                maximum + &current
            } else {
                current + &maximum
            });
        }
    }
    (commands, resized)
}

/// The canonical text form, 8-4-4-4-12 hex digits: safe in a shell word as it is, and never
/// read by virsh as a domain ID.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A comment line: stored text (VM names) cannot end it and start a command.
fn comment(text: &str) -> String {
    format!("    # {}\n", comment_text(text))
}

/// `text` with control characters (and Unicode line breaks) escaped as `\n`, `\u{1b}`.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::recommend::VmRecommendation;

    /// One VM with `name` and `uuid` going from 4 vCPUs and 4 GiB to 2 vCPUs and 1.25 GiB.
    fn shrinking(name: &str, uuid: Option<&str>) -> VmRecommendation {
        VmRecommendation {
            name: name.into(),
            uuid: uuid.map(str::to_owned),
            vcpus: Some(4),
            recommended_vcpus: Some(2),
            memory_bytes: Some(4 << 30),
            recommended_memory_bytes: Some(1280 << 20),
            idle: false,
            starved: false,
            reasons: vec!["CPU: 1.00 vCPUs at p95".into()],
        }
    }

    fn plan(vms: Vec<VmRecommendation>) -> Plan {
        Plan {
            capacity: None,
            vcpus_now: 0,
            vcpus_planned: 0,
            memory_now: 0,
            memory_planned: 0,
            unmet: Vec::new(),
            vms,
        }
    }

    const UUID: &str = "5e7a0000-0000-4000-8000-000000000001";

    #[test]
    fn the_script_changes_only_what_differs_and_addresses_vms_by_uuid() {
        let script = virsh_script(&[("192.0.2.5".into(), plan(vec![shrinking("7", Some(UUID))]))]);
        for command in [
            format!(
                "    virsh setvcpus {UUID} 2 --config\n    virsh setvcpus {UUID} 2 --config --maximum\n"
            ),
            format!(
                "    virsh setmem {UUID} 1310720KiB --config\n    virsh setmaxmem {UUID} 1310720KiB --config\n"
            ),
        ] {
            assert!(
                script.contains(&command),
                "shrinking lowers the current size first: {script}"
            );
        }
        assert!(
            script.contains("if has_address 192.0.2.5; then"),
            "{script}"
        );
        assert!(!script.contains("virsh setvcpus 7"), "{script}");
        let mut steady = shrinking("steady", Some(UUID));
        steady.recommended_vcpus = steady.vcpus;
        steady.recommended_memory_bytes = steady.memory_bytes;
        let script = virsh_script(&[("192.0.2.5".into(), plan(vec![steady]))]);
        assert!(!script.contains("virsh "), "nothing to change: {script}");
        assert!(
            script.contains("# Host 192.0.2.5: nothing to run."),
            "{script}"
        );
    }

    #[test]
    fn stored_names_and_uuids_cannot_add_commands() {
        let name = "evil\n$(touch /tmp/x)\r\u{1b}[2J virsh ";
        let script = virsh_script(&[(
            "192.0.2.5".into(),
            plan(vec![
                shrinking(name, Some("not-a-uuid; reboot")),
                shrinking(name, None),
                shrinking(name, Some("5E7A0000-0000-4000-8000-00000000000A")),
            ]),
        )]);
        assert!(!script.contains("; reboot"), "{script}");
        assert!(
            script.contains("    # evil\\n$(touch /tmp/x)\\r\\u{1b}[2J virsh : CPU"),
            "{script}"
        );
        assert_eq!(
            script.matches("no valid UUID stored, not resized").count(),
            2,
            "{script}"
        );
        assert!(
            script.contains("virsh setvcpus 5E7A0000-0000-4000-8000-00000000000A 2"),
            "{script}"
        );
        for line in script.lines() {
            let code = line.trim_start();
            assert!(code.starts_with('#') || !code.contains("touch"), "{line}");
        }
        // Names alone, no command: no section (an `if` with nothing in it is no shell).
        let script = virsh_script(&[("192.0.2.5".into(), plan(vec![shrinking(name, None)]))]);
        assert!(!script.contains("if has_address"), "{script}");
    }

    #[test]
    fn a_host_not_keyed_by_an_ipv4_address_is_left_out() {
        let script = virsh_script(&[(
            "hv1\n$(reboot)".into(),
            plan(vec![shrinking("web", Some(UUID))]),
        )]);
        assert!(!script.contains("virsh setvcpus"), "{script}");
        assert!(
            script.contains("# Host hv1\\n$(reboot): left out"),
            "{script}"
        );
    }
}
