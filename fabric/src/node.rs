//! A node: one VF on a real network link, driven by the wall clock.
//!
//! This is the smallest runtime around the sans-I/O device: a monotonic clock gives `now`,
//! the link (RoCEv2 over a kernel UDP socket, or Ethernet frames through a TAP device: any
//! [`Link`]) carries packets, and `pump` does one round:
//! due timers, everything the VF wants to send, then whatever arrives within a short wait. It
//! implements [`Verbs`] so the same programs that run in-process run against a real peer
//! (`vhca pingpong` against `ibv_rc_pingpong`, two vhca processes in two namespaces).

use crate::link::Link;
use crate::tap::{TapBridge, TapError};
use crate::udp::UdpBridge;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use vhca_device::memory::MmapMemory;
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, Mac, MemKey, Nanos, Packet, PdHandle, QpAttr,
    QpAttrMask, QpInitAttr, Qpn, RecvWr, SendWr, SrqHandle, Verbs, VerbsError, VerbsResult, Vf,
    VfIdentity, WorkCompletion,
};

/// How long one `pump` waits for packets when nothing is due sooner.
pub const MAX_WAIT: Duration = Duration::from_millis(1);

pub struct Node<L: Link = UdpBridge> {
    pub vf: Vf,
    pub link: L,
    epoch: Instant,
    next_free: u64,
    mem_bytes: u64,
    tx: Vec<Packet>,
    rx: Vec<Packet>,
}

/// A locally administered MAC derived from an IPv4 address (02:56:48:43 + the last two bytes).
pub fn mac_for(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    Mac([0x02, 0x56, 0x48, 0x43, o[2], o[3]])
}

impl Node<UdpBridge> {
    /// A VF whose GID is `::ffff:ip`, on a UDP socket bound to `ip:4791`.
    pub fn new(ip: Ipv4Addr, mem_bytes: usize) -> io::Result<Node> {
        let link = UdpBridge::bind(IpAddr::V4(ip))?;
        Node::with_link(ip, link, mem_bytes)
    }
}

impl Node<TapBridge> {
    /// A VF whose GID is `::ffff:ip` and whose MAC is [`mac_for`]`(ip)`, on the TAP device
    /// `tap` (created if it does not exist). The kernel holds no address for it: the bridge
    /// answers ARP for `ip` itself and announces it on start.
    pub fn tap(ip: Ipv4Addr, tap: &str, mem_bytes: usize) -> Result<Node<TapBridge>, TapError> {
        let link = TapBridge::open(tap, mac_for(ip), ip)?;
        Ok(Node::with_link(ip, link, mem_bytes)?)
    }
}

impl<L: Link> Node<L> {
    pub fn with_link(ip: Ipv4Addr, link: L, mem_bytes: usize) -> io::Result<Node<L>> {
        let id = VfIdentity::new(mac_for(ip), ip.octets());
        let mem = MmapMemory::shared(mem_bytes).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Node {
            vf: Vf::new(id, mem),
            link,
            epoch: Instant::now(),
            next_free: 4096,
            mem_bytes: mem_bytes as u64,
            tx: Vec::new(),
            rx: Vec::new(),
        })
    }

    pub fn now(&self) -> Nanos {
        Nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    fn flush(&mut self, now: Nanos) -> io::Result<()> {
        while let Some(p) = self.vf.poll_transmit(now) {
            self.tx.push(p);
        }
        if !self.tx.is_empty() {
            self.link.send(&mut self.tx)?;
        }
        Ok(())
    }

    /// One round: timers, transmissions, and packets that arrive within `max_wait` (less when a
    /// timer is due sooner).
    pub fn pump(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = self.now();
        if self.vf.poll_timeout().is_some_and(|t| t <= now) {
            self.vf.handle_timeout(now);
        }
        self.flush(now)?;
        let wait = match self.vf.poll_timeout() {
            Some(t) if t.0 > now.0 => max_wait.min(Duration::from_nanos(t.0 - now.0)),
            Some(_) => Duration::ZERO,
            None => max_wait,
        };
        self.link.recv(wait, &mut self.rx)?;
        // Drain what else is queued without waiting, in bounded batches.
        for _ in 0..16 {
            if self.link.recv(Duration::ZERO, &mut self.rx)? == 0 {
                break;
            }
        }
        let now = self.now();
        for p in self.rx.drain(..) {
            self.vf.handle_packet(now, &p);
        }
        self.flush(now)
    }
}

fn io_err(_: io::Error) -> VerbsError {
    VerbsError::Invalid("network link failed")
}

impl<L: Link> Verbs for Node<L> {
    fn gid(&self) -> Gid {
        self.vf.gid()
    }

    fn alloc_buf(&mut self, len: u64) -> VerbsResult<u64> {
        let start = self.next_free.next_multiple_of(64);
        let end = start
            .checked_add(len)
            .ok_or(VerbsError::Exhausted("guest memory"))?;
        if end > self.mem_bytes {
            return Err(VerbsError::Exhausted("guest memory"));
        }
        self.next_free = end;
        Ok(start)
    }

    fn write_buf(&mut self, addr: u64, data: &[u8]) -> VerbsResult<()> {
        self.vf
            .memory()
            .write(addr, data)
            .map_err(|_| VerbsError::Fault)
    }

    fn read_buf(&mut self, addr: u64, len: usize) -> VerbsResult<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.vf
            .memory()
            .read(addr, &mut b)
            .map_err(|_| VerbsError::Fault)?;
        Ok(b)
    }

    fn alloc_pd(&mut self) -> VerbsResult<PdHandle> {
        self.vf.alloc_pd()
    }

    fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()> {
        self.vf.dealloc_pd(pd)
    }

    fn reg_mr(&mut self, pd: PdHandle, addr: u64, len: u64, access: Access) -> VerbsResult<MemKey> {
        self.vf.reg_mr(pd, addr, len, access)
    }

    fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()> {
        self.vf.dereg_mr(key)
    }

    fn alloc_mr(&mut self, pd: PdHandle, max_num_sg: u32) -> VerbsResult<MemKey> {
        self.vf.alloc_mr(pd, max_num_sg)
    }

    fn alloc_mw(&mut self, pd: PdHandle, kind: vhca_device::MwType) -> VerbsResult<MemKey> {
        self.vf.alloc_mw(pd, kind)
    }

    fn dealloc_mw(&mut self, mw: MemKey) -> VerbsResult<()> {
        self.vf.dealloc_mw(mw)
    }

    fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle> {
        self.vf.create_cq(cqe)
    }

    fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()> {
        self.vf.destroy_cq(cq)
    }

    fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()> {
        self.vf.req_notify_cq(cq, solicited_only)
    }

    fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        let n = self.vf.poll_cq(cq, max, out)?;
        if n > 0 {
            return Ok(n);
        }
        self.pump(MAX_WAIT).map_err(io_err)?;
        self.vf.poll_cq(cq, max, out)
    }

    fn create_srq(&mut self, pd: PdHandle, max_wr: u32, max_sge: u32) -> VerbsResult<SrqHandle> {
        self.vf.create_srq(pd, max_wr, max_sge)
    }

    fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()> {
        self.vf.modify_srq(srq, limit)
    }

    fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()> {
        self.vf.post_srq_recv(srq, wr)
    }

    fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()> {
        self.vf.destroy_srq(srq)
    }

    fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle> {
        self.vf.create_ah(pd, attr)
    }

    fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()> {
        self.vf.destroy_ah(ah)
    }

    fn create_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn> {
        self.vf.create_qp(init)
    }

    fn modify_qp(&mut self, qpn: Qpn, attr: &QpAttr, mask: QpAttrMask) -> VerbsResult<()> {
        self.vf.modify_qp(qpn, attr, mask)
    }

    fn query_qp(&mut self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)> {
        self.vf.query_qp(qpn)
    }

    fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()> {
        self.vf.destroy_qp(qpn)
    }

    fn post_send(&mut self, qpn: Qpn, wr: &SendWr) -> VerbsResult<()> {
        self.vf.post_send(qpn, wr)?;
        // Put it on the wire now rather than at the next poll.
        let now = self.now();
        self.flush(now).map_err(io_err)
    }

    fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> VerbsResult<()> {
        self.vf.post_recv(qpn, wr)
    }
}

/// A node pumped by a thread of its own, as a peer process would be: programs that drive two
/// nodes from one thread use it for the side they are not waiting on.
pub struct BackgroundNode<L: Link + 'static = UdpBridge> {
    inner: std::sync::Arc<std::sync::Mutex<Node<L>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<L: Link + 'static> BackgroundNode<L> {
    pub fn spawn(node: Node<L>) -> BackgroundNode<L> {
        use std::sync::atomic::Ordering;
        let inner = std::sync::Arc::new(std::sync::Mutex::new(node));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (i, s) = (inner.clone(), stop.clone());
        let fd = inner.lock().map(|n| n.link.raw_fd()).unwrap_or(-1);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // Pump without waiting while holding the node, then wait for the socket (or
                // the next timer) without it, so the foreground never waits long for the lock.
                let wait = match i.lock() {
                    Ok(mut n) => {
                        if n.pump(Duration::ZERO).is_err() {
                            break;
                        }
                        let now = n.now();
                        match n.vf.poll_timeout() {
                            Some(t) if t.0 > now.0 => {
                                Duration::from_nanos(t.0 - now.0).min(MAX_WAIT)
                            }
                            Some(_) => Duration::ZERO,
                            None => MAX_WAIT,
                        }
                    }
                    Err(_) => break,
                };
                crate::udp::wait_readable_fd(fd, wait);
            }
        });
        BackgroundNode {
            inner,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the node with the pump paused.
    pub fn with<T>(&self, f: impl FnOnce(&mut Node<L>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
}

impl<L: Link + 'static> Drop for BackgroundNode<L> {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<L: Link + 'static> Verbs for BackgroundNode<L> {
    fn gid(&self) -> Gid {
        self.with(|n| n.gid())
    }
    fn alloc_buf(&mut self, len: u64) -> VerbsResult<u64> {
        self.with(|n| n.alloc_buf(len))
    }
    fn write_buf(&mut self, addr: u64, data: &[u8]) -> VerbsResult<()> {
        self.with(|n| n.write_buf(addr, data))
    }
    fn read_buf(&mut self, addr: u64, len: usize) -> VerbsResult<Vec<u8>> {
        self.with(|n| n.read_buf(addr, len))
    }
    fn alloc_pd(&mut self) -> VerbsResult<PdHandle> {
        self.with(|n| n.alloc_pd())
    }
    fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()> {
        self.with(|n| n.dealloc_pd(pd))
    }
    fn reg_mr(&mut self, pd: PdHandle, addr: u64, len: u64, access: Access) -> VerbsResult<MemKey> {
        self.with(|n| n.reg_mr(pd, addr, len, access))
    }
    fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()> {
        self.with(|n| n.dereg_mr(key))
    }
    fn alloc_mr(&mut self, pd: PdHandle, max_num_sg: u32) -> VerbsResult<MemKey> {
        self.with(|n| n.alloc_mr(pd, max_num_sg))
    }
    fn alloc_mw(&mut self, pd: PdHandle, kind: vhca_device::MwType) -> VerbsResult<MemKey> {
        self.with(|n| n.alloc_mw(pd, kind))
    }
    fn dealloc_mw(&mut self, mw: MemKey) -> VerbsResult<()> {
        self.with(|n| n.dealloc_mw(mw))
    }
    fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle> {
        self.with(|n| n.create_cq(cqe))
    }
    fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()> {
        self.with(|n| n.destroy_cq(cq))
    }
    fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()> {
        self.with(|n| n.req_notify_cq(cq, solicited_only))
    }
    fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        self.with(|n| n.poll_cq(cq, max, out))
    }
    fn create_srq(&mut self, pd: PdHandle, max_wr: u32, max_sge: u32) -> VerbsResult<SrqHandle> {
        self.with(|n| n.create_srq(pd, max_wr, max_sge))
    }
    fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()> {
        self.with(|n| n.modify_srq(srq, limit))
    }
    fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()> {
        self.with(|n| n.post_srq_recv(srq, wr))
    }
    fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()> {
        self.with(|n| n.destroy_srq(srq))
    }
    fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle> {
        self.with(|n| n.create_ah(pd, attr))
    }
    fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()> {
        self.with(|n| n.destroy_ah(ah))
    }
    fn create_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn> {
        self.with(|n| n.create_qp(init))
    }
    fn modify_qp(&mut self, qpn: Qpn, attr: &QpAttr, mask: QpAttrMask) -> VerbsResult<()> {
        self.with(|n| n.modify_qp(qpn, attr, mask))
    }
    fn query_qp(&mut self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)> {
        self.with(|n| n.query_qp(qpn))
    }
    fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()> {
        self.with(|n| n.destroy_qp(qpn))
    }
    fn post_send(&mut self, qpn: Qpn, wr: &SendWr) -> VerbsResult<()> {
        self.with(|n| n.post_send(qpn, wr))
    }
    fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> VerbsResult<()> {
        self.with(|n| n.post_recv(qpn, wr))
    }
}
