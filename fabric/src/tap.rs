//! RoCEv2 through a TAP device: the VF is a host on an Ethernet segment with its own MAC and
//! IPv4 address (GID `::ffff:IP`); the kernel holds no address for it.
//!
//! Two layers:
//! * [`Endpoint`], sans-I/O: the VF's Ethernet/IPv4 presence. It answers ARP for its address,
//!   resolves peers' MACs by ARP (queueing their packets meanwhile), announces itself with a
//!   gratuitous ARP, answers pings, writes RoCEv2 frames with [`roce::emit_frame`] (IPv4 header
//!   and all, so the ICRC covers exactly what goes out) and reads them with
//!   [`roce::parse_frame`], which verifies the ICRC — here the IP header is visible, unlike on a
//!   UDP socket. Frames go in and out as byte vectors, so two endpoints can be wired together
//!   in a test without a kernel.
//! * [`TapBridge`]: an [`Endpoint`] on a TAP file descriptor (`/dev/net/tun`,
//!   `IFF_TAP | IFF_NO_PI`), implementing [`Link`].
//!
//! Why not smoltcp's interface and sockets (docs/fabric.md has the long version): the ICRC
//! covers the IPv4 identification and flags. smoltcp's UDP sockets write the IP header
//! themselves (ID 0 and DF today, a counter with its `proto-ipv4-fragmentation` feature, which
//! any crate in the build could switch on), and neither its UDP nor its raw sockets show a
//! received packet's original IP header (raw sockets rebuild it from the parsed fields, ID
//! lost), so the ICRC could not be verified. RoCEv2 frames therefore bypass a socket layer in
//! both directions, and the ARP that decides where they go lives next to them: a few dozen
//! lines of RFC 826 on `vhca_wire::arp`. smoltcp's wire types serve the ICMP echo replies.

use crate::capture::Capture;
use crate::link::{Link, LinkCounters};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{Mac, Packet};
use vhca_wire::roce::{self, FrameParams, Ipv4Ident};
use vhca_wire::{arp, ethernet, WireError};

/// How long to wait for an ARP reply before asking again.
pub const ARP_RETRY: Duration = Duration::from_secs(1);
/// Requests sent for one address before its queued packets are dropped (the RC transport
/// retransmits them later, which starts a new resolution).
pub const ARP_TRIES: u32 = 3;
/// Packets queued per unresolved address; more are dropped.
pub const PENDING_MAX: usize = 1024;
/// Frames read per `recv` call before the node gets to run again.
const RX_BATCH: usize = 64;
/// Receive buffer: the largest frame a TAP hands out (64 KiB IP packet + Ethernet header).
const RX_BUF: usize = 65_536 + ethernet::HEADER_LEN;

#[derive(Debug, Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun: {0} (needs CAP_NET_ADMIN and the tun module)")]
    OpenTun(io::Error),
    #[error("TUNSETIFF {name:?} failed: {err} (is a device of that name not a TAP, or owned by another user?)")]
    SetIff { name: String, err: io::Error },
    #[error("bad TAP device name {0:?}: 1 to 15 bytes, no NUL")]
    BadName(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<TapError> for io::Error {
    fn from(e: TapError) -> io::Error {
        match e {
            TapError::Io(e) => e,
            e => io::Error::other(e),
        }
    }
}

/// The TAP endpoint's counters: the link's plus ARP and what was ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TapCounters {
    pub link: LinkCounters,
    pub arp_requests_sent: u64,
    pub arp_replies_sent: u64,
    pub arp_announcements_sent: u64,
    pub arp_received: u64,
    /// Packets dropped because their destination did not answer ARP (or its queue was full).
    pub unresolved_drops: u64,
    pub icmp_echo_replies: u64,
    /// Frames for another MAC or IP (a bridge floods unknown unicast).
    pub rx_not_for_us: u64,
    /// Frames for us that are neither ARP, ICMP echo nor RoCEv2 (ignored).
    pub rx_other: u64,
}

struct Pending {
    pkts: VecDeque<Packet>,
    last_request: Instant,
    tries: u32,
}

/// The VF's Ethernet/IPv4 presence, without I/O: frames in, frames and packets out.
pub struct Endpoint {
    mac: Mac,
    ip: Ipv4Addr,
    neighbors: HashMap<Ipv4Addr, Mac>,
    pending: HashMap<Ipv4Addr, Pending>,
    /// IPv4 identification of the next frame: a counter, as Linux does for DF packets of a
    /// flow. The value does not matter to the peer; the ICRC covers whatever is sent.
    ip_ident: u16,
    pub counters: TapCounters,
}

fn ethernet_frame(src: Mac, dst: Mac, ethertype: ethernet::EtherType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + payload.len()];
    ethernet::Repr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    f[ethernet::HEADER_LEN..].copy_from_slice(payload);
    f
}

fn arp_frame(src: Mac, dst: Mac, r: &arp::Repr) -> Vec<u8> {
    let mut a = [0u8; arp::PACKET_LEN];
    r.emit(&mut arp::Packet::new_unchecked(&mut a[..]));
    ethernet_frame(src, dst, ethernet::EtherType::Arp, &a)
}

impl Endpoint {
    pub fn new(mac: Mac, ip: Ipv4Addr) -> Endpoint {
        Endpoint {
            mac,
            ip,
            neighbors: HashMap::new(),
            pending: HashMap::new(),
            ip_ident: 1,
            counters: TapCounters::default(),
        }
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Takes another VF's MAC and address (a migration). Neighbours stay: they are the same
    /// hosts, reached the same way.
    pub fn set_identity(&mut self, mac: Mac, ip: Ipv4Addr) {
        self.mac = mac;
        self.ip = ip;
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The MAC ARP resolved for `ip`, if any.
    pub fn neighbor(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.neighbors.get(&ip).copied()
    }

    /// Packets waiting for ARP.
    pub fn pending_packets(&self) -> usize {
        self.pending.values().map(|p| p.pkts.len()).sum()
    }

    /// A gratuitous ARP (RFC 5227 announcement, broadcast): neighbours that know this IP
    /// update its MAC. Sent when the endpoint comes up, and again after a migration.
    pub fn announce(&mut self, out: &mut Vec<Vec<u8>>) {
        let r = arp::Repr::gratuitous(self.mac, self.ip);
        out.push(arp_frame(self.mac, ethernet::BROADCAST, &r));
        self.counters.arp_announcements_sent += 1;
    }

    /// Puts `pkt` on the wire, or queues it and asks ARP when its destination is unresolved.
    pub fn send(&mut self, now: Instant, pkt: Packet, out: &mut Vec<Vec<u8>>) {
        let dst = match roce::packet_ips(&pkt) {
            Ok((IpAddr::V4(s), IpAddr::V4(d))) if s == self.ip => d,
            // IPv6 GIDs, or a source that is not this endpoint: nothing this link can send.
            _ => {
                self.counters.link.tx_errors += 1;
                return;
            }
        };
        if let Some(mac) = self.neighbors.get(&dst).copied() {
            self.emit(&pkt, mac, out);
            return;
        }
        let p = self.pending.entry(dst).or_insert_with(|| Pending {
            pkts: VecDeque::new(),
            last_request: now,
            tries: 0,
        });
        let full = p.pkts.len() >= PENDING_MAX;
        if !full {
            p.pkts.push_back(pkt);
        }
        let first = p.tries == 0;
        if first {
            p.tries = 1;
            p.last_request = now;
        }
        if full {
            self.counters.unresolved_drops += 1;
        }
        if first {
            self.request(dst, out);
        }
    }

    fn request(&mut self, target: Ipv4Addr, out: &mut Vec<Vec<u8>>) {
        let r = arp::Repr::request(self.mac, self.ip, target);
        out.push(arp_frame(self.mac, ethernet::BROADCAST, &r));
        self.counters.arp_requests_sent += 1;
    }

    fn emit(&mut self, pkt: &Packet, dst_mac: Mac, out: &mut Vec<Vec<u8>>) {
        let mut params = FrameParams::new(self.mac, dst_mac);
        params.ipv4 = Ipv4Ident {
            ident: self.ip_ident,
            dont_frag: true,
        };
        self.ip_ident = self.ip_ident.wrapping_add(1);
        match roce::emit_frame(pkt, &params) {
            Ok(f) => {
                self.counters.link.tx_packets += 1;
                self.counters.link.tx_bytes += f.len() as u64;
                out.push(f);
            }
            Err(_) => self.counters.link.tx_errors += 1,
        }
    }

    /// When the next ARP retry is due.
    pub fn poll_at(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.last_request + ARP_RETRY)
            .min()
    }

    /// ARP retries and give-ups due at `now`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        let due: Vec<Ipv4Addr> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.last_request + ARP_RETRY)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let Some(p) = self.pending.get_mut(&ip) else {
                continue;
            };
            if p.tries >= ARP_TRIES {
                self.counters.unresolved_drops += p.pkts.len() as u64;
                self.pending.remove(&ip);
                continue;
            }
            p.tries += 1;
            p.last_request = now;
            self.request(ip, out);
        }
    }

    /// Handles one received frame: ARP and pings are answered into `out`, RoCEv2 packets
    /// whose ICRC checks out are appended to `delivered`, the rest is counted and dropped.
    pub fn receive(&mut self, frame: &[u8], out: &mut Vec<Vec<u8>>, delivered: &mut Vec<Packet>) {
        self.counters.link.rx_packets += 1;
        self.counters.link.rx_bytes += frame.len() as u64;
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            self.counters.link.rx_malformed += 1;
            return;
        };
        let dst = eth.dst_addr();
        if dst != self.mac && dst != ethernet::BROADCAST {
            self.counters.rx_not_for_us += 1;
            return;
        }
        match eth.ethertype() {
            ethernet::EtherType::Arp => self.receive_arp(eth.payload(), out),
            ethernet::EtherType::Ipv4 => {
                // Addressed to us? (The IPv4 header is checked properly by parse_frame.)
                let ip = eth.payload();
                if ip.len() < 20 || ip[16..20] != self.ip.octets() {
                    self.counters.rx_not_for_us += 1;
                    return;
                }
                match roce::parse_frame(frame) {
                    Ok(r) => delivered.push(r.packet),
                    Err(WireError::BadIcrc { .. }) => self.counters.link.rx_bad_icrc += 1,
                    Err(WireError::NotRoce(_)) => {
                        if !self.echo_reply(eth.src_addr(), ip, out) {
                            self.counters.rx_other += 1;
                        }
                    }
                    Err(_) => self.counters.link.rx_malformed += 1,
                }
            }
            _ => self.counters.rx_other += 1,
        }
    }

    fn receive_arp(&mut self, payload: &[u8], out: &mut Vec<Vec<u8>>) {
        let Ok(r) = arp::Packet::new_checked(payload).and_then(|p| arp::Repr::parse(&p)) else {
            self.counters.link.rx_malformed += 1;
            return;
        };
        self.counters.arp_received += 1;
        let (sip, smac) = (r.source_protocol_addr, r.source_hardware_addr);
        if sip == self.ip || sip.is_unspecified() || smac == ethernet::BROADCAST {
            // Our own announcement echoed back, an address probe (RFC 5227), or nonsense.
            return;
        }
        // RFC 826: update the sender if known ("merge"); add it if the packet is for us.
        // A gratuitous ARP thus moves a known neighbour (migration) and adds no one new.
        let known = self.neighbors.contains_key(&sip);
        if known || r.target_protocol_addr == self.ip {
            self.neighbors.insert(sip, smac);
            if let Some(p) = self.pending.remove(&sip) {
                for pkt in p.pkts {
                    self.emit(&pkt, smac, out);
                }
            }
        }
        if let Some(reply) = r.reply_to(self.mac, self.ip) {
            out.push(arp_frame(self.mac, smac, &reply));
            self.counters.arp_replies_sent += 1;
        }
    }

    /// Answers an ICMP echo request in `ip` (an IPv4 packet for us); false if it is not one.
    fn echo_reply(&mut self, to: Mac, ip: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr};
        let caps = ChecksumCapabilities::default();
        let Ok(p) = Ipv4Packet::new_checked(ip) else {
            return false;
        };
        let Ok(ipr) = Ipv4Repr::parse(&p, &caps) else {
            return false;
        };
        if ipr.next_header != IpProtocol::Icmp {
            return false;
        }
        let Ok(icmp) = Icmpv4Packet::new_checked(p.payload()) else {
            return false;
        };
        let Ok(Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        }) = Icmpv4Repr::parse(&icmp, &caps)
        else {
            return false;
        };
        let reply = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let rip = Ipv4Repr {
            src_addr: self.ip,
            dst_addr: ipr.src_addr,
            next_header: IpProtocol::Icmp,
            payload_len: reply.buffer_len(),
            hop_limit: 64,
        };
        let mut b = vec![0u8; rip.buffer_len() + reply.buffer_len()];
        let mut op = Ipv4Packet::new_unchecked(&mut b[..]);
        rip.emit(&mut op, &caps);
        reply.emit(&mut Icmpv4Packet::new_unchecked(op.payload_mut()), &caps);
        out.push(ethernet_frame(self.mac, to, ethernet::EtherType::Ipv4, &b));
        self.counters.icmp_echo_replies += 1;
        true
    }
}

/// Opens the TAP device `name` (creating it if it does not exist; an existing one, e.g. from
/// `ip tuntap add mode tap`, must have been made with the same flags), non-blocking.
fn open_tap(name: &str) -> Result<(File, String), TapError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(TapError::BadName(name.to_string()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TapError::OpenTun)?;
    // struct ifreq: the name (IFNAMSIZ bytes, NUL-terminated), then a union whose first member
    // here is `short ifr_flags`.
    let mut ifr = [0u8; std::mem::size_of::<libc::ifreq>()];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    ifr[libc::IFNAMSIZ..libc::IFNAMSIZ + 2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `file` is an open /dev/net/tun descriptor; TUNSETIFF reads and writes one
    // `struct ifreq`, and `ifr` is a live, writable buffer of exactly that size.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
    if rc != 0 {
        return Err(TapError::SetIff {
            name: name.to_string(),
            err: io::Error::last_os_error(),
        });
    }
    let end = ifr[..libc::IFNAMSIZ]
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(libc::IFNAMSIZ);
    Ok((file, String::from_utf8_lossy(&ifr[..end]).into_owned()))
}

/// An [`Endpoint`] on a TAP device.
///
/// vhca does not configure the device: bring it up (and attach it to a bridge) with
/// `ip link`. The gratuitous ARP is sent as soon as the device takes frames (a TAP that is
/// down refuses them), and again on [`TapBridge::announce`].
pub struct TapBridge {
    dev: File,
    name: String,
    ep: Endpoint,
    out: Vec<Vec<u8>>,
    rx_buf: Vec<u8>,
    capture: Option<Capture>,
    announced: bool,
    /// The VF migrated away: nothing is sent, arriving frames are read and dropped.
    silent: bool,
}

impl TapBridge {
    /// Opens (or creates) the TAP device `name` for a VF with `mac` and `ip`.
    pub fn open(name: &str, mac: Mac, ip: Ipv4Addr) -> Result<TapBridge, TapError> {
        let (dev, name) = open_tap(name)?;
        let mut t = TapBridge {
            dev,
            name,
            ep: Endpoint::new(mac, ip),
            out: Vec::new(),
            rx_buf: vec![0u8; RX_BUF],
            capture: None,
            announced: false,
            silent: false,
        };
        t.try_announce();
        Ok(t)
    }

    /// The device's name (as the kernel knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn tap_counters(&self) -> &TapCounters {
        &self.ep.counters
    }

    /// Sends a gratuitous ARP now (after a migration: the VF's MAC is now here).
    pub fn announce(&mut self) -> io::Result<()> {
        let mut out = Vec::new();
        self.ep.announce(&mut out);
        for f in &out {
            self.dev.write_all(f)?;
            if let Some(c) = &mut self.capture {
                c.frame(f);
            }
        }
        self.announced = true;
        Ok(())
    }

    fn try_announce(&mut self) {
        // A device that is still down answers EIO; the next send or receive tries again.
        let _ = self.announce();
    }

    /// Writes out the frames the endpoint produced.
    fn flush_out(&mut self) {
        for f in self.out.drain(..) {
            // A TAP takes a frame whole or not at all (one write, one frame).
            match self.dev.write(&f) {
                Ok(n) if n == f.len() => {
                    if let Some(c) = &mut self.capture {
                        c.frame(&f);
                    }
                }
                // Down, or the kernel's queue is full: dropped, as on a real wire.
                _ => self.ep.counters.link.tx_errors += 1,
            }
        }
    }
}

impl Link for TapBridge {
    fn send(&mut self, pkts: &mut Vec<Packet>) -> io::Result<()> {
        if self.silent {
            pkts.clear();
            return Ok(());
        }
        if !self.announced {
            self.try_announce();
        }
        let now = Instant::now();
        for p in pkts.drain(..) {
            self.ep.send(now, p, &mut self.out);
        }
        self.flush_out();
        Ok(())
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Packet>) -> io::Result<usize> {
        if self.silent {
            // Drain the device so a waiting thread is not woken again for the same frames.
            let mut n = 0;
            while n < RX_BATCH {
                match self.dev.read(&mut self.rx_buf) {
                    Ok(_) => n += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            return Ok(n);
        }
        if !self.announced {
            self.try_announce();
        }
        let now = Instant::now();
        self.ep.poll(now, &mut self.out);
        self.flush_out();
        let wait = match self.ep.poll_at() {
            Some(t) => timeout.min(t.saturating_duration_since(now)),
            None => timeout,
        };
        if !wait.is_zero() {
            crate::udp::wait_readable_fd(self.dev.as_raw_fd(), wait);
        }
        let mut n = 0;
        while n < RX_BATCH {
            let len = match self.dev.read(&mut self.rx_buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            n += 1;
            let frame = &self.rx_buf[..len];
            if let Some(c) = &mut self.capture {
                c.frame(frame);
            }
            self.ep.receive(frame, &mut self.out, out);
        }
        self.flush_out();
        Ok(n)
    }

    fn counters(&self) -> LinkCounters {
        self.ep.counters.link.clone()
    }

    fn raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    fn set_capture(&mut self, capture: Capture) {
        self.capture = Some(capture);
    }

    fn adopt(&mut self, mac: Mac, ip: Ipv4Addr) -> io::Result<()> {
        self.silent = false;
        self.ep.set_identity(mac, ip);
        self.announce()
    }

    fn set_silent(&mut self, silent: bool) {
        self.silent = silent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhca_wire::testing::{sample, ALL_OPCODES};

    const MAC_A: Mac = Mac([2, 0x56, 0x48, 0x43, 0, 3]);
    const MAC_B: Mac = Mac([2, 0x56, 0x48, 0x43, 0, 1]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    /// Delivers every frame in `frames` to `to`; returns what it sent back.
    fn deliver(to: &mut Endpoint, frames: Vec<Vec<u8>>, got: &mut Vec<Packet>) -> Vec<Vec<u8>> {
        let mut back = Vec::new();
        for f in frames {
            to.receive(&f, &mut back, got);
        }
        back
    }

    #[test]
    fn resolves_by_arp_queues_meanwhile_and_delivers_every_opcode() {
        let (mut a, mut b) = (Endpoint::new(MAC_A, IP_A), Endpoint::new(MAC_B, IP_B));
        let now = Instant::now();
        let mut out = Vec::new();
        let sent: Vec<Packet> = ALL_OPCODES
            .iter()
            .enumerate()
            .map(|(i, op)| sample(*op, i * 97, false))
            .collect();
        for p in &sent {
            a.send(now, p.clone(), &mut out);
        }
        // One broadcast request, everything else queued.
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][..6], &[0xff; 6]);
        assert_eq!(a.pending_packets(), sent.len());
        let mut got_b = Vec::new();
        let reply = deliver(&mut b, out, &mut got_b);
        assert_eq!(b.neighbor(IP_A), Some(MAC_A), "b learns a from the request");
        assert_eq!(reply.len(), 1);
        let mut got_a = Vec::new();
        let frames = deliver(&mut a, reply, &mut got_a);
        assert_eq!(a.neighbor(IP_B), Some(MAC_B));
        assert_eq!(a.pending_packets(), 0);
        assert_eq!(frames.len(), sent.len());
        assert!(deliver(&mut b, frames, &mut got_b).is_empty());
        assert_eq!(got_b, sent);
        assert_eq!(
            b.counters.link.rx_bad_icrc + b.counters.link.rx_malformed,
            0
        );
        assert_eq!(a.counters.link.tx_packets, sent.len() as u64);
    }

    #[test]
    fn frames_carry_df_and_a_changing_ident_and_bad_icrcs_are_dropped() {
        let (mut a, mut b) = (Endpoint::new(MAC_A, IP_A), Endpoint::new(MAC_B, IP_B));
        a.neighbors.insert(IP_B, MAC_B);
        let mut out = Vec::new();
        let p = sample(ALL_OPCODES[4], 64, false);
        a.send(Instant::now(), p.clone(), &mut out);
        a.send(Instant::now(), p.clone(), &mut out);
        assert_eq!(out.len(), 2);
        let ident = |f: &[u8]| u16::from_be_bytes([f[18], f[19]]);
        assert_ne!(ident(&out[0]), ident(&out[1]));
        assert_eq!(out[0][20] & 0x40, 0x40, "DF");
        // A flipped payload bit: the ICRC catches it (the UDP checksum is 0, as rxe sends).
        let mut bad = out[1].clone();
        let last = bad.len() - 10;
        bad[last] ^= 1;
        let mut got = Vec::new();
        deliver(&mut b, vec![out[0].clone(), bad], &mut got);
        assert_eq!(got, vec![p]);
        assert_eq!(b.counters.link.rx_bad_icrc, 1);
    }

    #[test]
    fn arp_retries_then_gives_up() {
        let mut a = Endpoint::new(MAC_A, IP_A);
        let t0 = Instant::now();
        let mut out = Vec::new();
        a.send(t0, sample(ALL_OPCODES[4], 8, false), &mut out);
        assert_eq!(a.poll_at(), Some(t0 + ARP_RETRY));
        a.poll(t0 + ARP_RETRY / 2, &mut out);
        assert_eq!(out.len(), 1);
        for i in 1..ARP_TRIES {
            a.poll(t0 + ARP_RETRY * i, &mut out);
        }
        assert_eq!(a.counters.arp_requests_sent, u64::from(ARP_TRIES));
        a.poll(t0 + ARP_RETRY * ARP_TRIES, &mut out);
        assert_eq!(a.counters.unresolved_drops, 1);
        assert_eq!(a.pending_packets(), 0);
        assert_eq!(a.poll_at(), None);
    }

    #[test]
    fn gratuitous_arp_moves_a_known_neighbour_only() {
        let mut b = Endpoint::new(MAC_B, IP_B);
        let mut got = Vec::new();
        // An announcement from a stranger creates nothing (RFC 826 merge rule, Linux default).
        let mut out = Vec::new();
        Endpoint::new(MAC_A, IP_A).announce(&mut out);
        assert!(deliver(&mut b, out, &mut got).is_empty());
        assert_eq!(b.neighbor(IP_A), None);
        // Known: the announcement of the migrated VF (new MAC) replaces the entry.
        b.neighbors.insert(IP_A, MAC_A);
        let moved = Mac([2, 0, 0, 0, 0, 0x33]);
        let mut out = Vec::new();
        Endpoint::new(moved, IP_A).announce(&mut out);
        assert!(deliver(&mut b, out, &mut got).is_empty());
        assert_eq!(b.neighbor(IP_A), Some(moved));
        assert_eq!(b.counters.arp_replies_sent, 0);
    }

    #[test]
    fn an_endpoint_that_adopts_a_migrated_vf_answers_as_it() {
        // The destination slot's endpoint had an identity of its own; the VF (MAC_B, IP_B)
        // migrates in.
        let mut dst = Endpoint::new(Mac([2, 0, 0, 0, 0, 0x44]), Ipv4Addr::new(10, 77, 0, 9));
        dst.set_identity(MAC_B, IP_B);
        let mut out = Vec::new();
        dst.announce(&mut out);
        assert_eq!(&out[0][6..12], &MAC_B.0, "announced from the VF's MAC");
        // A peer that ARPs for the VF's address (the sample packets go to IP_B) gets the VF's
        // MAC from the destination, and its packets are delivered there.
        let mut peer = Endpoint::new(MAC_A, IP_A);
        let mut req = Vec::new();
        let p = sample(ALL_OPCODES[0], 8, false);
        peer.send(Instant::now(), p.clone(), &mut req);
        let mut got = Vec::new();
        let reply = deliver(&mut dst, req, &mut got);
        assert_eq!(reply.len(), 1, "the destination answers for {IP_B}");
        let frames = deliver(&mut peer, reply, &mut got);
        assert_eq!(peer.neighbor(IP_B), Some(MAC_B));
        deliver(&mut dst, frames, &mut got);
        assert_eq!(got, vec![p]);
    }

    #[test]
    fn answers_pings_and_ignores_what_is_not_for_it() {
        use smoltcp::phy::ChecksumCapabilities;
        use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr};
        let caps = ChecksumCapabilities::default();
        let mut b = Endpoint::new(MAC_B, IP_B);
        let echo = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data: b"ping",
        };
        let ipr = Ipv4Repr {
            src_addr: IP_A,
            dst_addr: IP_B,
            next_header: IpProtocol::Icmp,
            payload_len: echo.buffer_len(),
            hop_limit: 64,
        };
        let mut ip = vec![0u8; ipr.buffer_len() + echo.buffer_len()];
        let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
        ipr.emit(&mut p, &caps);
        echo.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
        let f = ethernet_frame(MAC_A, MAC_B, ethernet::EtherType::Ipv4, &ip);
        let mut got = Vec::new();
        let back = deliver(&mut b, vec![f.clone()], &mut got);
        assert_eq!(back.len(), 1);
        let rp = Ipv4Packet::new_checked(&back[0][14..]).unwrap();
        assert_eq!(rp.dst_addr(), IP_A);
        let r = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(rp.payload()).unwrap(), &caps);
        assert!(matches!(r, Ok(Icmpv4Repr::EchoReply { ident: 7, .. })));
        // Another MAC, another IP: ignored.
        let mut other = f.clone();
        other[..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
        let mut other_ip = f;
        other_ip[14 + 19] = 99;
        assert!(deliver(&mut b, vec![other, other_ip], &mut got).is_empty());
        assert_eq!(b.counters.rx_not_for_us, 2);
        assert!(got.is_empty());
    }
}
