//! How the VFs of one `vhca serve` process reach each other: a small trait in front of the
//! fabric, so the RoCEv2/UDP and TAP bridges (another issue) plug in beside the in-process
//! switch.

use vhca_device::{Gid, Nanos, Packet};
use vhca_fabric::switch::PortId;
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
