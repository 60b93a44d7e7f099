//! Who this host is: name, primary IPv4 address and MAC address.
//!
//! The primary interface is the one carrying the default route in `<proc>/net/route`; its
//! addresses come from the live interfaces (`getifaddrs`). Operators can override the name and
//! the address, which is also how a captured proc tree gets an identity of its own.

use std::fs::File;
use std::io::BufReader;
use std::net::Ipv4Addr;
use std::path::Path;

use procfs::FromBufRead;
use procfs::net::RouteEntries;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub name: String,
    /// The hosts table's primary key (T1 HostIP).
    pub ip: String,
    pub mac: Option<String>,
    /// The interface the address belongs to, when known.
    pub interface: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot tell this host's IP address (no default route and no IPv4 interface); give --host-ip"
    )]
    NoAddress,
}

/// One live interface address, as `getifaddrs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub ipv4: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
}

/// The live interfaces' IPv4 and MAC addresses.
pub fn live_interface_addresses() -> Vec<InterfaceAddress> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .map(|a| {
            let ipv4 = a
                .address
                .as_ref()
                .and_then(|s| s.as_sockaddr_in())
                .map(|s| s.ip());
            let mac = a
                .address
                .as_ref()
                .and_then(|s| s.as_link_addr())
                .and_then(|l| l.addr());
            InterfaceAddress {
                interface: a.interface_name,
                ipv4,
                mac,
            }
        })
        .collect()
}

/// Interface of the default route with the lowest metric, from `<proc_root>/net/route`.
pub fn default_route_interface(proc_root: &Path) -> Option<String> {
    let file = File::open(proc_root.join("net/route")).ok()?;
    let routes = RouteEntries::from_buf_read(BufReader::new(file)).ok()?;
    routes
        .0
        .into_iter()
        .filter(|r| r.destination.is_unspecified() && r.mask.is_unspecified())
        .min_by_key(|r| r.metrics)
        .map(|r| r.iface)
}

/// Picks the identity from the default-route interface, else the first non-loopback interface
/// with an IPv4 address. Overrides win. Pure, so it is tested without a network.
pub fn resolve(
    hostname: String,
    default_interface: Option<&str>,
    addresses: &[InterfaceAddress],
    ip_override: Option<&str>,
) -> Result<HostIdentity, IdentityError> {
    let has_ipv4 = |iface: &str| {
        addresses
            .iter()
            .any(|a| a.interface == iface && a.ipv4.is_some())
    };
    let interface = default_interface
        .filter(|i| has_ipv4(i))
        .map(str::to_owned)
        .or_else(|| {
            addresses
                .iter()
                .find(|a| a.ipv4.is_some_and(|ip| !ip.is_loopback()))
                .map(|a| a.interface.clone())
        });
    let ipv4_of = |iface: &str| {
        addresses
            .iter()
            .find(|a| a.interface == iface && a.ipv4.is_some())
            .and_then(|a| a.ipv4)
    };
    let mac = interface.as_deref().and_then(|iface| {
        addresses
            .iter()
            .find(|a| a.interface == iface && a.mac.is_some())
            .and_then(|a| a.mac)
            .map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
    });
    let ip = match ip_override {
        Some(ip) => ip.to_owned(),
        None => interface
            .as_deref()
            .and_then(ipv4_of)
            .map(|ip| ip.to_string())
            .ok_or(IdentityError::NoAddress)?,
    };
    Ok(HostIdentity {
        name: hostname,
        ip,
        mac,
        interface,
    })
}

/// The host name from `<proc_root>/sys/kernel/hostname`, else the live one.
pub fn hostname(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|s| s.into_string().ok())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<InterfaceAddress> {
        vec![
            InterfaceAddress {
                interface: "lo".into(),
                ipv4: Some(Ipv4Addr::LOCALHOST),
                mac: None,
            },
            InterfaceAddress {
                interface: "eth0".into(),
                ipv4: None,
                mac: Some([0x02, 0, 0, 0, 0, 0x1a]),
            },
            InterfaceAddress {
                interface: "eth0".into(),
                ipv4: Some(Ipv4Addr::new(192, 0, 2, 2)),
                mac: None,
            },
            InterfaceAddress {
                interface: "eth1".into(),
                ipv4: Some(Ipv4Addr::new(198, 51, 100, 7)),
                mac: None,
            },
        ]
    }

    #[test]
    fn default_route_interface_gives_ip_and_mac() {
        let id = resolve("hv1".into(), Some("eth0"), &addrs(), None).expect("identity");
        assert_eq!(id.ip, "192.0.2.2");
        assert_eq!(id.mac.as_deref(), Some("02:00:00:00:00:1a"));
        assert_eq!(id.interface.as_deref(), Some("eth0"));
    }

    #[test]
    fn without_default_route_the_first_non_loopback_address_is_used() {
        let id = resolve("hv1".into(), None, &addrs(), None).expect("identity");
        assert_eq!(id.ip, "192.0.2.2");
    }

    #[test]
    fn override_wins_and_no_address_is_an_error() {
        let id = resolve("hv1".into(), Some("eth0"), &addrs(), Some("10.0.0.9")).expect("id");
        assert_eq!(id.ip, "10.0.0.9");
        let lo_only = &addrs()[..1];
        assert!(matches!(
            resolve("hv1".into(), None, lo_only, None),
            Err(IdentityError::NoAddress)
        ));
    }

    #[test]
    fn default_route_is_read_from_the_route_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("net")).expect("mkdir");
        std::fs::write(
            dir.path().join("net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth1\t00000000\t010200C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )
        .expect("write");
        assert_eq!(default_route_interface(dir.path()).as_deref(), Some("eth0"));
    }
}
