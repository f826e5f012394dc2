//! Go-back-N recovery: rewinding to the oldest unacknowledged PSN, the transport retry budget
//! (`retry_cnt`) and how repeated signs of one loss are counted once, the retransmit and RNR
//! timers, and the resend after a migration. Separate so every rule about when a retry is spent
//! lives in one place.

use super::complete::fail_head;
use crate::qp::{ack_timeout_ns, Qp};
use crate::resources::Resources;
use crate::types::Nanos;
use crate::verbs::{QpState, WcStatus};

/// Go back to the oldest unacknowledged PSN and send again from there.
pub(super) fn rewind(qp: &mut Qp) {
    qp.req.retrying_from = Some(qp.req.una);
    qp.req.next = 0;
    qp.req.next_pkt = 0;
    qp.req.since_ack_req = 0;
}

/// Spends one retry; false when none is left (IBTA: `retry_cnt` retries; rxe differs by
/// treating 7 as infinite — docs/transport.md).
fn spend_retry(qp: &mut Qp) -> bool {
    if qp.req.retry_left == 0 {
        return false;
    }
    qp.req.retry_left -= 1;
    true
}

/// A retry triggered by the peer (NAK, implied NAK, response gap); ignored while a rewind to
/// the same PSN is already under way.
pub(super) fn retry_or_fail(qp: &mut Qp, res: &mut Resources, now: Nanos) {
    if qp.req.retrying_from == Some(qp.req.una) {
        return;
    }
    retry_now(qp, res, now);
}

fn retry_now(qp: &mut Qp, res: &mut Resources, now: Nanos) {
    if spend_retry(qp) {
        rewind(qp);
        qp.req.deadline = ack_timeout_ns(qp.attr.timeout).map(|t| now.saturating_add(t));
    } else {
        fail_head(qp, res, WcStatus::RetryExcErr);
    }
}

/// A response shows that an earlier READ/atomic response was lost: go back to it, unless the
/// requester already went back to that very PSN and has not heard anything newer since (the
/// response is one of a burst that was in flight; the resent request is on its way).
pub(super) fn implied_nak(qp: &mut Qp, res: &mut Resources, now: Nanos) {
    res.counters.implied_naks += 1;
    if qp.req.retrying_from == Some(qp.req.una) {
        return;
    }
    retry_or_fail(qp, res, now);
}

/// Retransmit and RNR timers.
pub fn on_timeout(qp: &mut Qp, res: &mut Resources, now: Nanos) {
    if !matches!(qp.state(), QpState::Rts | QpState::Sqd) {
        qp.req.deadline = None;
        qp.req.rnr_until = None;
        return;
    }
    if let Some(t) = qp.req.rnr_until {
        if t <= now {
            qp.req.rnr_until = None;
        }
    }
    if let Some(t) = qp.req.deadline {
        if t <= now {
            qp.req.deadline = None;
            if qp.req.idle() {
                return;
            }
            res.counters.retry_timeouts += 1;
            retry_now(qp, res, now);
        }
    }
}

/// After a migration: go back to the oldest unacknowledged PSN and send everything again now,
/// rather than wait for the retransmit timer (requests in flight during the blackout were
/// dropped). Spends no retry: nothing failed.
pub fn resume(qp: &mut Qp, now: Nanos) {
    if !matches!(qp.state(), QpState::Rts | QpState::Sqd) || qp.req.idle() {
        return;
    }
    rewind(qp);
    // Not a retry the peer asked for: if the peer is itself still stopped (both ends of a
    // connection migrating), this resend is lost, and the peer's prompt NAK when it resumes
    // must start another one rather than be taken for the echo of this one.
    qp.req.retrying_from = None;
    qp.req.rnr_until = None;
    qp.req.deadline = ack_timeout_ns(qp.attr.timeout).map(|t| now.saturating_add(t));
}
