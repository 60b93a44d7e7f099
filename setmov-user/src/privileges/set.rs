//! Capability sets as the kernel shows them (`CapEff:` and the like in `/proc/<pid>/status`,
//! 64 bits in hex) and as people read them (`cap_sys_ptrace,cap_bpf`).

use std::fmt;

/// The names of capabilities 0 to 40, in number order (linux/capability.h).
const NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// CAP_SETPCAP: needed to take capabilities out of the bounding set.
pub const CAP_SETPCAP: u32 = 8;

/// A set of capabilities, bit N for capability N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapabilitySet(pub u64);

impl CapabilitySet {
    pub const EMPTY: CapabilitySet = CapabilitySet(0);

    pub fn contains(self, capability: u32) -> bool {
        capability < 64 && self.0 & (1 << capability) != 0
    }

    pub fn intersection(self, other: CapabilitySet) -> CapabilitySet {
        CapabilitySet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The 16 hex digits of `/proc/<pid>/status`.
    pub fn parse_hex(hex: &str) -> Option<CapabilitySet> {
        u64::from_str_radix(hex.trim(), 16).ok().map(CapabilitySet)
    }
}

/// `cap_a,cap_b` in number order (`cap_N` for a number this list has no name for), or `none`.
impl fmt::Display for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for capability in (0..64).filter(|&c| self.contains(c)) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match usize::try_from(capability).ok().and_then(|i| NAMES.get(i)) {
                Some(name) => f.write_str(name)?,
                None => write!(f, "cap_{capability}")?,
            }
        }
        Ok(())
    }
}

/// What one thread holds, from its `/proc/.../status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPrivileges {
    pub inheritable: CapabilitySet,
    pub permitted: CapabilitySet,
    pub effective: CapabilitySet,
    pub bounding: CapabilitySet,
    pub ambient: CapabilitySet,
    pub no_new_privs: bool,
}

impl ThreadPrivileges {
    /// The `CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb` and `NoNewPrivs` lines of a status
    /// file; `None` when one is missing or malformed.
    pub fn parse(status: &str) -> Option<ThreadPrivileges> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        };
        let set = |name: &str| CapabilitySet::parse_hex(field(name)?);
        let no_new_privs = match field("NoNewPrivs")?.trim() {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        Some(ThreadPrivileges {
            inheritable: set("CapInh")?,
            permitted: set("CapPrm")?,
            effective: set("CapEff")?,
            bounding: set("CapBnd")?,
            ambient: set("CapAmb")?,
            no_new_privs,
        })
    }
}

impl fmt::Display for ThreadPrivileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "effective {}, permitted {}, inheritable {}, bounding {}, ambient {}, no_new_privs {}",
            self.effective,
            self.permitted,
            self.inheritable,
            self.bounding,
            self.ambient,
            u8::from(self.no_new_privs)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capability lines of a root shell's status on kernel 6.18 (41 capabilities).
    const ROOT_STATUS: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\n\
        CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n\
        Seccomp:\t0\n";

    #[test]
    fn a_root_status_parses_to_all_41_capabilities() {
        let privileges = ThreadPrivileges::parse(ROOT_STATUS).expect("parses");
        assert_eq!(privileges.effective, CapabilitySet((1 << 41) - 1));
        assert_eq!(privileges.permitted, privileges.effective);
        assert_eq!(privileges.bounding, privileges.effective);
        assert!(privileges.inheritable.is_empty() && privileges.ambient.is_empty());
        assert!(!privileges.no_new_privs);
        assert!(privileges.effective.contains(CAP_SETPCAP));
        assert!(!privileges.effective.contains(41));
    }

    #[test]
    fn a_status_without_no_new_privs_or_with_bad_hex_is_refused() {
        let without = ROOT_STATUS.replace("NoNewPrivs:\t0\n", "");
        assert_eq!(ThreadPrivileges::parse(&without), None);
        let bad = ROOT_STATUS.replace("CapEff:\t000001ffffffffff", "CapEff:\tzz");
        assert_eq!(ThreadPrivileges::parse(&bad), None);
    }

    #[test]
    fn sets_read_as_names_in_number_order() {
        assert_eq!(CapabilitySet::EMPTY.to_string(), "none");
        let set = CapabilitySet((1 << 39) | (1 << 19) | (1 << 2));
        assert_eq!(
            set.to_string(),
            "cap_dac_read_search,cap_sys_ptrace,cap_bpf"
        );
        assert_eq!(CapabilitySet(1 << 45).to_string(), "cap_45");
        assert_eq!(
            CapabilitySet::parse_hex("0000000000080000"),
            Some(CapabilitySet(1 << 19))
        );
    }

    #[test]
    fn the_own_status_parses() {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        let privileges = ThreadPrivileges::parse(&status).expect("parses");
        assert!(privileges.ambient.0 & !privileges.permitted.0 == 0);
    }
}
