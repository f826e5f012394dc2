//! A VF's sans-I/O transport surface: [`Vf::handle_packet`] (checks and dispatch to a QP's
//! requester, responder or UD side), [`Vf::poll_transmit`] (round-robin over ready QPs),
//! [`Vf::poll_timeout`] and [`Vf::handle_timeout`] (the timer heap), and [`Vf::resume`] after a
//! migration. Separate from the verbs commands because this is the per-packet path, driven by
//! the fabric and the clock rather than by the guest.

use super::Vf;
use crate::packet::Packet;
use crate::qp::{requester, responder, uc, ud};
use crate::types::Nanos;
use crate::verbs::{AsyncEvent, QpType};
use std::cmp::Reverse;

impl Vf {
    // ---- sans-I/O transport -------------------------------------------------------------

    pub(crate) fn schedule(&mut self, idx: u32) {
        if let Some(qp) = self.qps.get_mut(idx) {
            if !qp.scheduled {
                qp.scheduled = true;
                self.ready.push_back(idx);
            }
            let d = qp.next_deadline();
            if let Some(d) = d {
                if qp.timer_entry.is_none_or(|t| d < t) {
                    qp.timer_entry = Some(d);
                    self.timers.push(Reverse((d, idx)));
                }
            }
        }
    }

    /// Feeds one received packet to the VF.
    pub fn handle_packet(&mut self, now: Nanos, pkt: &Packet) {
        let c = &mut self.res.counters;
        c.rx_packets += 1;
        c.rx_bytes += pkt.transport_len() as u64;
        if !pkt.is_well_formed()
            || pkt.dst_gid != self.identity.gid
            || pkt.bth.pkey & 0x7fff != 0x7fff
        {
            c.rx_dropped += 1;
            return;
        }
        let idx = pkt.bth.dest_qp.0;
        let Some(qp) = self.qps.get_mut(idx) else {
            c.rx_dropped += 1;
            return;
        };
        let op = pkt.bth.opcode;
        match qp.qp_type() {
            QpType::Rc => {
                // rxe's check_addr: the packet must come from the QP's peer.
                if !op.is_rc() || pkt.src_gid != qp.attr.ah_attr.dgid {
                    c.rx_dropped += 1;
                    return;
                }
                if op.is_response() {
                    requester::on_response(qp, &mut self.res, pkt, now);
                } else if responder::accepts_requests(qp.state()) {
                    responder::on_request(qp, &mut self.res, pkt);
                } else {
                    c.rx_dropped += 1;
                    return;
                }
            }
            QpType::Uc => {
                // No responses exist in UC: every packet is a request from the QP's peer.
                if !op.is_uc() || pkt.src_gid != qp.attr.ah_attr.dgid {
                    c.rx_dropped += 1;
                    return;
                }
                if responder::accepts_requests(qp.state()) {
                    uc::on_request(qp, &mut self.res, pkt);
                } else {
                    c.rx_dropped += 1;
                    return;
                }
            }
            QpType::Ud | QpType::Gsi => {
                if !op.is_ud() {
                    c.rx_dropped += 1;
                    return;
                }
                ud::on_packet(qp, &mut self.res, pkt);
            }
        }
        self.schedule(idx);
    }

    /// The next packet to put on the wire, round-robin over QPs with something to send.
    pub fn poll_transmit(&mut self, now: Nanos) -> Option<Packet> {
        while let Some(idx) = self.ready.pop_front() {
            let Some(qp) = self.qps.get_mut(idx) else {
                continue;
            };
            qp.scheduled = false;
            if let Some(pkt) = qp.next_packet(&mut self.res, now) {
                self.res.counters.tx_packets += 1;
                self.res.counters.tx_bytes += pkt.transport_len() as u64;
                self.schedule(idx);
                return Some(pkt);
            }
            // Nothing now; timers may still be armed (RNR wait, retransmit).
            let d = qp.next_deadline();
            if let Some(d) = d {
                if qp.timer_entry.is_none_or(|t| d < t) {
                    qp.timer_entry = Some(d);
                    self.timers.push(Reverse((d, idx)));
                }
            }
        }
        None
    }

    /// The earliest moment [`Vf::handle_timeout`] has work (may be early; never late).
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Nanos) {
        let mut fired = Vec::new();
        while let Some(Reverse((t, idx))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(qp) = self.qps.get_mut(idx) else {
                continue;
            };
            if qp.timer_entry != Some(t) {
                continue;
            }
            qp.timer_entry = None;
            qp.on_timeout(&mut self.res, now);
            fired.push(idx);
        }
        // Re-armed only after the expired ones are done: a QP whose state leaves its deadline
        // at or before `now` (a hostile checkpoint) fires once per call, not forever.
        for idx in fired {
            self.schedule(idx);
        }
    }

    /// Resumes after a migration (or any blackout): every RC requester resends what is
    /// unacknowledged, every RC responder prompts its peer to resend from its expected PSN,
    /// and the port reports ACTIVE. The fabric announces the VF's new location separately
    /// (gratuitous ARP, switch table).
    pub fn resume(&mut self, now: Nanos) {
        let qpns: Vec<u32> = self.qps.iter().map(|(i, _)| i).collect();
        for n in qpns {
            if let Some(qp) = self.qps.get_mut(n) {
                if qp.qp_type() == QpType::Rc {
                    requester::resume(qp, now);
                    responder::prompt_peer(qp, &mut self.res);
                }
            }
            self.schedule(n);
        }
        self.res.raise(AsyncEvent::PortActive);
    }

    /// Whether any QP has something to transmit right now.
    pub fn wants_transmit(&self) -> bool {
        !self.ready.is_empty()
    }
}
