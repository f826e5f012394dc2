//! Unreliable connected: RC's segmentation and message placement without acknowledgements,
//! retransmission, READ or atomics (IBTA 9.8.3, rxe's UC paths).
//!
//! Requester: a SEND or RDMA WRITE goes out as UC FIRST/MIDDLE/LAST or ONLY packets with
//! consecutive PSNs and AckReq clear; the WQE is finished (and completes, if signaled) once its
//! last packet has left `next_packet`. Nothing comes back, so there is no timer and no window.
//!
//! Responder: a packet at the expected PSN runs exactly as an RC request (`responder::execute`);
//! anything that would make an RC responder NAK instead drops the rest of the current message
//! (rxe's `drop_msg`, "class D"). A PSN ahead of the expected one drops the message in
//! progress; if the packet starts a new message (FIRST or ONLY) the responder resyncs there,
//! otherwise it is dropped too. A PSN behind the expected one is a duplicate and is dropped
//! (rxe would accept a duplicated FIRST/ONLY). A dropped SEND gives its receive WQE back,
//! unconsumed. Nothing is ever sent back.

use super::responder::{execute, Failure, InMessage};
use super::{recv_wc, requester, Qp};
use crate::packet::{NakCode, Packet};
use crate::resources::Resources;
use crate::verbs::{AsyncEvent, QpState, RecvWr, WcOpcode, WcStatus};

/// Produces the next UC request packet, or `None` when there is nothing to send.
pub fn next_packet(qp: &mut Qp, res: &mut Resources) -> Option<Packet> {
    let state = qp.state();
    if !matches!(state, QpState::Rts | QpState::Sqd) || qp.req.halted {
        return None;
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
            if w.op.is_local() {
                let op = w.op;
                let status = requester::run_local(qp, res, op);
                qp.req.sq[idx].done = Some(status);
                qp.req.next += 1;
                qp.req.next_pkt = 0;
                requester::complete_in_order(qp, res);
                if qp.state() == QpState::Err {
                    return None;
                }
                continue;
            }
            if let Err(status) = requester::validate_local(qp, res, w) {
                fail(qp, res, idx, status);
                return None;
            }
            let n = requester::npkts(&w.op, w.len, mtu);
            let first = qp.req.psn;
            let w = &mut qp.req.sq[idx];
            w.started = true;
            w.first_psn = first;
            w.npkts = n;
            qp.req.psn = first.add(n);
            qp.req.next_pkt = 0;
        }
        let pkt_idx = qp.req.next_pkt;
        let psn = qp.req.sq[idx].first_psn.add(pkt_idx);
        let pkt = match requester::build_request(qp, res, idx, pkt_idx, psn, mtu) {
            Ok(mut p) => {
                // The WQE completes as its last packet leaves and the application may then
                // reuse the buffer: read guest memory now, as a NIC's DMA would, not when the
                // packet is put on a wire or lands (as UD does).
                p.payload.materialize();
                p
            }
            Err(status) => {
                fail(qp, res, idx, status);
                return None;
            }
        };
        // Nothing is ever acknowledged: what has left is done with.
        qp.req.una = psn.add(1);
        qp.req.sent_hw = psn.add(1);
        if pkt_idx + 1 >= qp.req.sq[idx].npkts {
            qp.req.sq[idx].done = Some(WcStatus::Success);
            qp.req.next += 1;
            qp.req.next_pkt = 0;
            requester::complete_in_order(qp, res);
        } else {
            qp.req.next_pkt = pkt_idx + 1;
        }
        return Some(pkt);
    }
}

/// A WQE that cannot be sent: it completes with `status` and the QP enters ERR (as RC; rxe
/// moves a UC QP with a failed send to ERR too).
fn fail(qp: &mut Qp, res: &mut Resources, idx: usize, status: WcStatus) {
    qp.req.sq[idx].done = Some(status);
    qp.req.halted = true;
    requester::complete_in_order(qp, res);
}

/// Handles a UC request packet addressed to this QP (already checked for address and state).
pub fn on_request(qp: &mut Qp, res: &mut Resources, pkt: &Packet) {
    let op = pkt.bth.opcode;
    let psn = pkt.bth.psn;
    let d = psn.diff(qp.resp.epsn);
    if d < 0 {
        // A PSN already seen (the fabric duplicated or delayed a packet): never delivered
        // twice, and the message in progress is not disturbed.
        res.counters.duplicate_requests += 1;
        return;
    }
    if d > 0 {
        // Packets were lost: whatever was in progress can no longer be completed.
        drop_message(qp, res);
        res.counters.out_of_sequence += 1;
        if !op.is_first() {
            return;
        }
        // A new message after a gap: resync at it.
        qp.resp.epsn = psn;
    }
    match execute(qp, res, pkt) {
        Ok(()) => {}
        Err(Failure::Nak(NakCode::RemoteOperationalError, recv)) => {
            // The receive WQE or the target memory cannot be written: a local error of this
            // QP (IBTA class A), not the sender's fault. The QP enters ERR.
            let qpn = qp.qpn;
            if let Some((wqe, status)) = recv {
                res.complete(
                    qp.recv_cq(),
                    recv_wc(qpn, wqe.wr_id, status, WcOpcode::Recv, 0),
                );
            }
            qp.enter_error(res);
            res.raise(AsyncEvent::QpFatal(qpn));
        }
        Err(Failure::Nak(_, recv)) => {
            // Invalid request or access error: the message is dropped silently (class D/E).
            res.counters.rx_dropped += 1;
            if let Some((wqe, _)) = recv {
                give_back(qp, res, wqe);
            }
            drop_message(qp, res);
        }
        Err(Failure::Rnr) => {
            // No receive WQE: UC has no RNR, the message is dropped (class D).
            res.counters.rx_dropped += 1;
            drop_message(qp, res);
        }
    }
}

/// Abandons the message in progress; a SEND's receive WQE goes back to its queue unconsumed.
fn drop_message(qp: &mut Qp, res: &mut Resources) {
    if let Some(InMessage::Send { wqe, .. }) = qp.resp.current.take() {
        give_back(qp, res, wqe);
    }
}

/// Returns a receive WQE a dropped message had taken to the front of its queue. An SRQ that
/// has been filled up meanwhile cannot take it back: then it completes with
/// `REM_INV_REQ_ERR`, as rxe completes a UC SRQ receive whose message was cut short.
fn give_back(qp: &mut Qp, res: &mut Resources, wqe: RecvWr) {
    match qp.srq() {
        Some(h) => match res.srqs.get_mut(h.0) {
            Some(srq) if (srq.queue.len() as u32) < srq.max_wr => srq.queue.push_front(wqe),
            _ => {
                let wc = recv_wc(qp.qpn, wqe.wr_id, WcStatus::RemInvReqErr, WcOpcode::Recv, 0);
                res.complete(qp.recv_cq(), wc);
            }
        },
        None => qp.rq.push_front(wqe),
    }
}
