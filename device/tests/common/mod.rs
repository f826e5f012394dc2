//! Test harness: VFs on PFs, a virtual clock and a pump that moves packets between them.
//!
//! Everything is deterministic: no sleeps, no wall clock, no unseeded randomness. Time only
//! moves when nothing is in flight, and then straight to the earliest `poll_timeout()`.
#![allow(dead_code)]

use std::collections::VecDeque;
use vhca_device::packet::{Opcode, Packet};
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, MemKey, Mtu, Nanos, PdHandle, Pf, Psn, QpAttr,
    QpAttrMask as M, QpCap, QpInitAttr, QpState, QpType, Qpn, RecvWr, SendWr, Sge, SrqHandle,
    UdDest, VecMemory, Vf, WorkCompletion,
};

/// Guest memory of every VF the harness creates.
pub const MEM_SIZE: usize = 4 << 20;
/// Allocations start here, so address 0 is never a valid buffer.
const FIRST_ADDR: u64 = 0x1000;

/// What the pump does with each packet: it receives the packet as transmitted and returns the
/// packets to deliver instead (none = drop, two = duplicate, a modified one = corrupt; keep one
/// in the closure's state and return it later = reorder).
pub type Hook = Box<dyn FnMut(&Sent) -> Vec<Packet>>;

/// A packet as it left a VF.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Nanos,
    pub from: usize,
    pub pkt: Packet,
}

impl Sent {
    pub fn op(&self) -> Opcode {
        self.pkt.bth.opcode
    }
    pub fn psn(&self) -> u32 {
        self.pkt.bth.psn.0
    }
}

/// One VF in the network.
pub struct Node {
    pub pf: usize,
    pub vf: u16,
    pub gid: Gid,
    pub pd: PdHandle,
    next_addr: u64,
}

/// A registered buffer in one VF's guest memory (virtual address == guest-physical).
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub node: usize,
    pub addr: u64,
    pub len: u32,
    pub key: MemKey,
}

impl Buf {
    pub fn sge(&self) -> Sge {
        Sge {
            addr: self.addr,
            len: self.len,
            lkey: self.key,
        }
    }
    pub fn sge_at(&self, off: u32, len: u32) -> Sge {
        assert!(off + len <= self.len);
        Sge {
            addr: self.addr + off as u64,
            len,
            lkey: self.key,
        }
    }
    pub fn at(&self, off: u64) -> u64 {
        self.addr + off
    }
}

/// A QP and the objects it was created with.
#[derive(Clone, Copy, Debug)]
pub struct Ep {
    pub node: usize,
    pub qpn: Qpn,
    pub pd: PdHandle,
    pub scq: CqHandle,
    pub rcq: CqHandle,
}

/// Connection parameters of an RC pair (both ends get the same unless noted).
#[derive(Clone, Debug)]
pub struct RcOpts {
    pub mtu: Mtu,
    /// The first PSN of a's send queue (= b's rq_psn), and of b's.
    pub psn_a: u32,
    pub psn_b: u32,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub min_rnr_timer: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub access: Access,
    pub cap: QpCap,
    pub cq_size: u32,
    pub sq_sig_all: bool,
    pub srq_a: Option<SrqHandle>,
    pub srq_b: Option<SrqHandle>,
}

impl Default for RcOpts {
    fn default() -> RcOpts {
        RcOpts {
            mtu: Mtu::Mtu1024,
            psn_a: 0x1000,
            psn_b: 0x2000,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 1,
            max_rd_atomic: 16,
            max_dest_rd_atomic: 16,
            access: Access::LOCAL_WRITE
                | Access::REMOTE_WRITE
                | Access::REMOTE_READ
                | Access::REMOTE_ATOMIC,
            cap: QpCap {
                max_send_wr: 256,
                max_recv_wr: 256,
                max_send_sge: 8,
                max_recv_sge: 8,
                max_inline_data: 128,
            },
            cq_size: 1024,
            sq_sig_all: false,
            srq_a: None,
            srq_b: None,
        }
    }
}

/// VFs on PFs, a virtual clock and a packet pump.
pub struct Net {
    pub pfs: Vec<Pf>,
    pub nodes: Vec<Node>,
    pub now: Nanos,
    hook: Option<Hook>,
    /// Every packet transmitted, before the hook.
    pub log: Vec<Sent>,
    /// Packets for a GID no VF owns.
    pub undeliverable: u64,
}

impl Net {
    /// `n` VFs, each on its own PF.
    pub fn new(n: usize) -> Net {
        Net::with_layout(&vec![1; n])
    }

    /// `layout[i]` VFs on PF `i`.
    pub fn with_layout(layout: &[u16]) -> Net {
        let mut net = Net {
            pfs: Vec::new(),
            nodes: Vec::new(),
            now: Nanos(0),
            hook: None,
            log: Vec::new(),
            undeliverable: 0,
        };
        for (pi, &nvf) in layout.iter().enumerate() {
            let mut pf = Pf::new(pi as u8, nvf);
            for v in 0..nvf {
                let id = pf.default_identity(v);
                let slot = pf.create_vf(id, VecMemory::shared(MEM_SIZE)).unwrap();
                let vf = pf.vf_mut(slot).unwrap();
                let pd = vf.alloc_pd().unwrap();
                net.nodes.push(Node {
                    pf: pi,
                    vf: slot,
                    gid: vf.gid(),
                    pd,
                    next_addr: FIRST_ADDR,
                });
            }
            net.pfs.push(pf);
        }
        net
    }

    pub fn vf(&mut self, node: usize) -> &mut Vf {
        let n = &self.nodes[node];
        self.pfs[n.pf].vf_mut(n.vf).unwrap()
    }

    pub fn vf_ref(&self, node: usize) -> &Vf {
        let n = &self.nodes[node];
        self.pfs[n.pf].vf(n.vf).unwrap()
    }

    pub fn gid(&self, node: usize) -> Gid {
        self.nodes[node].gid
    }

    pub fn set_hook(&mut self, hook: impl FnMut(&Sent) -> Vec<Packet> + 'static) {
        self.hook = Some(Box::new(hook));
    }

    pub fn clear_hook(&mut self) {
        self.hook = None;
    }

    // ---- memory -----------------------------------------------------------------------

    /// Reserves `len` bytes (64-byte aligned) of `node`'s guest memory.
    pub fn alloc(&mut self, node: usize, len: u32) -> u64 {
        let n = &mut self.nodes[node];
        let addr = n.next_addr;
        n.next_addr = (addr + len.max(1) as u64 + 63) & !63;
        assert!(
            n.next_addr <= MEM_SIZE as u64,
            "test guest memory exhausted"
        );
        addr
    }

    /// Allocates and registers a buffer in the node's default PD.
    pub fn buf(&mut self, node: usize, len: u32, access: Access) -> Buf {
        let pd = self.nodes[node].pd;
        self.buf_in(node, pd, len, access)
    }

    pub fn buf_in(&mut self, node: usize, pd: PdHandle, len: u32, access: Access) -> Buf {
        let addr = self.alloc(node, len);
        let key = self
            .vf(node)
            .reg_mr(pd, addr, len as u64, access)
            .expect("reg_mr");
        Buf {
            node,
            addr,
            len,
            key,
        }
    }

    /// A buffer with every access right.
    pub fn rbuf(&mut self, node: usize, len: u32) -> Buf {
        self.buf(
            node,
            len,
            Access::LOCAL_WRITE
                | Access::REMOTE_WRITE
                | Access::REMOTE_READ
                | Access::REMOTE_ATOMIC,
        )
    }

    pub fn write(&mut self, node: usize, addr: u64, data: &[u8]) {
        self.vf(node).memory().write(addr, data).unwrap();
    }

    pub fn read(&mut self, node: usize, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.vf(node).memory().read(addr, &mut v).unwrap();
        v
    }

    pub fn fill(&mut self, b: &Buf, data: &[u8]) {
        assert!(data.len() <= b.len as usize);
        self.write(b.node, b.addr, data);
    }

    pub fn contents(&mut self, b: &Buf) -> Vec<u8> {
        self.read(b.node, b.addr, b.len as usize)
    }

    pub fn read_u64(&mut self, node: usize, addr: u64) -> u64 {
        u64::from_le_bytes(self.read(node, addr, 8).try_into().unwrap())
    }

    pub fn write_u64(&mut self, node: usize, addr: u64, v: u64) {
        self.write(node, addr, &v.to_le_bytes());
    }

    // ---- queue pairs --------------------------------------------------------------------

    pub fn create_qp(
        &mut self,
        node: usize,
        ty: QpType,
        opts: &RcOpts,
        srq: Option<SrqHandle>,
    ) -> Ep {
        let pd = self.nodes[node].pd;
        let vf = self.vf(node);
        let scq = vf.create_cq(opts.cq_size).unwrap();
        let rcq = vf.create_cq(opts.cq_size).unwrap();
        let qpn = vf
            .create_qp(QpInitAttr {
                qp_type: ty,
                pd,
                send_cq: scq,
                recv_cq: rcq,
                srq,
                cap: opts.cap,
                sq_sig_all: opts.sq_sig_all,
            })
            .unwrap();
        Ep {
            node,
            qpn,
            pd,
            scq,
            rcq,
        }
    }

    pub fn modify(&mut self, ep: &Ep, attr: &QpAttr, mask: M) -> vhca_device::VerbsResult<()> {
        self.vf(ep.node).modify_qp(ep.qpn, attr, mask)
    }

    pub fn rc_init(&mut self, ep: &Ep, access: Access) {
        let attr = QpAttr {
            qp_state: QpState::Init,
            pkey_index: 0,
            port_num: 1,
            qp_access_flags: access,
            ..QpAttr::default()
        };
        self.modify(
            ep,
            &attr,
            M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS,
        )
        .unwrap();
    }

    pub fn rtr_attr(&self, remote: &Ep, rq_psn: u32, opts: &RcOpts) -> QpAttr {
        QpAttr {
            qp_state: QpState::Rtr,
            ah_attr: AhAttr {
                dgid: self.gid(remote.node),
                hop_limit: 64,
                ..AhAttr::default()
            },
            path_mtu: opts.mtu,
            dest_qp_num: remote.qpn,
            rq_psn: Psn(rq_psn),
            max_dest_rd_atomic: opts.max_dest_rd_atomic,
            min_rnr_timer: opts.min_rnr_timer,
            ..QpAttr::default()
        }
    }

    pub const RTR_MASK: M = M::STATE
        .union(M::AV)
        .union(M::PATH_MTU)
        .union(M::DEST_QPN)
        .union(M::RQ_PSN)
        .union(M::MAX_DEST_RD_ATOMIC)
        .union(M::MIN_RNR_TIMER);

    pub const RTS_MASK: M = M::STATE
        .union(M::SQ_PSN)
        .union(M::TIMEOUT)
        .union(M::RETRY_CNT)
        .union(M::RNR_RETRY)
        .union(M::MAX_QP_RD_ATOMIC);

    pub fn rts_attr(sq_psn: u32, opts: &RcOpts) -> QpAttr {
        QpAttr {
            qp_state: QpState::Rts,
            sq_psn: Psn(sq_psn),
            timeout: opts.timeout,
            retry_cnt: opts.retry_cnt,
            rnr_retry: opts.rnr_retry,
            max_rd_atomic: opts.max_rd_atomic,
            ..QpAttr::default()
        }
    }

    pub fn rc_rtr(&mut self, ep: &Ep, remote: &Ep, rq_psn: u32, opts: &RcOpts) {
        let attr = self.rtr_attr(remote, rq_psn, opts);
        self.modify(ep, &attr, Self::RTR_MASK).unwrap();
    }

    pub fn rc_rts(&mut self, ep: &Ep, sq_psn: u32, opts: &RcOpts) {
        self.modify(ep, &Self::rts_attr(sq_psn, opts), Self::RTS_MASK)
            .unwrap();
    }

    /// Two connected RC QPs in RTS: `a` on node `na`, `b` on node `nb`.
    pub fn rc_pair(&mut self, na: usize, nb: usize, opts: &RcOpts) -> (Ep, Ep) {
        let a = self.create_qp(na, QpType::Rc, opts, opts.srq_a);
        let b = self.create_qp(nb, QpType::Rc, opts, opts.srq_b);
        self.connect(&a, &b, opts);
        (a, b)
    }

    /// RESET → INIT → RTR → RTS for both ends of a pair.
    pub fn connect(&mut self, a: &Ep, b: &Ep, opts: &RcOpts) {
        self.rc_init(a, opts.access);
        self.rc_init(b, opts.access);
        self.rc_rtr(a, b, opts.psn_b, opts);
        self.rc_rtr(b, a, opts.psn_a, opts);
        self.rc_rts(a, opts.psn_a, opts);
        self.rc_rts(b, opts.psn_b, opts);
    }

    /// Two connected UC QPs in RTS (`opts`' MTU, PSNs, access and SRQs; nothing reliable).
    pub fn uc_pair(&mut self, na: usize, nb: usize, opts: &RcOpts) -> (Ep, Ep) {
        let a = self.create_qp(na, QpType::Uc, opts, opts.srq_a);
        let b = self.create_qp(nb, QpType::Uc, opts, opts.srq_b);
        self.rc_init(&a, opts.access);
        self.rc_init(&b, opts.access);
        for (ep, remote, rq_psn) in [(&a, &b, opts.psn_b), (&b, &a, opts.psn_a)] {
            let attr = self.rtr_attr(remote, rq_psn, opts);
            let mask = M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN;
            self.modify(ep, &attr, mask).unwrap();
        }
        for (ep, sq_psn) in [(&a, opts.psn_a), (&b, opts.psn_b)] {
            let attr = QpAttr {
                qp_state: QpState::Rts,
                sq_psn: Psn(sq_psn),
                ..QpAttr::default()
            };
            self.modify(ep, &attr, M::STATE | M::SQ_PSN).unwrap();
        }
        (a, b)
    }

    /// A UD QP in RTS with Q_Key `qkey`.
    pub fn ud_qp(&mut self, node: usize, qkey: u32, srq: Option<SrqHandle>) -> Ep {
        let opts = RcOpts::default();
        let ep = self.create_qp(node, QpType::Ud, &opts, srq);
        let init = QpAttr {
            qp_state: QpState::Init,
            qkey,
            ..QpAttr::default()
        };
        self.modify(&ep, &init, M::STATE | M::PKEY_INDEX | M::PORT | M::QKEY)
            .unwrap();
        let rtr = QpAttr {
            qp_state: QpState::Rtr,
            ..QpAttr::default()
        };
        self.modify(&ep, &rtr, M::STATE).unwrap();
        let rts = QpAttr {
            qp_state: QpState::Rts,
            sq_psn: Psn(0x123),
            ..QpAttr::default()
        };
        self.modify(&ep, &rts, M::STATE | M::SQ_PSN).unwrap();
        ep
    }

    pub fn ah(&mut self, node: usize, to: usize) -> AhHandle {
        let pd = self.nodes[node].pd;
        let dgid = self.gid(to);
        self.vf(node)
            .create_ah(
                pd,
                AhAttr {
                    dgid,
                    hop_limit: 64,
                    ..AhAttr::default()
                },
            )
            .unwrap()
    }

    pub fn ud_dest(&mut self, from: &Ep, to: &Ep, qkey: u32) -> UdDest {
        UdDest {
            ah: self.ah(from.node, to.node),
            remote_qpn: to.qpn,
            remote_qkey: qkey,
        }
    }

    pub fn post_send(&mut self, ep: &Ep, wr: SendWr) {
        self.vf(ep.node).post_send(ep.qpn, &wr).expect("post_send");
    }

    pub fn post_recv(&mut self, ep: &Ep, wr_id: u64, sgl: Vec<Sge>) {
        self.vf(ep.node)
            .post_recv(ep.qpn, RecvWr { wr_id, sgl })
            .expect("post_recv");
    }

    pub fn state(&self, ep: &Ep) -> QpState {
        self.vf_ref(ep.node).qp(ep.qpn).unwrap().state()
    }

    /// Every completion now in `cq` of `node`.
    pub fn poll(&mut self, node: usize, cq: CqHandle) -> Vec<WorkCompletion> {
        let mut out = Vec::new();
        self.vf(node).poll_cq(cq, usize::MAX, &mut out).unwrap();
        out
    }

    pub fn send_wcs(&mut self, ep: &Ep) -> Vec<WorkCompletion> {
        self.poll(ep.node, ep.scq)
    }

    pub fn recv_wcs(&mut self, ep: &Ep) -> Vec<WorkCompletion> {
        self.poll(ep.node, ep.rcq)
    }

    // ---- the pump -----------------------------------------------------------------------

    fn node_of(&self, gid: Gid) -> Option<usize> {
        self.nodes.iter().position(|n| n.gid == gid)
    }

    /// One round: everything every VF wants to transmit now is sent through the hook and
    /// delivered. Returns whether any packet was transmitted.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let mut out: VecDeque<Sent> = VecDeque::new();
        for i in 0..self.nodes.len() {
            while let Some(pkt) = self.vf(i).poll_transmit(now) {
                out.push_back(Sent {
                    at: now,
                    from: i,
                    pkt,
                });
                assert!(out.len() < 100_000, "a VF transmits without end");
            }
        }
        let any = !out.is_empty();
        for s in out {
            self.log.push(s.clone());
            let pkts = match self.hook.as_mut() {
                Some(h) => h(&s),
                None => vec![s.pkt],
            };
            for p in pkts {
                match self.node_of(p.dst_gid) {
                    Some(dst) => self.vf(dst).handle_packet(now, &p),
                    None => self.undeliverable += 1,
                }
            }
        }
        any
    }

    /// The earliest timer of any VF.
    pub fn next_timeout(&self) -> Option<Nanos> {
        (0..self.nodes.len())
            .filter_map(|i| self.vf_ref(i).poll_timeout())
            .min()
    }

    /// Pumps packets; when nothing is in flight, jumps to the earliest timer. Stops when no
    /// timer is armed or the next one lies after `limit`.
    pub fn run_until(&mut self, limit: Nanos) {
        for _ in 0..1_000_000 {
            if self.step() {
                continue;
            }
            match self.next_timeout() {
                Some(t) if t <= limit => {
                    if t > self.now {
                        self.now = t;
                    }
                    let now = self.now;
                    for i in 0..self.nodes.len() {
                        self.vf(i).handle_timeout(now);
                    }
                }
                _ => return,
            }
        }
        panic!("the network did not settle (at {})", self.now);
    }

    /// Runs until quiet, for at most 100 virtual seconds.
    pub fn run(&mut self) {
        let limit = self.now.saturating_add(100_000_000_000);
        self.run_until(limit);
    }

    /// Runs for `ns` more virtual nanoseconds (or until quiet).
    pub fn run_for(&mut self, ns: u64) {
        let limit = self.now.saturating_add(ns);
        self.run_until(limit);
    }

    /// Packets of the log with opcode `op`.
    pub fn sent_with(&self, op: Opcode) -> Vec<&Sent> {
        self.log.iter().filter(|s| s.op() == op).collect()
    }
}

/// A deterministic byte pattern (no RNG): distinct per `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed as u32 * 7 + (i as u32 >> 8)) as u8
        })
        .collect()
}

/// The one completion of a CQ, asserting there is exactly one.
pub fn one(wcs: Vec<WorkCompletion>) -> WorkCompletion {
    assert_eq!(wcs.len(), 1, "expected exactly one completion: {wcs:?}");
    wcs[0]
}

/// Drops packets from `from` that `pred` selects, the first `times` times.
pub fn drop_first(
    net: &mut Net,
    from: usize,
    times: u32,
    pred: impl Fn(&Packet) -> bool + 'static,
) {
    let left = std::cell::Cell::new(times);
    net.set_hook(move |s| {
        if s.from == from && pred(&s.pkt) && left.get() > 0 {
            left.set(left.get() - 1);
            vec![]
        } else {
            vec![s.pkt.clone()]
        }
    });
}
