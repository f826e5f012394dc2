//! Doorbell records: a producer index moves the WQEs it announces from the guest ring to the
//! VF (a malformed one completes with an error and flushes the rest), a CQ doorbell moves the
//! consumer index or arms the CQ.

use super::VfPort;
use crate::protocol::doorbell::{async_code, Doorbell, Event};
use crate::protocol::ring::{self, Ring};
use vhca_device::{
    CqHandle, QpAttrMask, QpState, Qpn, SrqHandle, WcOpcode, WcStatus, WorkCompletion,
};

fn error_wc(wr_id: u64, status: WcStatus, opcode: WcOpcode, qpn: u32) -> WorkCompletion {
    WorkCompletion {
        wr_id,
        status,
        opcode,
        qpn: Qpn(qpn),
        byte_len: 0,
        imm: None,
        invalidated_rkey: None,
        src_qp: Qpn(0),
        src_gid: Default::default(),
        grh: false,
        solicited: false,
    }
}

impl VfPort {
    /// Handles one doorbell record.
    pub fn doorbell(&mut self, db: Doorbell) {
        self.counters.doorbells += 1;
        match db {
            Doorbell::Sq { qpn, pi } => self.sq_doorbell(qpn, pi),
            Doorbell::Rq { qpn, pi } => self.rq_doorbell(qpn, pi),
            Doorbell::Srq { srqn, pi } => self.srq_doorbell(srqn, pi),
            Doorbell::CqConsumed { cqn, ci } => {
                let Some(cq) = self.cqs.get_mut(&cqn) else {
                    self.counters.bad_doorbells += 1;
                    return;
                };
                // The consumer index may only move forward, and not past what was produced.
                if ci.wrapping_sub(cq.ci) <= cq.pi.wrapping_sub(cq.ci) {
                    cq.ci = ci;
                } else {
                    self.counters.bad_doorbells += 1;
                }
            }
            Doorbell::CqArm { cqn, solicited } => {
                if self.vf.req_notify_cq(CqHandle(cqn), solicited).is_err() {
                    self.counters.bad_doorbells += 1;
                }
            }
        }
    }

    /// A driver error on a QP's ring: the QP goes to ERR and the driver hears of it.
    fn fail_qp(&mut self, qpn: u32) {
        let attr = vhca_device::QpAttr {
            qp_state: QpState::Err,
            ..Default::default()
        };
        if self
            .vf
            .modify_qp(Qpn(qpn), &attr, QpAttrMask::STATE)
            .is_ok()
        {
            self.push_event(Event::Async {
                code: async_code::QP_FATAL,
                handle: qpn,
            });
        }
    }

    /// How many WQEs a producer index announces, or `None` when it is a driver error.
    fn advance(last: u32, pi: u32, depth: u32) -> Option<u32> {
        let n = pi.wrapping_sub(last);
        (n <= depth).then_some(n)
    }

    fn read_slot(&self, ring: &Ring, i: u32) -> Option<Vec<u8>> {
        let mut b = vec![0u8; ring.stride as usize];
        self.mem().read(ring.slot(i), &mut b).ok().map(|_| b)
    }

    fn sq_doorbell(&mut self, qpn: u32, pi: u32) {
        let Some(r) = self.qps.get(&qpn).cloned() else {
            self.counters.bad_doorbells += 1;
            return;
        };
        let Some(n) = Self::advance(r.sq_pi, pi, r.sq.depth) else {
            self.counters.bad_doorbells += 1;
            self.fail_qp(qpn);
            return;
        };
        let is_ud = r.qp_type.is_datagram();
        let mut failed = false;
        for k in 0..n {
            let i = r.sq_pi.wrapping_add(k);
            let slot = self.read_slot(&r.sq, i);
            let wr_id = slot
                .as_ref()
                .and_then(|b| b.get(..8))
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            let opcode = slot
                .as_ref()
                .and_then(|b| b.get(8))
                .map(|&o| send_wc_opcode(o))
                .unwrap_or(WcOpcode::Send);
            let status = if failed {
                // After a bad WQE the QP is in ERR: what follows is flushed, in order.
                Some(WcStatus::WrFlushErr)
            } else {
                match slot {
                    None => Some(WcStatus::LocProtErr),
                    Some(b) => match ring::decode_send(
                        &b,
                        r.cap.max_send_sge,
                        r.cap.max_inline_data,
                        is_ud,
                    ) {
                        Err(_) => Some(WcStatus::LocQpOpErr),
                        Ok(wr) => match self.vf.post_send(Qpn(qpn), &wr) {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::debug!(qpn, error = %e, "send WQE refused");
                                Some(WcStatus::LocQpOpErr)
                            }
                        },
                    },
                }
            };
            if let Some(s) = status {
                if !failed {
                    self.counters.bad_wqes += 1;
                    // Flush what the VF holds before this WQE's error completion.
                    self.fail_qp_quietly(qpn);
                    self.drain_cq(r.send_cq);
                    failed = true;
                }
                self.inject(r.send_cq, error_wc(wr_id, s, opcode, qpn));
            }
        }
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.sq_pi = pi;
        }
    }

    fn rq_doorbell(&mut self, qpn: u32, pi: u32) {
        let Some(r) = self.qps.get(&qpn).cloned() else {
            self.counters.bad_doorbells += 1;
            return;
        };
        let Some(rq) = r.rq else {
            self.counters.bad_doorbells += 1;
            self.fail_qp(qpn);
            return;
        };
        let Some(n) = Self::advance(r.rq_pi, pi, rq.depth) else {
            self.counters.bad_doorbells += 1;
            self.fail_qp(qpn);
            return;
        };
        let mut failed = false;
        for k in 0..n {
            let i = r.rq_pi.wrapping_add(k);
            let slot = self.read_slot(&rq, i);
            let wr_id = slot
                .as_ref()
                .and_then(|b| b.get(..8))
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            let status = if failed {
                Some(WcStatus::WrFlushErr)
            } else {
                match slot {
                    None => Some(WcStatus::LocProtErr),
                    Some(b) => match ring::decode_recv(&b, r.cap.max_recv_sge) {
                        Err(_) => Some(WcStatus::LocQpOpErr),
                        Ok(wr) => match self.vf.post_recv(Qpn(qpn), wr) {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::debug!(qpn, error = %e, "receive WQE refused");
                                Some(WcStatus::LocQpOpErr)
                            }
                        },
                    },
                }
            };
            if let Some(s) = status {
                if !failed {
                    self.counters.bad_wqes += 1;
                    self.fail_qp_quietly(qpn);
                    self.drain_cq(r.recv_cq);
                    failed = true;
                }
                self.inject(r.recv_cq, error_wc(wr_id, s, WcOpcode::Recv, qpn));
            }
        }
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.rq_pi = pi;
        }
    }

    fn srq_doorbell(&mut self, srqn: u32, pi: u32) {
        let Some(s) = self.srqs.get(&srqn).cloned() else {
            self.counters.bad_doorbells += 1;
            return;
        };
        let fail_srq_qps = |p: &mut VfPort| {
            let qpns: Vec<u32> =
                p.vf.qps()
                    .filter(|q| q.srq() == Some(SrqHandle(srqn)))
                    .map(|q| q.qpn.0)
                    .collect();
            for q in qpns {
                p.fail_qp(q);
            }
        };
        let Some(n) = Self::advance(s.pi, pi, s.ring.depth) else {
            self.counters.bad_doorbells += 1;
            fail_srq_qps(self);
            return;
        };
        for k in 0..n {
            let i = s.pi.wrapping_add(k);
            let ok = self
                .read_slot(&s.ring, i)
                .and_then(|b| ring::decode_recv(&b, s.max_sge).ok())
                .is_some_and(|wr| self.vf.post_srq_recv(SrqHandle(srqn), wr).is_ok());
            if !ok {
                // No QP owns an SRQ WQE yet: every QP on the SRQ hears of it.
                self.counters.bad_wqes += 1;
                fail_srq_qps(self);
                break;
            }
        }
        if let Some(x) = self.srqs.get_mut(&srqn) {
            x.pi = pi;
        }
    }

    /// Moves a QP to ERR without an async event (its error completion tells the driver).
    fn fail_qp_quietly(&mut self, qpn: u32) {
        let attr = vhca_device::QpAttr {
            qp_state: QpState::Err,
            ..Default::default()
        };
        let _ = self.vf.modify_qp(Qpn(qpn), &attr, QpAttrMask::STATE);
    }

    fn inject(&mut self, cqn: u32, wc: WorkCompletion) {
        if let Some(cq) = self.cqs.get_mut(&cqn) {
            cq.injected.push_back(wc);
        }
    }
}

fn send_wc_opcode(op: u8) -> WcOpcode {
    use ring::op;
    match op {
        op::RDMA_WRITE | op::RDMA_WRITE_WITH_IMM => WcOpcode::RdmaWrite,
        op::RDMA_READ => WcOpcode::RdmaRead,
        op::ATOMIC_CMP_AND_SWP => WcOpcode::CmpSwap,
        op::ATOMIC_FETCH_AND_ADD => WcOpcode::FetchAdd,
        op::LOCAL_INV => WcOpcode::LocalInv,
        op::ATOMIC_WRITE => WcOpcode::AtomicWrite,
        op::FLUSH => WcOpcode::Flush,
        op::BIND_MW => WcOpcode::BindMw,
        op::REG_MR => WcOpcode::RegMr,
        _ => WcOpcode::Send,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::protocol::doorbell::{async_code, Doorbell, Event};
    use crate::protocol::ring::encode_send;
    use vhca_device::{QpState, Qpn, WcStatus};

    #[test]
    fn a_malformed_wqe_completes_with_loc_qp_op_err_and_flushes_the_rest() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, _, qa, cq_ring, sq, _) = ud_qp(&mut a, 7);
        let (_, _, qb, _, _, _) = ud_qp(&mut b, 7);
        let (buf, key) = a.mr(pda, 4096);
        let ah = ah_to(&mut a, pda, &b);
        let good = encode_send(&ud_send(1, ah, qb, buf, key), sq.stride);
        let mut bad = encode_send(&ud_send(2, ah, qb, buf, key), sq.stride);
        bad[8] = 99; // no such opcode
        let after = encode_send(&ud_send(3, ah, qb, buf, key), sq.stride);
        let also_good = encode_send(&ud_send(4, ah, qb, buf, key), sq.stride);
        for (i, w) in [good, also_good, bad, after].iter().enumerate() {
            a.mem().write(sq.slot(i as u32), w).unwrap();
        }
        // The first WQE goes out alone; the second is still queued when the third (bad) one is
        // read, so it is flushed before the bad one's error, and the fourth after it.
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 1 });
        pump(&mut a, &mut b, &mut f);
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 4 });
        pump(&mut a, &mut b, &mut f);
        let w = a.cqes(cq_ring, 16, 0);
        let got: Vec<_> = w.iter().map(|w| (w.wr_id, w.status)).collect();
        assert_eq!(
            got,
            vec![
                (1, WcStatus::Success),
                (4, WcStatus::WrFlushErr),
                (2, WcStatus::LocQpOpErr),
                (3, WcStatus::WrFlushErr)
            ]
        );
        assert_eq!(a.port.vf.qp(Qpn(qa)).unwrap().state(), QpState::Err);
        assert_eq!(a.port.counters.bad_wqes, 1);
    }

    #[test]
    fn a_producer_index_too_far_ahead_fails_the_qp_with_an_async_event() {
        let mut a = Side::new(0);
        let (_, _, qa, _, sq, _) = ud_qp(&mut a, 7);
        a.port.doorbell(Doorbell::Sq {
            qpn: qa,
            pi: sq.depth + 1,
        });
        assert_eq!(a.port.vf.qp(Qpn(qa)).unwrap().state(), QpState::Err);
        a.port.drain_completions();
        assert_eq!(
            a.port.pop_event(),
            Some(Event::Async {
                code: async_code::QP_FATAL,
                handle: qa
            })
        );
        // Doorbells for objects this VF does not have are counted and ignored.
        a.port.doorbell(Doorbell::Sq { qpn: 999, pi: 1 });
        a.port.doorbell(Doorbell::CqConsumed { cqn: 77, ci: 1 });
        assert_eq!(a.port.counters.bad_doorbells, 3);
    }
}
