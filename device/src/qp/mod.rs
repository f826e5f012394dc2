//! Queue pairs: attributes, the state machine, work queues, and the RC/UC/UD transport.
//!
//! A QP is split the way rxe and quinn split a connection: the [`requester`] turns send WQEs
//! into packets and completes them from ACKs/responses, the [`responder`] executes incoming
//! requests and produces ACKs/NAKs/responses, [`uc`] runs both without acknowledgements and
//! [`ud`] is the datagram service. None of them
//! touches a clock or a socket: time comes in as `now`, packets leave through `next_packet`.

pub mod requester;
pub mod responder;
pub mod state;
pub mod uc;
pub mod ud;

use crate::resources::Resources;
use crate::types::{CqHandle, Nanos, PdHandle, Psn, Qpn, SrqHandle};
use crate::verbs::{
    AsyncEvent, QpAttr, QpInitAttr, QpState, QpType, RecvWr, WcOpcode, WcStatus, WorkCompletion,
};
use requester::Requester;
use responder::Responder;
use std::collections::VecDeque;

/// 4.096 µs × 2^timeout (IBTA 9.7.6.1.3), in nanoseconds; `None` when the timer is disabled.
pub fn ack_timeout_ns(timeout: u8) -> Option<u64> {
    if timeout == 0 {
        None
    } else {
        Some(4096u64 << timeout.min(31))
    }
}

/// RNR NAK timer codes (IBTA table 45), in nanoseconds.
pub fn rnr_delay_ns(code: u8) -> u64 {
    const US_X100: [u64; 32] = [
        65536, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
        1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152,
    ];
    US_X100[(code & 0x1f) as usize] * 10_000
}

/// A queue pair.
#[derive(Clone, Debug)]
pub struct Qp {
    pub qpn: Qpn,
    pub init: QpInitAttr,
    pub attr: QpAttr,
    /// Receive queue (unused when the QP has an SRQ).
    pub rq: VecDeque<RecvWr>,
    pub req: Requester,
    pub resp: Responder,
    /// RoCEv2 UDP source port for this QP's packets (rxe's flow-label formula).
    pub src_port: u16,
    /// In the VF's transmit round-robin.
    pub scheduled: bool,
    /// The deadline this QP has in the VF's timer heap.
    pub timer_entry: Option<Nanos>,
}

impl Qp {
    pub fn new(qpn: Qpn, init: QpInitAttr) -> Qp {
        let mut attr = QpAttr {
            cap: init.cap,
            ..QpAttr::default()
        };
        attr.qp_state = QpState::Reset;
        Qp {
            qpn,
            init,
            attr,
            rq: VecDeque::new(),
            req: Requester::default(),
            resp: Responder::default(),
            src_port: src_port(qpn, Qpn(0), 0),
            scheduled: false,
            timer_entry: None,
        }
    }

    pub fn state(&self) -> QpState {
        self.attr.qp_state
    }

    pub fn qp_type(&self) -> QpType {
        self.init.qp_type
    }

    pub fn pd(&self) -> PdHandle {
        self.init.pd
    }

    pub fn send_cq(&self) -> CqHandle {
        self.init.send_cq
    }

    pub fn recv_cq(&self) -> CqHandle {
        self.init.recv_cq
    }

    pub fn srq(&self) -> Option<SrqHandle> {
        self.init.srq
    }

    /// Path MTU in bytes for RC; the port MTU for UD.
    pub fn mtu(&self) -> u32 {
        self.attr.path_mtu.bytes()
    }

    /// The earliest moment this QP wants `on_timeout`.
    pub fn next_deadline(&self) -> Option<Nanos> {
        match (self.req.deadline, self.req.rnr_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies timers that have expired.
    pub fn on_timeout(&mut self, res: &mut Resources, now: Nanos) {
        if self.qp_type() == QpType::Rc {
            requester::on_timeout(self, res, now);
        } else {
            // UC and UD arm no timer; a deadline here means nothing and must not fire again.
            self.req.deadline = None;
            self.req.rnr_until = None;
        }
    }

    /// Produces the next packet this QP wants to send, responses first.
    pub fn next_packet(
        &mut self,
        res: &mut Resources,
        now: Nanos,
    ) -> Option<crate::packet::Packet> {
        match self.qp_type() {
            QpType::Rc => {
                if let Some(p) = responder::next_packet(self, res) {
                    return Some(p);
                }
                requester::next_packet(self, res, now)
            }
            QpType::Ud | QpType::Gsi => ud::next_packet(self, res),
            QpType::Uc => uc::next_packet(self, res),
        }
    }

    /// Moves the QP to ERR: every outstanding WQE completes with WR_FLUSH_ERR.
    pub fn enter_error(&mut self, res: &mut Resources) {
        if self.attr.qp_state == QpState::Err {
            return;
        }
        self.attr.qp_state = QpState::Err;
        self.flush(res);
        // Nothing more is owed to the peer; a responder error re-queues its NAK after this.
        self.resp.out.clear();
        if self.srq().is_some() {
            res.raise(AsyncEvent::QpLastWqeReached(self.qpn));
        }
    }

    /// Completes every queued WQE with WR_FLUSH_ERR (those already finished keep their status).
    pub fn flush(&mut self, res: &mut Resources) {
        self.flush_send(res);
        self.flush_recv(res);
    }

    /// Completes every queued receive WQE (and one a SEND was filling) with WR_FLUSH_ERR.
    pub fn flush_recv(&mut self, res: &mut Resources) {
        let qpn = self.qpn;
        let recv_cq = self.recv_cq();
        let mut recvs: Vec<RecvWr> = self.rq.drain(..).collect();
        if let Some(w) = self.resp.take_current_recv() {
            recvs.insert(0, w);
        }
        for w in recvs {
            res.complete(
                recv_cq,
                recv_wc(qpn, w.wr_id, WcStatus::WrFlushErr, WcOpcode::Recv, 0),
            );
        }
    }

    /// Completes every queued send WQE with WR_FLUSH_ERR (SQE keeps the receive side going).
    pub fn flush_send(&mut self, res: &mut Resources) {
        let qpn = self.qpn;
        let send_cq = self.send_cq();
        for w in self.req.sq.drain(..) {
            let status = w.done.unwrap_or(WcStatus::WrFlushErr);
            // Successful unsignaled WQEs produce nothing; everything else does.
            if status == WcStatus::Success && !(w.signaled || self.init.sq_sig_all) {
                continue;
            }
            res.complete(send_cq, requester::send_wc(qpn, &w, status));
        }
        self.req.reset_progress();
    }

    /// Back to RESET: queues emptied without completions, transport state forgotten.
    pub fn reset(&mut self) {
        self.rq.clear();
        self.req = Requester::default();
        self.resp = Responder::default();
        self.attr.qp_state = QpState::Reset;
    }
}

/// A receive completion with the fields every receive shares.
pub fn recv_wc(
    qpn: Qpn,
    wr_id: u64,
    status: WcStatus,
    opcode: WcOpcode,
    byte_len: u32,
) -> WorkCompletion {
    WorkCompletion {
        wr_id,
        status,
        opcode,
        qpn,
        byte_len,
        imm: None,
        invalidated_rkey: None,
        src_qp: Qpn(0),
        src_gid: Default::default(),
        grh: false,
        solicited: false,
    }
}

/// rxe's RoCEv2 UDP source port: a symmetric hash of both QPNs into 0xC000..=0xFFFF
/// (`rdma_get_udp_sport`), so both ends of a connection use the same port.
pub fn src_port(local: Qpn, remote: Qpn, flow_label: u32) -> u16 {
    let mut fl = flow_label & 0xfffff;
    if fl == 0 {
        let mut v = local.0 as u64 * remote.0 as u64;
        v ^= v >> 20;
        v ^= v >> 40;
        fl = (v & 0xfffff) as u32;
    }
    (0xc000 | ((fl & 0x3fff) ^ ((fl & 0xfc000) >> 14))) as u16
}

/// PSN window helper: whether `psn` lies in `[lo, hi)`.
pub fn psn_in(psn: Psn, lo: Psn, hi: Psn) -> bool {
    psn.diff(lo) >= 0 && psn.diff(hi) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn src_port_matches_rxe_captures() {
        assert_eq!(src_port(Qpn(0x11), Qpn(0x11), 0), 49441);
        assert_eq!(src_port(Qpn(0x15), Qpn(0x16), 0), 49614);
        assert_eq!(src_port(Qpn(0x16), Qpn(0x15), 0), 49614);
        assert_eq!(src_port(Qpn(0x11), Qpn(0x54c2b6), 0), 61007);
        assert_eq!(src_port(Qpn(0x11), Qpn(0xc4d024), 0), 53938);
    }

    #[test]
    fn timers_follow_ibta_tables() {
        assert_eq!(ack_timeout_ns(14), Some(67_108_864));
        assert_eq!(ack_timeout_ns(0), None);
        assert_eq!(rnr_delay_ns(12), 640_000);
        assert_eq!(rnr_delay_ns(0), 655_360_000);
        assert_eq!(rnr_delay_ns(1), 10_000);
    }
}
