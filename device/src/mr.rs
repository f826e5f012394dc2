//! Memory regions: a virtual range of guest memory, its access rights and its key.

use crate::packet::{Segment, Segments};
use crate::types::{MemKey, PdHandle};
use crate::verbs::Access;

/// How an MR's virtual addresses map onto guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MrMap {
    /// `iova + off` lives at `gpa + off` (the in-process device: virtual = guest-physical).
    Contiguous { gpa: u64 },
    /// A guest page list, as a driver registers user memory: page `i` of the region (counted
    /// from `iova` rounded down to the page size) lives at `pages[i]`.
    Pages { page_shift: u8, pages: Vec<u64> },
}

/// Page sizes a page-list MR may use: 4 KiB up to 1 GiB (what guest kernels hand out).
pub const MR_PAGE_SHIFTS: std::ops::RangeInclusive<u8> = 12..=30;

/// A registered memory region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mr {
    pub pd: PdHandle,
    pub iova: u64,
    pub len: u64,
    pub access: Access,
    /// lkey and rkey are the same value.
    pub key: MemKey,
    pub map: MrMap,
    /// False after LOCAL_INV or SEND_WITH_INV: every access fails until re-registered.
    pub valid: bool,
    /// A fast-register MR (`ib_alloc_mr`): the most pages a REG_MR work request may map.
    /// Such an MR starts invalid and unmapped; REG_MR maps it and makes its new key valid.
    pub fast_reg: Option<u32>,
}

/// Why a key does not grant an access. Mapped to a completion status or NAK by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No such key, wrong key byte, invalidated, or another PD.
    BadKey,
    /// The MR exists but does not grant the access.
    Access,
    /// The range is outside the MR.
    Bounds,
}

impl Mr {
    /// Checks that `[iova, iova + len)` is inside the region, that `pd` owns it and that it
    /// grants `need`.
    pub fn check(
        &self,
        key: MemKey,
        pd: PdHandle,
        iova: u64,
        len: u64,
        need: Access,
    ) -> Result<(), KeyError> {
        if !self.valid || self.key != key || self.pd != pd {
            return Err(KeyError::BadKey);
        }
        if !self.access.contains(need) {
            return Err(KeyError::Access);
        }
        let end = iova.checked_add(len).ok_or(KeyError::Bounds)?;
        if iova < self.iova || end > self.iova + self.len {
            return Err(KeyError::Bounds);
        }
        Ok(())
    }

    /// Appends the guest-physical segments of `[iova, iova + len)` (already checked) to `out`.
    pub fn translate(&self, iova: u64, len: u64, out: &mut Segments) -> Result<(), KeyError> {
        if len == 0 {
            return Ok(());
        }
        match &self.map {
            MrMap::Contiguous { gpa } => {
                let off = iova - self.iova;
                let start = gpa.checked_add(off).ok_or(KeyError::Bounds)?;
                push_seg(out, start, len)?;
            }
            MrMap::Pages { page_shift, pages } => {
                // Registration refuses other page sizes; a restored or hand-built Mr might not.
                if !MR_PAGE_SHIFTS.contains(page_shift) {
                    return Err(KeyError::Bounds);
                }
                let psize = 1u64 << page_shift;
                let base = self.iova & !(psize - 1);
                let mut cur = iova;
                let mut left = len;
                while left > 0 {
                    let idx = ((cur - base) >> page_shift) as usize;
                    let in_page = cur & (psize - 1);
                    let chunk = (psize - in_page).min(left);
                    let page = *pages.get(idx).ok_or(KeyError::Bounds)?;
                    // The page list comes from the guest: a page address near the top of the
                    // address space must fail the access, not overflow.
                    let gpa = page.checked_add(in_page).ok_or(KeyError::Bounds)?;
                    push_seg(out, gpa, chunk)?;
                    cur += chunk;
                    left -= chunk;
                }
            }
        }
        Ok(())
    }
}

/// Adds a segment, merging it with the previous one when they touch. A run that would wrap
/// past the end of the address space (a hostile base or page address) is refused.
fn push_seg(out: &mut Segments, gpa: u64, len: u64) -> Result<(), KeyError> {
    gpa.checked_add(len).ok_or(KeyError::Bounds)?;
    let mut gpa = gpa;
    let mut len = len;
    // Segments carry u32 lengths; split larger runs.
    while len > 0 {
        let chunk = len.min(u32::MAX as u64 / 2);
        if let Some(last) = out.last_mut() {
            if last.gpa + last.len as u64 == gpa && (last.len as u64 + chunk) <= u32::MAX as u64 / 2
            {
                last.len += chunk as u32;
                gpa += chunk;
                len -= chunk;
                continue;
            }
        }
        out.push(Segment {
            gpa,
            len: chunk as u32,
        });
        gpa += chunk;
        len -= chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mr(map: MrMap) -> Mr {
        Mr {
            pd: PdHandle(1),
            iova: 0x1800,
            len: 0x2000,
            access: Access::LOCAL_WRITE | Access::REMOTE_READ,
            key: MemKey::from_parts(3, 7),
            map,
            valid: true,
            fast_reg: None,
        }
    }

    #[test]
    fn check_enforces_key_pd_access_and_bounds() {
        let m = mr(MrMap::Contiguous { gpa: 0x1800 });
        let k = m.key;
        assert_eq!(
            m.check(k, PdHandle(1), 0x1800, 0x2000, Access::REMOTE_READ),
            Ok(())
        );
        assert_eq!(
            m.check(
                MemKey::from_parts(3, 8),
                PdHandle(1),
                0x1800,
                1,
                Access::empty()
            ),
            Err(KeyError::BadKey)
        );
        assert_eq!(
            m.check(k, PdHandle(2), 0x1800, 1, Access::empty()),
            Err(KeyError::BadKey)
        );
        assert_eq!(
            m.check(k, PdHandle(1), 0x1800, 1, Access::REMOTE_WRITE),
            Err(KeyError::Access)
        );
        assert_eq!(
            m.check(k, PdHandle(1), 0x17ff, 1, Access::empty()),
            Err(KeyError::Bounds)
        );
        assert_eq!(
            m.check(k, PdHandle(1), 0x3000, 0x801, Access::empty()),
            Err(KeyError::Bounds)
        );
        assert_eq!(
            m.check(k, PdHandle(1), u64::MAX, 2, Access::empty()),
            Err(KeyError::Bounds)
        );
    }

    #[test]
    fn page_list_translation_splits_at_page_boundaries() {
        let m = mr(MrMap::Pages {
            page_shift: 12,
            pages: vec![0x10000, 0x30000, 0x20000],
        });
        let mut segs = Segments::new();
        m.translate(0x1f00, 0x300, &mut segs).unwrap();
        assert_eq!(
            segs.as_slice(),
            &[
                Segment {
                    gpa: 0x10f00,
                    len: 0x100
                },
                Segment {
                    gpa: 0x30000,
                    len: 0x200
                }
            ]
        );
        let mut segs = Segments::new();
        let contiguous = mr(MrMap::Contiguous { gpa: 0x9000 });
        contiguous.translate(0x1900, 0x10, &mut segs).unwrap();
        assert_eq!(
            segs.as_slice(),
            &[Segment {
                gpa: 0x9100,
                len: 0x10
            }]
        );
    }
}
