//! One request packet from a WQE: how many packets a WQE takes, the check of its local buffers
//! before the first one, gathering a packet's bytes from guest memory, and the BTH/RETH/AtomicETH
//! a packet carries. Separate from `transmit` because it decides nothing about *when* to send:
//! given a WQE and a packet index it builds the same packet every time (first send or resend).

use super::{SendWqe, MAX_PKT_PER_ACK};
use crate::mr::KeyError;
use crate::packet::{AtomicEth, Bth, ExtHeaders, Feth, Opcode, Packet, Payload, Reth};
use crate::qp::Qp;
use crate::resources::Resources;
use crate::sgl::{check_sgl, sgl_segments};
use crate::types::Psn;
use crate::verbs::{Access, FlushLevel, QpType, SendFlags, SendOp, WcStatus};

pub(crate) fn npkts(op: &SendOp, len: u32, mtu: u32) -> u32 {
    match op {
        SendOp::LocalInv { .. } | SendOp::BindMw { .. } | SendOp::RegMr { .. } => 0,
        SendOp::CmpSwap { .. }
        | SendOp::FetchAdd { .. }
        | SendOp::AtomicWrite { .. }
        | SendOp::Flush { .. } => 1,
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
///
/// `#[inline]`: called from `transmit::next_packet` for every WQE's first packet (every packet
/// of a small message); it was inlined there when both lived in one file, and this keeps it so
/// across the module boundary (codegen units are split by module).
#[inline]
pub(crate) fn validate_local(qp: &Qp, res: &Resources, w: &SendWqe) -> Result<(), WcStatus> {
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
        // No local buffers; the responder checks the target (alignment included, as rxe's
        // responder does: a misaligned ATOMIC WRITE is NAKed as an invalid request).
        SendOp::LocalInv { .. }
        | SendOp::BindMw { .. }
        | SendOp::RegMr { .. }
        | SendOp::AtomicWrite { .. }
        | SendOp::Flush { .. } => Ok(()),
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

pub(crate) fn build_request(
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
        SendOp::AtomicWrite {
            remote_addr,
            rkey,
            value,
        } => {
            ext.reth = Some(Reth {
                va: remote_addr,
                rkey,
                len: 8,
            });
            payload = Payload::Bytes(value.to_le_bytes().to_vec());
            Opcode::RC_ATOMIC_WRITE
        }
        SendOp::Flush {
            remote_addr,
            rkey,
            len,
            placement,
            level,
        } => {
            ext.feth = Some(Feth {
                placement: placement.bits(),
                selectivity: match level {
                    FlushLevel::Range => Feth::RANGE,
                    FlushLevel::Mr => Feth::MR,
                },
            });
            ext.reth = Some(Reth {
                va: remote_addr,
                rkey,
                len,
            });
            Opcode::RC_FLUSH
        }
        SendOp::LocalInv { .. } | SendOp::BindMw { .. } | SendOp::RegMr { .. } => {
            return Err(WcStatus::LocQpOpErr)
        }
    };
    if last {
        match w.op {
            SendOp::SendWithImm { imm } | SendOp::WriteWithImm { imm, .. } => ext.imm = Some(imm),
            SendOp::SendWithInv { rkey } => ext.ieth = Some(rkey),
            _ => {}
        }
    }
    // UC: the same segmentation under the UC opcodes, and nothing ever asks for an ACK.
    let uc = qp.qp_type() == QpType::Uc;
    let opcode = if uc {
        opcode.to_uc().ok_or(WcStatus::LocQpOpErr)?
    } else {
        opcode
    };
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
    let ack_req = !uc
        && (last
            || opcode.is_atomic()
            || opcode.is_flush_or_atomic_write()
            || opcode == Opcode::RC_READ_REQUEST
            || qp.req.since_ack_req + 1 >= MAX_PKT_PER_ACK);
    bth.ack_req = ack_req;
    bth.pad = ((4 - payload.len() % 4) % 4) as u8;
    if ack_req || uc {
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
