//! A request whose PSN is behind the expected one (a duplicate): a SEND or WRITE is re-ACKed,
//! a READ inside one already executed is streamed again, an atomic is answered from its saved
//! result without running twice. Separate because a duplicate never executes anything new,
//! and keeping that apart from `execute.rs` makes the rule easy to check.

use super::{Outgoing, RdAtomicResource};
use crate::packet::{Opcode, Packet};
use crate::qp::Qp;
use crate::resources::Resources;
use crate::verbs::Access;

pub(super) fn duplicate(qp: &mut Qp, res: &mut Resources, pkt: &Packet) {
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
                || res
                    .check_rkey(
                        qp.qpn,
                        qp.pd(),
                        reth.rkey,
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
    if op.is_flush_or_atomic_write() {
        // Only if this responder executed it (rxe: find_resource; otherwise a class D drop).
        let known = qp
            .resp
            .resources
            .iter()
            .any(|r| matches!(r, RdAtomicResource::Answered { psn: p } if *p == psn));
        if known {
            let msn = qp.resp.msn;
            qp.resp
                .out
                .push_back(super::placement::empty_read_response(psn, msn));
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
    qp.resp.ack(reack_psn(qp));
}

/// The PSN a re-ACK of a duplicate SEND or WRITE names: the last request received, unless the
/// last requests were READs, whose answer is their response and never an ACK (rxe's
/// responder re-ACKs with `ack_psn`, which READs do not move). rxe's completer takes an ACK
/// naming a pending READ's last PSN as that READ's completion, without its data (check_psn's
/// COMPST_COMP_ACK); against rping at 5% loss the echo then carried the previous ping's bytes
/// (docs/interop.md). The READs still in the resources are the ones stepped over; one pushed
/// out of them is older than those, so it cannot be among the trailing ones.
fn reack_psn(qp: &Qp) -> crate::types::Psn {
    let mut psn = qp.resp.epsn.sub(1);
    for _ in 0..qp.resp.resources.len() {
        let before = qp.resp.resources.iter().rev().find_map(|r| match r {
            RdAtomicResource::Read { psn: p, npkts: n } if p.add(n.saturating_sub(1)) == psn => {
                Some(p.sub(1))
            }
            _ => None,
        });
        match before {
            Some(p) => psn = p,
            None => break,
        }
    }
    psn
}
