//! Invalidate extended transport header (IBTA 9.3.7): the R_Key to invalidate; 4 bytes.
//! Carried by SEND_LAST/ONLY_WITH_INVALIDATE.

use super::{be, check_len, Result};
use vhca_device::MemKey;

const RKEY: usize = 0;
/// Length of the IETH.
pub const HEADER_LEN: usize = 4;

/// A zero-copy view of an IETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("IETH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn rkey(&self) -> MemKey {
        MemKey(be::u32_at(self.buffer.as_ref(), RKEY))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_rkey(&mut self, k: MemKey) {
        be::put_u32(self.buffer.as_mut(), RKEY, k.0);
    }
}

/// The R_Key to invalidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub MemKey);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("IETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(p.rkey()))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_rkey(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_big_endian() {
        let r = Repr(MemKey(0x0012_34ab));
        let mut buf = [0u8; 4];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x00, 0x12, 0x34, 0xab]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        assert!(Packet::new_checked(&buf[..2]).is_err());
    }
}
