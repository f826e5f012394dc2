//! ATOMIC WRITE and FLUSH, IBTA 1.5's memory placement extensions, at the expected PSN. Both
//! are single-packet requests that take a responder resource like a READ and are answered by
//! a zero-length READ RESPONSE ONLY (rxe's `send_read_response_ack`); a duplicate gets the
//! same answer again without executing twice. Separate from `execute.rs` because neither
//! touches a receive WQE or a multi-packet message, and their checks follow rxe's order
//! (QP access, responder resources, length, R_Key, alignment) rather than WRITE's.

use super::{Failure, Outgoing, RdAtomicResource};
use crate::packet::{Feth, NakCode, Packet};
use crate::qp::Qp;
use crate::resources::Resources;
use crate::sgl::check_key;
use crate::types::MemKey;
use crate::verbs::Access;

fn invalid() -> Failure {
    Failure::Nak(NakCode::InvalidRequest, None)
}

fn access() -> Failure {
    Failure::Nak(NakCode::RemoteAccessError, None)
}

/// The QP must accept requests that need responder resources at all (rxe:
/// `RESPST_ERR_TOO_MANY_RDMA_ATM_REQ` when `max_dest_rd_atomic` is 0).
fn check_resources(qp: &Qp) -> Result<(), Failure> {
    if qp.attr.max_dest_rd_atomic == 0 {
        return Err(invalid());
    }
    Ok(())
}

/// Records the executed request and queues its zero-length READ RESPONSE ONLY.
fn answer(qp: &mut Qp, pkt: &Packet) {
    let psn = pkt.bth.psn;
    qp.resp.msn = qp.resp.msn.next();
    let msn = qp.resp.msn;
    let max = qp.attr.max_dest_rd_atomic;
    qp.resp.remember(RdAtomicResource::Answered { psn }, max);
    qp.resp.out.push_back(empty_read_response(psn, msn));
    qp.resp.epsn = psn.add(1);
}

/// A READ response stream of no bytes: one READ RESPONSE ONLY with an AETH and no payload.
pub(super) fn empty_read_response(psn: crate::types::Psn, msn: crate::types::Msn) -> Outgoing {
    Outgoing::Read {
        psn,
        va: 0,
        rkey: MemKey(0),
        left: 0,
        first: true,
        msn,
    }
}

/// ATOMIC WRITE: 8 bytes stored at an 8-byte aligned address of an MR granting REMOTE_WRITE,
/// on a QP granting REMOTE_WRITE.
pub(super) fn atomic_write(qp: &mut Qp, res: &mut Resources, pkt: &Packet) -> Result<(), Failure> {
    if !qp.attr.qp_access_flags.contains(Access::REMOTE_WRITE) {
        // rxe: check_qp_attr_access fails → RESPST_ERR_UNSUPPORTED_OPCODE, an invalid request.
        return Err(invalid());
    }
    check_resources(qp)?;
    let Some(reth) = pkt.ext.reth else {
        return Err(invalid());
    };
    // The RETH must announce exactly the 8 bytes the packet carries (rxe's check_rkey length
    // rule, C9-94 and oA19-29): anything else is a length error, an invalid request.
    if reth.len != 8 || pkt.payload.len() != 8 {
        return Err(invalid());
    }
    let mr = check_key(
        &res.mrs,
        reth.rkey,
        qp.pd(),
        reth.va,
        8,
        Access::REMOTE_WRITE,
    )
    .map_err(|_| access())?;
    if reth.va % 8 != 0 {
        // IBA A19.4.2: the target must be 8-byte aligned (rxe: RESPST_ERR_MISALIGNED_ATOMIC).
        return Err(invalid());
    }
    let segs = crate::sgl::mr_segments(mr, reth.va, 8).map_err(|_| access())?;
    // An aligned 8-byte range never straddles a page, so it is one guest-physical run.
    let [seg] = segs.as_slice() else {
        return Err(invalid());
    };
    let bytes = pkt.payload.to_vec();
    let value = u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| invalid())?);
    // One indivisible store, as the atomic ops use: a concurrent reader of the guest sees the
    // old or the new 8 bytes, never a mix.
    res.mem
        .atomic_update(seg.gpa, &mut |_| value)
        .map_err(|_| Failure::Nak(NakCode::RemoteOperationalError, None))?;
    answer(qp, pkt);
    Ok(())
}

/// FLUSH: every write this responder executed before it is already in guest memory (requests
/// run in PSN order and a store is visible when it returns), so a FLUSH that passes its checks
/// has nothing left to wait for and is answered at once.
pub(super) fn flush(qp: &mut Qp, res: &mut Resources, pkt: &Packet) -> Result<(), Failure> {
    let (Some(feth), Some(reth)) = (pkt.ext.feth, pkt.ext.reth) else {
        return Err(invalid());
    };
    // A placement type naming nothing, or reserved bits, or a reserved selectivity level: an
    // invalid request (rxe would treat them as a no-op or a range; refusing is the safer
    // reading of an untrusted header, see docs/transport.md).
    let known = Feth::GLOBAL | Feth::PERSISTENT;
    if feth.placement == 0 || feth.placement & !known != 0 || feth.selectivity > Feth::MR {
        return Err(invalid());
    }
    let mut need = Access::empty();
    if feth.placement & Feth::GLOBAL != 0 {
        need |= Access::FLUSH_GLOBAL;
    }
    if feth.placement & Feth::PERSISTENT != 0 {
        need |= Access::FLUSH_PERSISTENT;
    }
    if !qp.attr.qp_access_flags.contains(need) {
        // rxe: check_qp_attr_access → an invalid request.
        return Err(invalid());
    }
    check_resources(qp)?;
    if feth.selectivity == Feth::MR {
        // The whole region: the RETH's address and length are not looked at (rxe skips the
        // range check), the key and its access are.
        let mr = res.mrs.get(reth.rkey.index()).ok_or_else(access)?;
        mr.check(reth.rkey, qp.pd(), mr.iova, 0, need)
            .map_err(|_| access())?;
    } else {
        check_key(&res.mrs, reth.rkey, qp.pd(), reth.va, reth.len as u64, need)
            .map_err(|_| access())?;
    }
    answer(qp, pkt);
    Ok(())
}
