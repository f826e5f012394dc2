//! The verbs commands for a VF's queue pairs: create, destroy, query, `modify_qp` (transition
//! and attribute checks, then the per-state start of requester and responder), and posting send
//! and receive work. Separate from `objects.rs` because a QP command reaches into the transport
//! (it starts connections and schedules the QP), and from `transport.rs` because it takes no time
//! and sends nothing itself.

use super::Vf;
use crate::error::{VerbsError as E, VerbsResult};
use crate::qp::{requester, state, ud, Qp};
use crate::types::Qpn;
use crate::verbs::{QpAttr, QpAttrMask as M, QpInitAttr, QpState, QpType, RecvWr, SendOp, SendWr};

impl Vf {
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
        if init.qp_type == QpType::Gsi {
            return self.create_gsi_qp(init);
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

    /// QP1 has its fixed number; a VF has one (IBTA: one GSI QP per port), so a second create
    /// is refused until the first is destroyed.
    fn create_gsi_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn> {
        if self.qps.get(ud::GSI_QPN).is_some() {
            return Err(E::Invalid("the VF already has its GSI QP (QP1)"));
        }
        let n = ud::GSI_QPN;
        self.qps
            .insert_reserved(n, Qp::new(Qpn(n), init))
            .map_err(|_| E::Exhausted("QP"))?;
        Ok(Qpn(n))
    }

    pub fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()> {
        self.qps.remove(qpn.0).ok_or(E::NotFound("QP"))?;
        // A type 2 window is valid only on the QP it was bound on: with the QP gone it is
        // free again, and a later QP with the same number cannot inherit it.
        for (_, w) in self.res.mws.iter_mut() {
            if w.binding.is_some_and(|b| b.qpn == Some(qpn)) {
                w.binding = None;
            }
        }
        Ok(())
    }

    pub fn query_qp(&self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)> {
        let qp = self.qps.get(qpn.0).ok_or(E::NotFound("QP"))?;
        let mut a = qp.attr;
        a.cur_qp_state = a.qp_state;
        if !qp.qp_type().is_datagram() && !matches!(a.qp_state, QpState::Reset | QpState::Init) {
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
        if qp.qp_type().is_datagram() {
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
                    QpType::Uc => qp.req.start(a.sq_psn, 0, 0),
                    QpType::Ud | QpType::Gsi => ud::start(qp, a.sq_psn),
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
            QpType::Ud | QpType::Gsi => {
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
            QpType::Uc => {
                if wr.ud.is_some() {
                    return Err(E::Invalid("UC sends take no UD destination"));
                }
                if wr.op.is_read_or_atomic() || matches!(wr.op, SendOp::SendWithInv { .. }) {
                    return Err(E::Invalid(
                        "UC has no RDMA READ, atomics, ATOMIC WRITE, FLUSH or SEND_WITH_INVALIDATE",
                    ));
                }
            }
        }
        let wqe = requester::make_wqe(qp, max_msg, wr)?;
        if qp.qp_type() == QpType::Gsi && wqe.len > ud::MAD_LEN {
            return Err(E::Invalid("a GSI message is one MAD of at most 256 bytes"));
        }
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
}
