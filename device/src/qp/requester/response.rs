//! The completer: response packets (ACK, NAK, READ response, atomic ACK) into progress. It
//! checks a response against what is outstanding, moves the oldest unacknowledged PSN,
//! scatters READ and atomic results into guest memory, and hands losses to `retry` and
//! errors to `complete`. Separate from the transmit side as in rxe (req vs comp).

use super::complete::{fail_at, fail_head};
use super::complete_in_order;
use super::retry::{implied_nak, retry_or_fail, rewind};
use crate::packet::{NakCode, Opcode, Packet, Payload, Syndrome};
use crate::qp::{ack_timeout_ns, rnr_delay_ns, Qp};
use crate::resources::Resources;
use crate::sgl::sgl_segments;
use crate::types::{Nanos, Psn};
use crate::verbs::{Access, QpState, SendOp, WcStatus};

/// Handles a response packet (ACK, NAK, READ response, atomic ACK) for this requester.
pub fn on_response(qp: &mut Qp, res: &mut Resources, pkt: &Packet, now: Nanos) {
    if !matches!(qp.state(), QpState::Rts | QpState::Sqd | QpState::Sqe) {
        res.counters.rx_dropped += 1;
        return;
    }
    let p = pkt.bth.psn;
    // Only PSNs this requester has sent and not yet retired are meaningful.
    if p.diff(qp.req.una) < -1 || !p.before(qp.req.psn) {
        res.counters.rx_dropped += 1;
        return;
    }
    let op = pkt.bth.opcode;
    match op {
        Opcode::RC_ACK => {
            let Some(aeth) = pkt.ext.aeth else { return };
            on_aeth(qp, res, p, aeth.syndrome, now);
        }
        Opcode::RC_ATOMIC_ACK => {
            let (Some(aeth), Some(ack)) = (pkt.ext.aeth, pkt.ext.atomic_ack) else {
                return;
            };
            if !matches!(aeth.syndrome, Syndrome::Ack { .. }) {
                return;
            }
            on_atomic_ack(qp, res, p, ack.orig, now);
        }
        _ if op.is_read_response() => on_read_response(qp, res, pkt, now),
        _ => res.counters.rx_dropped += 1,
    }
    complete_in_order(qp, res);
}

fn on_aeth(qp: &mut Qp, res: &mut Resources, p: Psn, syn: Syndrome, now: Nanos) {
    let before = qp.req.una;
    match syn {
        Syndrome::Ack { .. } => {
            let implied = ack_through(qp, p);
            if qp.req.una != before {
                progressed(qp, now);
            }
            if implied {
                implied_nak(qp, res, now);
            }
        }
        Syndrome::RnrNak { timer } => {
            res.counters.rnr_naks_received += 1;
            ack_through(qp, p.sub(1));
            if qp.req.una != before {
                qp.req.retry_left = qp.attr.retry_cnt;
            }
            if qp.attr.rnr_retry != 7 {
                if qp.req.rnr_left == 0 {
                    fail_head(qp, res, WcStatus::RnrRetryExcErr);
                    return;
                }
                qp.req.rnr_left -= 1;
            }
            rewind(qp);
            qp.req.deadline = None;
            qp.req.rnr_until = Some(now.saturating_add(rnr_delay_ns(timer)));
        }
        Syndrome::Nak(NakCode::PsnSequenceError) => {
            res.counters.seq_naks_received += 1;
            ack_through(qp, p.sub(1));
            if qp.req.una != before {
                progressed(qp, now);
            }
            // A responder that RNR-NAKed a packet may still NAK the packets that followed it as
            // out of sequence (rxe does). While waiting out the RNR delay the requester already
            // resends from that PSN; a sequence NAK for it adds nothing and must not cost a
            // transport retry.
            if qp.req.rnr_until.is_some() && p == qp.req.una {
                return;
            }
            retry_or_fail(qp, res, now);
        }
        Syndrome::Nak(code) => {
            ack_through(qp, p.sub(1));
            let status = match code {
                NakCode::RemoteAccessError => WcStatus::RemAccessErr,
                NakCode::RemoteOperationalError => WcStatus::RemOpErr,
                _ => WcStatus::RemInvReqErr,
            };
            fail_at(qp, res, p, status);
        }
        Syndrome::Reserved(_) => res.counters.rx_dropped += 1,
    }
}

/// The oldest unfinished READ/atomic WQE, if no unfinished SEND/WRITE precedes it
/// unacknowledged past its start (responses arrive in PSN order).
fn pending_rd_atomic(qp: &Qp) -> Option<usize> {
    qp.req
        .sq
        .iter()
        .position(|w| w.started && w.done.is_none() && w.op.is_read_or_atomic())
}

fn on_read_response(qp: &mut Qp, res: &mut Resources, pkt: &Packet, now: Nanos) {
    let p = pkt.bth.psn;
    let Some(idx) = pending_rd_atomic(qp) else {
        res.counters.rx_dropped += 1;
        return;
    };
    let (first_psn, resp_pkts, len, is_read, empty_answer) = {
        let w = &qp.req.sq[idx];
        (
            w.first_psn,
            w.resp_pkts,
            w.len,
            matches!(w.op, SendOp::Read { .. }),
            w.op.is_flush_or_atomic_write(),
        )
    };
    let expected = first_psn.add(resp_pkts);
    let d = p.diff(expected);
    if d < 0 || !(is_read || empty_answer) {
        // A duplicate of a response already taken (or one for nothing we asked).
        res.counters.rx_dropped += 1;
        return;
    }
    if d > 0 {
        // Responses lost in between: go back to the READ.
        let before = qp.req.una;
        ack_through(qp, first_psn.sub(1));
        if qp.req.una != before {
            progressed(qp, now);
        }
        implied_nak(qp, res, now);
        return;
    }
    let op = pkt.bth.opcode;
    if empty_answer {
        // ATOMIC WRITE and FLUSH are answered by one zero-length READ RESPONSE ONLY (rxe's
        // send_read_response_ack); anything else at their PSN is a bad response.
        if op != Opcode::RC_READ_RESP_ONLY || !pkt.payload.is_empty() {
            fail_head(qp, res, WcStatus::BadRespErr);
            return;
        }
        ack_through(qp, first_psn.sub(1));
        let w = &mut qp.req.sq[idx];
        w.resp_pkts = 1;
        w.done = Some(WcStatus::Success);
        let new_una = first_psn.add(1);
        if qp.req.una.before(new_una) {
            qp.req.una = new_una;
        }
        progressed(qp, now);
        return;
    }
    let mtu = qp.mtu();
    let is_first = matches!(op, Opcode::RC_READ_RESP_FIRST | Opcode::RC_READ_RESP_ONLY);
    let is_last = matches!(op, Opcode::RC_READ_RESP_LAST | Opcode::RC_READ_RESP_ONLY);
    let off = resp_pkts * mtu;
    let remaining = len.saturating_sub(off);
    let expect_len = if is_last { remaining } else { mtu };
    // A READ whose responses were cut short is asked for again from the first missing packet
    // (a new READ request for the tail), and the responder answers that request with its own
    // FIRST/ONLY. So FIRST/ONLY are legal at any resume point; only the very first response
    // must be one, and MIDDLE/LAST are legal only after the first.
    let in_order_kind = (resp_pkts != 0 || is_first) && (is_last == (remaining <= mtu));
    if !in_order_kind || pkt.payload.len() as u32 != expect_len {
        fail_head(qp, res, WcStatus::BadRespErr);
        return;
    }
    if resp_pkts == 0 {
        // A READ response implicitly acknowledges every earlier PSN.
        let before = qp.req.una;
        ack_through(qp, first_psn.sub(1));
        if qp.req.una != before {
            progressed(qp, now);
        }
        // Earlier WQEs may now be done; the READ is still at `idx` relative to the front only
        // if nothing was popped, and nothing is popped until complete_in_order runs.
    }
    let w = &qp.req.sq[idx];
    let mut segs = crate::packet::Segments::new();
    let r = sgl_segments(
        &res.mrs,
        qp.pd(),
        &w.sgl,
        off as u64,
        expect_len as u64,
        Access::LOCAL_WRITE,
        &mut segs,
    );
    let ok = r.is_ok() && crate::sgl::scatter(&pkt.payload, &res.mem, &segs).is_ok();
    if !ok {
        qp.req.sq[idx].done = Some(WcStatus::LocProtErr);
        qp.req.halted = true;
        complete_in_order(qp, res);
        return;
    }
    let w = &mut qp.req.sq[idx];
    w.resp_pkts += 1;
    let new_una = w.first_psn.add(w.resp_pkts);
    if is_last {
        w.done = Some(WcStatus::Success);
    }
    if qp.req.una.before(new_una) {
        qp.req.una = new_una;
    }
    progressed(qp, now);
}

fn on_atomic_ack(qp: &mut Qp, res: &mut Resources, p: Psn, orig: u64, now: Nanos) {
    let Some(idx) = pending_rd_atomic(qp) else {
        res.counters.rx_dropped += 1;
        return;
    };
    let w = &qp.req.sq[idx];
    if !w.op.is_atomic() || w.first_psn != p {
        if w.first_psn.diff(p) < 0 {
            // The atomic ACK for an earlier PSN is a duplicate; for a later one, responses
            // were lost.
            let before = qp.req.una;
            ack_through(qp, w.first_psn.sub(1));
            if qp.req.una != before {
                progressed(qp, now);
            }
            implied_nak(qp, res, now);
        }
        return;
    }
    let before = qp.req.una;
    ack_through(qp, p.sub(1));
    if qp.req.una != before {
        progressed(qp, now);
    }
    let w = &qp.req.sq[idx];
    let mut segs = crate::packet::Segments::new();
    let r = sgl_segments(
        &res.mrs,
        qp.pd(),
        &w.sgl,
        0,
        8,
        Access::LOCAL_WRITE,
        &mut segs,
    );
    let ok = r.is_ok()
        && crate::sgl::scatter(
            &Payload::Bytes(orig.to_le_bytes().to_vec()),
            &res.mem,
            &segs,
        )
        .is_ok();
    let w = &mut qp.req.sq[idx];
    w.resp_pkts = 1;
    w.done = Some(if ok {
        WcStatus::Success
    } else {
        WcStatus::LocProtErr
    });
    let new_una = p.add(1);
    if qp.req.una.before(new_una) {
        qp.req.una = new_una;
    }
    progressed(qp, now);
}

/// Marks every SEND/WRITE WQE whose last PSN is at or before `p` done; stops at the first WQE
/// that `p` does not finish. A READ/atomic whose whole range `p` covers without its response is
/// an implied NAK: returns true so the caller retries.
fn ack_through(qp: &mut Qp, p: Psn) -> bool {
    let mut implied_nak = false;
    let mut new_una = None;
    for w in qp.req.sq.iter_mut() {
        if w.done.is_some() {
            continue;
        }
        if !w.has_psns() || !w.started {
            break;
        }
        if w.last_psn().diff(p) > 0 {
            break;
        }
        if w.op.is_read_or_atomic() {
            implied_nak = true;
            new_una = Some(w.first_psn.add(w.resp_pkts));
            break;
        }
        w.done = Some(WcStatus::Success);
    }
    let target = new_una.unwrap_or(p.add(1));
    if qp.req.una.before(target) {
        qp.req.una = target;
    }
    implied_nak
}

/// Forward progress: reset the retry counters and restart (or stop) the retransmit timer.
fn progressed(qp: &mut Qp, now: Nanos) {
    qp.req.retrying_from = None;
    qp.req.retry_left = qp.attr.retry_cnt;
    qp.req.rnr_left = qp.attr.rnr_retry;
    qp.req.deadline = if qp.req.idle() {
        None
    } else {
        ack_timeout_ns(qp.attr.timeout).map(|t| now.saturating_add(t))
    };
}
