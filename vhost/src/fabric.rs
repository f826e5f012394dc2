//! How the VFs of one `vhca serve` process reach each other: a small trait in front of the
//! fabric, so real network ports ([`LinkFabric`]: UDP or TAP) plug in beside the in-process
//! switch.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::time::Duration;
use vhca_device::{Gid, Mac, Nanos, Packet};
use vhca_fabric::link::Link;
use vhca_fabric::switch::PortId;
use vhca_fabric::tap::{TapBridge, TapError};
use vhca_fabric::udp::UdpBridge;
use vhca_fabric::{FaultConfig, Switch};

/// A fabric the process's VFs are attached to. Port `i` is VF `i` of the process.
pub trait Fabric: Send {
    /// VF `port` answers to `gid` from now on.
    fn attach(&mut self, gid: Gid, port: PortId);
    /// Takes a packet a VF transmitted at `now`.
    fn send(&mut self, now: Nanos, pkt: Packet);
    /// The next packet due at or before `now`, with the port it goes to.
    fn poll_deliver(&mut self, now: Nanos) -> Option<(PortId, Packet)>;
    /// When the fabric next has a packet to deliver, if it holds any.
    fn next_event(&self, now: Nanos) -> Option<Nanos>;
    /// Counters for `vhca ctl counters`.
    fn counters(&self) -> serde_json::Value;
    /// Descriptors that become readable when packets arrive from outside the process; a
    /// network thread waits on them and runs a batch. The in-process switch has none.
    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// VF `port` left the process (its state was saved for a migration): give up its network
    /// address, so the destination, possibly a process on the same host, can bind it.
    /// [`Fabric::attach`] takes it again (the migration failed and the VF resumes here, or a
    /// VF migrates back in).
    fn release(&mut self, _port: PortId) {}
    /// A VF with this MAC and GID migrated into `port` (after [`Fabric::attach`]): links that
    /// carry a MAC of their own take the VF's and announce it (TAP: a gratuitous ARP).
    fn adopt(&mut self, _port: PortId, _mac: Mac, _gid: Gid) {}
    /// Changes whenever [`Fabric::wake_fds`] may have changed: the network thread waits on
    /// the new set.
    fn generation(&self) -> u64 {
        0
    }
}

/// The in-process switch: an ideal link unless faults or latency are configured.
pub struct SwitchFabric {
    switch: Switch,
    /// The GID each port answers to, so a port that takes another one (a VF migrated in, or a
    /// slot back to its own identity) stops answering to the old one.
    gids: HashMap<PortId, Gid>,
}

impl SwitchFabric {
    pub fn new(seed: u64, faults: FaultConfig, latency_ns: u64) -> SwitchFabric {
        SwitchFabric {
            switch: Switch::new(seed, faults, latency_ns),
            gids: HashMap::new(),
        }
    }

    /// An ideal switch: no latency, no faults.
    pub fn ideal() -> SwitchFabric {
        SwitchFabric::new(0, FaultConfig::default(), 0)
    }
}

impl Fabric for SwitchFabric {
    fn attach(&mut self, gid: Gid, port: PortId) {
        if let Some(old) = self.gids.insert(port, gid) {
            // Only if it still routes here: never take a GID away from another port.
            if old != gid && self.switch.route(&old) == Some(port) {
                self.switch.detach(&old);
            }
        }
        self.switch.attach(gid, port);
    }

    fn send(&mut self, now: Nanos, pkt: Packet) {
        self.switch.send(now, pkt);
    }

    fn poll_deliver(&mut self, now: Nanos) -> Option<(PortId, Packet)> {
        self.switch.poll_deliver(now)
    }

    fn next_event(&self, now: Nanos) -> Option<Nanos> {
        self.switch.next_event(now)
    }

    fn counters(&self) -> serde_json::Value {
        serde_json::to_value(&self.switch.counters).unwrap_or_default()
    }
}

/// Packets leave the process through real network ports, one [`Link`] per VF: RoCEv2 over
/// kernel UDP sockets ([`UdpBridge`], bound to the VF's own IPv4 address on port 4791) or whole
/// Ethernet frames through TAP devices ([`TapBridge`]: the VF's own MAC and IP, ARP). VFs of
/// this process reach VFs of other processes, other hosts and Linux rxe. Traffic between two
/// VFs of the same process goes through the kernel too, as between two functions of one NIC
/// port without a hairpin shortcut.
pub struct LinkFabric {
    kind: &'static str,
    /// `None`: released (the VF migrated away) or its address could not be bound.
    links: Vec<Option<Box<dyn Link>>>,
    /// What each link is, for the counters (`127.0.0.1:4791`, `vhtap0`).
    names: Vec<String>,
    /// GID → port, from [`Fabric::attach`]: which link a packet leaves from.
    ports: HashMap<Gid, PortId>,
    /// Packets read from the links and not yet delivered, with their port.
    rx: VecDeque<(PortId, Packet)>,
    scratch: Vec<Packet>,
    /// The one-packet batch handed to [`Link::send`], kept to avoid an allocation per packet.
    tx: Vec<Packet>,
    /// Packets a VF sent from a GID no link owns (dropped).
    unknown_source: u64,
    /// Bumped when a link is released or bound again.
    generation: u64,
}

impl LinkFabric {
    fn new(kind: &'static str, links: Vec<Box<dyn Link>>, names: Vec<String>) -> LinkFabric {
        LinkFabric {
            kind,
            links: links.into_iter().map(Some).collect(),
            names,
            ports: HashMap::new(),
            rx: VecDeque::new(),
            scratch: Vec::new(),
            tx: Vec::with_capacity(1),
            unknown_source: 0,
            generation: 0,
        }
    }

    /// One UDP socket per address; `ips[i]` is VF `i`'s address.
    pub fn udp(ips: &[Ipv4Addr]) -> std::io::Result<LinkFabric> {
        let mut links: Vec<Box<dyn Link>> = Vec::new();
        let mut names = Vec::new();
        for ip in ips {
            let b = UdpBridge::bind(IpAddr::V4(*ip))?;
            names.push(b.local_addr().to_string());
            links.push(Box::new(b));
        }
        Ok(LinkFabric::new("udp", links, names))
    }

    /// One TAP device per VF: `taps[i]` carries VF `i`, whose MAC and IP are `ids[i]`'s.
    pub fn tap(taps: &[String], ids: &[(Mac, Ipv4Addr)]) -> Result<LinkFabric, TapError> {
        let mut links: Vec<Box<dyn Link>> = Vec::new();
        let mut names = Vec::new();
        for (name, (mac, ip)) in taps.iter().zip(ids) {
            let t = TapBridge::open(name, *mac, *ip)?;
            names.push(t.name().to_string());
            links.push(Box::new(t));
        }
        Ok(LinkFabric::new("tap", links, names))
    }

    /// Binds UDP port `port` to `ip` unless it already is: a VF that migrated in brings its
    /// own address, and the slot's socket follows it. `IP_FREEBIND`: the orchestrator may
    /// move the address onto a local interface only after the state was loaded.
    fn bind_udp(&mut self, port: PortId, ip: Ipv4Addr) {
        let want = std::net::SocketAddr::new(IpAddr::V4(ip), vhca_wire::roce::ROCE_V2_PORT);
        if self.names.get(port).is_some_and(|n| *n == want.to_string())
            && self.links.get(port).is_some_and(Option::is_some)
        {
            return;
        }
        let Some(slot) = self.links.get_mut(port) else {
            return;
        };
        // Close the old socket first: a VF moving back to this slot's own address must not
        // find it taken by the slot itself.
        *slot = None;
        self.generation += 1;
        match UdpBridge::bind_freebind(IpAddr::V4(ip)) {
            Ok(b) => {
                tracing::info!(port, local = %b.local_addr(), "UDP link bound to the VF's address");
                self.names[port] = b.local_addr().to_string();
                *slot = Some(Box::new(b));
            }
            Err(e) => {
                tracing::warn!(port, %ip, error = %e, "cannot bind the VF's address; its packets are dropped")
            }
        }
    }

    /// Reads whatever the links hold, without waiting.
    fn fill(&mut self) {
        for (port, l) in self.links.iter_mut().enumerate() {
            let Some(l) = l else { continue };
            // A read error is a transient condition (e.g. ICMP port unreachable reported on
            // an unconnected socket); the transport retransmits.
            let _ = l.recv(Duration::ZERO, &mut self.scratch);
            self.rx.extend(self.scratch.drain(..).map(|p| (port, p)));
        }
    }
}

impl Fabric for LinkFabric {
    fn attach(&mut self, gid: Gid, port: PortId) {
        // The port answers to this GID only: a VF that migrated in replaces the slot's own.
        self.ports.retain(|_, p| *p != port);
        self.ports.insert(gid, port);
        if self.kind == "udp" {
            if let Some(ip) = gid.to_ipv4() {
                self.bind_udp(port, Ipv4Addr::from(ip));
            }
        }
        if self.kind == "tap" {
            // A VF resuming here after a failed migration speaks again.
            if let Some(Some(l)) = self.links.get_mut(port) {
                l.set_silent(false);
            }
        }
    }

    fn adopt(&mut self, port: PortId, mac: Mac, gid: Gid) {
        let (Some(Some(l)), Some(ip)) = (self.links.get_mut(port), gid.to_ipv4()) else {
            return;
        };
        let ip = Ipv4Addr::from(ip);
        match l.adopt(mac, ip) {
            Ok(()) if self.kind == "tap" => {
                tracing::info!(port, %ip, ?mac, "TAP link took the VF's MAC and address, announced")
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(port, error = %e, "cannot announce the VF's address"),
        }
    }

    fn release(&mut self, port: PortId) {
        // A TAP stays open (closing a device vhca created would delete it) but goes silent:
        // the VF's MAC is about to appear on another port of the bridge.
        if self.kind == "tap" {
            if let Some(Some(l)) = self.links.get_mut(port) {
                l.set_silent(true);
                tracing::info!(port, "TAP link silent (VF migrating away)");
            }
        }
        if self.kind == "udp" {
            if let Some(l) = self.links.get_mut(port) {
                if l.take().is_some() {
                    tracing::info!(port, "UDP link released (VF migrating away)");
                    self.generation += 1;
                }
            }
        }
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn send(&mut self, _now: Nanos, pkt: Packet) {
        let Some(l) = self
            .ports
            .get(&pkt.src_gid)
            .and_then(|p| self.links.get_mut(*p))
            .and_then(Option::as_mut)
        else {
            self.unknown_source += 1;
            return;
        };
        // Failures are counted by the link as tx errors; the packet is lost as on a wire.
        self.tx.push(pkt);
        let _ = l.send(&mut self.tx);
        self.tx.clear();
    }

    fn poll_deliver(&mut self, _now: Nanos) -> Option<(PortId, Packet)> {
        if self.rx.is_empty() {
            self.fill();
        }
        self.rx.pop_front()
    }

    fn next_event(&self, now: Nanos) -> Option<Nanos> {
        (!self.rx.is_empty()).then_some(now)
    }

    fn counters(&self) -> serde_json::Value {
        let per_vf: Vec<_> = self
            .links
            .iter()
            .zip(&self.names)
            .map(|(l, name)| match l {
                Some(l) => serde_json::json!({ "local": name, "link": l.counters() }),
                None => serde_json::json!({ "local": name, "released": true }),
            })
            .collect();
        serde_json::json!({
            self.kind: per_vf,
            "unknown_source": self.unknown_source,
        })
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        self.links.iter().flatten().map(|l| l.raw_fd()).collect()
    }
}
