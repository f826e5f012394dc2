//! The RC responder: executes incoming requests in PSN order and answers with ACKs, NAKs,
//! READ responses and atomic ACKs (IBTA 9.7.4–9.7.5, rxe_resp.c's observable behaviour).
//!
//! What it does with each PSN, as rxe does on the wire:
//! - expected PSN: execute; ACK if AckReq (coalesced with a not-yet-sent earlier ACK);
//! - a PSN ahead: one PSN-sequence-error NAK for the gap, then silence until the gap fills;
//! - a PSN behind (duplicate): SEND/WRITE re-ACKed with `expected − 1`, READ re-executed,
//!   atomic answered from the saved result without running it again.

use super::{recv_wc, Qp};
use crate::mr::KeyError;
use crate::packet::{
    Aeth, AtomicAckEth, Bth, ExtHeaders, NakCode, Opcode, Packet, Payload, Syndrome,
};
use crate::resources::Resources;
use crate::sgl::{check_key, check_sgl, sgl_len, sgl_segments};
use crate::types::{MemKey, Msn, Psn};
use crate::verbs::{Access, AsyncEvent, QpState, RecvWr, WcOpcode, WcStatus};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A multi-packet request message being received.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RdAtomicResource {
    Read { psn: Psn, npkts: u32 },
    Atomic { psn: Psn, orig: u64 },
}

/// Something the responder must still send, in PSN order.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
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

/// Why a request failed, as the NAK tells the requester.
enum Failure {
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

fn invalid() -> Failure {
    Failure::Nak(NakCode::InvalidRequest, None)
}

fn access(_: KeyError) -> Failure {
    Failure::Nak(NakCode::RemoteAccessError, None)
}

/// Takes a receive WQE from the SRQ or the RQ.
fn take_recv(qp: &mut Qp, res: &mut Resources) -> Option<RecvWr> {
    match qp.srq() {
        Some(h) => {
            let srq = res.srqs.get_mut(h.0)?;
            let (wr, fire) = srq.take();
            if fire {
                res.raise(AsyncEvent::SrqLimitReached(h));
            }
            wr
        }
        None => qp.rq.pop_front(),
    }
}

fn execute(qp: &mut Qp, res: &mut Resources, pkt: &Packet) -> Result<(), Failure> {
    let op = pkt.bth.opcode;
    let mtu = qp.mtu();
    let plen = pkt.payload.len() as u32;
    // Opcode sequence: a message in progress takes only its MIDDLE/LAST packets.
    let continues = matches!(
        (&qp.resp.current, op),
        (
            Some(InMessage::Send { .. }),
            Opcode::RC_SEND_MIDDLE
                | Opcode::RC_SEND_LAST
                | Opcode::RC_SEND_LAST_IMM
                | Opcode::RC_SEND_LAST_INV
        ) | (
            Some(InMessage::Write { .. }),
            Opcode::RC_WRITE_MIDDLE | Opcode::RC_WRITE_LAST | Opcode::RC_WRITE_LAST_IMM
        )
    );
    let starts = op.is_first() || op == Opcode::RC_READ_REQUEST || op.is_atomic();
    if !(continues || (qp.resp.current.is_none() && starts)) {
        return Err(invalid());
    }
    // Payload sizes: FIRST/MIDDLE carry exactly one MTU, LAST 1..=MTU, ONLY 0..=MTU.
    if op.is_send() || op.is_write() {
        let ok = match (op.is_first(), op.is_last()) {
            (true, true) => plen <= mtu,
            (false, true) => (1..=mtu).contains(&plen),
            _ => plen == mtu,
        };
        if !ok {
            return Err(invalid());
        }
    }
    let psn = pkt.bth.psn;
    if op.is_send() {
        if op.is_first() {
            let Some(wqe) = take_recv(qp, res) else {
                return Err(Failure::Rnr);
            };
            // Any key failure of the receive WQE (bad key, no local write, SGE outside its MR)
            // is a protection error, as on the send side; a too-short buffer is caught below
            // by the length check and reported as LOC_LEN_ERR.
            if check_sgl(&res.mrs, qp.pd(), &wqe.sgl, Access::LOCAL_WRITE).is_err() {
                return Err(Failure::Nak(
                    NakCode::RemoteOperationalError,
                    Some((wqe, WcStatus::LocProtErr)),
                ));
            }
            qp.resp.current = Some(InMessage::Send { wqe, offset: 0 });
        }
        let pd = qp.pd();
        let Some(InMessage::Send { wqe, offset }) = &mut qp.resp.current else {
            return Err(invalid());
        };
        let off = *offset;
        if off as u64 + plen as u64 > sgl_len(&wqe.sgl) {
            let wqe = qp.resp.take_current_recv().expect("send in progress");
            return Err(Failure::Nak(
                NakCode::InvalidRequest,
                Some((wqe, WcStatus::LocLenErr)),
            ));
        }
        let mut segs = crate::packet::Segments::new();
        let placed = sgl_segments(
            &res.mrs,
            pd,
            &wqe.sgl,
            off as u64,
            plen as u64,
            Access::LOCAL_WRITE,
            &mut segs,
        )
        .is_ok()
            && crate::sgl::scatter(&pkt.payload, &res.mem, &segs).is_ok();
        if !placed {
            let wqe = qp.resp.take_current_recv().expect("send in progress");
            return Err(Failure::Nak(
                NakCode::RemoteOperationalError,
                Some((wqe, WcStatus::LocProtErr)),
            ));
        }
        *offset += plen;
        if op.is_last() {
            let mut invalidated = None;
            if let Some(key) = pkt.ext.ieth {
                match res.mrs.get_mut(key.index()) {
                    Some(mr) if mr.key == key && mr.valid && mr.pd == qp.init.pd => {
                        mr.valid = false;
                        invalidated = Some(key);
                    }
                    _ => {
                        let wqe = qp.resp.take_current_recv().expect("send in progress");
                        return Err(Failure::Nak(
                            NakCode::RemoteOperationalError,
                            Some((wqe, WcStatus::LocQpOpErr)),
                        ));
                    }
                }
            }
            let Some(InMessage::Send { wqe, offset }) = qp.resp.current.take() else {
                return Err(invalid());
            };
            let mut wc = recv_wc(qp.qpn, wqe.wr_id, WcStatus::Success, WcOpcode::Recv, offset);
            wc.imm = pkt.ext.imm;
            wc.invalidated_rkey = invalidated;
            wc.solicited = pkt.bth.se;
            res.complete(qp.recv_cq(), wc);
            qp.resp.msn = qp.resp.msn.next();
        }
    } else if op.is_write() {
        if op.is_first() {
            let Some(reth) = pkt.ext.reth else {
                return Err(invalid());
            };
            if reth.len > res.limits.max_msg_sz {
                return Err(invalid());
            }
            if !qp.attr.qp_access_flags.contains(Access::REMOTE_WRITE) {
                return Err(access(KeyError::Access));
            }
            if reth.len > 0 {
                check_key(
                    &res.mrs,
                    reth.rkey,
                    qp.pd(),
                    reth.va,
                    reth.len as u64,
                    Access::REMOTE_WRITE,
                )
                .map_err(access)?;
            }
            qp.resp.current = Some(InMessage::Write {
                va: reth.va,
                rkey: reth.rkey,
                len: reth.len,
                offset: 0,
            });
        }
        let Some(InMessage::Write {
            va,
            rkey,
            len,
            offset,
        }) = qp.resp.current.clone()
        else {
            return Err(invalid());
        };
        if offset as u64 + plen as u64 > len as u64 || (op.is_last() && offset + plen != len) {
            return Err(invalid());
        }
        // Every check that can fail comes before the receive WQE is taken, so a failure never
        // loses one.
        let mut segs = crate::packet::Segments::new();
        if plen > 0 {
            let dst_va = va + offset as u64;
            let mr = check_key(
                &res.mrs,
                rkey,
                qp.init.pd,
                dst_va,
                plen as u64,
                Access::REMOTE_WRITE,
            )
            .map_err(access)?;
            segs = crate::sgl::mr_segments(mr, dst_va, plen as u64).map_err(access)?;
        }
        let imm_recv = if op == Opcode::RC_WRITE_ONLY_IMM || op == Opcode::RC_WRITE_LAST_IMM {
            // The immediate consumes a receive WQE: make sure there is one before writing.
            let Some(wqe) = take_recv(qp, res) else {
                if op.is_first() {
                    qp.resp.current = None;
                }
                return Err(Failure::Rnr);
            };
            Some(wqe)
        } else {
            None
        };
        if plen > 0 && crate::sgl::scatter(&pkt.payload, &res.mem, &segs).is_err() {
            return Err(Failure::Nak(
                NakCode::RemoteOperationalError,
                imm_recv.map(|w| (w, WcStatus::WrFlushErr)),
            ));
        }
        let Some(InMessage::Write { offset, len, .. }) = &mut qp.resp.current else {
            return Err(invalid());
        };
        *offset += plen;
        if op.is_last() {
            let total = *len;
            qp.resp.current = None;
            if let Some(wqe) = imm_recv {
                let mut wc = recv_wc(
                    qp.qpn,
                    wqe.wr_id,
                    WcStatus::Success,
                    WcOpcode::RecvRdmaWithImm,
                    total,
                );
                wc.imm = pkt.ext.imm;
                wc.solicited = pkt.bth.se;
                res.complete(qp.recv_cq(), wc);
            }
            qp.resp.msn = qp.resp.msn.next();
        }
    } else if op == Opcode::RC_READ_REQUEST {
        let Some(reth) = pkt.ext.reth else {
            return Err(invalid());
        };
        if reth.len > res.limits.max_msg_sz {
            return Err(invalid());
        }
        if !qp.attr.qp_access_flags.contains(Access::REMOTE_READ) {
            return Err(access(KeyError::Access));
        }
        if reth.len > 0 {
            check_key(
                &res.mrs,
                reth.rkey,
                qp.pd(),
                reth.va,
                reth.len as u64,
                Access::REMOTE_READ,
            )
            .map_err(access)?;
        }
        let npkts = reth.len.div_ceil(mtu).max(1);
        qp.resp.msn = qp.resp.msn.next();
        let msn = qp.resp.msn;
        let max = qp.attr.max_dest_rd_atomic;
        qp.resp.remember(RdAtomicResource::Read { psn, npkts }, max);
        qp.resp.out.push_back(Outgoing::Read {
            psn,
            va: reth.va,
            rkey: reth.rkey,
            left: reth.len,
            first: true,
            msn,
        });
        qp.resp.epsn = psn.add(npkts);
        return Ok(());
    } else if op.is_atomic() {
        let Some(a) = pkt.ext.atomic else {
            return Err(invalid());
        };
        if a.va % 8 != 0 {
            return Err(invalid());
        }
        if !qp.attr.qp_access_flags.contains(Access::REMOTE_ATOMIC) {
            return Err(access(KeyError::Access));
        }
        let mr =
            check_key(&res.mrs, a.rkey, qp.pd(), a.va, 8, Access::REMOTE_ATOMIC).map_err(access)?;
        let segs = crate::sgl::mr_segments(mr, a.va, 8).map_err(access)?;
        let [seg] = segs.as_slice() else {
            return Err(invalid());
        };
        let cmp_swap = op == Opcode::RC_CMP_SWAP;
        let orig = res
            .mem
            .atomic_update(seg.gpa, &mut |old| {
                if cmp_swap {
                    if old == a.compare {
                        a.swap_add
                    } else {
                        old
                    }
                } else {
                    old.wrapping_add(a.swap_add)
                }
            })
            .map_err(|_| Failure::Nak(NakCode::RemoteOperationalError, None))?;
        qp.resp.msn = qp.resp.msn.next();
        let msn = qp.resp.msn;
        let max = qp.attr.max_dest_rd_atomic;
        qp.resp
            .remember(RdAtomicResource::Atomic { psn, orig }, max);
        qp.resp
            .out
            .push_back(Outgoing::AtomicAck { psn, orig, msn });
        qp.resp.epsn = psn.add(1);
        return Ok(());
    } else {
        return Err(invalid());
    }
    qp.resp.epsn = psn.add(1);
    if pkt.bth.ack_req {
        qp.resp.ack(psn);
    }
    Ok(())
}

fn duplicate(qp: &mut Qp, res: &mut Resources, pkt: &Packet) {
    let psn = pkt.bth.psn;
    let op = pkt.bth.opcode;
    if op == Opcode::RC_READ_REQUEST {
        let Some(reth) = pkt.ext.reth else { return };
        let npkts = reth.len.div_ceil(qp.mtu()).max(1);
        // It must lie inside a READ this responder executed (the requester resends the tail of
        // a READ it got only part of).
        let known = qp.resp.resources.iter().any(|r| match r {
            RdAtomicResource::Read { psn: p, npkts: n } => {
                psn.diff(*p) >= 0 && psn.add(npkts).diff(p.add(*n)) <= 0
            }
            _ => false,
        });
        let ok = known
            && (reth.len == 0
                || check_key(
                    &res.mrs,
                    reth.rkey,
                    qp.pd(),
                    reth.va,
                    reth.len as u64,
                    Access::REMOTE_READ,
                )
                .is_ok());
        if ok {
            // A stream still queued for this range is stale: the requester asks again from
            // `psn` because it lost part of it. Sending both would only add echoes.
            qp.resp.out.retain(|o| match o {
                Outgoing::Read { psn: p, .. } => !(p.diff(psn) >= 0 && p.diff(psn.add(npkts)) < 0),
                _ => true,
            });
            let msn = qp.resp.msn;
            qp.resp.out.push_back(Outgoing::Read {
                psn,
                va: reth.va,
                rkey: reth.rkey,
                left: reth.len,
                first: true,
                msn,
            });
        }
        return;
    }
    if op.is_atomic() {
        let saved = qp.resp.resources.iter().find_map(|r| match r {
            RdAtomicResource::Atomic { psn: p, orig } if *p == psn => Some(*orig),
            _ => None,
        });
        if let Some(orig) = saved {
            let msn = qp.resp.msn;
            qp.resp
                .out
                .push_back(Outgoing::AtomicAck { psn, orig, msn });
        }
        return;
    }
    let last_good = qp.resp.epsn.sub(1);
    qp.resp.ack(last_good);
}

/// The next response packet, if any.
pub fn next_packet(qp: &mut Qp, res: &mut Resources) -> Option<Packet> {
    let front = qp.resp.out.front_mut()?;
    let dest = qp.attr.dest_qp_num;
    let mtu = qp.attr.path_mtu.bytes();
    let mut ext = ExtHeaders::default();
    let mut payload = Payload::empty();
    let (opcode, psn, done) = match front {
        Outgoing::Ack { psn, syndrome, msn } => {
            ext.aeth = Some(Aeth {
                syndrome: Syndrome::from_byte(*syndrome),
                msn: *msn,
            });
            (Opcode::RC_ACK, *psn, true)
        }
        Outgoing::AtomicAck { psn, orig, msn } => {
            ext.aeth = Some(Aeth {
                syndrome: Syndrome::ACK_UNLIMITED,
                msn: *msn,
            });
            ext.atomic_ack = Some(AtomicAckEth { orig: *orig });
            (Opcode::RC_ATOMIC_ACK, *psn, true)
        }
        Outgoing::Read {
            psn,
            va,
            rkey,
            left,
            first,
            msn,
        } => {
            let n = (*left).min(mtu);
            let last = *left <= mtu;
            let opcode = match (*first, last) {
                (true, true) => Opcode::RC_READ_RESP_ONLY,
                (true, false) => Opcode::RC_READ_RESP_FIRST,
                (false, false) => Opcode::RC_READ_RESP_MIDDLE,
                (false, true) => Opcode::RC_READ_RESP_LAST,
            };
            if *first || last {
                ext.aeth = Some(Aeth {
                    syndrome: Syndrome::ACK_UNLIMITED,
                    msn: *msn,
                });
            }
            if n > 0 {
                // Re-checked per packet: an MR deregistered mid-READ must not leak memory.
                let segs = res.mrs.get(rkey.index()).and_then(|mr| {
                    mr.check(*rkey, qp.init.pd, *va, n as u64, Access::REMOTE_READ)
                        .ok()?;
                    crate::sgl::mr_segments(mr, *va, n as u64).ok()
                });
                match segs {
                    Some(segs) => {
                        payload = Payload::Gather {
                            mem: res.mem.clone(),
                            segs,
                            len: n,
                        };
                    }
                    None => {
                        // The R_Key went away mid-READ (deregistered or invalidated): never send
                        // bytes it no longer grants. The READ fails at this PSN as an access
                        // error, as it would have had the key been bad from the start.
                        let psn = *psn;
                        let qpn = qp.qpn;
                        qp.enter_error(res);
                        res.raise(AsyncEvent::QpAccessErr(qpn));
                        qp.resp.nak(psn, Syndrome::Nak(NakCode::RemoteAccessError));
                        return next_packet(qp, res);
                    }
                }
            }
            let p = *psn;
            *psn = psn.add(1);
            *va += n as u64;
            *left -= n;
            *first = false;
            (opcode, p, last)
        }
    };
    if done {
        qp.resp.out.pop_front();
    }
    let mut bth = Bth::new(opcode, dest, psn);
    bth.pad = ((4 - payload.len() % 4) % 4) as u8;
    Some(Packet {
        src_gid: res.gid,
        dst_gid: qp.attr.ah_attr.dgid,
        src_port: qp.src_port,
        bth,
        ext,
        payload,
    })
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
