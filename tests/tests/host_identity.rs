//! The host's identity as a run stores it in `hosts` (name, IP address, MAC address) against
//! what `hostname`, `ip route`/`ip addr` (iproute2) and the interface's sysfs address say on
//! the same machine. Exact: these do not move during a run.

use std::process::Command;

use serde_json::Value;

const SETMOV: &str = env!("CARGO_BIN_EXE_setmov-cli");

/// `ip -j ARGS` as JSON.
fn ip_json(args: &[&str]) -> Value {
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ip's JSON")
}

/// The interface `ip route` sends the default route through (lowest metric first), or else the
/// first interface with a non-loopback IPv4 address, and that address.
fn primary_interface() -> (String, String) {
    let routes = ip_json(&["-4", "route", "show", "default"]);
    let mut defaults: Vec<(u64, String)> = routes
        .as_array()
        .expect("route list")
        .iter()
        .filter_map(|r| {
            let dev = r["dev"].as_str()?.to_owned();
            Some((r["metric"].as_u64().unwrap_or(0), dev))
        })
        .collect();
    defaults.sort();
    let addresses = ip_json(&["-4", "addr", "show"]);
    let ipv4_of = |iface: &Value| -> Option<String> {
        iface["addr_info"]
            .as_array()?
            .iter()
            .find(|a| a["family"] == "inet")
            .and_then(|a| a["local"].as_str())
            .map(str::to_owned)
    };
    let interfaces = addresses.as_array().expect("address list");
    let with_address = |name: &str| {
        interfaces
            .iter()
            .find(|i| i["ifname"] == name)
            .and_then(ipv4_of)
    };
    if let Some((dev, ip)) = defaults
        .iter()
        .find_map(|(_, dev)| Some((dev.clone(), with_address(dev)?)))
    {
        return (dev, ip);
    }
    interfaces
        .iter()
        .filter(|i| i["ifname"] != "lo")
        .find_map(|i| Some((i["ifname"].as_str()?.to_owned(), ipv4_of(i)?)))
        .expect("an interface with an IPv4 address")
}

#[test]
fn the_stored_identity_is_what_hostname_and_iproute2_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("setmov.db");
    let run = setmov_tests::setmov_command(SETMOV)
        .args([
            "run",
            "--quiet",
            "--no-ebpf",
            "--no-libvirt",
            "--count",
            "2",
        ])
        .args(["--interval", "200ms", "--database"])
        .arg(&db)
        .output()
        .expect("setmov runs");
    assert!(run.status.success(), "{run:?}");

    let hostname = Command::new("hostname").output().expect("hostname runs");
    let hostname = String::from_utf8_lossy(&hostname.stdout).trim().to_owned();
    let (interface, ip) = primary_interface();
    let mac = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))
        .expect("the interface's address")
        .trim()
        .to_owned();

    let conn = rusqlite::Connection::open(&db).expect("db");
    let stored: (String, String, Option<String>) = conn
        .query_row("SELECT host_ip, host_name, mac FROM hosts", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("one hosts row");
    eprintln!("stored {stored:?}; hostname {hostname}, {interface} has {ip} and {mac}");
    assert_eq!(stored, (ip, hostname, Some(mac)));
}
