//! RDMA extended transport header (IBTA 9.3.3): virtual address, R_Key, DMA length; 16 bytes.
//! Carried by RDMA WRITE FIRST/ONLY and RDMA READ REQUEST.

use super::{be, check_len, Result};
use vhca_device::packet::Reth;
use vhca_device::MemKey;

const VA: usize = 0;
const RKEY: usize = 8;
const DMA_LEN: usize = 12;
/// Length of the RETH.
pub const HEADER_LEN: usize = 16;

/// A zero-copy view of a RETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("RETH", buffer.as_ref(), HEADER_LEN)?;
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
    pub fn dma_len(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), DMA_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_va(&mut self, v: u64) {
        be::put_u64(self.buffer.as_mut(), VA, v);
    }
    pub fn set_rkey(&mut self, k: MemKey) {
        be::put_u32(self.buffer.as_mut(), RKEY, k.0);
    }
    pub fn set_dma_len(&mut self, v: u32) {
        be::put_u32(self.buffer.as_mut(), DMA_LEN, v);
    }
}

/// The RETH's values: the device's [`Reth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub Reth);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("RETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(Reth {
            va: p.va(),
            rkey: p.rkey(),
            len: p.dma_len(),
        }))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_va(self.0.va);
        p.set_rkey(self.0.rkey);
        p.set_dma_len(self.0.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 16] = [
        0x00, 0x00, 0x7f, 0x10, 0x98, 0x5c, 0x30, 0x00, // VA
        0x00, 0x00, 0x04, 0x42, // R_Key
        0x00, 0x01, 0x00, 0x00, // 64 KiB
    ];

    #[test]
    fn parses_and_round_trips() {
        let r = Repr::parse(&Packet::new_checked(&BYTES[..]).unwrap()).unwrap();
        assert_eq!(
            r.0,
            Reth {
                va: 0x7f10_985c_3000,
                rkey: MemKey(0x442),
                len: 65536
            }
        );
        let mut buf = [0u8; 16];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, BYTES);
        assert_eq!(r.buffer_len(), 16);
    }

    #[test]
    fn short_is_an_error() {
        assert!(Packet::new_checked(&BYTES[..15]).is_err());
    }
}
