//! The controlq's commands: [`VfPort::execute`] decodes one, runs it on the VF and keeps the
//! port's ring tables (QPs, SRQs, CQs and their guest rings) in step.

use super::completions::write_cqe;
use super::{CqRing, QpRings, SrqRing, VfPort, MAX_MR_PAGES};
use crate::protocol::command::{body, Command, Response, RingInfo, Status};
use crate::protocol::config::RdmaConfig;
use crate::protocol::ring::{self, Ring};
use std::collections::VecDeque;
use vhca_device::mr::{MrMap, MR_PAGE_SHIFTS};
use vhca_device::{
    Access, AhHandle, CqHandle, MemKey, PdHandle, QpAttrMask, QpCap, QpInitAttr, QpState, QpType,
    Qpn, SrqHandle,
};

fn st(e: vhca_device::VerbsError) -> Status {
    Status::from_error(e)
}

impl VfPort {
    /// Executes one control command (the readable part of a controlq chain).
    pub fn execute(&mut self, request: &[u8]) -> Response {
        self.counters.commands += 1;
        let r = match Command::decode(request) {
            Ok(cmd) => self.run(cmd),
            Err(s) => Err(s),
        };
        match r {
            Ok(body) => Response::ok(body),
            Err(s) => {
                self.counters.command_errors += 1;
                tracing::debug!(status = ?s, "command failed");
                Response::err(s)
            }
        }
    }

    fn run(&mut self, cmd: Command) -> Result<Vec<u8>, Status> {
        let vf = &mut self.vf;
        Ok(match cmd {
            Command::QueryDevice => RdmaConfig::from_identity(vf.identity()).encode(),
            Command::QueryPort => {
                let mtu = vf.identity().port_mtu as u8;
                body::port(4, mtu, mtu)
            }
            Command::QueryGid { index } => {
                if index != 0 {
                    return Err(Status::Invalid);
                }
                vf.gid().0.to_vec()
            }
            Command::QueryPkey { index } => {
                if index != 0 {
                    return Err(Status::Invalid);
                }
                0xffffu16.to_le_bytes().to_vec()
            }
            Command::CreatePd => body::u32v(vf.alloc_pd().map_err(st)?.0),
            Command::DestroyPd { pd } => {
                vf.dealloc_pd(PdHandle(pd)).map_err(st)?;
                Vec::new()
            }
            Command::RegMr {
                pd,
                access,
                iova,
                length,
                page_shift,
                npages,
                page_list_gpa,
            } => body::key(self.reg_mr(
                pd,
                access,
                iova,
                length,
                page_shift,
                npages,
                page_list_gpa,
            )?),
            Command::DeregMr { key } => {
                vf.dereg_mr(MemKey(key)).map_err(st)?;
                Vec::new()
            }
            Command::AllocMw { pd, mw_type } => {
                let kind = match mw_type {
                    1 => vhca_device::MwType::Type1,
                    2 => vhca_device::MwType::Type2,
                    _ => return Err(Status::Invalid),
                };
                body::key(vf.alloc_mw(PdHandle(pd), kind).map_err(st)?)
            }
            Command::DeallocMw { key } => {
                vf.dealloc_mw(MemKey(key)).map_err(st)?;
                Vec::new()
            }
            Command::AllocMr { pd, max_num_sg } => {
                body::key(vf.alloc_mr(PdHandle(pd), max_num_sg).map_err(st)?)
            }
            Command::CreateCq { depth, ring_gpa } => body::u32v(self.create_cq(depth, ring_gpa)?),
            Command::DestroyCq { cqn } => {
                vf.destroy_cq(CqHandle(cqn)).map_err(st)?;
                self.cqs.remove(&cqn);
                Vec::new()
            }
            Command::ResizeCq {
                cqn,
                depth,
                ring_gpa,
            } => {
                self.resize_cq(cqn, depth, ring_gpa)?;
                Vec::new()
            }
            Command::ReqNotifyCq { cqn, solicited } => {
                vf.req_notify_cq(CqHandle(cqn), solicited).map_err(st)?;
                Vec::new()
            }
            Command::CreateQp {
                qp_type,
                sq_sig_all,
                pd,
                send_cq,
                recv_cq,
                srq,
                cap,
                sq_ring_gpa,
                rq_ring_gpa,
            } => {
                let (qpn, sq, rq) = self.create_qp(
                    qp_type,
                    sq_sig_all,
                    pd,
                    send_cq,
                    recv_cq,
                    srq,
                    cap,
                    sq_ring_gpa,
                    rq_ring_gpa,
                )?;
                body::create_qp(qpn, sq, rq)
            }
            Command::ModifyQp { qpn, mask, attr } => {
                let mask = QpAttrMask::from_bits(mask).ok_or(Status::Invalid)?;
                vf.modify_qp(Qpn(qpn), &attr, mask).map_err(st)?;
                if mask.contains(QpAttrMask::STATE) && attr.qp_state == QpState::Reset {
                    // RESET empties the work queues: the driver starts its rings over at 0.
                    if let Some(r) = self.qps.get_mut(&qpn) {
                        r.sq_pi = 0;
                        r.rq_pi = 0;
                    }
                }
                Vec::new()
            }
            Command::QueryQp { qpn } => {
                let (attr, _) = vf.query_qp(Qpn(qpn)).map_err(st)?;
                body::qp_attr(&attr)
            }
            Command::DestroyQp { qpn } => {
                vf.destroy_qp(Qpn(qpn)).map_err(st)?;
                self.qps.remove(&qpn);
                Vec::new()
            }
            Command::CreateSrq {
                pd,
                max_wr,
                max_sge,
                ring_gpa,
            } => {
                let (srqn, info) = self.create_srq(pd, max_wr, max_sge, ring_gpa)?;
                body::create_srq(srqn, info)
            }
            Command::ModifySrq { srqn, limit } => {
                vf.modify_srq(SrqHandle(srqn), limit).map_err(st)?;
                Vec::new()
            }
            Command::DestroySrq { srqn } => {
                vf.destroy_srq(SrqHandle(srqn)).map_err(st)?;
                self.srqs.remove(&srqn);
                Vec::new()
            }
            Command::CreateAh { pd, attr } => {
                body::u32v(vf.create_ah(PdHandle(pd), attr).map_err(st)?.0)
            }
            Command::DestroyAh { ah } => {
                vf.destroy_ah(AhHandle(ah)).map_err(st)?;
                Vec::new()
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn reg_mr(
        &mut self,
        pd: u32,
        access: u32,
        iova: u64,
        length: u64,
        page_shift: u8,
        npages: u32,
        page_list_gpa: u64,
    ) -> Result<MemKey, Status> {
        let access = Access::from_bits(access).ok_or(Status::Invalid)?;
        if !MR_PAGE_SHIFTS.contains(&page_shift) || length == 0 {
            return Err(Status::Invalid);
        }
        let end = iova.checked_add(length).ok_or(Status::Invalid)?;
        let psize = 1u64 << page_shift;
        let first = iova >> page_shift;
        let last = (end - 1) >> page_shift;
        let needed = last - first + 1;
        if u64::from(npages) < needed {
            return Err(Status::Invalid);
        }
        // The whole page list must be guest memory (FAULT) before its size is judged.
        let list_end = (u64::from(npages) * 8)
            .checked_add(page_list_gpa)
            .ok_or(Status::Fault)?;
        let mut probe = [0u8; 1];
        if self.mem().read(page_list_gpa, &mut probe).is_err()
            || self.mem().read(list_end - 1, &mut probe).is_err()
        {
            return Err(Status::Fault);
        }
        if npages > MAX_MR_PAGES {
            return Err(Status::Invalid);
        }
        let mut raw = vec![0u8; npages as usize * 8];
        self.mem()
            .read(page_list_gpa, &mut raw)
            .map_err(|_| Status::Fault)?;
        let pages: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if pages.iter().any(|p| p & (psize - 1) != 0) {
            return Err(Status::Invalid);
        }
        self.vf
            .reg_mr_mapped(
                PdHandle(pd),
                iova,
                length,
                access,
                MrMap::Pages { page_shift, pages },
            )
            .map_err(st)
    }

    fn cq_ring(&self, depth: u32, ring_gpa: u64) -> Result<Ring, Status> {
        if depth == 0 || depth > self.vf.identity().limits.max_cqe {
            return Err(Status::Invalid);
        }
        let ring =
            Ring::new(ring_gpa, depth, ring::CQE_SIZE as u32).map_err(|_| Status::Invalid)?;
        if !self.ring_in_memory(&ring) {
            return Err(Status::Fault);
        }
        Ok(ring)
    }

    fn create_cq(&mut self, depth: u32, ring_gpa: u64) -> Result<u32, Status> {
        let ring = self.cq_ring(depth, ring_gpa)?;
        // The VF's own CQ is only a staging buffer, emptied into the ring after every batch;
        // the ring's depth is what overruns.
        let max = self.vf.identity().limits.max_cqe;
        let cq = self.vf.create_cq(max).map_err(st)?;
        self.cqs.insert(
            cq.0,
            CqRing {
                ring,
                pi: 0,
                ci: 0,
                failed: false,
                injected: VecDeque::new(),
            },
        );
        Ok(cq.0)
    }

    /// RESIZE_CQ: the CQEs the driver has not consumed yet (between the last CQ_CONSUMED index
    /// and the device's producer index) are copied to the start of the new ring; indices
    /// restart at 0.
    fn resize_cq(&mut self, cqn: u32, depth: u32, ring_gpa: u64) -> Result<(), Status> {
        let new = self.cq_ring(depth, ring_gpa)?;
        // Whatever the VF holds goes into the old ring first, so nothing is reordered.
        self.drain_cq(cqn);
        let mem = self.vf.memory().clone();
        let cq = self.cqs.get_mut(&cqn).ok_or(Status::NotFound)?;
        let pending = cq.pi.wrapping_sub(cq.ci);
        if pending > depth {
            return Err(Status::Invalid);
        }
        let mut slot = [0u8; ring::CQE_SIZE];
        for k in 0..pending {
            let i = cq.ci.wrapping_add(k);
            mem.read(cq.ring.slot(i), &mut slot)
                .map_err(|_| Status::Fault)?;
            let Ok(Some(wc)) = ring::decode_cqe(&slot, i, cq.ring.depth) else {
                return Err(Status::Invalid);
            };
            write_cqe(&mem, &new, k, &wc).map_err(|_| Status::Fault)?;
        }
        cq.ring = new;
        cq.pi = pending;
        cq.ci = 0;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_qp(
        &mut self,
        qp_type: u8,
        sq_sig_all: bool,
        pd: u32,
        send_cq: u32,
        recv_cq: u32,
        srq: u32,
        cap: QpCap,
        sq_gpa: u64,
        rq_gpa: u64,
    ) -> Result<(u32, RingInfo, RingInfo), Status> {
        let qp_type = match qp_type {
            1 => QpType::Gsi,
            2 => QpType::Rc,
            3 => QpType::Uc,
            4 => QpType::Ud,
            _ => return Err(Status::Invalid),
        };
        let l = self.vf.identity().limits;
        if cap.max_send_wr == 0
            || cap.max_send_wr > l.max_qp_wr
            || cap.max_recv_wr > l.max_qp_wr
            || cap.max_send_sge > l.max_sge
            || cap.max_recv_sge > l.max_sge
            || cap.max_inline_data > l.max_inline_data
        {
            return Err(Status::Invalid);
        }
        let sq_depth = cap.max_send_wr.next_power_of_two();
        let sq_stride = ring::send_stride(cap.max_send_sge, cap.max_inline_data);
        let sq = Ring::new(sq_gpa, sq_depth, sq_stride).map_err(|_| Status::Invalid)?;
        let srq = (srq != 0).then_some(SrqHandle(srq));
        let (rq, rq_info) = if srq.is_some() || cap.max_recv_wr == 0 {
            (None, RingInfo::default())
        } else {
            let depth = cap.max_recv_wr.next_power_of_two();
            let stride = ring::recv_stride(cap.max_recv_sge);
            let r = Ring::new(rq_gpa, depth, stride).map_err(|_| Status::Invalid)?;
            (Some(r), RingInfo { depth, stride })
        };
        if sq_depth > l.max_qp_wr || rq_info.depth > l.max_qp_wr {
            return Err(Status::Invalid);
        }
        if !self.ring_in_memory(&sq) || rq.as_ref().is_some_and(|r| !self.ring_in_memory(r)) {
            return Err(Status::Fault);
        }
        // The VF's queues are as deep as the rings, so a driver may fill its ring.
        let vcap = QpCap {
            max_send_wr: sq_depth,
            max_recv_wr: rq_info.depth,
            ..cap
        };
        let qpn = self
            .vf
            .create_qp(QpInitAttr {
                qp_type,
                pd: PdHandle(pd),
                send_cq: CqHandle(send_cq),
                recv_cq: CqHandle(recv_cq),
                srq,
                cap: vcap,
                sq_sig_all,
            })
            .map_err(st)?;
        // A CQ created through the VF is always a ring CQ here; a missing ring cannot happen
        // but costs nothing to refuse.
        if !self.cqs.contains_key(&send_cq) || !self.cqs.contains_key(&recv_cq) {
            let _ = self.vf.destroy_qp(qpn);
            return Err(Status::NotFound);
        }
        self.qps.insert(
            qpn.0,
            QpRings {
                qp_type,
                cap,
                sq,
                sq_pi: 0,
                rq,
                rq_pi: 0,
                send_cq,
                recv_cq,
            },
        );
        Ok((
            qpn.0,
            RingInfo {
                depth: sq_depth,
                stride: sq_stride,
            },
            rq_info,
        ))
    }

    fn create_srq(
        &mut self,
        pd: u32,
        max_wr: u32,
        max_sge: u32,
        ring_gpa: u64,
    ) -> Result<(u32, RingInfo), Status> {
        let l = self.vf.identity().limits;
        if max_wr == 0 || max_wr > l.max_srq_wr || max_sge > l.max_sge {
            return Err(Status::Invalid);
        }
        let depth = max_wr.next_power_of_two();
        if depth > l.max_srq_wr {
            return Err(Status::Invalid);
        }
        let stride = ring::recv_stride(max_sge);
        let r = Ring::new(ring_gpa, depth, stride).map_err(|_| Status::Invalid)?;
        if !self.ring_in_memory(&r) {
            return Err(Status::Fault);
        }
        let srqn = self
            .vf
            .create_srq(PdHandle(pd), depth, max_sge)
            .map_err(st)?;
        self.srqs.insert(
            srqn.0,
            SrqRing {
                ring: r,
                pi: 0,
                max_sge,
            },
        );
        Ok((srqn.0, RingInfo { depth, stride }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::protocol::command::{Command, Status};
    use crate::protocol::config::RdmaConfig;
    use crate::protocol::doorbell::Doorbell;
    use crate::protocol::ring::encode_send;
    use vhca_device::QpCap;

    #[test]
    fn hostile_commands_get_statuses_not_panics() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        assert_eq!(a.port.execute(&[]).status, Status::Malformed);
        assert_eq!(
            a.port.execute(&[0xee, 0xee, 0, 0, 0, 0, 0, 0]).status,
            Status::Unsupported
        );
        let cfg = a.ok(Command::QueryDevice);
        assert_eq!(RdmaConfig::decode(&cfg).unwrap().gid, a.port.identity().gid);
        // Handles of another VF are unknown numbers here.
        let pdb = b.u32(Command::CreatePd);
        let _ = b.u32(Command::CreatePd);
        let (cqb, _) = b.cq(4);
        fn st(s: &mut Side, c: Command) -> Status {
            s.port.execute(&c.encode()).status
        }
        assert_eq!(
            st(&mut a, Command::DestroyPd { pd: pdb + 1 }),
            Status::NotFound
        );
        assert_eq!(
            st(&mut a, Command::DestroyCq { cqn: cqb }),
            Status::NotFound
        );
        assert_eq!(st(&mut a, Command::QueryQp { qpn: 17 }), Status::NotFound);
        // Rings and page lists outside guest memory.
        let outside = MEM as u64 + 4096;
        assert_eq!(
            st(
                &mut a,
                Command::CreateCq {
                    depth: 4,
                    ring_gpa: outside
                }
            ),
            Status::Fault
        );
        assert_eq!(
            st(
                &mut a,
                Command::CreateCq {
                    depth: 3,
                    ring_gpa: 0
                }
            ),
            Status::Invalid
        );
        let pd = a.u32(Command::CreatePd);
        let reg = |npages: u32, list: u64| Command::RegMr {
            pd,
            access: 1,
            iova: 0x1000,
            length: 4096,
            page_shift: 12,
            npages,
            page_list_gpa: list,
        };
        assert_eq!(st(&mut a, reg(1, outside)), Status::Fault);
        assert_eq!(st(&mut a, reg(u32::MAX, 0x1000)), Status::Fault);
        assert_eq!(st(&mut a, reg(0, 0x1000)), Status::Invalid);
        let list = a.alloc(4096);
        a.mem().write(list, &outside.to_le_bytes()).unwrap();
        assert_eq!(
            st(&mut a, reg(1, list)),
            Status::Fault,
            "a page outside guest memory"
        );
        let qp = |sq: u64| Command::CreateQp {
            qp_type: 2,
            sq_sig_all: false,
            pd,
            send_cq: 1,
            recv_cq: 1,
            srq: 0,
            cap: QpCap {
                max_send_wr: 4,
                max_recv_wr: 4,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_ring_gpa: sq,
            rq_ring_gpa: 0x2000,
        };
        let _ = a.cq(4);
        assert_eq!(st(&mut a, qp(outside)), Status::Fault);
        assert_eq!(st(&mut a, qp(u64::MAX - 64)), Status::Invalid);
        assert_eq!(a.port.vf.qps().count(), 0);
    }

    #[test]
    fn resize_cq_moves_unconsumed_cqes_to_the_new_ring() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, cqa, qa, cq_ring, sq, _) = ud_qp_cq(&mut a, 7, 4);
        let (_, _, qb, _, _, _) = ud_qp(&mut b, 7);
        let (buf, key) = a.mr(pda, 4096);
        let ah = ah_to(&mut a, pda, &b);
        for i in 0..3u32 {
            let w = encode_send(&ud_send(10 + i as u64, ah, qb, buf, key), sq.stride);
            a.mem().write(sq.slot(i), &w).unwrap();
        }
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 3 });
        pump(&mut a, &mut b, &mut f);
        assert_eq!(a.cqes(cq_ring, 4, 0).len(), 3);
        a.port.doorbell(Doorbell::CqConsumed { cqn: cqa, ci: 1 });
        let new = a.alloc(8 * 64);
        a.ok(Command::ResizeCq {
            cqn: cqa,
            depth: 8,
            ring_gpa: new,
        });
        let moved: Vec<u64> = a.cqes(new, 8, 0).iter().map(|w| w.wr_id).collect();
        assert_eq!(moved, vec![11, 12]);
    }
}
