//! Executing the request at the expected PSN: reassembling SEND and WRITE messages into
//! receive WQEs and guest memory, checking R_Keys, running atomics and queueing READ
//! streams, and naming the NAK (or RNR) for a request that cannot run. Separate because it is
//! the one place a request changes guest memory or consumes a receive WQE.

use super::{Failure, InMessage, Outgoing, RdAtomicResource};
use crate::mr::KeyError;
use crate::packet::{NakCode, Opcode, Packet};
use crate::qp::{recv_wc, Qp};
use crate::resources::Resources;
use crate::sgl::{check_sgl, sgl_len, sgl_segments};
use crate::types::MemKey;
use crate::verbs::{Access, AsyncEvent, RecvWr, WcOpcode, WcStatus};

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

/// The invalidation a SEND_WITH_INV asks for: an MR of the QP's PD with no window bound to it,
/// or a type 2 window bound on this QP (rxe's `invalidate_rkey`).
fn invalidate_remote(qp: &Qp, res: &mut Resources, key: MemKey) -> Result<(), ()> {
    if crate::mw::is_mw_key(key) {
        return crate::mw::invalidate(&mut res.mws, key, qp.pd(), Some(qp.qpn))
            .then_some(())
            .ok_or(());
    }
    if crate::mw::mr_has_windows(&res.mws, key) {
        return Err(());
    }
    match res.mrs.get_mut(key.index()) {
        Some(mr) if mr.key == key && mr.valid && mr.pd == qp.init.pd => {
            mr.valid = false;
            Ok(())
        }
        _ => Err(()),
    }
}

pub(crate) fn execute(qp: &mut Qp, res: &mut Resources, pkt: &Packet) -> Result<(), Failure> {
    // A UC opcode runs as its RC twin: the transports differ in what follows, not here.
    let op = pkt.bth.opcode.base();
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
    let starts = op.is_first()
        || op == Opcode::RC_READ_REQUEST
        || op.is_atomic()
        || op.is_flush_or_atomic_write();
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
                match invalidate_remote(qp, res, key) {
                    Ok(()) => invalidated = Some(key),
                    Err(()) => {
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
                res.check_rkey(
                    qp.qpn,
                    qp.pd(),
                    reth.rkey,
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
            let mr = res
                .check_rkey(
                    qp.qpn,
                    qp.init.pd,
                    rkey,
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
            res.check_rkey(
                qp.qpn,
                qp.pd(),
                reth.rkey,
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
        let mr = res
            .check_rkey(qp.qpn, qp.pd(), a.rkey, a.va, 8, Access::REMOTE_ATOMIC)
            .map_err(access)?;
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
    } else if op == Opcode::RC_ATOMIC_WRITE && qp.qp_type() == crate::verbs::QpType::Rc {
        return super::placement::atomic_write(qp, res, pkt);
    } else if op == Opcode::RC_FLUSH && qp.qp_type() == crate::verbs::QpType::Rc {
        return super::placement::flush(qp, res, pkt);
    } else {
        return Err(invalid());
    }
    qp.resp.epsn = psn.add(1);
    if pkt.bth.ack_req && qp.qp_type() == crate::verbs::QpType::Rc {
        qp.resp.ack(psn);
    }
    Ok(())
}
