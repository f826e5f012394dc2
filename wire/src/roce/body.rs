//! The transport part of a RoCEv2 packet, shared by the UDP payload and the Ethernet frame
//! shapes: BTH, the extended headers in IBTA order, the payload and its pad (the ICRC and
//! everything below the UDP header are the callers'). Separate because it is the one place
//! that knows which header follows which.

use super::super::{
    aeth, atomic_ack_eth, atomic_eth, bth, deth, feth, ieth, immdt, reth, Result, WireError,
};
use vhca_device::packet::{Bth, ExtHeaders, Layout, Payload};
use vhca_device::Packet;

/// Checks that a device packet can be encoded and returns its layout and pad count.
pub(super) fn check_encodable(pkt: &Packet) -> Result<(Layout, usize)> {
    let layout = pkt
        .bth
        .opcode
        .layout()
        .ok_or(WireError::UnsupportedOpcode(pkt.bth.opcode.0))?;
    if !pkt.is_well_formed() {
        return Err(WireError::Unencodable(
            "extended headers, payload or TVer do not match the opcode",
        ));
    }
    if let Payload::Gather { segs, len, .. } = &pkt.payload {
        let sum: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
        if sum != u64::from(*len) {
            return Err(WireError::Unencodable(
                "gather segment lengths do not add up to the payload length",
            ));
        }
    }
    let pad = (4 - pkt.payload.len() % 4) % 4;
    Ok((layout, pad))
}

/// Length of BTH, extended headers, payload and pad (the ICRC excluded).
pub(super) fn body_len(layout: &Layout, payload: usize, pad: usize) -> usize {
    bth::HEADER_LEN + layout.ext_len() + payload + pad
}

/// Writes BTH, extended headers, payload and zero pad into `out`, which must be exactly
/// `body_len` long (checked by the callers' construction).
pub(super) fn write_body(pkt: &Packet, layout: &Layout, pad: usize, out: &mut [u8]) -> Result<()> {
    let need = body_len(layout, pkt.payload.len(), pad);
    if out.len() != need {
        return Err(WireError::BadLength {
            what: "transport buffer",
            detail: "not the packet's length",
        });
    }
    let mut b: Bth = pkt.bth;
    // PadCnt follows from the payload length, whatever the packet says.
    b.pad = pad as u8;
    bth::Repr(b).emit(&mut bth::Packet::new_unchecked(&mut out[..bth::HEADER_LEN]));
    let mut at = bth::HEADER_LEN;
    let e = &pkt.ext;
    // IBTA order: DETH, FETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, IETH.
    // `check_encodable` made sure each header is present exactly when the layout wants it.
    if let Some(d) = e.deth {
        deth::Repr(d).emit(&mut deth::Packet::new_unchecked(
            &mut out[at..at + deth::HEADER_LEN],
        ));
        at += deth::HEADER_LEN;
    }
    if let Some(f) = e.feth {
        feth::Repr(f).emit(&mut feth::Packet::new_unchecked(
            &mut out[at..at + feth::HEADER_LEN],
        ));
        at += feth::HEADER_LEN;
    }
    if let Some(r) = e.reth {
        reth::Repr(r).emit(&mut reth::Packet::new_unchecked(
            &mut out[at..at + reth::HEADER_LEN],
        ));
        at += reth::HEADER_LEN;
    }
    if let Some(a) = e.atomic {
        atomic_eth::Repr(a).emit(&mut atomic_eth::Packet::new_unchecked(
            &mut out[at..at + atomic_eth::HEADER_LEN],
        ));
        at += atomic_eth::HEADER_LEN;
    }
    if let Some(a) = e.aeth {
        aeth::Repr(a).emit(&mut aeth::Packet::new_unchecked(
            &mut out[at..at + aeth::HEADER_LEN],
        ));
        at += aeth::HEADER_LEN;
    }
    if let Some(a) = e.atomic_ack {
        atomic_ack_eth::Repr(a).emit(&mut atomic_ack_eth::Packet::new_unchecked(
            &mut out[at..at + atomic_ack_eth::HEADER_LEN],
        ));
        at += atomic_ack_eth::HEADER_LEN;
    }
    if let Some(i) = e.imm {
        immdt::Repr(i).emit(&mut immdt::Packet::new_unchecked(
            &mut out[at..at + immdt::HEADER_LEN],
        ));
        at += immdt::HEADER_LEN;
    }
    if let Some(k) = e.ieth {
        ieth::Repr(k).emit(&mut ieth::Packet::new_unchecked(
            &mut out[at..at + ieth::HEADER_LEN],
        ));
        at += ieth::HEADER_LEN;
    }
    let pl = pkt.payload.len();
    write_payload(&pkt.payload, &mut out[at..at + pl]);
    out[at + pl..].fill(0);
    Ok(())
}

/// Copies the payload into `out` (exactly its length): one copy, straight from guest memory for
/// a gather list. An unreadable segment becomes zeros, as `Payload::to_vec` does: the packet is
/// committed, and a NIC would send whatever its DMA read returned.
fn write_payload(p: &Payload, out: &mut [u8]) {
    match p {
        Payload::Bytes(b) => out.copy_from_slice(b),
        Payload::Gather { mem, segs, .. } => {
            let mut off = 0usize;
            for s in segs {
                let end = off + s.len as usize;
                let dst = &mut out[off..end];
                if mem.read(s.gpa, dst).is_err() {
                    dst.fill(0);
                }
                off = end;
            }
        }
    }
}

/// Decodes BTH … pad (ICRC already removed) into the packet's transport fields.
pub(super) fn read_body(body: &[u8]) -> Result<(Bth, ExtHeaders, &[u8])> {
    let bth = bth::Repr::parse(&bth::Packet::new_checked(body)?)?.0;
    let layout = bth
        .opcode
        .layout()
        .ok_or(WireError::UnsupportedOpcode(bth.opcode.0))?;
    if bth.tver != 0 {
        // rxe drops these too (facts file B.3).
        return Err(WireError::Unsupported {
            what: "BTH TVer",
            value: bth.tver.into(),
        });
    }
    let mut rest = &body[bth::HEADER_LEN..];
    let mut ext = ExtHeaders::default();
    // Takes `n` bytes off the front of `rest` (the view's new_checked has checked the length).
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (h, t) = rest.split_at(n);
        *rest = t;
        h
    }
    if layout.deth {
        let p = deth::Packet::new_checked(rest)?;
        ext.deth = Some(deth::Repr::parse(&p)?.0);
        take(&mut rest, deth::HEADER_LEN);
    }
    if layout.feth {
        let p = feth::Packet::new_checked(rest)?;
        ext.feth = Some(feth::Repr::parse(&p)?.0);
        take(&mut rest, feth::HEADER_LEN);
    }
    if layout.reth {
        let p = reth::Packet::new_checked(rest)?;
        ext.reth = Some(reth::Repr::parse(&p)?.0);
        take(&mut rest, reth::HEADER_LEN);
    }
    if layout.atomic {
        let p = atomic_eth::Packet::new_checked(rest)?;
        ext.atomic = Some(atomic_eth::Repr::parse(&p)?.0);
        take(&mut rest, atomic_eth::HEADER_LEN);
    }
    if layout.aeth {
        let p = aeth::Packet::new_checked(rest)?;
        ext.aeth = Some(aeth::Repr::parse(&p)?.0);
        take(&mut rest, aeth::HEADER_LEN);
    }
    if layout.atomic_ack {
        let p = atomic_ack_eth::Packet::new_checked(rest)?;
        ext.atomic_ack = Some(atomic_ack_eth::Repr::parse(&p)?.0);
        take(&mut rest, atomic_ack_eth::HEADER_LEN);
    }
    if layout.imm {
        let p = immdt::Packet::new_checked(rest)?;
        ext.imm = Some(immdt::Repr::parse(&p)?.0);
        take(&mut rest, immdt::HEADER_LEN);
    }
    if layout.ieth {
        let p = ieth::Packet::new_checked(rest)?;
        ext.ieth = Some(ieth::Repr::parse(&p)?.0);
        take(&mut rest, ieth::HEADER_LEN);
    }
    let pad = usize::from(bth.pad);
    if pad > rest.len() {
        return Err(WireError::BadLength {
            what: "BTH PadCnt",
            detail: "more pad than bytes after the headers",
        });
    }
    if rest.len() % 4 != 0 {
        // IBTA: payload plus pad is a multiple of 4 bytes.
        return Err(WireError::BadLength {
            what: "RoCEv2 payload",
            detail: "payload plus pad is not a multiple of 4",
        });
    }
    let payload = &rest[..rest.len() - pad];
    if !layout.payload && !rest.is_empty() {
        return Err(WireError::BadLength {
            what: "RoCEv2 payload",
            detail: "bytes after the headers of an opcode without payload",
        });
    }
    Ok((bth, ext, payload))
}
