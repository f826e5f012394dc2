//! What a [`crate::node::Node`] needs from the network: a port that sends batches of device
//! packets and hands back the ones that arrive. Two exist: [`crate::udp::UdpBridge`] (RoCEv2
//! over a kernel UDP socket) and [`crate::tap::TapBridge`] (whole Ethernet frames through a
//! TAP device, with the VF's own MAC, IPv4 address and ARP).

use crate::capture::Capture;
use serde::Serialize;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;
use vhca_device::Packet;

/// Counters every link keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets that could not be encoded or that the kernel refused (dropped).
    pub tx_errors: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Datagrams or frames that did not decode as RoCEv2 (dropped).
    pub rx_malformed: u64,
    /// Frames whose ICRC did not match (dropped). Only a link that sees the IP header can
    /// check it: always 0 on the UDP bridge.
    pub rx_bad_icrc: u64,
}

/// A network port for one VF.
pub trait Link: Send {
    /// Sends every packet of `pkts` (drained). Packets that cannot go out are counted as
    /// errors and dropped, as a NIC drops what it cannot route; the transport retransmits.
    fn send(&mut self, pkts: &mut Vec<Packet>) -> io::Result<()>;

    /// Waits up to `timeout` (0: just look) for traffic and appends the RoCEv2 packets that
    /// arrived to `out`; returns how many datagrams or frames were read (RoCEv2 or not).
    fn recv(&mut self, timeout: Duration, out: &mut Vec<Packet>) -> io::Result<usize>;

    fn counters(&self) -> LinkCounters;

    /// A descriptor that becomes readable when traffic arrives, for waiting from another
    /// thread (see [`crate::node::BackgroundNode`]).
    fn raw_fd(&self) -> RawFd;

    /// Records every packet sent and received from now on.
    fn set_capture(&mut self, capture: Capture);

    /// Another VF now stands behind this link (a migration brought its MAC and address):
    /// answer as that VF from now on and announce it, so switches learn where its MAC went.
    /// Links whose address the kernel owns (UDP) have nothing to do.
    fn adopt(&mut self, _mac: vhca_device::Mac, _ip: std::net::Ipv4Addr) -> io::Result<()> {
        Ok(())
    }

    /// While silent the link sends nothing and drops what arrives: its VF migrated away and
    /// its MAC lives on another port now (or will again here if the migration fails).
    fn set_silent(&mut self, _silent: bool) {}
}
