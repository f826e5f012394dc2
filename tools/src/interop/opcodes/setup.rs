//! One side's objects (a PD, one CQ, an RC QP, a UD QP, one registered buffer), where things
//! live in that buffer, and the work request IDs that say what a completion is about.

use super::pattern::Op;
use super::OpcodesError;
use crate::interop::endpoint::{random_psn, Endpoint};
use vhca_device::{
    AhAttr, AhHandle, CqHandle, Gid, MemKey, Mtu, PdHandle, Psn, QpAttr, QpAttrMask as M, QpCap,
    QpInitAttr, QpState, QpType, Qpn, RecvWr, Sge,
};
use vhca_guest::programs::{rc_connect_qp, PeerInfo, RcPath, FULL_ACCESS, GRH_LEN};

/// The UD QPs' Q_Key.
pub const UD_QKEY: u32 = 0x5648_4341;

/// Bytes of the GRH in front of a received datagram.
pub const GRH: u64 = GRH_LEN as u64;

/// Hop limit of both QPs' paths: any value that crosses a few routers will do.
const HOP_LIMIT: u8 = 64;

/// READs and atomics in flight each way: an iteration has three.
const RD_ATOMIC: u8 = 16;

/// The UD datagram's size: the message size, but at least room for the iteration number
/// and some data, and at most the path MTU (a UD message is one packet).
pub fn ud_len(size: u32, mtu: Mtu) -> u32 {
    size.clamp(16, mtu.bytes())
}

/// `count` buffers of `stride` bytes at `off` in a side's buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Area {
    pub off: u64,
    pub stride: u64,
    pub count: u64,
}

impl Area {
    /// Buffer `i` (modulo the count) relative to `base`.
    pub fn at(&self, base: u64, i: u64) -> u64 {
        base + self.off + (i % self.count.max(1)) * self.stride
    }
}

/// Hands out areas one after another, 64-byte aligned.
#[derive(Default)]
struct Carve {
    next: u64,
}

impl Carve {
    fn area(&mut self, stride: u64, count: u64) -> Area {
        let a = Area {
            off: self.next,
            stride,
            count,
        };
        self.next = (self.next + stride * count).next_multiple_of(64);
        a
    }
}

/// RC receives the server keeps posted: three per iteration in flight, twice over, so the
/// client never waits for a repost (RNR).
pub fn rc_recvs(window: u32) -> u64 {
    6 * window as u64 + 2
}

/// UD receives each side keeps posted: duplicates (resent datagrams) need room too.
pub fn ud_recvs(window: u32) -> u64 {
    2 * window as u64 + 4
}

/// Buffers the server answers datagrams from (one per answer in flight).
pub fn ud_sends(window: u32) -> u64 {
    2 * window as u64 + 2
}

/// The server's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ServerLayout {
    pub rc_recv: Area,
    pub write: Area,
    pub write_imm: Area,
    pub read: Area,
    /// CMP_AND_SWP's counter, then FETCH_AND_ADD's.
    pub atomic: Area,
    pub ud_recv: Area,
    pub ud_send: Area,
    pub len: u64,
}

impl ServerLayout {
    pub fn new(size: u32, window: u32, ud_len: u32) -> ServerLayout {
        let (s, w) = (size as u64, window as u64);
        let mut c = Carve::default();
        let rc_recv = c.area(s, rc_recvs(window));
        let write = c.area(s, w);
        let write_imm = c.area(s, w);
        let read = c.area(s, w);
        let atomic = c.area(16, 1);
        let ud_recv = c.area(GRH + ud_len as u64, ud_recvs(window));
        let ud_send = c.area(ud_len as u64, ud_sends(window));
        ServerLayout {
            rc_recv,
            write,
            write_imm,
            read,
            atomic,
            ud_recv,
            ud_send,
            len: c.next,
        }
    }
}

/// The client's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ClientLayout {
    /// Per window slot, the sources of SEND, SEND_WITH_IMM, RDMA_WRITE, RDMA_WRITE_WITH_IMM.
    pub src: [Area; 4],
    pub read: Area,
    /// Per window slot, where CMP_AND_SWP and FETCH_AND_ADD put the original values.
    pub atomic: Area,
    pub ud_send: Area,
    pub ud_recv: Area,
    pub len: u64,
}

impl ClientLayout {
    pub fn new(size: u32, window: u32, ud_len: u32) -> ClientLayout {
        let (s, w) = (size as u64, window as u64);
        let mut c = Carve::default();
        let src = [(); 4].map(|_| c.area(s, w));
        let read = c.area(s, w);
        let atomic = c.area(16, w);
        let ud_send = c.area(ud_len as u64, w);
        let ud_recv = c.area(GRH + ud_len as u64, ud_recvs(window));
        ClientLayout {
            src,
            read,
            atomic,
            ud_send,
            ud_recv,
            len: c.next,
        }
    }
}

/// Guest RAM (or node memory) a side needs for `size` and `window`: its buffer (the larger
/// of the two roles', at the largest UD datagram) plus room for rings.
pub fn mem_bytes(size: u32, window: u32) -> u64 {
    let ud = ud_len(size, Mtu::Mtu4096);
    let s = ServerLayout::new(size, window, ud).len;
    let c = ClientLayout::new(size, window, ud).len;
    (16 << 20) + s.max(c)
}

/// Queue depths of a side's QPs.
#[derive(Clone, Copy, Debug)]
pub struct Depths {
    pub rc_send: u32,
    pub rc_recv: u32,
    pub ud_send: u32,
    pub ud_recv: u32,
}

impl Depths {
    pub fn client(window: u32) -> Depths {
        Depths {
            rc_send: 7 * window,
            rc_recv: 1,
            // An iteration's datagram and one resend of it.
            ud_send: 2 * window,
            ud_recv: ud_recvs(window) as u32,
        }
    }

    pub fn server(window: u32) -> Depths {
        Depths {
            rc_send: 1,
            rc_recv: rc_recvs(window) as u32,
            ud_send: ud_sends(window) as u32,
            ud_recv: ud_recvs(window) as u32,
        }
    }

    fn cqe(&self) -> u32 {
        self.rc_send + self.rc_recv + self.ud_send + self.ud_recv + 16
    }
}

/// A side's objects. One CQ takes every completion of both QPs, so one wait covers both
/// (an empty poll waits: a VF's for its completion event, a node's to pump its link).
pub struct Res {
    pub pd: PdHandle,
    pub cq: CqHandle,
    pub rc: Qpn,
    pub ud: Qpn,
    pub psn: Psn,
    pub gid: Gid,
    pub buf: u64,
    pub key: MemKey,
}

/// Creates a side's objects with a `len`-byte buffer; the UD QP ends in RTS, the RC QP in
/// RESET until [`connect_rc`].
pub fn create<V: Endpoint>(node: &mut V, d: Depths, len: u64) -> Result<Res, OpcodesError> {
    let gid = node.local_gid()?;
    let pd = node.alloc_pd()?;
    let cq = node.create_cq(d.cqe())?;
    let qp = |qp_type, send: u32, recv: u32| QpInitAttr {
        qp_type,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap {
            max_send_wr: send,
            max_recv_wr: recv,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        sq_sig_all: false,
    };
    let rc = node.create_qp(qp(QpType::Rc, d.rc_send, d.rc_recv))?;
    let ud = node.create_qp(qp(QpType::Ud, d.ud_send, d.ud_recv))?;
    let mut a = QpAttr {
        qp_state: QpState::Init,
        qkey: UD_QKEY,
        port_num: 1,
        ..QpAttr::default()
    };
    node.modify_qp(ud, &a, M::STATE | M::PKEY_INDEX | M::PORT | M::QKEY)?;
    a.qp_state = QpState::Rtr;
    node.modify_qp(ud, &a, M::STATE)?;
    a.qp_state = QpState::Rts;
    a.sq_psn = random_psn(gid);
    node.modify_qp(ud, &a, M::STATE | M::SQ_PSN)?;
    let buf = node.alloc_buf(len.max(1))?;
    let key = node.reg_mr(pd, buf, len.max(1), FULL_ACCESS)?;
    Ok(Res {
        pd,
        cq,
        rc,
        ud,
        psn: random_psn(gid),
        gid,
        buf,
        key,
    })
}

/// The RC QP to RTS against the peer's, at `mtu`.
pub fn connect_rc<V: Endpoint>(
    node: &mut V,
    r: &Res,
    peer: PeerInfo,
    mtu: Mtu,
    timeout: u8,
) -> Result<(), OpcodesError> {
    let path = RcPath {
        mtu,
        timeout,
        hop_limit: HOP_LIMIT,
        dest_rd_atomic: RD_ATOMIC,
        rd_atomic: RD_ATOMIC,
    };
    Ok(rc_connect_qp(node, r.rc, r.psn, peer, path)?)
}

/// An address handle for datagrams to `gid`.
pub fn ah_to<V: Endpoint>(node: &mut V, r: &Res, gid: Gid) -> Result<AhHandle, OpcodesError> {
    Ok(node.create_ah(
        r.pd,
        AhAttr {
            dgid: gid,
            hop_limit: HOP_LIMIT,
            ..AhAttr::default()
        },
    )?)
}

/// Posts a receive of `len` bytes at `addr` on `qpn`.
pub fn post_recv<V: Endpoint>(
    node: &mut V,
    r: &Res,
    qpn: Qpn,
    wr: Wr,
    addr: u64,
    len: u64,
) -> Result<(), OpcodesError> {
    node.post_recv(
        qpn,
        RecvWr {
            wr_id: wr.encode(),
            sgl: vec![Sge {
                addr,
                len: len as u32,
                lkey: r.key,
            }],
        },
    )?;
    Ok(())
}

/// What a work request was: its ID says so, so that a completion is matched without a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wr {
    /// A client's RC request.
    Rc { iter: u64, op: Op },
    /// A UD datagram: the client's for an iteration, the server's from a reply buffer.
    UdSend(u64),
    /// A receive into RC receive buffer n (server).
    RcRecv(u64),
    /// A receive into UD receive buffer n.
    UdRecv(u64),
}

const KIND_SHIFT: u32 = 56;
const VALUE_MASK: u64 = (1 << KIND_SHIFT) - 1;

impl Wr {
    pub fn encode(self) -> u64 {
        let (kind, v) = match self {
            Wr::Rc { iter, op } => (1, iter << 4 | op.tag()),
            Wr::UdSend(n) => (2, n),
            Wr::RcRecv(n) => (3, n),
            Wr::UdRecv(n) => (4, n),
        };
        (kind << KIND_SHIFT) | (v & VALUE_MASK)
    }

    pub fn decode(id: u64) -> Option<Wr> {
        let v = id & VALUE_MASK;
        Some(match id >> KIND_SHIFT {
            1 => Wr::Rc {
                iter: v >> 4,
                op: Op::from_tag(v & 0xf)?,
            },
            2 => Wr::UdSend(v),
            3 => Wr::RcRecv(v),
            4 => Wr::UdRecv(v),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_request_ids_round_trip() {
        for w in [
            Wr::Rc {
                iter: (1 << 40) + 5,
                op: Op::FetchAdd,
            },
            Wr::UdSend(7),
            Wr::RcRecv(0),
            Wr::UdRecv(33),
        ] {
            assert_eq!(Wr::decode(w.encode()), Some(w));
        }
        assert_eq!(Wr::decode(0), None);
        assert_eq!(Wr::decode(1 << KIND_SHIFT | 0xf), None);
    }

    #[test]
    fn layouts_do_not_overlap() {
        let s = ServerLayout::new(4096, 4, 1024);
        let areas = [
            s.rc_recv,
            s.write,
            s.write_imm,
            s.read,
            s.atomic,
            s.ud_recv,
            s.ud_send,
        ];
        for w in areas.windows(2) {
            assert!(w[0].off + w[0].stride * w[0].count <= w[1].off);
        }
        assert!(s.len >= s.ud_send.off + s.ud_send.stride * s.ud_send.count);
        assert_eq!(s.atomic.off % 8, 0);
        let c = ClientLayout::new(1, 1, 16);
        assert!(c.len > 0 && c.atomic.off % 8 == 0);
        assert!(mem_bytes(1 << 20, 8) > 60 << 20);
    }
}
