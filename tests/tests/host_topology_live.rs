//! The interfaces this kernel can make, live (issue 15 point 2): a veth pair into a namespace,
//! a macvtap over the host end, a bridge with a tap port. None is a NIC on a bus, so none is
//! in the host network total, while each keeps its row; the total is exactly the sum of the
//! NICs' rows. Nothing is sent off this machine: the pings stay on the veth pair.

use std::process::{Command, Stdio};

use setmov::host::read::HostReader;
use setmov::host::topology::{NetRole, net_facts, net_role};
use setmov::usage::host::host_usage;
use setmov_tests::reference::missing_tools;
use setmov_tests::skip;

const NAMESPACE: &str = "setmov-topo";
const HOST_END: &str = "smvtp0";
const INNER_END: &str = "smvtp1";
const MACVTAP: &str = "smvmvt0";
const BRIDGE: &str = "smvbr0";
const TAP: &str = "smvtap0";

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}

/// The test's interfaces, removed on drop.
struct Interfaces;

impl Interfaces {
    fn create() -> Interfaces {
        Interfaces::remove();
        for args in [
            vec!["netns", "add", NAMESPACE],
            vec![
                "link", "add", HOST_END, "type", "veth", "peer", "name", INNER_END,
            ],
            vec!["link", "set", INNER_END, "netns", NAMESPACE],
            vec!["addr", "add", "10.213.79.1/30", "dev", HOST_END],
            vec!["link", "set", HOST_END, "up"],
            vec![
                "-n",
                NAMESPACE,
                "addr",
                "add",
                "10.213.79.2/30",
                "dev",
                INNER_END,
            ],
            vec!["-n", NAMESPACE, "link", "set", INNER_END, "up"],
            vec![
                "link", "add", "link", HOST_END, "name", MACVTAP, "type", "macvtap", "mode",
                "bridge",
            ],
            vec!["link", "set", MACVTAP, "up"],
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["tuntap", "add", "dev", TAP, "mode", "tap"],
            vec!["link", "set", TAP, "master", BRIDGE],
            vec!["link", "set", BRIDGE, "up"],
        ] {
            ip(&args);
        }
        Interfaces
    }

    fn remove() {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        quiet(&["link", "del", MACVTAP]);
        quiet(&["link", "del", HOST_END]);
        quiet(&["link", "del", TAP]);
        quiet(&["link", "del", BRIDGE]);
        quiet(&["netns", "del", NAMESPACE]);
    }
}

impl Drop for Interfaces {
    fn drop(&mut self) {
        Interfaces::remove();
    }
}

#[test]
fn virtual_interfaces_keep_their_rows_and_stay_out_of_the_total() {
    if let Some(reason) = missing_tools(&["ip", "ping"]) {
        return skip(&reason);
    }
    let _interfaces = Interfaces::create();
    let sys = std::path::Path::new("/sys");
    let role = |name: &str| net_role(&net_facts(sys, name).unwrap_or_else(|| panic!("{name}")));
    assert_eq!(
        role(MACVTAP),
        NetRole::Virtual {
            over: vec![HOST_END.into()]
        }
    );
    assert_eq!(
        role(BRIDGE),
        NetRole::Virtual {
            over: vec![TAP.into()]
        }
    );
    for name in [HOST_END, TAP] {
        assert!(!role(name).counted(), "{name}");
    }
    assert_eq!(role("lo"), NetRole::Loopback);

    let reader = HostReader::new("/proc", Vec::new()).expect("/proc");
    let before = reader.read();
    let started = std::time::Instant::now();
    let ping = Command::new("ip")
        .args(["netns", "exec", NAMESPACE, "ping", "-q", "-i", "0.005"])
        .args(["-s", "1000", "-c", "200", "10.213.79.1"])
        .stdout(Stdio::null())
        .status()
        .expect("ping");
    assert!(ping.success(), "ping failed");
    let after = reader.read();
    let dt = started.elapsed().as_secs_f64();
    let u = host_usage(&before, &after, dt, &[]);

    let nics: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| sys.join("class/net").join(n).join("device").exists())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    eprintln!(
        "host network total over {:?} (NICs: {nics:?})",
        u.net_total_over
    );
    assert_eq!(u.net_total_over, nics);
    for name in [HOST_END, MACVTAP, BRIDGE, TAP] {
        assert!(
            u.nets.iter().any(|n| n.name == name),
            "{name} keeps its row"
        );
    }
    let veth = u
        .nets
        .iter()
        .find(|n| n.name == HOST_END)
        .expect("veth row");
    eprintln!(
        "{HOST_END}: {:.0} packets received over {dt:.2} s ({:.0}/s), not in the total",
        veth.rx.pps * dt,
        veth.rx.pps
    );
    assert!(
        veth.rx.pps * dt >= 200.0,
        "the pings did not show on the veth"
    );
    let total = u.net_total.expect("a total over the NICs");
    let nic_sum: f64 = u
        .nets
        .iter()
        .filter(|n| nics.contains(&n.name))
        .map(|n| n.rx.pps)
        .sum();
    eprintln!(
        "host total rx {:.1} packets/s = Σ NIC rows {nic_sum:.1}/s",
        total.rx.pps
    );
    assert!((total.rx.pps - nic_sum).abs() < 1e-9);
}
