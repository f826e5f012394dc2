//! The RC requester: send WQEs → request packets, and the completer that retires them from
//! ACKs, NAKs, READ responses and atomic ACKs (IBTA 9.7.5–9.7.6, rxe's req/comp split).
//!
//! Go-back-N: on a timeout, a PSN-sequence NAK, an RNR NAK or an implied NAK the requester
//! rewinds to the oldest unacknowledged PSN and resends from there, re-reading guest memory.

use super::{ack_timeout_ns, rnr_delay_ns, Qp};
use crate::mr::KeyError;
use crate::packet::{AtomicEth, Bth, ExtHeaders, NakCode, Opcode, Packet, Payload, Reth, Syndrome};
use crate::resources::Resources;
use crate::sgl::{check_sgl, sgl_len, sgl_segments};
use crate::types::{MemKey, Nanos, Psn, Qpn};
use crate::verbs::{Access, QpState, SendFlags, SendOp, UdDest, WcStatus, WorkCompletion};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// rxe: stop sending new PSNs while this many are unacknowledged.
pub const MAX_UNACKED_PSNS: i32 = 128;
/// rxe: set AckReq at least every this many packets.
pub const MAX_PKT_PER_ACK: u32 = 64;

/// A posted send WQE with its transport progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
        !matches!(self.op, SendOp::LocalInv { .. })
    }
}

/// Requester state of one RC QP.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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
    #[serde(default)]
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

fn npkts(op: &SendOp, len: u32, mtu: u32) -> u32 {
    match op {
        SendOp::LocalInv { .. } => 0,
        SendOp::CmpSwap { .. } | SendOp::FetchAdd { .. } => 1,
        _ => len.div_ceil(mtu).max(1),
    }
}

/// A local SGE the key does not cover is a protection error, whatever the reason (bad key,
/// missing access, or a range outside the region): IBTA 10.7.2.2 / C10-17 name the out-of-range
/// case a protection violation, and LOC_LEN_ERR is reserved for message-length mismatches
/// (a receive buffer too small, an atomic that is not 8 bytes). Mapping `Bounds` to
/// LOC_LEN_ERR made an SGE running past its MR look like a length error.
fn key_status(_: KeyError) -> WcStatus {
    WcStatus::LocProtErr
}

/// Checks a WQE's local buffers before its first packet, as a NIC does when it fetches it.
fn validate_local(qp: &Qp, res: &Resources, w: &SendWqe) -> Result<(), WcStatus> {
    if w.inline.is_some() {
        return Ok(());
    }
    match w.op {
        SendOp::Read { .. } => {
            check_sgl(&res.mrs, qp.pd(), &w.sgl, Access::LOCAL_WRITE).map_err(key_status)
        }
        SendOp::CmpSwap { remote_addr, .. } | SendOp::FetchAdd { remote_addr, .. } => {
            if w.len != 8 || remote_addr % 8 != 0 {
                return Err(WcStatus::LocLenErr);
            }
            check_sgl(&res.mrs, qp.pd(), &w.sgl, Access::LOCAL_WRITE).map_err(key_status)
        }
        SendOp::LocalInv { .. } => Ok(()),
        _ => check_sgl(&res.mrs, qp.pd(), &w.sgl, Access::empty()).map_err(key_status),
    }
}

/// The payload of bytes `[off, off + len)` of a WQE's data.
fn gather(qp: &Qp, res: &Resources, w: &SendWqe, off: u32, len: u32) -> Result<Payload, WcStatus> {
    if let Some(data) = &w.inline {
        return Ok(Payload::Bytes(
            data[off as usize..(off + len) as usize].to_vec(),
        ));
    }
    let mut segs = crate::packet::Segments::new();
    sgl_segments(
        &res.mrs,
        qp.pd(),
        &w.sgl,
        off as u64,
        len as u64,
        Access::empty(),
        &mut segs,
    )
    .map_err(key_status)?;
    Ok(Payload::Gather {
        mem: res.mem.clone(),
        segs,
        len,
    })
}

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
            if let SendOp::LocalInv { key } = w.op {
                let status = local_invalidate(qp, res, key);
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

fn build_request(
    qp: &mut Qp,
    res: &Resources,
    idx: usize,
    pkt_idx: u32,
    psn: Psn,
    mtu: u32,
) -> Result<Packet, WcStatus> {
    let w = &qp.req.sq[idx];
    let dest = qp.attr.dest_qp_num;
    let mut ext = ExtHeaders::default();
    let mut payload = Payload::empty();
    let first = pkt_idx == 0;
    let last = pkt_idx + 1 >= w.npkts;
    let only = first && last;
    let opcode = match w.op {
        SendOp::Send | SendOp::SendWithImm { .. } | SendOp::SendWithInv { .. } => {
            let off = pkt_idx * mtu;
            let len = (w.len - off).min(mtu);
            payload = gather(qp, res, w, off, len)?;
            match (only, first, last, w.op) {
                (true, _, _, SendOp::Send) => Opcode::RC_SEND_ONLY,
                (true, _, _, SendOp::SendWithImm { .. }) => Opcode::RC_SEND_ONLY_IMM,
                (true, _, _, _) => Opcode::RC_SEND_ONLY_INV,
                (_, true, _, _) => Opcode::RC_SEND_FIRST,
                (_, _, false, _) => Opcode::RC_SEND_MIDDLE,
                (_, _, true, SendOp::Send) => Opcode::RC_SEND_LAST,
                (_, _, true, SendOp::SendWithImm { .. }) => Opcode::RC_SEND_LAST_IMM,
                _ => Opcode::RC_SEND_LAST_INV,
            }
        }
        SendOp::Write { remote_addr, rkey }
        | SendOp::WriteWithImm {
            remote_addr, rkey, ..
        } => {
            let off = pkt_idx * mtu;
            let len = (w.len - off).min(mtu);
            payload = gather(qp, res, w, off, len)?;
            if first {
                ext.reth = Some(Reth {
                    va: remote_addr,
                    rkey,
                    len: w.len,
                });
            }
            let imm = matches!(w.op, SendOp::WriteWithImm { .. });
            match (only, first, last, imm) {
                (true, _, _, false) => Opcode::RC_WRITE_ONLY,
                (true, _, _, true) => Opcode::RC_WRITE_ONLY_IMM,
                (_, true, _, _) => Opcode::RC_WRITE_FIRST,
                (_, _, false, _) => Opcode::RC_WRITE_MIDDLE,
                (_, _, true, false) => Opcode::RC_WRITE_LAST,
                _ => Opcode::RC_WRITE_LAST_IMM,
            }
        }
        SendOp::Read { remote_addr, rkey } => {
            let done = (w.resp_pkts * mtu).min(w.len);
            ext.reth = Some(Reth {
                va: remote_addr.wrapping_add(done as u64),
                rkey,
                len: w.len - done,
            });
            Opcode::RC_READ_REQUEST
        }
        SendOp::CmpSwap {
            remote_addr,
            rkey,
            compare,
            swap,
        } => {
            ext.atomic = Some(AtomicEth {
                va: remote_addr,
                rkey,
                swap_add: swap,
                compare,
            });
            Opcode::RC_CMP_SWAP
        }
        SendOp::FetchAdd {
            remote_addr,
            rkey,
            add,
        } => {
            ext.atomic = Some(AtomicEth {
                va: remote_addr,
                rkey,
                swap_add: add,
                compare: 0,
            });
            Opcode::RC_FETCH_ADD
        }
        SendOp::LocalInv { .. } => return Err(WcStatus::LocQpOpErr),
    };
    if last {
        match w.op {
            SendOp::SendWithImm { imm } | SendOp::WriteWithImm { imm, .. } => ext.imm = Some(imm),
            SendOp::SendWithInv { rkey } => ext.ieth = Some(rkey),
            _ => {}
        }
    }
    let mut bth = Bth::new(opcode, dest, psn);
    bth.pkey = Bth::DEFAULT_PKEY;
    bth.se = last
        && w.flags.contains(SendFlags::SOLICITED)
        && matches!(
            w.op,
            SendOp::Send
                | SendOp::SendWithImm { .. }
                | SendOp::SendWithInv { .. }
                | SendOp::WriteWithImm { .. }
        );
    let ack_req = last
        || opcode.is_atomic()
        || opcode == Opcode::RC_READ_REQUEST
        || qp.req.since_ack_req + 1 >= MAX_PKT_PER_ACK;
    bth.ack_req = ack_req;
    bth.pad = ((4 - payload.len() % 4) % 4) as u8;
    if ack_req {
        qp.req.since_ack_req = 0;
    } else {
        qp.req.since_ack_req += 1;
    }
    Ok(Packet {
        src_gid: res.gid,
        dst_gid: qp.attr.ah_attr.dgid,
        src_port: qp.src_port,
        bth,
        ext,
        payload,
    })
}

fn local_invalidate(qp: &Qp, res: &mut Resources, key: MemKey) -> WcStatus {
    match res.mrs.get_mut(key.index()) {
        Some(mr) if mr.key == key && mr.pd == qp.pd() && mr.valid => {
            mr.valid = false;
            WcStatus::Success
        }
        _ => WcStatus::LocProtErr,
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

/// Go back to the oldest unacknowledged PSN and send again from there.
fn rewind(qp: &mut Qp) {
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

/// Fails the oldest unfinished WQE with `status` and moves the QP to ERR.
fn fail_head(qp: &mut Qp, res: &mut Resources, status: WcStatus) {
    if let Some(w) = qp.req.sq.iter_mut().find(|w| w.done.is_none()) {
        w.done = Some(status);
    }
    complete_in_order(qp, res);
    qp.enter_error(res);
}

/// A NAK error names the request at PSN `p`: that WQE gets `status`. An earlier READ or atomic
/// still missing its response cannot be finished any more (the responder is now in ERR and will
/// not answer a retry), so it is flushed ahead of it, keeping completions in order.
fn fail_at(qp: &mut Qp, res: &mut Resources, p: Psn, status: WcStatus) {
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

/// A retry triggered by the peer (NAK, implied NAK, response gap); ignored while a rewind to
/// the same PSN is already under way.
fn retry_or_fail(qp: &mut Qp, res: &mut Resources, now: Nanos) {
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
fn implied_nak(qp: &mut Qp, res: &mut Resources, now: Nanos) {
    res.counters.implied_naks += 1;
    if qp.req.retrying_from == Some(qp.req.una) {
        return;
    }
    retry_or_fail(qp, res, now);
}

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
    let (first_psn, resp_pkts, len, is_read) = {
        let w = &qp.req.sq[idx];
        (
            w.first_psn,
            w.resp_pkts,
            w.len,
            matches!(w.op, SendOp::Read { .. }),
        )
    };
    let expected = first_psn.add(resp_pkts);
    let d = p.diff(expected);
    if d < 0 || !is_read {
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
    let mtu = qp.mtu();
    let op = pkt.bth.opcode;
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
    let len64 = if inline {
        wr.inline_data.len() as u64
    } else {
        sgl_len(&wr.sgl)
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
