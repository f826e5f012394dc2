//! The requester's transmit side: which packet, if any, goes on the wire next. It walks the
//! send queue from the resume point, holds back what a fence, the READ/atomic limit or the PSN
//! window forbids, runs local invalidations in place, assigns PSNs to a WQE when it starts,
//! counts retransmissions and arms the retransmit timer. Building the packet itself is `build`'s
//! job; this file only sequences.

use super::build::{build_request, npkts, validate_local};
use super::complete::complete_in_order;
use super::{Requester, MAX_UNACKED_PSNS};
use crate::packet::Packet;
use crate::qp::{ack_timeout_ns, Qp};
use crate::resources::Resources;
use crate::types::{MemKey, Nanos};
use crate::verbs::{QpState, SendFlags, SendOp, WcStatus};

fn arm_timer(qp: &mut Qp, now: Nanos) {
    if qp.req.deadline.is_none() {
        qp.req.deadline = ack_timeout_ns(qp.attr.timeout).map(|t| now.saturating_add(t));
    }
}

/// READ/atomic WQEs sent and not finished, up to `limit`.
fn rd_atomic_outstanding(r: &Requester, limit: u32) -> u32 {
    let mut n = 0;
    for w in r.sq.iter().take(r.next) {
        if w.op.is_read_or_atomic() && w.started && w.done.is_none() {
            n += 1;
            if n >= limit {
                break;
            }
        }
    }
    n
}

/// Produces the next request packet, or `None` when the QP has nothing it may send now.
pub fn next_packet(qp: &mut Qp, res: &mut Resources, now: Nanos) -> Option<Packet> {
    let state = qp.state();
    if !matches!(state, QpState::Rts | QpState::Sqd) || qp.req.halted {
        return None;
    }
    if let Some(t) = qp.req.rnr_until {
        if now < t {
            return None;
        }
        qp.req.rnr_until = None;
    }
    let mtu = qp.mtu();
    loop {
        let idx = qp.req.next;
        let w = qp.req.sq.get(idx)?;
        if w.done.is_some() {
            qp.req.next += 1;
            qp.req.next_pkt = 0;
            continue;
        }
        if !w.started {
            if state == QpState::Sqd {
                return None;
            }
            if w.flags.contains(SendFlags::FENCE)
                && qp
                    .req
                    .sq
                    .iter()
                    .take(idx)
                    .any(|p| p.op.is_read_or_atomic() && p.done.is_none())
            {
                return None;
            }
            if w.op.is_read_or_atomic() {
                let max = qp.attr.max_rd_atomic.max(1) as u32;
                if rd_atomic_outstanding(&qp.req, max) >= max {
                    return None;
                }
            }
            if qp.req.psn.diff(qp.req.una) >= MAX_UNACKED_PSNS {
                return None;
            }
            if w.op.is_local() {
                let op = w.op;
                let status = run_local(qp, res, op);
                qp.req.sq[idx].done = Some(status);
                qp.req.next += 1;
                qp.req.next_pkt = 0;
                complete_in_order(qp, res);
                if qp.state() == QpState::Err {
                    return None;
                }
                continue;
            }
            if let Err(status) = validate_local(qp, res, w) {
                qp.req.sq[idx].done = Some(status);
                qp.req.halted = true;
                complete_in_order(qp, res);
                return None;
            }
            let n = npkts(&w.op, w.len, mtu);
            let first = qp.req.psn;
            let w = &mut qp.req.sq[idx];
            w.started = true;
            w.first_psn = first;
            w.npkts = n;
            qp.req.psn = first.add(n);
            qp.req.next_pkt = 0;
        }
        let w = &qp.req.sq[idx];
        // Resume where the peer's acknowledgements leave off.
        let acked = qp.req.una.diff(w.first_psn).clamp(0, w.npkts as i32) as u32;
        let pkt_idx = if w.op.is_read_or_atomic() {
            w.resp_pkts
        } else {
            qp.req.next_pkt.max(acked)
        };
        if pkt_idx >= w.npkts {
            // Everything already acknowledged: move on.
            qp.req.next += 1;
            qp.req.next_pkt = 0;
            continue;
        }
        let psn = w.first_psn.add(pkt_idx);
        if psn.diff(qp.req.una) >= MAX_UNACKED_PSNS && !w.op.is_read_or_atomic() {
            return None;
        }
        let built = build_request(qp, res, idx, pkt_idx, psn, mtu);
        let pkt = match built {
            Ok(p) => p,
            Err(status) => {
                qp.req.sq[idx].done = Some(status);
                qp.req.halted = true;
                complete_in_order(qp, res);
                return None;
            }
        };
        let last_of_wqe =
            pkt_idx + 1 >= qp.req.sq[idx].npkts || qp.req.sq[idx].op.is_read_or_atomic();
        if last_of_wqe {
            qp.req.next += 1;
            qp.req.next_pkt = 0;
        } else {
            qp.req.next_pkt = pkt_idx + 1;
        }
        if psn.before(qp.req.sent_hw) {
            res.counters.retransmits += 1;
        }
        let end = if qp.req.sq[idx].op.is_read_or_atomic() {
            qp.req.sq[idx].last_psn().add(1)
        } else {
            psn.add(1)
        };
        if qp.req.sent_hw.before(end) {
            qp.req.sent_hw = end;
        }
        arm_timer(qp, now);
        return Some(pkt);
    }
}

/// Executes a work request that makes no packet (LOCAL_INV, BIND_MW, REG_MR) on `qp`;
/// returns its completion status.
pub(crate) fn run_local(qp: &Qp, res: &mut Resources, op: SendOp) -> WcStatus {
    match op {
        SendOp::LocalInv { key } => local_invalidate(qp, res, key),
        SendOp::BindMw {
            mw,
            rkey,
            mr,
            addr,
            len,
            access,
        } => crate::mw::bind(
            &mut res.mws,
            &res.mrs,
            qp.qpn,
            qp.pd(),
            crate::mw::BindArgs {
                mw,
                rkey,
                mr,
                addr,
                len,
                access,
            },
        ),
        SendOp::RegMr {
            mr,
            page_list,
            npages,
            page_shift,
            iova,
            len,
            access,
        } => crate::fast_reg::register(
            &mut res.mrs,
            &res.mem,
            res.limits.max_mr_size,
            qp.pd(),
            crate::fast_reg::RegArgs {
                key: mr,
                page_list,
                npages,
                page_shift,
                iova,
                len,
                access,
            },
        ),
        // Not a local operation: the caller only passes those.
        _ => WcStatus::LocQpOpErr,
    }
}

/// LOCAL_INV of an MR or a type 2 window. vhca completes every refusal with `LOC_PROT_ERR`
/// (docs/transport.md, "LOCAL_INV"; rxe uses `LOC_QP_OP_ERR`).
pub(crate) fn local_invalidate(qp: &Qp, res: &mut Resources, key: MemKey) -> WcStatus {
    if crate::mw::is_mw_key(key) {
        return if crate::mw::invalidate(&mut res.mws, key, qp.pd(), None) {
            WcStatus::Success
        } else {
            WcStatus::LocProtErr
        };
    }
    // rxe: an MR with windows bound to it cannot be invalidated.
    if crate::mw::mr_has_windows(&res.mws, key) {
        return WcStatus::LocProtErr;
    }
    match res.mrs.get_mut(key.index()) {
        Some(mr) if mr.key == key && mr.pd == qp.pd() && mr.valid => {
            mr.valid = false;
            WcStatus::Success
        }
        _ => WcStatus::LocProtErr,
    }
}
