//! Live-kernel test of the eBPF network probe. A veth pair joins the host to a network
//! namespace of its own (addresses in 10.213.99.0/24; nothing leaves this machine); UDP
//! datagrams of a known size cross it both ways, and the probe must count them on the
//! host-side device, from the host's point of view, plus the drops of datagrams sent to ports
//! nobody listens on, under reason NO_SOCKET and the device they arrived on.
//!
//! IPv6 is off on both ends and the neighbours are static, so nothing else crosses the pair.
//! Without root or eBPF the test is skipped with a "SKIPPED:" line (failed under
//! SETMOV_REQUIRE_ALL=1).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use setmov::ebpf::{
    DropCause, DropDevice, NetDeviceCounters, NetProbe, Probes, net::NetDeviceValue,
};
use setmov::usage::hist::{hist_count, hist_delta};
use setmov_tests::{is_root, skip};

/// Datagrams sent each way, and their UDP payload.
const DATAGRAMS: u64 = 50;
const PAYLOAD: usize = 1000;
/// What the tracepoints report per datagram: on receive `skb->len` starts at the IP header
/// (20 B IP + 8 B UDP + payload); on transmit it includes the 14-byte Ethernet header.
const RX_LEN: u64 = 20 + 8 + PAYLOAD as u64;
const TX_LEN: u64 = 14 + RX_LEN;
/// Datagrams sent to a closed port, to be dropped with reason NO_SOCKET.
const TO_CLOSED_PORT: u64 = 20;
/// A port nobody listens on, in the namespace or on the test's host address.
const CLOSED_PORT: u16 = 9;

/// Runs a command and fails with its stderr when it does not succeed.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A network namespace and a veth pair into it, removed when dropped (even on failure).
struct VethPair {
    namespace: String,
    host_device: String,
    guest_device: String,
    host_addr: Ipv4Addr,
    guest_addr: Ipv4Addr,
    host_ifindex: u32,
    guest_ifindex: u32,
}

impl VethPair {
    fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        // A /30 of our own in 10.213.99.0/24, so that two runs do not share a route.
        let base = (pid % 64 * 4) as u8;
        let mut pair = VethPair {
            namespace: format!("smtv-net-{pid}"),
            host_device: format!("smtvh{pid}"),
            guest_device: format!("smtvg{pid}"),
            host_addr: Ipv4Addr::new(10, 213, 99, base + 1),
            guest_addr: Ipv4Addr::new(10, 213, 99, base + 2),
            host_ifindex: 0,
            guest_ifindex: 0,
        };
        pair.set_up()?;
        Ok(pair)
    }

    /// In the namespace.
    fn ns(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", &self.namespace];
        all.extend(args);
        run("ip", &all)
    }

    fn set_up(&mut self) -> anyhow::Result<()> {
        let (host, guest) = (self.host_device.clone(), self.guest_device.clone());
        run("ip", &["netns", "add", &self.namespace])?;
        // Made in the host and then moved: the guest end keeps an ifindex no host device has.
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &guest],
        )?;
        run("ip", &["link", "set", &guest, "netns", &self.namespace])?;
        // No IPv6: no router solicitations, DAD or MLD reports on the pair.
        let no_ipv6 = |device: &str| format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
        if Path::new(&no_ipv6(&host)).exists() {
            fs::write(no_ipv6(&host), "1")?;
            self.ns(&["sh", "-c", &format!("echo 1 > {}", no_ipv6(&guest))])?;
        }
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", self.host_addr),
                "dev",
                &host,
            ],
        )?;
        self.ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", self.guest_addr),
            "dev",
            &guest,
        ])?;
        // Static neighbours: no ARP on the pair.
        let host_mac = fs::read_to_string(format!("/sys/class/net/{host}/address"))?;
        let guest_mac = self.ns(&["cat", &format!("/sys/class/net/{guest}/address")])?;
        run(
            "ip",
            &[
                "neigh",
                "replace",
                &self.guest_addr.to_string(),
                "lladdr",
                &guest_mac,
                "dev",
                &host,
                "nud",
                "permanent",
            ],
        )?;
        self.ns(&[
            "ip",
            "neigh",
            "replace",
            &self.host_addr.to_string(),
            "lladdr",
            host_mac.trim(),
            "dev",
            &guest,
            "nud",
            "permanent",
        ])?;
        run("ip", &["link", "set", &host, "up"])?;
        self.ns(&["ip", "link", "set", &guest, "up"])?;
        self.host_ifindex = fs::read_to_string(format!("/sys/class/net/{host}/ifindex"))?
            .trim()
            .parse()?;
        self.guest_ifindex = self
            .ns(&["cat", &format!("/sys/class/net/{guest}/ifindex")])?
            .parse()?;
        Ok(())
    }

    /// Sends `count` datagrams of `payload` bytes from the namespace to the host's `port`,
    /// with bash's /dev/udp (one datagram per write).
    fn send_from_guest(&self, port: u16, count: u64, payload: usize) -> anyhow::Result<()> {
        let script = format!(
            "data=$(head -c {payload} /dev/zero | tr '\\0' a); \
             for i in $(seq {count}); do printf %s \"$data\" > /dev/udp/{}/{port}; done",
            self.host_addr
        );
        self.ns(&["bash", "-c", &script]).map(drop)
    }

    fn remove(&self) {
        // Deleting the namespace destroys the guest end, and with it the host end.
        let _ = run("ip", &["netns", "del", &self.namespace]);
        let _ = run("ip", &["link", "del", &self.host_device]);
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.remove();
    }
}

fn device(probe: &NetProbe, name: &str) -> anyhow::Result<NetDeviceCounters> {
    Ok(probe.devices()?.get(name).copied().unwrap_or_default())
}

fn drops(probe: &NetProbe, ifindex: u32, reason: &str) -> anyhow::Result<u64> {
    let cause = DropCause {
        device: DropDevice::Ifindex(ifindex),
        reason: reason.to_owned(),
    };
    Ok(probe.drops()?.get(&cause).copied().unwrap_or(0))
}

/// Checks that `after - before` is `DATAGRAMS` packets of `len` bytes (within 2 %, for any
/// stray packet) and that they fell in `len`'s histogram bucket.
fn assert_datagrams(
    what: &str,
    before: &NetDeviceValue,
    after: &NetDeviceValue,
    len: u64,
) -> anyhow::Result<()> {
    let packets = after.packets - before.packets;
    let bytes = after.bytes - before.bytes;
    let sizes = hist_delta(&before.sizes, &after.sizes).context("histogram went backwards")?;
    // The log2 bucket of `len` (len > 1).
    let bucket = len.ilog2() as usize;
    eprintln!(
        "{what}: {packets} packets, {bytes} bytes, {} in bucket {bucket} (expected {DATAGRAMS} \
         packets of {len} bytes = {} bytes)",
        sizes.buckets[bucket],
        DATAGRAMS * len
    );
    let expected_bytes = DATAGRAMS * len;
    ensure!(
        packets >= DATAGRAMS && packets * 100 <= DATAGRAMS * 102,
        "{what}: {packets} packets counted, expected {DATAGRAMS}"
    );
    ensure!(
        bytes >= expected_bytes && bytes * 100 <= expected_bytes * 102,
        "{what}: {bytes} bytes counted, expected {expected_bytes}"
    );
    ensure!(
        sizes.buckets[bucket] >= DATAGRAMS && hist_count(&sizes) == packets,
        "{what}: histogram delta {sizes:?} lacks {DATAGRAMS} packets in bucket {bucket}"
    );
    Ok(())
}

#[test]
fn udp_over_a_veth_pair_is_counted_on_the_host_device() -> anyhow::Result<()> {
    if !is_root() {
        skip("ebpf_net: needs root (network namespaces, eBPF)");
        return Ok(());
    }
    let mut probes = match Probes::load() {
        Ok(probes) => probes,
        Err(error) if error.is_missing_prerequisite() => {
            skip(&format!("ebpf_net: {error}"));
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    eprintln!(
        "attached: {:?}; off: {:?}",
        probes.attached(),
        probes.disabled
    );
    let probe = probes.net.as_mut().context("the net probe is off")?;
    for program in ["netif_receive_skb", "net_dev_xmit", "kfree_skb"] {
        ensure!(
            probe.attached().iter().any(|name| name == program),
            "net program {program} is not attached on this kernel"
        );
    }

    let pair = VethPair::create()?;
    let (host, guest) = (pair.host_device.as_str(), pair.guest_device.as_str());
    eprintln!(
        "{host} (ifindex {}, {}) <-> {guest} (ifindex {}, {}) in {}",
        pair.host_ifindex, pair.host_addr, pair.guest_ifindex, pair.guest_addr, pair.namespace
    );

    // Guest -> host, to a socket that reads them: received by the host on the host end.
    let listener = UdpSocket::bind(SocketAddrV4::new(pair.host_addr, 0))?;
    listener.set_read_timeout(Some(Duration::from_secs(2)))?;
    let port = listener.local_addr()?.port();
    let (host_before, guest_before) = (device(probe, host)?, device(probe, guest)?);
    pair.send_from_guest(port, DATAGRAMS, PAYLOAD)?;
    let mut buffer = [0u8; 2048];
    for received in 0..DATAGRAMS {
        let size = listener
            .recv(&mut buffer)
            .with_context(|| format!("only {received} datagrams reached the host socket"))?;
        ensure!(size == PAYLOAD, "a datagram of {size} bytes arrived");
    }
    let (host_after, guest_after) = (device(probe, host)?, device(probe, guest)?);
    assert_datagrams("host end rx", &host_before.rx, &host_after.rx, RX_LEN)?;
    assert_datagrams("guest end tx", &guest_before.tx, &guest_after.tx, TX_LEN)?;

    // Host -> guest, to a port nobody listens on: transmitted by the host on the host end,
    // then dropped in the namespace on the guest end.
    let guest_no_socket = drops(probe, pair.guest_ifindex, "NO_SOCKET")?;
    let (host_before, guest_before) = (device(probe, host)?, device(probe, guest)?);
    let sender = UdpSocket::bind(SocketAddrV4::new(pair.host_addr, 0))?;
    let payload = [b'b'; PAYLOAD];
    for _ in 0..DATAGRAMS {
        sender.send_to(&payload, SocketAddrV4::new(pair.guest_addr, CLOSED_PORT))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let (host_after, guest_after) = (device(probe, host)?, device(probe, guest)?);
    assert_datagrams("host end tx", &host_before.tx, &host_after.tx, TX_LEN)?;
    assert_datagrams("guest end rx", &guest_before.rx, &guest_after.rx, RX_LEN)?;
    let guest_no_socket = drops(probe, pair.guest_ifindex, "NO_SOCKET")? - guest_no_socket;
    eprintln!("guest end NO_SOCKET drops: {guest_no_socket}");
    ensure!(
        guest_no_socket == DATAGRAMS,
        "{guest_no_socket} NO_SOCKET drops on {guest} (ifindex {}), expected {DATAGRAMS}",
        pair.guest_ifindex
    );

    // Guest -> host closed port: dropped by the host on the host end.
    let host_no_socket = drops(probe, pair.host_ifindex, "NO_SOCKET")?;
    pair.send_from_guest(CLOSED_PORT, TO_CLOSED_PORT, 1)?;
    std::thread::sleep(Duration::from_millis(200));
    let host_no_socket = drops(probe, pair.host_ifindex, "NO_SOCKET")? - host_no_socket;
    eprintln!("host end NO_SOCKET drops: {host_no_socket}");
    ensure!(
        host_no_socket == TO_CLOSED_PORT,
        "{host_no_socket} NO_SOCKET drops on {host} (ifindex {}), expected {TO_CLOSED_PORT}",
        pair.host_ifindex
    );

    // Once the pair is gone its counters and drops can be forgotten.
    pair.remove();
    let forgotten = probe.forget_vanished_devices(Path::new("/sys/class/net"))?;
    eprintln!("forgotten map entries: {forgotten}");
    let devices = probe.devices()?;
    ensure!(
        !devices.contains_key(host) && !devices.contains_key(guest),
        "removed devices still have counters"
    );
    ensure!(
        !probe.drops()?.keys().any(|cause| match &cause.device {
            DropDevice::Ifindex(i) => *i == pair.host_ifindex || *i == pair.guest_ifindex,
            DropDevice::Name(name) => name == host || name == guest,
        }),
        "removed devices still have drops"
    );
    ensure!(probe.lost_events()? == 0, "a net map overflowed");
    Ok(())
}
