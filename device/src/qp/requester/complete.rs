//! Retiring send WQEs: finished WQEs leave the head of the send queue in order as completions,
//! a failure fails the right WQE (and flushes what it must) and moves the QP to ERR, and SQD
//! raises its drained event once nothing started is outstanding. Separate because every other
//! step (transmit, responses, retries) ends here, and in-order completion is its own invariant.

use crate::qp::Qp;
use crate::resources::Resources;
use crate::types::{Psn, Qpn};
use crate::verbs::{QpState, WcStatus, WorkCompletion};

use super::SendWqe;

/// The completion for a send WQE.
pub fn send_wc(qpn: Qpn, w: &SendWqe, status: WcStatus) -> WorkCompletion {
    WorkCompletion {
        wr_id: w.wr_id,
        status,
        opcode: w.op.wc_opcode(),
        qpn,
        byte_len: w.len,
        imm: None,
        invalidated_rkey: None,
        src_qp: Qpn(0),
        src_gid: Default::default(),
        grh: false,
        solicited: false,
    }
}

/// Retires finished WQEs from the head of the SQ in order, posting their completions. A failed
/// WQE moves the QP to ERR, which flushes the rest.
pub fn complete_in_order(qp: &mut Qp, res: &mut Resources) {
    let qpn = qp.qpn;
    let cq = qp.send_cq();
    while let Some(front) = qp.req.sq.front() {
        let Some(status) = front.done else {
            break;
        };
        let w = qp.req.sq.pop_front().expect("front exists");
        if qp.req.next > 0 {
            qp.req.next -= 1;
        } else {
            qp.req.next_pkt = 0;
        }
        if status != WcStatus::Success || w.signaled || qp.init.sq_sig_all {
            res.complete(cq, send_wc(qpn, &w, status));
        }
        if status != WcStatus::Success {
            if qp.qp_type() == crate::verbs::QpType::Ud {
                qp.attr.qp_state = QpState::Sqe;
                qp.flush_send(res);
            } else {
                qp.enter_error(res);
            }
            return;
        }
    }
    notify_drained(qp, res);
}

/// In SQD, raise SQ_DRAINED once nothing started remains outstanding.
pub fn notify_drained(qp: &mut Qp, res: &mut Resources) {
    if qp.state() == QpState::Sqd
        && !qp.req.drained_notified
        && qp.req.sq.iter().all(|w| !w.started || w.done.is_some())
    {
        qp.req.drained_notified = true;
        qp.attr.sq_draining = false;
        if qp.attr.en_sqd_async_notify {
            res.raise(crate::verbs::AsyncEvent::SqDrained(qp.qpn));
        }
    }
}

/// Fails the oldest unfinished WQE with `status` and moves the QP to ERR.
pub(super) fn fail_head(qp: &mut Qp, res: &mut Resources, status: WcStatus) {
    if let Some(w) = qp.req.sq.iter_mut().find(|w| w.done.is_none()) {
        w.done = Some(status);
    }
    complete_in_order(qp, res);
    qp.enter_error(res);
}

/// A NAK error names the request at PSN `p`: that WQE gets `status`. An earlier READ or atomic
/// still missing its response cannot be finished any more (the responder is now in ERR and will
/// not answer a retry), so it is flushed ahead of it, keeping completions in order.
pub(super) fn fail_at(qp: &mut Qp, res: &mut Resources, p: Psn, status: WcStatus) {
    let hit = qp.req.sq.iter().position(|w| {
        w.done.is_none()
            && w.started
            && w.has_psns()
            && w.first_psn.diff(p) <= 0
            && w.last_psn().diff(p) >= 0
    });
    let Some(hit) = hit else {
        fail_head(qp, res, status);
        return;
    };
    for (i, w) in qp.req.sq.iter_mut().enumerate().take(hit + 1) {
        if w.done.is_none() {
            w.done = Some(if i == hit {
                status
            } else {
                WcStatus::WrFlushErr
            });
        }
    }
    complete_in_order(qp, res);
    qp.enter_error(res);
}
