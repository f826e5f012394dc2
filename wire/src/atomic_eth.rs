//! Atomic extended transport header (IBTA 9.3.4): VA, R_Key, swap (or add) data, compare
//! data; 28 bytes. Carried by CMP_SWAP and FETCH_ADD.

use super::{be, check_len, Result};
use vhca_device::packet::AtomicEth;
use vhca_device::MemKey;

const VA: usize = 0;
const RKEY: usize = 8;
const SWAP_ADD: usize = 12;
const COMPARE: usize = 20;
/// Length of the AtomicETH.
pub const HEADER_LEN: usize = 28;

/// A zero-copy view of an AtomicETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("AtomicETH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn va(&self) -> u64 {
        be::u64_at(self.buffer.as_ref(), VA)
    }
    pub fn rkey(&self) -> MemKey {
        MemKey(be::u32_at(self.buffer.as_ref(), RKEY))
    }
    pub fn swap_add(&self) -> u64 {
        be::u64_at(self.buffer.as_ref(), SWAP_ADD)
    }
    pub fn compare(&self) -> u64 {
        be::u64_at(self.buffer.as_ref(), COMPARE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_va(&mut self, v: u64) {
        be::put_u64(self.buffer.as_mut(), VA, v);
    }
    pub fn set_rkey(&mut self, k: MemKey) {
        be::put_u32(self.buffer.as_mut(), RKEY, k.0);
    }
    pub fn set_swap_add(&mut self, v: u64) {
        be::put_u64(self.buffer.as_mut(), SWAP_ADD, v);
    }
    pub fn set_compare(&mut self, v: u64) {
        be::put_u64(self.buffer.as_mut(), COMPARE, v);
    }
}

/// The AtomicETH's values: the device's [`AtomicEth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub AtomicEth);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("AtomicETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(AtomicEth {
            va: p.va(),
            rkey: p.rkey(),
            swap_add: p.swap_add(),
            compare: p.compare(),
        }))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_va(self.0.va);
        p.set_rkey(self.0.rkey);
        p.set_swap_add(self.0.swap_add);
        p.set_compare(self.0.compare);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let r = Repr(AtomicEth {
            va: 0x0102_0304_0506_0708,
            rkey: MemKey(0x1112_1314),
            swap_add: 0x2122_2324_2526_2728,
            compare: 0x3132_3334_3536_3738,
        });
        let mut buf = [0u8; 28];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..4], &[1, 2, 3, 4]);
        assert_eq!(&buf[8..12], &[0x11, 0x12, 0x13, 0x14]);
        assert_eq!(buf[12], 0x21);
        assert_eq!(buf[27], 0x38);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        assert!(Packet::new_checked(&buf[..27]).is_err());
    }
}
