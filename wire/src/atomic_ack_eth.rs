//! Atomic acknowledge extended transport header (IBTA 9.3.6): the original remote value;
//! 8 bytes. Carried by ATOMIC ACK after its AETH.

use super::{be, check_len, Result};
use vhca_device::packet::AtomicAckEth;

const ORIG: usize = 0;
/// Length of the AtomicAckETH.
pub const HEADER_LEN: usize = 8;

/// A zero-copy view of an AtomicAckETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("AtomicAckETH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn orig(&self) -> u64 {
        be::u64_at(self.buffer.as_ref(), ORIG)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_orig(&mut self, v: u64) {
        be::put_u64(self.buffer.as_mut(), ORIG, v);
    }
}

/// The AtomicAckETH's values: the device's [`AtomicAckEth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub AtomicAckEth);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("AtomicAckETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(AtomicAckEth { orig: p.orig() }))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_orig(self.0.orig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_big_endian() {
        let r = Repr(AtomicAckEth {
            orig: 0xfedc_ba98_7654_3210,
        });
        let mut buf = [0u8; 8];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        assert!(Packet::new_checked(&buf[..7]).is_err());
    }
}
