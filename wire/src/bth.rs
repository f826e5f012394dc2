//! The InfiniBand base transport header (IBTA 9.2), 12 bytes, big-endian:
//!
//! ```text
//! 0: opcode | 1: SE M PadCnt(2) TVer(4) | 2-3: P_Key
//! 4: FECN BECN resv6 | 5-7: DestQP | 8: AckReq resv7 | 9-11: PSN
//! ```
//!
//! The representation is the device's own [`vhca_device::packet::Bth`]; reserved bits are
//! sent as 0 and ignored on receive (they are not in the device type, and IBTA says so).

use super::{be, check_len, Result};
use vhca_device::packet::{Bth, Opcode};
use vhca_device::{Psn, Qpn};

const OPCODE: usize = 0;
const FLAGS: usize = 1;
const PKEY: usize = 2;
const FECN_BECN: usize = 4;
const DEST_QP: usize = 5;
const ACK_REQ: usize = 8;
const PSN: usize = 9;
/// Length of the BTH.
pub const HEADER_LEN: usize = 12;
/// Offset of the byte the ICRC masks to 0xFF (FECN, BECN, resv6a).
pub const ICRC_MASKED_BYTE: usize = FECN_BECN;

/// A zero-copy view of a BTH (and whatever follows it).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("BTH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn opcode(&self) -> Opcode {
        Opcode(self.buffer.as_ref()[OPCODE])
    }
    pub fn solicited(&self) -> bool {
        self.buffer.as_ref()[FLAGS] & 0x80 != 0
    }
    pub fn mig_req(&self) -> bool {
        self.buffer.as_ref()[FLAGS] & 0x40 != 0
    }
    pub fn pad_count(&self) -> u8 {
        (self.buffer.as_ref()[FLAGS] >> 4) & 0x3
    }
    pub fn tver(&self) -> u8 {
        self.buffer.as_ref()[FLAGS] & 0x0f
    }
    pub fn pkey(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), PKEY)
    }
    pub fn fecn(&self) -> bool {
        self.buffer.as_ref()[FECN_BECN] & 0x80 != 0
    }
    pub fn becn(&self) -> bool {
        self.buffer.as_ref()[FECN_BECN] & 0x40 != 0
    }
    pub fn dest_qp(&self) -> Qpn {
        Qpn(be::u24_at(self.buffer.as_ref(), DEST_QP))
    }
    pub fn ack_req(&self) -> bool {
        self.buffer.as_ref()[ACK_REQ] & 0x80 != 0
    }
    pub fn psn(&self) -> Psn {
        Psn(be::u24_at(self.buffer.as_ref(), PSN))
    }
    /// The bytes after the BTH.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_opcode(&mut self, o: Opcode) {
        self.buffer.as_mut()[OPCODE] = o.0;
    }
    /// Writes SE, M, PadCnt (low 2 bits of `pad`) and TVer (low 4 bits) in one go: they share
    /// a byte.
    pub fn set_flags(&mut self, se: bool, mig: bool, pad: u8, tver: u8) {
        self.buffer.as_mut()[FLAGS] =
            (u8::from(se) << 7) | (u8::from(mig) << 6) | ((pad & 3) << 4) | (tver & 0x0f);
    }
    pub fn set_pkey(&mut self, v: u16) {
        be::put_u16(self.buffer.as_mut(), PKEY, v);
    }
    /// Writes FECN and BECN; the reserved bits become 0.
    pub fn set_fecn_becn(&mut self, fecn: bool, becn: bool) {
        self.buffer.as_mut()[FECN_BECN] = (u8::from(fecn) << 7) | (u8::from(becn) << 6);
    }
    pub fn set_dest_qp(&mut self, q: Qpn) {
        be::put_u24(self.buffer.as_mut(), DEST_QP, q.0);
    }
    /// Writes AckReq; the reserved bits become 0.
    pub fn set_ack_req(&mut self, v: bool) {
        self.buffer.as_mut()[ACK_REQ] = u8::from(v) << 7;
    }
    pub fn set_psn(&mut self, p: Psn) {
        be::put_u24(self.buffer.as_mut(), PSN, p.0);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The BTH's values: the device's [`Bth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub Bth);

impl Repr {
    /// Reads every field; it does not judge the opcode or TVer ([`super::roce`] does).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("BTH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(Bth {
            opcode: p.opcode(),
            se: p.solicited(),
            mig: p.mig_req(),
            pad: p.pad_count(),
            tver: p.tver(),
            pkey: p.pkey(),
            fecn: p.fecn(),
            becn: p.becn(),
            dest_qp: p.dest_qp(),
            ack_req: p.ack_req(),
            psn: p.psn(),
        }))
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; out-of-range values are truncated to their field width.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let b = &self.0;
        p.set_opcode(b.opcode);
        p.set_flags(b.se, b.mig, b.pad, b.tver);
        p.set_pkey(b.pkey);
        p.set_fecn_becn(b.fecn, b.becn);
        p.set_dest_qp(b.dest_qp);
        p.set_ack_req(b.ack_req);
        p.set_psn(b.psn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SEND_ONLY, SE, pad 2, P_Key 0xffff, QP 0x11, AckReq, PSN 0xd97ec5.
    const BYTES: [u8; 12] = [
        0x04, 0xa0, 0xff, 0xff, 0x00, 0x00, 0x00, 0x11, 0x80, 0xd9, 0x7e, 0xc5,
    ];

    fn repr() -> Repr {
        let mut b = Bth::new(Opcode::RC_SEND_ONLY, Qpn(0x11), Psn(0xd97ec5));
        b.se = true;
        b.pad = 2;
        b.ack_req = true;
        Repr(b)
    }

    #[test]
    fn parses_fields() {
        let p = Packet::new_checked(&BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(repr()));
    }

    #[test]
    fn round_trips_every_flag() {
        let mut buf = [0u8; 12];
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, BYTES);
        let mut b = repr().0;
        b.mig = true;
        b.tver = 0xa;
        b.fecn = true;
        b.becn = true;
        b.pad = 3;
        b.pkey = 0x8001;
        b.dest_qp = Qpn(0xabcdef);
        b.psn = Psn(0xffffff);
        let r = Repr(b);
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf[1], 0x80 | 0x40 | 0x30 | 0x0a);
        assert_eq!(buf[4], 0xc0);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let mut b = BYTES;
        b[4] |= 0x3f;
        b[8] |= 0x7f;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(repr()));
    }

    #[test]
    fn short_is_an_error() {
        assert!(Packet::new_checked(&BYTES[..11]).is_err());
    }
}
