//! Test support for the port's modules: two ports over heap memory and the in-process switch,
//! driven by hand the way the backend drives them: commands, WQEs written into rings,
//! doorbells, pump, drain.

use super::VfPort;
use crate::fabric::{Fabric, SwitchFabric};
use crate::protocol::command::{body, Command, Status};
use crate::protocol::ring::{decode_cqe, Ring};
use vhca_device::{
    AhAttr, AhHandle, MemKey, Nanos, Pf, Psn, QpAttr, QpAttrMask, QpCap, QpState, Qpn, SendOp,
    SendWr, Sge, SharedMemory, UdDest, VecMemory, WorkCompletion,
};

pub(super) const MEM: usize = 4 << 20;

pub(super) struct Side {
    pub(super) port: VfPort,
    pub(super) next: u64,
}

impl Side {
    pub(super) fn new(i: u16) -> Side {
        let pf = Pf::new(0, 2);
        Side {
            port: VfPort::new(pf.default_identity(i), VecMemory::shared(MEM)),
            next: 0x10000,
        }
    }
    pub(super) fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next;
        self.next += len.div_ceil(4096) * 4096;
        a
    }
    pub(super) fn ok(&mut self, c: Command) -> Vec<u8> {
        let r = self.port.execute(&c.encode());
        assert_eq!(r.status, Status::Ok, "{c:?}");
        r.body
    }
    pub(super) fn u32(&mut self, c: Command) -> u32 {
        body::read_u32(&self.ok(c)).unwrap()
    }
    pub(super) fn mem(&self) -> SharedMemory {
        self.port.vf.memory().clone()
    }
    /// A registered buffer of `len` bytes (one page list entry per 4 KiB page).
    pub(super) fn mr(&mut self, pd: u32, len: u64) -> (u64, u32) {
        let buf = self.alloc(len);
        let n = len.div_ceil(4096);
        let list = self.alloc(n * 8);
        for i in 0..n {
            self.mem()
                .write(list + 8 * i, &(buf + 4096 * i).to_le_bytes())
                .unwrap();
        }
        let key = self.u32(Command::RegMr {
            pd,
            access: 7,
            iova: buf,
            length: len,
            page_shift: 12,
            npages: n as u32,
            page_list_gpa: list,
        });
        (buf, key)
    }
    pub(super) fn cq(&mut self, depth: u32) -> (u32, u64) {
        let gpa = self.alloc(depth as u64 * 64);
        (
            self.u32(Command::CreateCq {
                depth,
                ring_gpa: gpa,
            }),
            gpa,
        )
    }
    pub(super) fn qp(&mut self, ty: u8, pd: u32, cq: u32) -> (u32, Ring, Ring) {
        let cap = QpCap {
            max_send_wr: 8,
            max_recv_wr: 8,
            max_send_sge: 2,
            max_recv_sge: 2,
            max_inline_data: 64,
        };
        let (sq, rq) = (self.alloc(8 * 256), self.alloc(8 * 64));
        let b = self.ok(Command::CreateQp {
            qp_type: ty,
            sq_sig_all: false,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: 0,
            cap,
            sq_ring_gpa: sq,
            rq_ring_gpa: rq,
        });
        let (qpn, s, r) = body::read_create_qp(&b).unwrap();
        (
            qpn,
            Ring::new(sq, s.depth, s.stride).unwrap(),
            Ring::new(rq, r.depth, r.stride).unwrap(),
        )
    }
    pub(super) fn modify(&mut self, qpn: u32, attr: QpAttr, mask: QpAttrMask) {
        self.ok(Command::ModifyQp {
            qpn,
            mask: mask.bits(),
            attr,
        });
    }
    pub(super) fn cqes(&self, ring: u64, depth: u32, from: u32) -> Vec<WorkCompletion> {
        let mut out = Vec::new();
        let mut i = from;
        loop {
            let mut b = [0u8; 64];
            self.mem()
                .read(ring + 64 * (i % depth) as u64, &mut b)
                .unwrap();
            match decode_cqe(&b, i, depth).unwrap() {
                Some(w) => out.push(w),
                None => return out,
            }
            i += 1;
        }
    }
}

pub(super) fn pump(a: &mut Side, b: &mut Side, fabric: &mut SwitchFabric) {
    let now = Nanos(1);
    for _ in 0..100 {
        let mut moved = false;
        for (i, s) in [&mut *a, &mut *b].into_iter().enumerate() {
            while let Some(p) = s.port.vf.poll_transmit(now) {
                let _ = i;
                fabric.send(now, p);
                moved = true;
            }
        }
        while let Some((port, pkt)) = fabric.poll_deliver(now) {
            let s = if port == 0 { &mut *a } else { &mut *b };
            s.port.vf.handle_packet(now, &pkt);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    a.port.drain_completions();
    b.port.drain_completions();
}

pub(super) fn fabric(a: &Side, b: &Side) -> SwitchFabric {
    let mut f = SwitchFabric::ideal();
    f.attach(a.port.identity().gid, 0);
    f.attach(b.port.identity().gid, 1);
    f
}

pub(super) fn ud_qp(s: &mut Side, qkey: u32) -> (u32, u32, u32, u64, Ring, Ring) {
    ud_qp_cq(s, qkey, 16)
}

pub(super) fn ud_qp_cq(s: &mut Side, qkey: u32, cq_depth: u32) -> (u32, u32, u32, u64, Ring, Ring) {
    let pd = s.u32(Command::CreatePd);
    let (cq, cq_ring) = s.cq(cq_depth);
    let (qpn, sq, rq) = s.qp(4, pd, cq);
    let mut a = QpAttr {
        qp_state: QpState::Init,
        qkey,
        port_num: 1,
        ..QpAttr::default()
    };
    s.modify(
        qpn,
        a,
        QpAttrMask::STATE | QpAttrMask::PKEY_INDEX | QpAttrMask::PORT | QpAttrMask::QKEY,
    );
    a.qp_state = QpState::Rtr;
    s.modify(qpn, a, QpAttrMask::STATE);
    a.qp_state = QpState::Rts;
    a.sq_psn = Psn(5);
    s.modify(qpn, a, QpAttrMask::STATE | QpAttrMask::SQ_PSN);
    (pd, cq, qpn, cq_ring, sq, rq)
}

/// A UD send from `a` to `b`'s QP `qb` through `a`'s AH `ah`.
pub(super) fn ud_send(wr_id: u64, ah: u32, qb: u32, buf: u64, key: u32) -> SendWr {
    SendWr::new(wr_id, SendOp::Send)
        .sge(Sge {
            addr: buf,
            len: 8,
            lkey: MemKey(key),
        })
        .ud(UdDest {
            ah: AhHandle(ah),
            remote_qpn: Qpn(qb),
            remote_qkey: 7,
        })
}

pub(super) fn ah_to(a: &mut Side, pd: u32, b: &Side) -> u32 {
    a.u32(Command::CreateAh {
        pd,
        attr: AhAttr {
            dgid: b.port.identity().gid,
            hop_limit: 64,
            ..Default::default()
        },
    })
}
