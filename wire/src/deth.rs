//! Datagram extended transport header (IBTA 9.3.1): Q_Key and source QP; 8 bytes. Carried by
//! UD SEND_ONLY (with or without immediate).

use super::{be, check_len, Result};
use vhca_device::packet::Deth;
use vhca_device::Qpn;

const QKEY: usize = 0;
const SRC_QP: usize = 5;
/// Length of the DETH.
pub const HEADER_LEN: usize = 8;

/// A zero-copy view of a DETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("DETH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn qkey(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), QKEY)
    }
    pub fn src_qp(&self) -> Qpn {
        Qpn(be::u24_at(self.buffer.as_ref(), SRC_QP))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_qkey(&mut self, v: u32) {
        be::put_u32(self.buffer.as_mut(), QKEY, v);
    }
    /// Writes the source QP; the reserved byte before it becomes 0.
    pub fn set_src_qp(&mut self, q: Qpn) {
        let b = self.buffer.as_mut();
        b[SRC_QP - 1] = 0;
        be::put_u24(b, SRC_QP, q.0);
    }
}

/// The DETH's values: the device's [`Deth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub Deth);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("DETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(Deth {
            qkey: p.qkey(),
            src_qp: p.src_qp(),
        }))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_qkey(self.0.qkey);
        p.set_src_qp(self.0.src_qp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsi_qkey_round_trips() {
        let r = Repr(Deth {
            qkey: 0x8001_0000,
            src_qp: Qpn(0x123456),
        });
        let mut buf = [0xaau8; 8];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x80, 0x01, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        // The reserved byte is ignored on receive.
        buf[4] = 0xff;
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        assert!(Packet::new_checked(&buf[..7]).is_err());
    }
}
