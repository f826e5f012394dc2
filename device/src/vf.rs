//! A virtual function: one isolated HCA with its own identity, objects and transport.
//!
//! The sans-I/O surface is four calls (quinn-proto's shape): [`Vf::handle_packet`],
//! [`Vf::poll_transmit`], [`Vf::poll_timeout`] and [`Vf::handle_timeout`]. The verbs surface
//! (PD, MR, CQ, SRQ, AH, QP, post, poll) is a set of commands that either succeed or return a
//! [`VerbsError`]; data-path failures become completions, NAKs or async events.

use crate::cq::{Arm, Cq};
use crate::error::{VerbsError as E, VerbsResult};
use crate::memory::SharedMemory;
use crate::mr::{Mr, MrMap};
use crate::packet::Packet;
use crate::qp::{requester, responder, state, ud, Qp};
use crate::resources::{Ah, Counters, Pd, Resources};
use crate::srq::Srq;
use crate::table::Table;
use crate::types::{AhHandle, CqHandle, Gid, Guid, Mac, MemKey, Nanos, PdHandle, Qpn, SrqHandle};
use crate::verbs::{
    Access, AhAttr, AsyncEvent, Mtu, QpAttr, QpAttrMask as M, QpInitAttr, QpState, QpType, RecvWr,
    SendWr, VfLimits, WorkCompletion,
};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// The first QPN a VF hands out (rxe starts at 17; 0 and 1 are SMI/GSI).
pub const FIRST_QPN: u32 = 17;

/// Who a VF is on the fabric. Survives migration unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfIdentity {
    pub node_guid: Guid,
    pub port_guid: Guid,
    pub gid: Gid,
    pub mac: Mac,
    pub port_mtu: Mtu,
    pub limits: VfLimits,
}

impl VfIdentity {
    /// An identity derived from a MAC and an IPv4 address, the way rxe derives its own.
    pub fn new(mac: Mac, ipv4: [u8; 4]) -> VfIdentity {
        VfIdentity {
            node_guid: mac.to_eui64(),
            port_guid: mac.to_eui64(),
            gid: Gid::from_ipv4(ipv4),
            mac,
            port_mtu: Mtu::Mtu4096,
            limits: VfLimits::default(),
        }
    }
}

/// One virtual HCA.
pub struct Vf {
    pub(crate) identity: VfIdentity,
    pub(crate) res: Resources,
    pub(crate) qps: Table<Qp>,
    ready: VecDeque<u32>,
    timers: BinaryHeap<Reverse<(Nanos, u32)>>,
    pub(crate) key_byte: u8,
}

fn bad_key(_: ()) -> E {
    E::NotFound("memory region")
}

impl Vf {
    pub fn new(identity: VfIdentity, mem: SharedMemory) -> Vf {
        Vf {
            res: Resources {
                mem,
                gid: identity.gid,
                port_mtu: identity.port_mtu,
                limits: identity.limits,
                pds: Table::new(1, identity.limits.max_pd),
                mrs: Table::new(1, identity.limits.max_mr),
                cqs: Table::new(1, identity.limits.max_cq),
                srqs: Table::new(1, identity.limits.max_srq),
                ahs: Table::new(1, identity.limits.max_ah),
                async_events: VecDeque::new(),
                cq_events: VecDeque::new(),
                counters: Counters::default(),
            },
            identity,
            qps: Table::new(FIRST_QPN, identity.limits.max_qp),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            key_byte: 0,
        }
    }

    pub fn identity(&self) -> &VfIdentity {
        &self.identity
    }

    pub fn gid(&self) -> Gid {
        self.identity.gid
    }

    pub fn memory(&self) -> &SharedMemory {
        &self.res.mem
    }

    /// Replaces the VF's guest memory (vhost-user's memory table changed: a frontend connected,
    /// added or removed a region). Objects keep their guest-physical addresses; packets already
    /// built keep the memory they were built with.
    pub fn set_memory(&mut self, mem: SharedMemory) {
        self.res.mem = mem;
    }

    pub fn counters(&self) -> &Counters {
        &self.res.counters
    }

    // ---- protection domains -------------------------------------------------------------

    pub fn alloc_pd(&mut self) -> VerbsResult<PdHandle> {
        self.res
            .pds
            .insert(Pd)
            .map(PdHandle)
            .ok_or(E::Exhausted("PD"))
    }

    pub fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        let used = self.res.mrs.iter().any(|(_, m)| m.pd == pd)
            || self.qps.iter().any(|(_, q)| q.pd() == pd)
            || self.res.srqs.iter().any(|(_, s)| s.pd == pd)
            || self.res.ahs.iter().any(|(_, a)| a.pd == pd);
        if used {
            return Err(E::Busy("PD"));
        }
        self.res.pds.remove(pd.0);
        Ok(())
    }

    // ---- memory regions -----------------------------------------------------------------

    /// Registers `[iova, iova + len)` where virtual equals guest-physical.
    pub fn reg_mr(
        &mut self,
        pd: PdHandle,
        iova: u64,
        len: u64,
        access: Access,
    ) -> VerbsResult<MemKey> {
        self.reg_mr_mapped(pd, iova, len, access, MrMap::Contiguous { gpa: iova })
    }

    /// Registers a region with an explicit mapping (a driver's guest page list).
    pub fn reg_mr_mapped(
        &mut self,
        pd: PdHandle,
        iova: u64,
        len: u64,
        access: Access,
        map: MrMap,
    ) -> VerbsResult<MemKey> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        // A page shift outside 4 KiB..1 GiB from a guest would overflow `1 << page_shift`.
        if let MrMap::Pages { page_shift, .. } = &map {
            if !crate::mr::MR_PAGE_SHIFTS.contains(page_shift) {
                return Err(E::Invalid("MR page size"));
            }
        }
        if len > self.res.limits.max_mr_size || iova.checked_add(len).is_none() {
            return Err(E::Invalid("MR length"));
        }
        // IBTA: remote write or atomic access requires local write.
        if access.intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
            && !access.contains(Access::LOCAL_WRITE)
        {
            return Err(E::Invalid("remote write/atomic access needs local write"));
        }
        let probe = Mr {
            pd,
            iova,
            len,
            access,
            key: MemKey(0),
            map,
            valid: true,
        };
        // Every byte of the region must be guest memory now.
        let mut segs = crate::packet::Segments::new();
        probe
            .translate(iova, len, &mut segs)
            .map_err(|_| E::Fault)?;
        for s in &segs {
            let mut b = [0u8; 1];
            let Some(end) = s.gpa.checked_add(s.len as u64 - 1) else {
                return Err(E::Fault);
            };
            if s.len > 0
                && (self.res.mem.read(s.gpa, &mut b).is_err()
                    || self.res.mem.read(end, &mut b).is_err())
            {
                return Err(E::Fault);
            }
        }
        self.key_byte = self.key_byte.wrapping_add(1);
        let kb = self.key_byte;
        let idx = self.res.mrs.insert(probe).ok_or(E::Exhausted("MR"))?;
        let key = MemKey::from_parts(idx, kb);
        if let Some(m) = self.res.mrs.get_mut(idx) {
            m.key = key;
        }
        Ok(key)
    }

    pub fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()> {
        match self.res.mrs.get(key.index()) {
            Some(m) if m.key == key => {}
            _ => return Err(bad_key(())),
        }
        self.res.mrs.remove(key.index());
        Ok(())
    }

    pub fn mr(&self, key: MemKey) -> Option<&Mr> {
        self.res.mrs.get(key.index()).filter(|m| m.key == key)
    }

    // ---- completion queues --------------------------------------------------------------

    pub fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle> {
        if cqe == 0 || cqe > self.res.limits.max_cqe {
            return Err(E::Invalid("CQ size"));
        }
        self.res
            .cqs
            .insert(Cq::new(cqe))
            .map(CqHandle)
            .ok_or(E::Exhausted("CQ"))
    }

    pub fn resize_cq(&mut self, cq: CqHandle, cqe: u32) -> VerbsResult<()> {
        let max = self.res.limits.max_cqe;
        let q = self.res.cqs.get_mut(cq.0).ok_or(E::NotFound("CQ"))?;
        if cqe == 0 || cqe > max || (cqe as usize) < q.entries.len() {
            return Err(E::Invalid("CQ size"));
        }
        q.capacity = cqe;
        Ok(())
    }

    pub fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()> {
        self.res.cqs.get(cq.0).ok_or(E::NotFound("CQ"))?;
        if self
            .qps
            .iter()
            .any(|(_, q)| q.send_cq() == cq || q.recv_cq() == cq)
        {
            return Err(E::Busy("CQ"));
        }
        self.res.cqs.remove(cq.0);
        Ok(())
    }

    /// Arms the CQ: the next completion (or the next solicited one) raises a CQ event.
    pub fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()> {
        let q = self.res.cqs.get_mut(cq.0).ok_or(E::NotFound("CQ"))?;
        q.armed = Some(if solicited_only {
            Arm::Solicited
        } else {
            Arm::Next
        });
        Ok(())
    }

    /// Moves up to `max` completions into `out`; returns how many.
    pub fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        let q = self.res.cqs.get_mut(cq.0).ok_or(E::NotFound("CQ"))?;
        Ok(q.poll(max, out))
    }

    /// The next CQ that raised a completion event.
    pub fn poll_cq_event(&mut self) -> Option<CqHandle> {
        self.res.cq_events.pop_front()
    }

    pub fn poll_async_event(&mut self) -> Option<AsyncEvent> {
        self.res.async_events.pop_front()
    }

    // ---- shared receive queues ----------------------------------------------------------

    pub fn create_srq(
        &mut self,
        pd: PdHandle,
        max_wr: u32,
        max_sge: u32,
    ) -> VerbsResult<SrqHandle> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        let l = &self.res.limits;
        if max_wr == 0 || max_wr > l.max_srq_wr || max_sge > l.max_sge {
            return Err(E::Invalid("SRQ size"));
        }
        let srq = Srq {
            pd,
            max_wr,
            max_sge,
            queue: VecDeque::new(),
            limit: 0,
        };
        self.res
            .srqs
            .insert(srq)
            .map(SrqHandle)
            .ok_or(E::Exhausted("SRQ"))
    }

    /// Arms the SRQ limit event (`ibv_modify_srq` with `IBV_SRQ_LIMIT`).
    pub fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()> {
        let s = self.res.srqs.get_mut(srq.0).ok_or(E::NotFound("SRQ"))?;
        if limit > s.max_wr {
            return Err(E::Invalid("SRQ limit above its size"));
        }
        s.limit = limit;
        Ok(())
    }

    pub fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()> {
        let s = self.res.srqs.get_mut(srq.0).ok_or(E::NotFound("SRQ"))?;
        if wr.sgl.len() as u32 > s.max_sge {
            return Err(E::Invalid("too many SGEs"));
        }
        if s.queue.len() as u32 >= s.max_wr {
            return Err(E::QueueFull);
        }
        s.queue.push_back(wr);
        // A QP waiting on RNR may proceed sooner; RNR timers handle it, nothing to do here.
        Ok(())
    }

    pub fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()> {
        self.res.srqs.get(srq.0).ok_or(E::NotFound("SRQ"))?;
        if self.qps.iter().any(|(_, q)| q.srq() == Some(srq)) {
            return Err(E::Busy("SRQ"));
        }
        self.res.srqs.remove(srq.0);
        Ok(())
    }

    // ---- address handles ----------------------------------------------------------------

    pub fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        if attr.dgid.is_zero() {
            return Err(E::Invalid("RoCE address handles need a GID"));
        }
        self.res
            .ahs
            .insert(Ah { pd, attr })
            .map(AhHandle)
            .ok_or(E::Exhausted("AH"))
    }

    pub fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()> {
        self.res
            .ahs
            .remove(ah.0)
            .map(|_| ())
            .ok_or(E::NotFound("AH"))
    }

    // ---- queue pairs --------------------------------------------------------------------

    pub fn create_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn> {
        let l = self.res.limits;
        self.res.pds.get(init.pd.0).ok_or(E::NotFound("PD"))?;
        self.res
            .cqs
            .get(init.send_cq.0)
            .ok_or(E::NotFound("send CQ"))?;
        self.res
            .cqs
            .get(init.recv_cq.0)
            .ok_or(E::NotFound("receive CQ"))?;
        if let Some(s) = init.srq {
            let srq = self.res.srqs.get(s.0).ok_or(E::NotFound("SRQ"))?;
            if srq.pd != init.pd {
                return Err(E::Invalid("SRQ of another PD"));
            }
        }
        let c = init.cap;
        if c.max_send_wr == 0 || c.max_send_wr > l.max_qp_wr || c.max_recv_wr > l.max_qp_wr {
            return Err(E::Invalid("work queue depth"));
        }
        if c.max_send_sge > l.max_sge
            || c.max_recv_sge > l.max_sge
            || c.max_inline_data > l.max_inline_data
        {
            return Err(E::Invalid("SGE or inline capacity"));
        }
        let n = self
            .qps
            .insert(Qp::new(Qpn(0), init))
            .ok_or(E::Exhausted("QP"))?;
        if n > Qpn::MASK {
            self.qps.remove(n);
            return Err(E::Exhausted("QP numbers"));
        }
        let qp = self.qps.get_mut(n).expect("just inserted");
        qp.qpn = Qpn(n);
        Ok(Qpn(n))
    }

    pub fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()> {
        self.qps.remove(qpn.0).map(|_| ()).ok_or(E::NotFound("QP"))
    }

    pub fn query_qp(&self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)> {
        let qp = self.qps.get(qpn.0).ok_or(E::NotFound("QP"))?;
        let mut a = qp.attr;
        a.cur_qp_state = a.qp_state;
        if qp.qp_type() == QpType::Rc && !matches!(a.qp_state, QpState::Reset | QpState::Init) {
            // The PSNs a query reports are the live ones (what migration must carry).
            a.rq_psn = qp.resp.epsn;
            a.sq_psn = qp.req.psn;
        }
        Ok((a, qp.init))
    }

    /// The QP itself (read-only): for tools and checks.
    pub fn qp(&self, qpn: Qpn) -> Option<&Qp> {
        self.qps.get(qpn.0)
    }

    pub fn qps(&self) -> impl Iterator<Item = &Qp> {
        self.qps.iter().map(|(_, q)| q)
    }

    /// `ibv_modify_qp`: validates the transition and its attribute mask, then applies them.
    pub fn modify_qp(&mut self, qpn: Qpn, attr: &QpAttr, mask: M) -> VerbsResult<()> {
        let l = self.res.limits;
        let port_mtu = self.res.port_mtu;
        let qp = self.qps.get_mut(qpn.0).ok_or(E::NotFound("QP"))?;
        let cur = qp.state();
        if mask.contains(M::CUR_STATE) && attr.cur_qp_state != cur {
            return Err(E::Invalid("cur_qp_state does not match"));
        }
        let next = state::check_modify(
            qp.qp_type(),
            cur,
            mask.contains(M::STATE).then_some(attr.qp_state),
            mask,
        )?;
        // Attribute values.
        if mask.contains(M::PORT) && attr.port_num != 1 {
            return Err(E::Invalid("port_num must be 1"));
        }
        if mask.contains(M::PKEY_INDEX) && attr.pkey_index != 0 {
            return Err(E::Invalid("pkey_index out of range (table has one entry)"));
        }
        if mask.contains(M::PATH_MTU) && attr.path_mtu > port_mtu {
            return Err(E::Invalid("path_mtu above the port MTU"));
        }
        if mask.contains(M::TIMEOUT) && attr.timeout > 31 {
            return Err(E::Invalid("timeout"));
        }
        if mask.contains(M::RETRY_CNT) && attr.retry_cnt > 7 {
            return Err(E::Invalid("retry_cnt"));
        }
        if mask.contains(M::RNR_RETRY) && attr.rnr_retry > 7 {
            return Err(E::Invalid("rnr_retry"));
        }
        if mask.contains(M::MIN_RNR_TIMER) && attr.min_rnr_timer > 31 {
            return Err(E::Invalid("min_rnr_timer"));
        }
        if mask.contains(M::MAX_QP_RD_ATOMIC) && attr.max_rd_atomic > l.max_qp_init_rd_atom {
            return Err(E::Invalid("max_rd_atomic"));
        }
        if mask.contains(M::MAX_DEST_RD_ATOMIC) && attr.max_dest_rd_atomic > l.max_qp_rd_atom {
            return Err(E::Invalid("max_dest_rd_atomic"));
        }
        if mask.contains(M::DEST_QPN) && (attr.dest_qp_num.0 > Qpn::MASK || attr.dest_qp_num.0 == 0)
        {
            return Err(E::Invalid("dest_qp_num"));
        }
        if mask.contains(M::AV) && attr.ah_attr.dgid.is_zero() {
            return Err(E::Invalid("the address vector needs a GID on RoCE"));
        }
        if mask.contains(M::RQ_PSN) && attr.rq_psn.0 > crate::types::Psn::MASK {
            return Err(E::Invalid("rq_psn"));
        }
        if mask.contains(M::SQ_PSN) && attr.sq_psn.0 > crate::types::Psn::MASK {
            return Err(E::Invalid("sq_psn"));
        }
        let a = &mut qp.attr;
        macro_rules! set {
            ($bit:ident, $f:ident) => {
                if mask.contains(M::$bit) {
                    a.$f = attr.$f;
                }
            };
        }
        set!(EN_SQD_ASYNC_NOTIFY, en_sqd_async_notify);
        set!(ACCESS_FLAGS, qp_access_flags);
        set!(PKEY_INDEX, pkey_index);
        set!(PORT, port_num);
        set!(QKEY, qkey);
        set!(AV, ah_attr);
        set!(PATH_MTU, path_mtu);
        set!(TIMEOUT, timeout);
        set!(RETRY_CNT, retry_cnt);
        set!(RNR_RETRY, rnr_retry);
        set!(RQ_PSN, rq_psn);
        set!(MAX_QP_RD_ATOMIC, max_rd_atomic);
        set!(MIN_RNR_TIMER, min_rnr_timer);
        set!(SQ_PSN, sq_psn);
        set!(MAX_DEST_RD_ATOMIC, max_dest_rd_atomic);
        set!(DEST_QPN, dest_qp_num);
        if qp.qp_type() == QpType::Ud {
            qp.attr.path_mtu = port_mtu;
        }
        match (cur, next) {
            (_, QpState::Reset) => qp.reset(),
            (_, QpState::Err) => qp.enter_error(&mut self.res),
            (QpState::Init, QpState::Rtr) => {
                qp.resp.start(qp.attr.rq_psn);
                qp.src_port =
                    crate::qp::src_port(qpn, qp.attr.dest_qp_num, qp.attr.ah_attr.flow_label);
            }
            (QpState::Rtr, QpState::Rts) => {
                let a = qp.attr;
                match qp.qp_type() {
                    QpType::Rc => qp.req.start(a.sq_psn, a.retry_cnt, a.rnr_retry),
                    QpType::Ud => ud::start(qp, a.sq_psn),
                }
            }
            (QpState::Rts, QpState::Sqd) => {
                qp.attr.sq_draining = true;
                qp.req.drained_notified = false;
            }
            (QpState::Sqe, QpState::Rts) => qp.req.halted = false,
            (QpState::Sqd, QpState::Rts) => qp.attr.sq_draining = false,
            _ => {}
        }
        if !matches!(next, QpState::Err | QpState::Reset) {
            qp.attr.qp_state = next;
        }
        if next == QpState::Sqd {
            requester::notify_drained(qp, &mut self.res);
        }
        self.schedule(qpn.0);
        Ok(())
    }

    pub fn post_send(&mut self, qpn: Qpn, wr: &SendWr) -> VerbsResult<()> {
        let max_msg = self.res.limits.max_msg_sz;
        let qp = self.qps.get_mut(qpn.0).ok_or(E::NotFound("QP"))?;
        let st = qp.state();
        if matches!(st, QpState::Reset | QpState::Init | QpState::Rtr) {
            return Err(E::BadState(
                "post_send needs RTS (or SQD/SQE/ERR, which queue or flush)",
            ));
        }
        if qp.req.sq.len() as u32 >= qp.attr.cap.max_send_wr {
            return Err(E::QueueFull);
        }
        match qp.qp_type() {
            QpType::Ud => {
                if wr.ud.is_none()
                    || !matches!(
                        wr.op,
                        crate::verbs::SendOp::Send | crate::verbs::SendOp::SendWithImm { .. }
                    )
                {
                    return Err(E::Invalid(
                        "UD sends need a destination and SEND or SEND_WITH_IMM",
                    ));
                }
            }
            QpType::Rc => {
                if wr.ud.is_some() {
                    return Err(E::Invalid("RC sends take no UD destination"));
                }
            }
        }
        let wqe = requester::make_wqe(qp, max_msg, wr)?;
        qp.req.sq.push_back(wqe);
        if matches!(st, QpState::Err | QpState::Sqe) {
            qp.flush_send(&mut self.res);
        }
        self.schedule(qpn.0);
        Ok(())
    }

    pub fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> VerbsResult<()> {
        let qp = self.qps.get_mut(qpn.0).ok_or(E::NotFound("QP"))?;
        if qp.srq().is_some() {
            return Err(E::Invalid("QP uses an SRQ"));
        }
        if qp.state() == QpState::Reset {
            return Err(E::BadState("post_recv in RESET"));
        }
        if wr.sgl.len() as u32 > qp.attr.cap.max_recv_sge {
            return Err(E::Invalid("too many SGEs"));
        }
        if qp.rq.len() as u32 >= qp.attr.cap.max_recv_wr {
            return Err(E::QueueFull);
        }
        qp.rq.push_back(wr);
        if qp.state() == QpState::Err {
            // Only the receive queue: responses the QP still owes (its last NAK) must go out.
            qp.flush_recv(&mut self.res);
        }
        Ok(())
    }

    // ---- sans-I/O transport -------------------------------------------------------------

    pub(crate) fn schedule(&mut self, idx: u32) {
        if let Some(qp) = self.qps.get_mut(idx) {
            if !qp.scheduled {
                qp.scheduled = true;
                self.ready.push_back(idx);
            }
            let d = qp.next_deadline();
            if let Some(d) = d {
                if qp.timer_entry.is_none_or(|t| d < t) {
                    qp.timer_entry = Some(d);
                    self.timers.push(Reverse((d, idx)));
                }
            }
        }
    }

    /// Feeds one received packet to the VF.
    pub fn handle_packet(&mut self, now: Nanos, pkt: &Packet) {
        let c = &mut self.res.counters;
        c.rx_packets += 1;
        c.rx_bytes += pkt.transport_len() as u64;
        if !pkt.is_well_formed()
            || pkt.dst_gid != self.identity.gid
            || pkt.bth.pkey & 0x7fff != 0x7fff
        {
            c.rx_dropped += 1;
            return;
        }
        let idx = pkt.bth.dest_qp.0;
        let Some(qp) = self.qps.get_mut(idx) else {
            c.rx_dropped += 1;
            return;
        };
        let op = pkt.bth.opcode;
        match qp.qp_type() {
            QpType::Rc => {
                // rxe's check_addr: the packet must come from the QP's peer.
                if !op.is_rc() || pkt.src_gid != qp.attr.ah_attr.dgid {
                    c.rx_dropped += 1;
                    return;
                }
                if op.is_response() {
                    requester::on_response(qp, &mut self.res, pkt, now);
                } else if responder::accepts_requests(qp.state()) {
                    responder::on_request(qp, &mut self.res, pkt);
                } else {
                    c.rx_dropped += 1;
                    return;
                }
            }
            QpType::Ud => {
                if !op.is_ud() {
                    c.rx_dropped += 1;
                    return;
                }
                ud::on_packet(qp, &mut self.res, pkt);
            }
        }
        self.schedule(idx);
    }

    /// The next packet to put on the wire, round-robin over QPs with something to send.
    pub fn poll_transmit(&mut self, now: Nanos) -> Option<Packet> {
        while let Some(idx) = self.ready.pop_front() {
            let Some(qp) = self.qps.get_mut(idx) else {
                continue;
            };
            qp.scheduled = false;
            if let Some(pkt) = qp.next_packet(&mut self.res, now) {
                self.res.counters.tx_packets += 1;
                self.res.counters.tx_bytes += pkt.transport_len() as u64;
                self.schedule(idx);
                return Some(pkt);
            }
            // Nothing now; timers may still be armed (RNR wait, retransmit).
            let d = qp.next_deadline();
            if let Some(d) = d {
                if qp.timer_entry.is_none_or(|t| d < t) {
                    qp.timer_entry = Some(d);
                    self.timers.push(Reverse((d, idx)));
                }
            }
        }
        None
    }

    /// The earliest moment [`Vf::handle_timeout`] has work (may be early; never late).
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Nanos) {
        while let Some(Reverse((t, idx))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(qp) = self.qps.get_mut(idx) else {
                continue;
            };
            if qp.timer_entry != Some(t) {
                continue;
            }
            qp.timer_entry = None;
            qp.on_timeout(&mut self.res, now);
            self.schedule(idx);
        }
    }

    /// Resumes after a migration (or any blackout): every RC requester resends what is
    /// unacknowledged, every RC responder prompts its peer to resend from its expected PSN,
    /// and the port reports ACTIVE. The fabric announces the VF's new location separately
    /// (gratuitous ARP, switch table).
    pub fn resume(&mut self, now: Nanos) {
        let qpns: Vec<u32> = self.qps.iter().map(|(i, _)| i).collect();
        for n in qpns {
            if let Some(qp) = self.qps.get_mut(n) {
                if qp.qp_type() == QpType::Rc {
                    requester::resume(qp, now);
                    responder::prompt_peer(qp, &mut self.res);
                }
            }
            self.schedule(n);
        }
        self.res.raise(AsyncEvent::PortActive);
    }

    /// Whether any QP has something to transmit right now.
    pub fn wants_transmit(&self) -> bool {
        !self.ready.is_empty()
    }
}
