//! Loading: the v2 wire structs → live objects, checked.
//!
//! Every check a destination makes on one object lives in that object's `TryFrom` here; the
//! checks that span the VF (limits against the destination's policy, object numbers) are in
//! `restore` (`mod.rs`), which runs them first and then hands each object the [`LoadCtx`] it
//! needs for its references. A conversion checks before it moves anything into a live object.

use super::v2::{
    AhStateV2, ArmStateV2, CountersStateV2, CqStateV2, IdentityStateV2, InMessageStateV2,
    MrMapStateV2, MrStateV2, OutgoingStateV2, QpStateV2, RdAtomicResourceStateV2, RequesterStateV2,
    ResponderStateV2, SendWqeStateV2, SrqStateV2,
};
use super::{invalid, CheckpointError};
use crate::cq::{Arm, Cq};
use crate::mr::{Mr, MrMap, MR_PAGE_SHIFTS};
use crate::qp::requester::{Requester, SendWqe, MAX_PKT_PER_ACK};
use crate::qp::responder::{InMessage, Outgoing, RdAtomicResource, Responder};
use crate::qp::Qp;
use crate::resources::{Ah, Counters};
use crate::srq::Srq;
use crate::types::{PdHandle, Psn, Qpn};
use crate::verbs::{QpState, QpType, RecvWr, SendOp, VfLimits};
use crate::vf::{VfIdentity, FIRST_QPN};

/// What the checks of one object need from the rest of the state: the VF's limits, the
/// numbers of the objects it may reference (sorted), and the port MTU.
pub struct LoadCtx<'a> {
    pub limits: &'a VfLimits,
    pub pds: &'a [u32],
    pub cqs: &'a [u32],
    pub srqs: &'a [u32],
    /// (SRQ number, its PD), sorted by number.
    pub srq_pds: Vec<(u32, PdHandle)>,
    /// Bytes.
    pub port_mtu: u32,
}

impl LoadCtx<'_> {
    fn has_pd(&self, p: u32) -> bool {
        self.pds.binary_search(&p).is_ok()
    }
    fn has_cq(&self, c: u32) -> bool {
        self.cqs.binary_search(&c).is_ok()
    }
    fn has_srq(&self, s: u32) -> bool {
        self.srqs.binary_search(&s).is_ok()
    }
    fn srq_pd(&self, x: u32) -> Option<PdHandle> {
        self.srq_pds
            .binary_search_by_key(&x, |e| e.0)
            .ok()
            .map(|k| self.srq_pds[k].1)
    }
}

impl From<IdentityStateV2> for VfIdentity {
    fn from(i: IdentityStateV2) -> Self {
        VfIdentity {
            node_guid: i.node_guid,
            port_guid: i.port_guid,
            gid: i.gid,
            mac: i.mac,
            port_mtu: i.port_mtu,
            limits: i.limits,
        }
    }
}

impl From<CountersStateV2> for Counters {
    fn from(c: CountersStateV2) -> Self {
        Counters {
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            retransmits: c.retransmits,
            retry_timeouts: c.retry_timeouts,
            rnr_naks_sent: c.rnr_naks_sent,
            rnr_naks_received: c.rnr_naks_received,
            seq_naks_sent: c.seq_naks_sent,
            seq_naks_received: c.seq_naks_received,
            duplicate_requests: c.duplicate_requests,
            out_of_sequence: c.out_of_sequence,
            implied_naks: c.implied_naks,
            rx_dropped: c.rx_dropped,
            qkey_violations: c.qkey_violations,
            ud_no_recv: c.ud_no_recv,
            completions: c.completions,
            error_completions: c.error_completions,
        }
    }
}

/// MR number `i`: its key names it, its PD exists, its range fits the limits and a u64, its
/// page list (if any) uses a supported page size and covers at most its length.
impl TryFrom<(u32, MrStateV2, &LoadCtx<'_>)> for Mr {
    type Error = CheckpointError;
    fn try_from((i, m, cx): (u32, MrStateV2, &LoadCtx<'_>)) -> Result<Mr, CheckpointError> {
        let l = cx.limits;
        if m.key.index() != i
            || !cx.has_pd(m.pd.0)
            || m.len > l.max_mr_size
            || m.iova.checked_add(m.len).is_none()
        {
            return invalid(format!(
                "MR {i}: key index, PD, or length {} (limit {}) out of range",
                m.len, l.max_mr_size
            ));
        }
        let map = match m.map {
            MrMapStateV2::Contiguous { gpa } => MrMap::Contiguous { gpa },
            MrMapStateV2::Pages { page_shift, pages } => {
                if !MR_PAGE_SHIFTS.contains(&page_shift)
                    || pages.len() as u64 > (m.len >> page_shift) + 2
                {
                    return invalid(format!("MR {i} page list"));
                }
                MrMap::Pages { page_shift, pages }
            }
        };
        Ok(Mr {
            pd: m.pd,
            iova: m.iova,
            len: m.len,
            access: m.access,
            key: m.key,
            map,
            valid: m.valid,
            // Set by the fast-register section, which names its MRs.
            fast_reg: None,
        })
    }
}

/// CQ number `i`: a capacity within `max_cqe` and its completions within the capacity.
impl TryFrom<(u32, CqStateV2, &LoadCtx<'_>)> for Cq {
    type Error = CheckpointError;
    fn try_from((i, c, cx): (u32, CqStateV2, &LoadCtx<'_>)) -> Result<Cq, CheckpointError> {
        let max_cqe = cx.limits.max_cqe;
        if c.capacity == 0 || c.capacity > max_cqe || c.entries.len() as u64 > c.capacity as u64 {
            return invalid(format!(
                "CQ {i}: capacity {} (limit max_cqe {}) or {} completions above it",
                c.capacity,
                max_cqe,
                c.entries.len()
            ));
        }
        Ok(Cq {
            capacity: c.capacity,
            entries: c.entries.into(),
            armed: c.armed.map(|a| match a {
                ArmStateV2::Next => Arm::Next,
                ArmStateV2::Solicited => Arm::Solicited,
            }),
            overflowed: c.overflowed,
        })
    }
}

/// SRQ number `i`: its PD exists, its sizes are within the limits, its WQEs within its size
/// and `max_sge`, its limit within its size.
impl TryFrom<(u32, SrqStateV2, &LoadCtx<'_>)> for Srq {
    type Error = CheckpointError;
    fn try_from((i, q, cx): (u32, SrqStateV2, &LoadCtx<'_>)) -> Result<Srq, CheckpointError> {
        let l = cx.limits;
        if !cx.has_pd(q.pd.0)
            || q.max_wr == 0
            || q.max_wr > l.max_srq_wr
            || q.max_sge > l.max_sge
            || q.queue.len() as u64 > q.max_wr as u64
            || q.limit > q.max_wr
        {
            return invalid(format!(
                "SRQ {i}: PD, sizes (max_wr {}, max_sge {}), {} WQEs or limit {} out of range",
                q.max_wr,
                q.max_sge,
                q.queue.len(),
                q.limit
            ));
        }
        if q.queue.iter().any(|w| w.sgl.len() as u32 > q.max_sge) {
            return invalid(format!("SRQ {i} WQE"));
        }
        Ok(Srq {
            pd: q.pd,
            max_wr: q.max_wr,
            max_sge: q.max_sge,
            queue: q.queue.into(),
            limit: q.limit,
        })
    }
}

/// AH number `i`: what create_ah refuses, an AH of an unknown PD or one without a GID (RoCE).
impl TryFrom<(u32, AhStateV2, &LoadCtx<'_>)> for Ah {
    type Error = CheckpointError;
    fn try_from((i, a, cx): (u32, AhStateV2, &LoadCtx<'_>)) -> Result<Ah, CheckpointError> {
        if !cx.has_pd(a.pd.0) || a.attr.dgid.is_zero() {
            return invalid(format!("AH {i}: unknown PD {} or no GID", a.pd.0));
        }
        Ok(Ah {
            pd: a.pd,
            attr: a.attr,
        })
    }
}

fn psn_ok(p: Psn) -> bool {
    p.0 <= Psn::MASK
}

fn recv_ok(w: &RecvWr, max_sge: u32) -> bool {
    w.sgl.len() as u32 <= max_sge
}

/// A QP: its number, references (PD, CQs, SRQ of its own PD), capacities and attributes
/// within the limits, every queue within its capacity, the requester's and responder's
/// progress within their bounds. Its timers stay as saved (time remaining); `restore` adds
/// the destination's `now`.
impl TryFrom<(QpStateV2, &LoadCtx<'_>)> for Qp {
    type Error = CheckpointError;
    fn try_from((q, cx): (QpStateV2, &LoadCtx<'_>)) -> Result<Qp, CheckpointError> {
        check_qp(&q, cx)?;
        // What create_qp refuses: an SRQ of another PD.
        if let Some(x) = q.init.srq {
            if cx.srq_pd(x.0) != Some(q.init.pd) {
                return invalid(format!("QP {}: SRQ of another PD", q.qpn.0));
            }
        }
        let mut qp = Qp::new(q.qpn, q.init);
        qp.attr = q.attr;
        qp.rq = q.rq.into();
        qp.req = requester(q.req);
        qp.resp = responder(q.resp);
        qp.src_port = q.src_port;
        Ok(qp)
    }
}

fn check_qp(q: &QpStateV2, cx: &LoadCtx<'_>) -> Result<(), CheckpointError> {
    let l = cx.limits;
    let n = q.qpn.0;
    let bad = |what: &str| invalid(format!("QP {n}: {what}"));
    // QP1 is the GSI QP's fixed number (`restore` checks that the two go together).
    let gsi = n == crate::qp::ud::GSI_QPN && q.qp_type() == QpType::Gsi;
    if !gsi && !(FIRST_QPN..=Qpn::MASK).contains(&n) {
        return bad("number");
    }
    let init = &q.init;
    if !cx.has_pd(init.pd.0)
        || !cx.has_cq(init.send_cq.0)
        || !cx.has_cq(init.recv_cq.0)
        || init.srq.is_some_and(|s| !cx.has_srq(s.0))
    {
        return bad("references an object that does not exist");
    }
    let c = &init.cap;
    if c.max_send_wr == 0
        || c.max_send_wr > l.max_qp_wr
        || c.max_recv_wr > l.max_qp_wr
        || c.max_send_sge > l.max_sge
        || c.max_recv_sge > l.max_sge
        || c.max_inline_data > l.max_inline_data
    {
        return bad("capacities");
    }
    let a = &q.attr;
    if a.cap != *c {
        return bad("attribute capacities differ from creation");
    }
    if a.timeout > 31
        || a.retry_cnt > 7
        || a.rnr_retry > 7
        || a.min_rnr_timer > 31
        || a.max_rd_atomic > l.max_qp_init_rd_atom
        || a.max_dest_rd_atomic > l.max_qp_rd_atom
    {
        return bad("attribute values");
    }
    if !psn_ok(a.rq_psn)
        || !psn_ok(a.sq_psn)
        || a.dest_qp_num.0 > Qpn::MASK
        || a.path_mtu.bytes() > cx.port_mtu
    {
        return bad("PSN, QPN or MTU out of range");
    }
    if q.qp_type().is_datagram()
        && !matches!(a.qp_state, QpState::Reset | QpState::Init)
        && a.path_mtu.bytes() != cx.port_mtu
    {
        return bad("UD path MTU");
    }
    // Receive side.
    if q.rq.len() as u64 > c.max_recv_wr as u64
        || q.rq.iter().any(|w| !recv_ok(w, c.max_recv_sge))
        || (init.srq.is_some() && !q.rq.is_empty())
    {
        return bad("receive queue");
    }
    let r = &q.req;
    if r.sq.len() as u64 > c.max_send_wr as u64 || r.next as usize > r.sq.len() {
        return bad("send queue");
    }
    for p in [r.psn, r.una, r.sent_hw].into_iter().chain(r.retrying_from) {
        if !psn_ok(p) {
            return bad("requester PSN");
        }
    }
    // The counters count down from the 3-bit attributes; the ACK-request counter is reset
    // before it reaches MAX_PKT_PER_ACK (and `+ 1` on a hostile u32::MAX would overflow).
    if r.retry_left > 7 || r.rnr_left > 7 || r.since_ack_req >= MAX_PKT_PER_ACK {
        return bad("requester counters");
    }
    let mtu = a.path_mtu.bytes();
    for w in &r.sq {
        check_wqe(w, c.max_send_sge, c.max_inline_data, l.max_msg_sz, mtu)
            .map_err(|e| CheckpointError::Invalid(format!("QP {n}: send WQE: {e}")))?;
    }
    if let Some(w) = r.sq.get(r.next as usize) {
        if r.next_pkt > w.npkts.max(1) {
            return bad("requester packet index");
        }
    }
    let s = &q.resp;
    if !psn_ok(s.epsn)
        || s.msn.0 > Psn::MASK
        || s.resources.len() > a.max_dest_rd_atomic.max(1) as usize
        || s.out.len() > 4 * (a.max_dest_rd_atomic as usize + 4)
    {
        return bad("responder state");
    }
    // UC has no timers, no go-back, no READ/atomic resources and nothing to answer with; a UC
    // send queue holds only what post_send accepts on UC.
    if q.qp_type() == QpType::Uc
        && (r.deadline.is_some()
            || r.rnr_until.is_some()
            || r.retrying_from.is_some()
            || !s.resources.is_empty()
            || !s.out.is_empty()
            || r.sq
                .iter()
                .any(|w| w.op.is_read_or_atomic() || matches!(w.op, SendOp::SendWithInv { .. })))
    {
        return bad("UC QP with reliable-transport state");
    }
    let resource_ok = |r: &RdAtomicResourceStateV2| match *r {
        RdAtomicResourceStateV2::Read { psn, npkts } => psn_ok(psn) && npkts <= l.max_msg_sz.max(1),
        RdAtomicResourceStateV2::Atomic { psn, .. } | RdAtomicResourceStateV2::Answered { psn } => {
            psn_ok(psn)
        }
    };
    let out_ok = |o: &OutgoingStateV2| match *o {
        OutgoingStateV2::Ack { psn, msn, .. } | OutgoingStateV2::AtomicAck { psn, msn, .. } => {
            psn_ok(psn) && msn.0 <= Psn::MASK
        }
        OutgoingStateV2::Read { psn, msn, left, .. } => {
            psn_ok(psn) && msn.0 <= Psn::MASK && left <= l.max_msg_sz
        }
    };
    if !s.resources.iter().all(resource_ok) || !s.out.iter().all(out_ok) {
        return bad("responder resources or responses owed");
    }
    let current_ok = match &s.current {
        Some(InMessageStateV2::Send { wqe, offset }) => {
            recv_ok(wqe, c.max_recv_sge.max(l.max_sge))
                && *offset as u64 <= crate::sgl::sgl_len(&wqe.sgl)
        }
        Some(InMessageStateV2::Write { len, offset, .. }) => offset <= len && *len <= l.max_msg_sz,
        None => true,
    };
    if !current_ok {
        return bad("message in progress");
    }
    Ok(())
}

fn check_wqe(
    w: &SendWqeStateV2,
    max_sge: u32,
    max_inline: u32,
    max_msg: u32,
    mtu: u32,
) -> Result<(), &'static str> {
    match (&w.inline, w.op) {
        // No local buffers: the length is the op's own (8 bytes stored, or the range flushed).
        (None, SendOp::AtomicWrite { .. }) => {
            if !w.sgl.is_empty() || w.len != 8 {
                return Err("ATOMIC WRITE");
            }
        }
        (None, SendOp::Flush { len, .. }) => {
            if !w.sgl.is_empty() || w.len != len {
                return Err("FLUSH");
            }
        }
        (Some(d), _) => {
            if d.len() as u32 > max_inline || d.len() as u32 != w.len {
                return Err("inline data");
            }
        }
        (None, _) => {
            if w.sgl.len() as u32 > max_sge || crate::sgl::sgl_len(&w.sgl) != w.len as u64 {
                return Err("SGL");
            }
        }
    }
    if w.len > max_msg {
        return Err("length");
    }
    if w.started {
        let expect = crate::qp::requester::npkts(&w.op, w.len, mtu);
        if w.npkts != expect || w.resp_pkts > w.npkts || !psn_ok(w.first_psn) {
            return Err("transport progress");
        }
    }
    Ok(())
}

// The parts of a QP, moved over once `check_qp` has accepted the whole QP: private, so no
// wire state becomes a live object unchecked.

fn requester(r: RequesterStateV2) -> Requester {
    Requester {
        sq: r
            .sq
            .into_iter()
            .map(|w| SendWqe {
                wr_id: w.wr_id,
                op: w.op,
                flags: w.flags,
                signaled: w.signaled,
                sgl: w.sgl,
                inline: w.inline,
                len: w.len,
                ud: w.ud,
                started: w.started,
                first_psn: w.first_psn,
                npkts: w.npkts,
                resp_pkts: w.resp_pkts,
                done: w.done,
            })
            .collect(),
        next: r.next as usize,
        next_pkt: r.next_pkt,
        psn: r.psn,
        una: r.una,
        sent_hw: r.sent_hw,
        retry_left: r.retry_left,
        rnr_left: r.rnr_left,
        deadline: r.deadline,
        rnr_until: r.rnr_until,
        since_ack_req: r.since_ack_req,
        halted: r.halted,
        drained_notified: r.drained_notified,
        retrying_from: r.retrying_from,
    }
}

fn responder(s: ResponderStateV2) -> Responder {
    Responder {
        epsn: s.epsn,
        msn: s.msn,
        nak_sent: s.nak_sent,
        current: s.current.map(|m| match m {
            InMessageStateV2::Send { wqe, offset } => InMessage::Send { wqe, offset },
            InMessageStateV2::Write {
                va,
                rkey,
                len,
                offset,
            } => InMessage::Write {
                va,
                rkey,
                len,
                offset,
            },
        }),
        resources: s
            .resources
            .into_iter()
            .map(|r| match r {
                RdAtomicResourceStateV2::Read { psn, npkts } => {
                    RdAtomicResource::Read { psn, npkts }
                }
                RdAtomicResourceStateV2::Atomic { psn, orig } => {
                    RdAtomicResource::Atomic { psn, orig }
                }
                RdAtomicResourceStateV2::Answered { psn } => RdAtomicResource::Answered { psn },
            })
            .collect(),
        out: s
            .out
            .into_iter()
            .map(|o| match o {
                OutgoingStateV2::Ack { psn, syndrome, msn } => Outgoing::Ack { psn, syndrome, msn },
                OutgoingStateV2::AtomicAck { psn, orig, msn } => {
                    Outgoing::AtomicAck { psn, orig, msn }
                }
                OutgoingStateV2::Read {
                    psn,
                    va,
                    rkey,
                    left,
                    first,
                    msn,
                } => Outgoing::Read {
                    psn,
                    va,
                    rkey,
                    left,
                    first,
                    msn,
                },
            })
            .collect(),
    }
}
