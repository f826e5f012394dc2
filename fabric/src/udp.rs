//! RoCEv2 over kernel UDP sockets: one unconnected socket on `local_ip:4791`, batched with
//! `sendmmsg`/`recvmmsg`.
//!
//! The ICRC covers the IPv4 ID and flags, which the kernel writes. Linux puts ID 0 on a
//! datagram with DF set sent through an *unconnected* socket, so the socket is never connected
//! and has `IP_MTU_DISCOVER = IP_PMTUDISC_DO` (facts file B.1); every packet's ICRC is computed
//! over that header. The UDP source port is covered too, and a socket sends from the port it is
//! bound to, so each QP's source port (rxe's hash of the two QPNs, the ECMP entropy of RoCEv2)
//! gets a sending socket bound to it, made on first use; where a port cannot be bound (in use,
//! or more than 256 of them) packets leave from 4791 with the ICRC computed for that port (rxe
//! ignores the source port of what it receives). Received packets cannot have their ICRC
//! checked: a UDP socket does not show the IP header (the TAP bridge can).

use crate::capture::Capture;
use crate::link::{Link, LinkCounters};
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;
use vhca_device::Packet;
use vhca_wire::roce::{self, Ipv4Ident, ROCE_V2_PORT};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Socket send and receive buffer size asked for.
const SOCKET_BUF: usize = 4 << 20;
/// Largest datagram accepted (a jumbo frame's worth).
const RX_BUF: usize = 9216;

/// The UDP bridge's counters (`rx_bad_icrc` stays 0: the ICRC cannot be checked here).
pub type UdpCounters = LinkCounters;

/// A RoCEv2 port on a kernel UDP socket.
pub struct UdpBridge {
    sock: UdpSocket,
    local: SocketAddr,
    /// Sockets are bound with `IP_FREEBIND` (see [`UdpBridge::bind_freebind`]).
    freebind: bool,
    /// Sending sockets bound to QPs' source ports (rxe's per-QP hash), made on first use;
    /// `None` where that port could not be bound (then the main socket's port is used).
    tx_socks: std::collections::HashMap<u16, Option<UdpSocket>>,
    tx: Vec<Vec<u8>>,
    rx: Vec<Vec<u8>>,
    pub counters: UdpCounters,
    capture: Option<Capture>,
    /// The ICRC FLUSHes go out with (rxe's for an rxe peer; received ones pass with either).
    flush_icrc: vhca_wire::icrc::FlushIcrc,
}

fn sockaddr(a: SocketAddr) -> SockaddrStorage {
    match a {
        SocketAddr::V4(v4) => SockaddrStorage::from(v4),
        SocketAddr::V6(v6) => SockaddrStorage::from(v6),
    }
}

fn to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Sending sockets per source port at most; beyond, packets leave from the main socket.
const MAX_TX_SOCKETS: usize = 256;

/// A UDP socket bound to `ip:port` with `IP_FREEBIND`: the bind succeeds while no local
/// interface holds `ip`, and datagrams to it arrive once one does.
fn bind_freebind(ip: IpAddr, port: u16) -> io::Result<UdpSocket> {
    use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType};
    let family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(io::Error::from)?;
    setsockopt(&fd, sockopt::IpFreebind, &true).map_err(io::Error::from)?;
    bind(fd.as_raw_fd(), &sockaddr(SocketAddr::new(ip, port))).map_err(io::Error::from)?;
    Ok(UdpSocket::from(fd))
}

/// An unconnected UDP socket on `ip:port` with DF set (so the kernel writes IPv4 ID 0, which
/// the ICRC covers) and buffers sized for a window of 4 KiB packets. `freebind`: bind even if
/// no local interface holds `ip` (yet).
fn open_socket(ip: IpAddr, port: u16, freebind: bool) -> io::Result<UdpSocket> {
    let sock = if freebind {
        bind_freebind(ip, port)?
    } else {
        UdpSocket::bind(SocketAddr::new(ip, port))?
    };
    if ip.is_ipv4() {
        let val: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: `sock` is an open socket for the duration of the call; the option value is a
        // live c_int and its exact size is passed, as setsockopt(2) requires.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Room for a window of 4 KiB packets: the default (~200 KiB) overflows under a burst of RDMA
    // WRITEs and turns into go-back-N retransmissions. The forcing variant, which ignores
    // net.core.rmem_max, works for root; others get what rmem_max allows.
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&sock, sockopt::RcvBufForce, &SOCKET_BUF).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUF);
    }
    if setsockopt(&sock, sockopt::SndBufForce, &SOCKET_BUF).is_err() {
        let _ = setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUF);
    }
    Ok(sock)
}

impl UdpBridge {
    /// Sends FLUSHes with this ICRC from now on: [`FlushIcrc::Rxe`] for a Linux rxe peer,
    /// which drops a FLUSH carrying IBTA's (docs/transport.md).
    ///
    /// [`FlushIcrc::Rxe`]: vhca_wire::icrc::FlushIcrc::Rxe
    pub fn set_flush_icrc(&mut self, f: vhca_wire::icrc::FlushIcrc) {
        self.flush_icrc = f;
    }

    /// Binds `ip:4791`.
    pub fn bind(ip: IpAddr) -> io::Result<UdpBridge> {
        UdpBridge::bind_port(ip, ROCE_V2_PORT)
    }

    /// Binds `ip:port` (tests may use another port; RoCEv2 peers need 4791).
    pub fn bind_port(ip: IpAddr, port: u16) -> io::Result<UdpBridge> {
        UdpBridge::open(ip, port, false)
    }

    /// Binds `ip:4791` with `IP_FREEBIND`, so the bind succeeds before any local interface
    /// holds `ip`: the destination of a migration listens for an address that arrives with
    /// the VF (docs/migration.md). Nothing is received until the address is on an interface,
    /// and sending fails (counted as tx errors) until then.
    pub fn bind_freebind(ip: IpAddr) -> io::Result<UdpBridge> {
        UdpBridge::open(ip, ROCE_V2_PORT, true)
    }

    fn open(ip: IpAddr, port: u16, freebind: bool) -> io::Result<UdpBridge> {
        let sock = open_socket(ip, port, freebind)?;
        let local = sock.local_addr()?;
        Ok(UdpBridge {
            sock,
            local,
            freebind,
            tx_socks: std::collections::HashMap::new(),
            tx: Vec::new(),
            rx: (0..BATCH).map(|_| vec![0u8; RX_BUF]).collect(),
            counters: UdpCounters::default(),
            capture: None,
            flush_icrc: vhca_wire::icrc::FlushIcrc::Ibta,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's descriptor, for waiting on it from another thread.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }

    /// Sends every packet of `pkts` (drained) to `dst_ip:4791`. Packets that cannot be encoded
    /// (e.g. a GID of the other address family) are counted as errors and dropped, as a NIC
    /// drops what it cannot route.
    pub fn send(&mut self, pkts: &mut Vec<Packet>) -> io::Result<()> {
        self.send_to_port(pkts, ROCE_V2_PORT)
    }

    /// The socket a packet with source port `sport` leaves from, and the port it really has.
    /// rxe picks a source port per QP (a hash of both QPNs) for ECMP entropy; a kernel socket
    /// sends from the port it is bound to, so each such port gets a sending socket of its own.
    fn tx_socket(&mut self, sport: u16) -> (std::os::fd::RawFd, u16) {
        let main = (self.sock.as_raw_fd(), self.local.port());
        if sport == self.local.port() || sport == 0 {
            return main;
        }
        if !self.tx_socks.contains_key(&sport) {
            if self.tx_socks.len() >= MAX_TX_SOCKETS {
                return main;
            }
            let s = open_socket(self.local.ip(), sport, self.freebind).ok();
            self.tx_socks.insert(sport, s);
        }
        match self.tx_socks.get(&sport) {
            Some(Some(s)) => (s.as_raw_fd(), sport),
            _ => main,
        }
    }

    /// [`UdpBridge::send`] to another destination port (tests).
    pub fn send_to_port(&mut self, pkts: &mut Vec<Packet>, dst_port: u16) -> io::Result<()> {
        let mut addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
        let mut n = 0;
        let mut cur_fd = self.sock.as_raw_fd();
        for pkt in pkts.iter_mut() {
            // The kernel sends from the socket's port, and the ICRC covers it: use the QP's
            // port where a socket could be bound to it, the main socket's otherwise.
            let (fd, sport) = self.tx_socket(pkt.src_port);
            pkt.src_port = sport;
            if (fd != cur_fd && n > 0) || n == BATCH {
                self.flush(cur_fd, n, &addrs);
                n = 0;
                addrs.clear();
            }
            cur_fd = fd;
            let dst = match roce::packet_ips(pkt) {
                Ok((_, d)) => SocketAddr::new(d, dst_port),
                Err(_) => {
                    self.counters.tx_errors += 1;
                    continue;
                }
            };
            if self.tx.len() <= n {
                self.tx.push(Vec::with_capacity(RX_BUF));
            }
            if roce::emit_udp_payload_into_with(
                pkt,
                Ipv4Ident::KERNEL_UNCONNECTED_UDP,
                dst_port,
                self.flush_icrc,
                &mut self.tx[n],
            )
            .is_err()
            {
                self.counters.tx_errors += 1;
                continue;
            }
            if let Some(c) = &mut self.capture {
                c.udp(
                    SocketAddr::new(self.local.ip(), sport),
                    dst,
                    Ipv4Ident::KERNEL_UNCONNECTED_UDP,
                    &self.tx[n],
                );
            }
            addrs.push(Some(sockaddr(dst)));
            n += 1;
        }
        if n > 0 {
            self.flush(cur_fd, n, &addrs);
        }
        pkts.clear();
        Ok(())
    }

    /// Sends the first `n` encoded datagrams of `self.tx` from `fd` with sendmmsg.
    fn flush(&mut self, fd: std::os::fd::RawFd, n: usize, addrs: &[Option<SockaddrStorage>]) {
        let iovs: Vec<[IoSlice<'_>; 1]> = self.tx[..n].iter().map(|b| [IoSlice::new(b)]).collect();
        let mut hdrs = MultiHeaders::<SockaddrStorage>::preallocate(n, None);
        let mut sent = 0;
        while sent < n {
            match sendmmsg(
                fd,
                &mut hdrs,
                &iovs[sent..],
                &addrs[sent..n],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => {
                    let k = r.count();
                    if k == 0 {
                        break;
                    }
                    for b in &self.tx[sent..sent + k] {
                        self.counters.tx_packets += 1;
                        self.counters.tx_bytes += b.len() as u64;
                    }
                    sent += k;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // A datagram the kernel refuses (no route, too big): drop it and go on, as a
                // NIC would; the transport retransmits.
                Err(_) => {
                    self.counters.tx_errors += 1;
                    sent += 1;
                }
            }
        }
    }

    /// Waits up to `timeout` for datagrams (0: just look) and appends the decoded packets to
    /// `out`; returns how many datagrams were read.
    pub fn recv(&mut self, timeout: Duration, out: &mut Vec<Packet>) -> io::Result<usize> {
        if !self.wait_readable(timeout)? {
            return Ok(0);
        }
        let fd = self.sock.as_raw_fd();
        let got: Vec<(usize, Option<SocketAddr>)> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                self.rx.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            let mut hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            match recvmmsg(fd, &mut hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                Ok(r) => r
                    .map(|m| (m.bytes, m.address.as_ref().and_then(to_std)))
                    .collect(),
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return Ok(0),
                Err(e) => return Err(io::Error::from(e)),
            }
        };
        let n = got.len();
        for (i, (len, src)) in got.into_iter().enumerate() {
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += len as u64;
            let Some(src) = src else {
                self.counters.rx_malformed += 1;
                continue;
            };
            let bytes = &self.rx[i][..len.min(RX_BUF)];
            if let Some(c) = &mut self.capture {
                // The sender's IPv4 ID is not known here; the capture shows ID 0 and DF, so
                // the ICRC of a packet from rxe looks wrong in it (from vhca it is right).
                c.udp(src, self.local, Ipv4Ident::KERNEL_UNCONNECTED_UDP, bytes);
            }
            match roce::parse_udp_payload(bytes, src, self.local, None) {
                Ok(p) => out.push(p.packet),
                Err(_) => self.counters.rx_malformed += 1,
            }
        }
        Ok(n)
    }

    /// Sends `count` copies of `payload` to `dst` with the same socket and `sendmmsg` batches
    /// the bridge uses, without RoCEv2 encoding: the plain-UDP baseline of `vhca bench --udp`.
    /// Returns how many datagrams the kernel took.
    pub fn blast(&mut self, dst: SocketAddr, payload: &[u8], count: usize) -> io::Result<usize> {
        let addrs: Vec<Option<SockaddrStorage>> = vec![Some(sockaddr(dst)); BATCH];
        let iovs: Vec<[IoSlice<'_>; 1]> = (0..BATCH).map(|_| [IoSlice::new(payload)]).collect();
        let mut hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut sent = 0;
        while sent < count {
            let n = (count - sent).min(BATCH);
            match sendmmsg(
                self.sock.as_raw_fd(),
                &mut hdrs,
                &iovs[..n],
                &addrs[..n],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => {
                    let k = r.count();
                    self.counters.tx_packets += k as u64;
                    self.counters.tx_bytes += (k * payload.len()) as u64;
                    sent += k;
                }
                Err(nix::errno::Errno::EINTR) => {}
                // ENOBUFS and the like: the datagram is lost, as it would be on a wire.
                Err(_) => {
                    self.counters.tx_errors += 1;
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }

    /// Receives and discards datagrams that arrive within `timeout` (one `recvmmsg` batch
    /// after the wait); returns how many.
    pub fn drain(&mut self, timeout: Duration) -> io::Result<usize> {
        if !self.wait_readable(timeout)? {
            return Ok(0);
        }
        let fd = self.sock.as_raw_fd();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.rx.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let mut hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let n = match recvmmsg(fd, &mut hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(r) => r.map(|m| m.bytes).collect::<Vec<_>>(),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return Ok(0),
            Err(e) => return Err(io::Error::from(e)),
        };
        self.counters.rx_packets += n.len() as u64;
        self.counters.rx_bytes += n.iter().sum::<usize>() as u64;
        Ok(n.len())
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let t = if timeout.is_zero() {
            PollTimeout::ZERO
        } else {
            PollTimeout::try_from(ms.max(1)).unwrap_or(PollTimeout::MAX)
        };
        match poll(&mut fds, t) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

impl Link for UdpBridge {
    fn send(&mut self, pkts: &mut Vec<Packet>) -> io::Result<()> {
        UdpBridge::send(self, pkts)
    }

    fn recv(&mut self, timeout: Duration, out: &mut Vec<Packet>) -> io::Result<usize> {
        UdpBridge::recv(self, timeout, out)
    }

    fn counters(&self) -> LinkCounters {
        self.counters.clone()
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        UdpBridge::raw_fd(self)
    }

    fn set_capture(&mut self, capture: Capture) {
        self.capture = Some(capture);
    }
}

/// Waits up to `timeout` for `fd` to become readable (or an error); true when it is.
pub fn wait_readable_fd(fd: std::os::fd::RawFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: the caller passes the descriptor of a socket that outlives this call (the
    // node's link, owned by the same struct as the thread calling this); the borrowed fd is
    // used only for this poll.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(bfd, PollFlags::POLLIN)];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let t = if timeout.is_zero() {
        PollTimeout::ZERO
    } else {
        PollTimeout::try_from(ms.max(1)).unwrap_or(PollTimeout::MAX)
    };
    matches!(poll(&mut fds, t), Ok(n) if n > 0)
}
