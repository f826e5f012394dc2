//! FLUSH extended transport header (IBTA 1.5, rxe's `rxe_feth`): one big-endian word whose
//! bits 3–0 are the placement type and bits 5–4 the selectivity level; 4 bytes. Carried by
//! FLUSH, before its RETH. The reserved bits are sent as zero and ignored on receipt, as rxe
//! does.

use super::{be, check_len, Result};
use vhca_device::packet::Feth;

const WORD: usize = 0;
const PLACEMENT_MASK: u32 = 0x0f;
const SELECTIVITY_SHIFT: u32 = 4;
const SELECTIVITY_MASK: u32 = 0x03;
/// Length of the FETH.
pub const HEADER_LEN: usize = 4;

/// A zero-copy view of a FETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        check_len("FETH", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn placement(&self) -> u8 {
        (be::u32_at(self.buffer.as_ref(), WORD) & PLACEMENT_MASK) as u8
    }
    pub fn selectivity(&self) -> u8 {
        ((be::u32_at(self.buffer.as_ref(), WORD) >> SELECTIVITY_SHIFT) & SELECTIVITY_MASK) as u8
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes both fields (and zero reserved bits).
    pub fn set_fields(&mut self, placement: u8, selectivity: u8) {
        let w = (u32::from(placement) & PLACEMENT_MASK)
            | ((u32::from(selectivity) & SELECTIVITY_MASK) << SELECTIVITY_SHIFT);
        be::put_u32(self.buffer.as_mut(), WORD, w);
    }
}

/// The FETH's values: the device's [`Feth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr(pub Feth);

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        check_len("FETH", p.buffer.as_ref(), HEADER_LEN)?;
        Ok(Repr(Feth {
            placement: p.placement(),
            selectivity: p.selectivity(),
        }))
    }
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_fields(self.0.placement, self.0.selectivity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_sit_where_rxe_puts_them() {
        // Global placement of the whole MR: selectivity 1 in bits 5-4, placement 1 in 3-0.
        let r = Repr(Feth {
            placement: Feth::GLOBAL,
            selectivity: Feth::MR,
        });
        let mut buf = [0xffu8; 4];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0, 0, 0, 0x11]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), Ok(r));
        assert!(Packet::new_checked(&buf[..3]).is_err());
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        let buf = [0xff, 0xff, 0xff, 0xe6];
        let r = Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(r.0.placement, 0x6);
        assert_eq!(r.0.selectivity, 0x2);
    }
}
