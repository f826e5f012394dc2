//! The RC requester: send WQEs → request packets, and the completer that retires them from
//! ACKs, NAKs, READ responses and atomic ACKs (IBTA 9.7.5–9.7.6, rxe's req/comp split).
//!
//! Go-back-N: on a timeout, a PSN-sequence NAK, an RNR NAK or an implied NAK the requester
//! rewinds to the oldest unacknowledged PSN and resends from there, re-reading guest memory.
//!
//! This module holds the requester's state and the post-time checks that make a WQE; the work
//! on that state is split by job, one file per step of a WQE's life:
//! - `transmit.rs` ([`next_packet`]): what may go on the wire next (fence, READ/atomic limit,
//!   PSN window) and PSN assignment;
//! - `build.rs`: segmentation, local buffer checks and gathering, request headers;
//! - `response.rs` ([`on_response`]): ACKs, NAKs, READ responses and atomic ACKs into progress;
//! - `retry.rs` ([`on_timeout`], [`resume`]): rewinds, retry and RNR budgets, timers, the resend
//!   after a migration;
//! - `complete.rs` ([`complete_in_order`]): finished WQEs into completions, in order, and the
//!   SQD drained event.

mod build;
mod complete;
mod response;
mod retry;
mod transmit;

pub(crate) use build::{build_request, npkts, validate_local};
pub use complete::{complete_in_order, notify_drained, send_wc};
pub use response::on_response;
pub use retry::{on_timeout, resume};
pub use transmit::next_packet;
pub(crate) use transmit::run_local;

use super::Qp;
use crate::sgl::sgl_len;
use crate::types::{Nanos, Psn};
use crate::verbs::{SendFlags, SendOp, UdDest, WcStatus};
use std::collections::VecDeque;

/// rxe: stop sending new PSNs while this many are unacknowledged.
pub const MAX_UNACKED_PSNS: i32 = 128;
/// rxe: set AckReq at least every this many packets.
pub const MAX_PKT_PER_ACK: u32 = 64;

/// A posted send WQE with its transport progress.
#[derive(Clone, Debug)]
pub struct SendWqe {
    pub wr_id: u64,
    pub op: SendOp,
    pub flags: SendFlags,
    pub signaled: bool,
    pub sgl: Vec<crate::verbs::Sge>,
    /// Inline data, copied at post time.
    pub inline: Option<Vec<u8>>,
    pub len: u32,
    pub ud: Option<UdDest>,
    /// PSNs assigned (first transmission began).
    pub started: bool,
    pub first_psn: Psn,
    /// PSNs this WQE consumes (READ: one per response packet).
    pub npkts: u32,
    /// READ/atomic response packets received in order.
    pub resp_pkts: u32,
    /// Finished with this status; completed in order once every earlier WQE is.
    pub done: Option<WcStatus>,
}

impl SendWqe {
    pub fn last_psn(&self) -> Psn {
        self.first_psn.add(self.npkts.saturating_sub(1))
    }

    fn has_psns(&self) -> bool {
        !self.op.is_local()
    }
}

/// Requester state of one RC QP.
#[derive(Clone, Debug, Default)]
pub struct Requester {
    pub sq: VecDeque<SendWqe>,
    /// Index in `sq` of the WQE to transmit next, and its next packet.
    pub next: usize,
    pub next_pkt: u32,
    /// Next new PSN to assign.
    pub psn: Psn,
    /// Oldest unacknowledged PSN.
    pub una: Psn,
    /// One past the highest PSN ever transmitted (tells retransmissions apart).
    pub sent_hw: Psn,
    pub retry_left: u8,
    pub rnr_left: u8,
    /// Retransmit timer.
    pub deadline: Option<Nanos>,
    /// Waiting out an RNR NAK until then.
    pub rnr_until: Option<Nanos>,
    pub since_ack_req: u32,
    /// A WQE failed locally: send nothing more until it is completed (and the QP errors).
    pub halted: bool,
    /// SQD: the drained event was raised.
    pub drained_notified: bool,
    /// The PSN the requester last went back to (timeout, NAK or implied NAK), while it has not
    /// advanced past it. Responses that were already in flight when it went back (the rest of
    /// a READ whose first response was lost, ACKs beyond an unanswered READ) each look like
    /// another implied NAK for the same PSN; they must not cost one retry apiece.
    pub retrying_from: Option<Psn>,
}

impl Requester {
    /// Start of a new connection at `sq_psn` (RTR→RTS).
    pub fn start(&mut self, sq_psn: Psn, retry_cnt: u8, rnr_retry: u8) {
        self.psn = sq_psn;
        self.una = sq_psn;
        self.sent_hw = sq_psn;
        self.retry_left = retry_cnt;
        self.rnr_left = rnr_retry;
    }

    pub fn reset_progress(&mut self) {
        self.next = 0;
        self.next_pkt = 0;
        self.deadline = None;
        self.rnr_until = None;
        self.halted = false;
        self.retrying_from = None;
    }

    /// Nothing sent is waiting for an ACK or a response.
    pub fn idle(&self) -> bool {
        self.una == self.psn
    }
}

/// Post-time checks of a send WR on an RC QP and its queue entry.
pub fn make_wqe(
    qp: &Qp,
    limits_msg: u32,
    wr: &crate::verbs::SendWr,
) -> Result<SendWqe, crate::error::VerbsError> {
    use crate::error::VerbsError as E;
    let cap = qp.attr.cap;
    if wr.sgl.len() as u32 > cap.max_send_sge {
        return Err(E::Invalid("too many SGEs"));
    }
    let inline = wr.flags.contains(SendFlags::INLINE);
    if inline {
        if wr.inline_data.len() as u32 > cap.max_inline_data {
            return Err(E::Invalid("inline data larger than max_inline_data"));
        }
        if !wr.op.is_outbound_data() {
            return Err(E::Invalid("inline data only for SEND and RDMA WRITE"));
        }
    }
    let len64 = match wr.op {
        // ATOMIC WRITE carries its 8 bytes in the WR and FLUSH moves no data: neither has
        // local buffers (rxe's WR_ATOMIC_WRITE_MASK / WR_FLUSH_MASK take no SGEs).
        SendOp::AtomicWrite { .. } | SendOp::Flush { .. } if !wr.sgl.is_empty() => {
            return Err(E::Invalid(
                "ATOMIC WRITE and FLUSH take no scatter/gather list",
            ));
        }
        SendOp::AtomicWrite { .. } => 8,
        SendOp::Flush { len, .. } => len as u64,
        _ if inline => wr.inline_data.len() as u64,
        _ => sgl_len(&wr.sgl),
    };
    if len64 > limits_msg as u64 {
        return Err(E::Invalid("message larger than max_msg_sz"));
    }
    Ok(SendWqe {
        wr_id: wr.wr_id,
        op: wr.op,
        flags: wr.flags,
        signaled: wr.flags.contains(SendFlags::SIGNALED),
        sgl: if inline { Vec::new() } else { wr.sgl.clone() },
        inline: inline.then(|| wr.inline_data.clone()),
        len: len64 as u32,
        ud: wr.ud,
        started: false,
        first_psn: Psn(0),
        npkts: 0,
        resp_pkts: 0,
        done: None,
    })
}
