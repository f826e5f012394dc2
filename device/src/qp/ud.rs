//! Unreliable datagram: one packet per message, Q_Key checked, a 40-byte GRH area in front of
//! the payload in the receive buffer, and the sender's QPN and GID in the completion.
//!
//! The GSI QP (QP1) is a UD QP with fixed rules (IBTA 13.5.1, rxe's `check_keys` and
//! `init_req_packet`): it sends and accepts only the GSI Q_Key whatever the WR or the QP's
//! attribute say, and its messages are MADs of at most [`MAD_LEN`] bytes.

use super::{recv_wc, Qp};
use crate::packet::{Bth, Deth, ExtHeaders, Opcode, Packet, Payload};
use crate::resources::Resources;
use crate::sgl::{check_sgl, sgl_len, sgl_segments};
use crate::types::Psn;
use crate::verbs::{Access, QpState, QpType, SendOp, WcOpcode, WcStatus};

/// Bytes reserved for the GRH at the start of every UD receive buffer.
pub const GRH_LEN: u32 = 40;

/// The Q_Key of QP1: the only one it puts in a DETH and the only one it accepts.
pub const GSI_QKEY: u32 = 0x8001_0000;

/// The GSI QP's number.
pub const GSI_QPN: u32 = 1;

/// A MAD's size: the most a GSI message may carry.
pub const MAD_LEN: u32 = 256;

/// The Q_Key a received datagram must carry for this QP.
fn expected_qkey(qp: &Qp) -> u32 {
    if qp.qp_type() == QpType::Gsi {
        GSI_QKEY
    } else {
        qp.attr.qkey
    }
}

/// The 40-byte GRH the receive buffer gets: IPv6 layout, next header 0x1b (IB BTH).
pub fn grh_bytes(pkt: &Packet) -> [u8; 40] {
    let mut g = [0u8; 40];
    g[0] = 0x60;
    let plen = pkt.transport_len() as u16;
    g[4..6].copy_from_slice(&plen.to_be_bytes());
    g[6] = 0x1b;
    g[7] = 64;
    g[8..24].copy_from_slice(&pkt.src_gid.0);
    g[24..40].copy_from_slice(&pkt.dst_gid.0);
    g
}

/// Builds the next UD packet; a UD send completes as soon as it is on the wire.
pub fn next_packet(qp: &mut Qp, res: &mut Resources) -> Option<Packet> {
    if !matches!(qp.state(), QpState::Rts) || qp.req.halted {
        return None;
    }
    loop {
        let w = qp.req.sq.get(qp.req.next)?;
        if w.done.is_some() {
            qp.req.next += 1;
            continue;
        }
        let idx = qp.req.next;
        let result = build(qp, res, idx);
        qp.req.next += 1;
        match result {
            Ok(pkt) => {
                qp.req.sq[idx].done = Some(WcStatus::Success);
                super::requester::complete_in_order(qp, res);
                return Some(pkt);
            }
            Err(status) => {
                qp.req.sq[idx].done = Some(status);
                qp.req.halted = true;
                super::requester::complete_in_order(qp, res);
                return None;
            }
        }
    }
}

fn build(qp: &mut Qp, res: &Resources, idx: usize) -> Result<Packet, WcStatus> {
    let w = &qp.req.sq[idx];
    let imm = match w.op {
        SendOp::Send => None,
        SendOp::SendWithImm { imm } => Some(imm),
        _ => return Err(WcStatus::LocQpOpErr),
    };
    let dest = w.ud.ok_or(WcStatus::LocQpOpErr)?;
    let ah = res.ahs.get(dest.ah.0).ok_or(WcStatus::LocQpOpErr)?;
    if ah.pd != qp.pd() {
        return Err(WcStatus::LocQpOpErr);
    }
    let gsi = qp.qp_type() == QpType::Gsi;
    if w.len > res.port_mtu.bytes() || (gsi && w.len > MAD_LEN) {
        return Err(WcStatus::LocLenErr);
    }
    let payload = match &w.inline {
        Some(d) => Payload::Bytes(d.clone()),
        None => {
            check_sgl(&res.mrs, qp.pd(), &w.sgl, Access::empty())
                .map_err(|_| WcStatus::LocProtErr)?;
            let mut segs = crate::packet::Segments::new();
            sgl_segments(
                &res.mrs,
                qp.pd(),
                &w.sgl,
                0,
                w.len as u64,
                Access::empty(),
                &mut segs,
            )
            .map_err(|_| WcStatus::LocProtErr)?;
            // A UD send completes as it leaves, and the application may then reuse the
            // buffer: read it now, as a NIC's DMA would, not when the packet lands.
            let mut p = Payload::Gather {
                mem: res.mem.clone(),
                segs,
                len: w.len,
            };
            p.materialize();
            p
        }
    };
    // IBTA: a Q_Key with the high bit set means "use the QP's own Q_Key". QP1 always sends
    // the GSI Q_Key (rxe does the same, whatever the WR says).
    let qkey = if gsi {
        GSI_QKEY
    } else if dest.remote_qkey & 0x8000_0000 != 0 {
        qp.attr.qkey
    } else {
        dest.remote_qkey
    };
    let psn = qp.req.psn;
    qp.req.psn = psn.add(1);
    let opcode = if imm.is_some() {
        Opcode::UD_SEND_ONLY_IMM
    } else {
        Opcode::UD_SEND_ONLY
    };
    let mut bth = Bth::new(opcode, dest.remote_qpn, psn);
    bth.se = w.flags.contains(crate::verbs::SendFlags::SOLICITED);
    bth.pad = ((4 - payload.len() % 4) % 4) as u8;
    let ext = ExtHeaders {
        deth: Some(Deth {
            qkey,
            src_qp: qp.qpn,
        }),
        imm,
        ..Default::default()
    };
    Ok(Packet {
        src_gid: res.gid,
        dst_gid: ah.attr.dgid,
        src_port: super::src_port(qp.qpn, dest.remote_qpn, ah.attr.flow_label),
        bth,
        ext,
        payload,
    })
}

/// Delivers a UD packet to this QP.
pub fn on_packet(qp: &mut Qp, res: &mut Resources, pkt: &Packet) {
    if !matches!(
        qp.state(),
        QpState::Rtr | QpState::Rts | QpState::Sqd | QpState::Sqe
    ) {
        res.counters.rx_dropped += 1;
        return;
    }
    let Some(deth) = pkt.ext.deth else {
        res.counters.rx_dropped += 1;
        return;
    };
    if deth.qkey != expected_qkey(qp) {
        res.counters.qkey_violations += 1;
        return;
    }
    if qp.qp_type() == QpType::Gsi && pkt.payload.len() as u32 > MAD_LEN {
        // Not a MAD: QP1 carries nothing larger.
        res.counters.rx_dropped += 1;
        return;
    }
    let wqe = match qp.srq() {
        Some(h) => match res.srqs.get_mut(h.0) {
            Some(s) => {
                let (wr, fire) = s.take();
                if fire {
                    res.raise(crate::verbs::AsyncEvent::SrqLimitReached(h));
                }
                wr
            }
            None => None,
        },
        None => qp.rq.pop_front(),
    };
    let Some(wqe) = wqe else {
        // UD has no RNR: the datagram is silently dropped.
        res.counters.ud_no_recv += 1;
        return;
    };
    let plen = pkt.payload.len() as u32;
    let total = GRH_LEN + plen;
    let qpn = qp.qpn;
    let cq = qp.recv_cq();
    if sgl_len(&wqe.sgl) < total as u64 {
        res.complete(
            cq,
            recv_wc(qpn, wqe.wr_id, WcStatus::LocLenErr, WcOpcode::Recv, 0),
        );
        return;
    }
    let mut segs = crate::packet::Segments::new();
    let placed = sgl_segments(
        &res.mrs,
        qp.pd(),
        &wqe.sgl,
        0,
        total as u64,
        Access::LOCAL_WRITE,
        &mut segs,
    )
    .is_ok()
        && {
            let mut bytes = Vec::with_capacity(total as usize);
            bytes.extend_from_slice(&grh_bytes(pkt));
            bytes.extend_from_slice(&pkt.payload.to_vec());
            crate::sgl::scatter(&Payload::Bytes(bytes), &res.mem, &segs).is_ok()
        };
    if !placed {
        res.complete(
            cq,
            recv_wc(qpn, wqe.wr_id, WcStatus::LocProtErr, WcOpcode::Recv, 0),
        );
        return;
    }
    let mut wc = recv_wc(qpn, wqe.wr_id, WcStatus::Success, WcOpcode::Recv, total);
    wc.imm = pkt.ext.imm;
    wc.src_qp = deth.src_qp;
    wc.src_gid = pkt.src_gid;
    wc.grh = true;
    wc.solicited = pkt.bth.se;
    res.complete(cq, wc);
}

/// UD PSNs are not checked by the receiver; they only count.
pub fn start(qp: &mut Qp, sq_psn: Psn) {
    qp.req.psn = sq_psn;
}
