//! Immediate data extended transport header (IBTA 9.3.2): 4 opaque bytes. Carried by
//! SEND/WRITE ..._WITH_IMMEDIATE.
//!
//! The device keeps immediate data as a `u32` "in network byte order as the verbs API presents
//! it" (`__be32 imm_data`): the value's in-memory bytes on the (little-endian) host are the
//! bytes on the wire. So the wire bytes are the value's little-endian bytes, and a guest that
//! posts `htonl(x)` sees `x` arrive big-endian, as on any RoCE NIC.

use super::{check_len, Result};

const IMM: usize = 0;
/// Length of the ImmDt header.
pub const HEADER_LEN: usize = 4;

/// A zero-copy view of an ImmDt header.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("ImmDt", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The four bytes as they are on the wire.
    pub fn bytes(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[IMM], b[IMM + 1], b[IMM + 2], b[IMM + 3]]
    }
    /// The value as the device holds it (see the module comment).
    pub fn imm(&self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_imm(&mut self, v: u32) {
        self.buffer.as_mut()[IMM..IMM + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// The immediate data as the device holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub u32);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("ImmDt", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(p.imm()))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_imm(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htonl_value_appears_big_endian() {
        // A guest posting htonl(0x12345678) on a little-endian host holds 0x78563412.
        let r = Repr(0x1234_5678u32.to_be());
        let mut buf = [0u8; 4];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        assert!(Packet::new_checked(&buf[..3]).is_err());
    }
}
