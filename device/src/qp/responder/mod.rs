//! The RC responder: executes incoming requests in PSN order and answers with ACKs, NAKs,
//! READ responses and atomic ACKs (IBTA 9.7.4–9.7.5, rxe_resp.c's observable behaviour).
//!
//! What it does with each PSN, as rxe does on the wire:
//! - expected PSN: execute; ACK if AckReq (coalesced with a not-yet-sent earlier ACK);
//! - a PSN ahead: one PSN-sequence-error NAK for the gap, then silence until the gap fills;
//! - a PSN behind (duplicate): SEND/WRITE re-ACKed with `expected − 1`, READ re-executed,
//!   atomic answered from the saved result without running it again, ATOMIC WRITE and FLUSH
//!   answered again with their zero-length READ RESPONSE ONLY.
//!
//! This module holds the responder's state and the per-PSN dispatch above; the work is split
//! by job: `execute.rs` runs a request at the expected PSN (SEND, WRITE, READ, atomic, into
//! receive WQEs and guest memory), `placement.rs` runs ATOMIC WRITE and FLUSH (IBTA 1.5),
//! `duplicate.rs` answers a request seen before, and
//! `transmit.rs` ([`next_packet`]) turns queued answers into response packets.

mod duplicate;
mod execute;
mod placement;
mod transmit;

pub use transmit::next_packet;

use duplicate::duplicate;
pub(crate) use execute::execute;

use super::{recv_wc, Qp};
use crate::packet::{NakCode, Packet, Syndrome};
use crate::resources::Resources;
use crate::types::{MemKey, Msn, Psn};
use crate::verbs::{AsyncEvent, QpState, RecvWr, WcOpcode, WcStatus};
use std::collections::VecDeque;

/// A multi-packet request message being received.
#[derive(Clone, Debug)]
pub enum InMessage {
    Send {
        wqe: RecvWr,
        offset: u32,
    },
    Write {
        va: u64,
        rkey: MemKey,
        len: u32,
        offset: u32,
    },
}

/// Saved READ/atomic request, for duplicates (the responder resources of IBTA 9.7.5.1.3).
#[derive(Clone, Debug)]
pub enum RdAtomicResource {
    Read {
        psn: Psn,
        npkts: u32,
    },
    Atomic {
        psn: Psn,
        orig: u64,
    },
    /// An ATOMIC WRITE or FLUSH executed at `psn`: a duplicate is answered with the same
    /// zero-length READ RESPONSE ONLY, without executing again.
    Answered {
        psn: Psn,
    },
}

/// Something the responder must still send, in PSN order.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Ack {
        psn: Psn,
        syndrome: u8,
        msn: Msn,
    },
    AtomicAck {
        psn: Psn,
        orig: u64,
        msn: Msn,
    },
    /// READ response packets still to produce.
    Read {
        psn: Psn,
        va: u64,
        rkey: MemKey,
        left: u32,
        first: bool,
        msn: Msn,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Responder {
    /// Expected PSN.
    pub epsn: Psn,
    pub msn: Msn,
    /// A PSN-sequence NAK for the current gap has been sent.
    pub nak_sent: bool,
    pub current: Option<InMessage>,
    pub resources: VecDeque<RdAtomicResource>,
    pub out: VecDeque<Outgoing>,
}

impl Responder {
    pub fn start(&mut self, rq_psn: Psn) {
        self.epsn = rq_psn;
    }

    /// The receive WQE of a SEND being received, if any (flushed on ERR).
    pub fn take_current_recv(&mut self) -> Option<RecvWr> {
        match self.current.take() {
            Some(InMessage::Send { wqe, .. }) => Some(wqe),
            _ => None,
        }
    }

    fn ack(&mut self, psn: Psn) {
        let msn = self.msn;
        // Coalesce: a later ACK makes a queued earlier one redundant.
        if let Some(Outgoing::Ack { syndrome, .. }) = self.out.back() {
            if *syndrome == Syndrome::ACK_UNLIMITED.to_byte() {
                self.out.pop_back();
            }
        }
        self.out.push_back(Outgoing::Ack {
            psn,
            syndrome: Syndrome::ACK_UNLIMITED.to_byte(),
            msn,
        });
    }

    fn nak(&mut self, psn: Psn, syn: Syndrome) {
        let msn = self.msn;
        self.out.push_back(Outgoing::Ack {
            psn,
            syndrome: syn.to_byte(),
            msn,
        });
    }

    fn remember(&mut self, r: RdAtomicResource, max: u8) {
        while self.resources.len() >= max.max(1) as usize {
            self.resources.pop_front();
        }
        self.resources.push_back(r);
    }
}

/// Why a request failed, as the NAK tells the requester (RC; UC drops the message instead).
pub(crate) enum Failure {
    Rnr,
    Nak(NakCode, Option<(RecvWr, WcStatus)>),
}

/// Handles a request packet addressed to this QP (already checked for address and state).
pub fn on_request(qp: &mut Qp, res: &mut Resources, pkt: &Packet) {
    let psn = pkt.bth.psn;
    let d = psn.diff(qp.resp.epsn);
    if d > 0 {
        res.counters.out_of_sequence += 1;
        if !qp.resp.nak_sent {
            qp.resp.nak_sent = true;
            res.counters.seq_naks_sent += 1;
            let e = qp.resp.epsn;
            qp.resp.nak(e, Syndrome::Nak(NakCode::PsnSequenceError));
        }
        return;
    }
    if d < 0 {
        res.counters.duplicate_requests += 1;
        duplicate(qp, res, pkt);
        return;
    }
    qp.resp.nak_sent = false;
    match execute(qp, res, pkt) {
        Ok(()) => {}
        Err(Failure::Rnr) => {
            res.counters.rnr_naks_sent += 1;
            let t = qp.attr.min_rnr_timer;
            qp.resp.nak(psn, Syndrome::RnrNak { timer: t });
            // The rest of the message (and anything behind it) is already on the wire. Those
            // packets are ahead of the expected PSN now; the requester will resend them after
            // its RNR wait, so drop them silently instead of answering with a PSN-sequence
            // NAK, which would make the requester spend a transport retry (and with a small
            // retry_cnt fail the QP) for what is only a missing receive.
            qp.resp.nak_sent = true;
        }
        Err(Failure::Nak(code, recv)) => {
            let qpn = qp.qpn;
            if let Some((wqe, status)) = recv {
                res.complete(
                    qp.recv_cq(),
                    recv_wc(qpn, wqe.wr_id, status, WcOpcode::Recv, 0),
                );
            }
            // Responses to requests executed before this one are still owed to the requester
            // (an atomic ACK, the rest of a READ): ERR must not swallow them.
            let owed = std::mem::take(&mut qp.resp.out);
            qp.enter_error(res);
            qp.resp.out = owed;
            let ev = match code {
                NakCode::RemoteAccessError => AsyncEvent::QpAccessErr(qpn),
                NakCode::InvalidRequest => AsyncEvent::QpReqErr(qpn),
                _ => AsyncEvent::QpFatal(qpn),
            };
            res.raise(ev);
            // The NAK is the last thing this QP says.
            qp.resp.nak(psn, Syndrome::Nak(code));
        }
    }
}

/// Whether the QP in `state` executes requests.
pub fn accepts_requests(state: QpState) -> bool {
    matches!(
        state,
        QpState::Rtr | QpState::Rts | QpState::Sqd | QpState::Sqe
    )
}

/// After a migration: tell the peer where this responder stands — an ACK of the last PSN
/// received and a PSN sequence error NAK carrying the expected PSN — so a peer with requests
/// outstanding completes or resends them at once instead of after its retransmit timer (rxe:
/// 4.096 µs × 2^14 ≈ 67 ms). A peer with nothing outstanding ignores both.
pub fn prompt_peer(qp: &mut Qp, res: &mut Resources) {
    if !accepts_requests(qp.state()) || qp.qp_type() != crate::verbs::QpType::Rc {
        return;
    }
    let e = qp.resp.epsn;
    // An ACK of everything received first: a request that arrived while the requester was
    // stopped had its ACK dropped, and the NAK alone cannot complete it — when nothing is
    // missing, the NAK names the requester's next PSN, which a requester drops as a ghost
    // response (IBA 9.7.5.1.5), so the request would wait for the ACK timeout. Then the
    // NAK, for requests the responder never saw. A requester drops whichever of the two lies
    // outside its window.
    qp.resp.ack(e.sub(1));
    qp.resp.nak_sent = true;
    res.counters.seq_naks_sent += 1;
    qp.resp.nak(e, Syndrome::Nak(NakCode::PsnSequenceError));
}
