//! Queued answers into response packets: ACKs and NAKs, atomic ACKs, and READ responses cut
//! to the path MTU, with the R_Key re-checked for every READ packet. Separate because this is
//! the responder's transmit path, polled by the QP's scheduler rather than driven by requests.

use super::Outgoing;
use crate::packet::{
    Aeth, AtomicAckEth, Bth, ExtHeaders, NakCode, Opcode, Packet, Payload, Syndrome,
};
use crate::qp::Qp;
use crate::resources::Resources;
use crate::verbs::{Access, AsyncEvent};

/// The next response packet, if any.
pub fn next_packet(qp: &mut Qp, res: &mut Resources) -> Option<Packet> {
    // A READ whose R_Key went away is taken off the queue and replaced by its NAK, then the
    // queue is looked at again: a loop, so that however many such READs wait (and whatever
    // state the QP was already in) the stack never grows with them.
    loop {
        if let Some(p) = next_packet_or_retry(qp, res)? {
            return Some(p);
        }
    }
}

/// `None`: nothing to send; `Some(None)`: the READ at the front failed and was replaced, look
/// again; `Some(Some(p))`: the packet.
fn next_packet_or_retry(qp: &mut Qp, res: &mut Resources) -> Option<Option<Packet>> {
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
                let segs = res
                    .check_rkey(
                        qp.qpn,
                        qp.init.pd,
                        *rkey,
                        *va,
                        n as u64,
                        Access::REMOTE_READ,
                    )
                    .ok()
                    .and_then(|mr| crate::sgl::mr_segments(mr, *va, n as u64).ok());
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
                        // This READ ends here, whatever state the QP was already in.
                        let psn = *psn;
                        let qpn = qp.qpn;
                        qp.resp.out.pop_front();
                        qp.enter_error(res);
                        res.raise(AsyncEvent::QpAccessErr(qpn));
                        qp.resp.nak(psn, Syndrome::Nak(NakCode::RemoteAccessError));
                        return Some(None);
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
    Some(Some(Packet {
        src_gid: res.gid,
        dst_gid: qp.attr.ah_attr.dgid,
        src_port: qp.src_port,
        bth,
        ext,
        payload,
    }))
}
