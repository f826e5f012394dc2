//! How the VFs of one `vhca serve` process reach each other: a small trait in front of the
//! fabric, so the RoCEv2/UDP bridge ([`UdpFabric`]) plugs in beside the in-process switch.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::time::Duration;
use vhca_device::{Gid, Nanos, Packet};
use vhca_fabric::link::Link;
use vhca_fabric::switch::PortId;
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
}

/// The in-process switch: an ideal link unless faults or latency are configured.
pub struct SwitchFabric {
    switch: Switch,
}

impl SwitchFabric {
    pub fn new(seed: u64, faults: FaultConfig, latency_ns: u64) -> SwitchFabric {
        SwitchFabric {
            switch: Switch::new(seed, faults, latency_ns),
        }
    }

    /// An ideal switch: no latency, no faults.
    pub fn ideal() -> SwitchFabric {
        SwitchFabric::new(0, FaultConfig::default(), 0)
    }
}

impl Fabric for SwitchFabric {
    fn attach(&mut self, gid: Gid, port: PortId) {
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

/// RoCEv2 over kernel UDP sockets: one [`UdpBridge`] per VF, bound to the VF's own IPv4
/// address on port 4791, so VFs of this process reach VFs of other processes, other hosts and
/// Linux rxe. Traffic between two VFs of the same process goes through the kernel too, as it
/// would between two functions of one NIC port without a hairpin shortcut.
pub struct UdpFabric {
    bridges: Vec<UdpBridge>,
    /// GID → port, from [`Fabric::attach`]: which bridge a packet leaves from.
    ports: HashMap<Gid, PortId>,
    /// Packets read from the sockets and not yet delivered, with their port.
    rx: VecDeque<(PortId, Packet)>,
    scratch: Vec<Packet>,
    /// Packets a VF sent from a GID no bridge owns (dropped).
    unknown_source: u64,
}

impl UdpFabric {
    /// Binds one socket per address; `ips[i]` is VF `i`'s address.
    pub fn bind(ips: &[Ipv4Addr]) -> std::io::Result<UdpFabric> {
        let bridges = ips
            .iter()
            .map(|ip| UdpBridge::bind(IpAddr::V4(*ip)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(UdpFabric {
            bridges,
            ports: HashMap::new(),
            rx: VecDeque::new(),
            scratch: Vec::new(),
            unknown_source: 0,
        })
    }

    /// Reads whatever the sockets hold, without waiting.
    fn fill(&mut self) {
        for (port, b) in self.bridges.iter_mut().enumerate() {
            // A read error is a transient socket condition (e.g. ICMP port unreachable
            // reported on an unconnected socket); the transport retransmits.
            let _ = b.recv(Duration::ZERO, &mut self.scratch);
            self.rx.extend(self.scratch.drain(..).map(|p| (port, p)));
        }
    }
}

impl Fabric for UdpFabric {
    fn attach(&mut self, gid: Gid, port: PortId) {
        self.ports.insert(gid, port);
    }

    fn send(&mut self, _now: Nanos, pkt: Packet) {
        let Some(b) = self
            .ports
            .get(&pkt.src_gid)
            .and_then(|p| self.bridges.get_mut(*p))
        else {
            self.unknown_source += 1;
            return;
        };
        // Failures are counted by the bridge as tx errors; the packet is lost as on a wire.
        let _ = b.send(&mut vec![pkt]);
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
            .bridges
            .iter()
            .map(|b| {
                serde_json::json!({
                    "local": b.local_addr().to_string(),
                    "link": Link::counters(b),
                })
            })
            .collect();
        serde_json::json!({
            "udp": per_vf,
            "unknown_source": self.unknown_source,
        })
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        self.bridges.iter().map(|b| b.raw_fd()).collect()
    }
}
