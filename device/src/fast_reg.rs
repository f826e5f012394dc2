//! Fast-register MRs: `ib_alloc_mr` makes an MR with no mapping, invalid; a REG_MR work
//! request maps it onto a guest page list and makes its new key valid; LOCAL_INV (or a
//! SEND_WITH_INV) makes it invalid again, ready for the next REG_MR. The checks follow rxe's
//! `rxe_reg_fast_mr`, and every refusal is `LOC_QP_OP_ERR` as there (docs/transport.md,
//! "Fast-register MRs").

use crate::memory::SharedMemory;
use crate::mr::{Mr, MrMap, MR_PAGE_SHIFTS};
use crate::packet::Segments;
use crate::table::Table;
use crate::types::{MemKey, PdHandle};
use crate::verbs::{Access, WcStatus};

/// The most pages one fast-register MR may map (rxe's `max_fast_reg_page_list_len`).
pub const MAX_FAST_REG_PAGES: u32 = 512;

/// Rights a fast-register MR may be given.
pub const FAST_REG_ACCESS: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_READ)
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_ATOMIC)
    .union(Access::MW_BIND);

/// A REG_MR work request's fields.
#[derive(Clone, Copy, Debug)]
pub struct RegArgs {
    pub key: MemKey,
    pub page_list: u64,
    pub npages: u32,
    pub page_shift: u8,
    pub iova: u64,
    pub len: u64,
    pub access: Access,
}

/// Pages of `1 << shift` bytes that `[iova, iova + len)` touches (at least one).
pub fn pages_needed(iova: u64, len: u64, shift: u8) -> Option<u64> {
    let psize = 1u64 << shift;
    let off = iova & (psize - 1);
    Some(off.checked_add(len)?.div_ceil(psize).max(1))
}

/// Whether every byte of `segs` is guest memory (probing the first and last byte of each).
pub fn in_guest_memory(mem: &SharedMemory, segs: &Segments) -> bool {
    segs.iter().all(|s| {
        let mut b = [0u8; 1];
        let Some(end) = s.gpa.checked_add((s.len as u64).saturating_sub(1)) else {
            return false;
        };
        s.len == 0 || (mem.read(s.gpa, &mut b).is_ok() && mem.read(end, &mut b).is_ok())
    })
}

/// Executes a REG_MR work request posted on a QP of PD `pd`.
pub fn register(
    mrs: &mut Table<Mr>,
    mem: &SharedMemory,
    max_mr_size: u64,
    pd: PdHandle,
    a: RegArgs,
) -> WcStatus {
    // An MR with windows bound is valid (LOCAL_INV refuses to invalidate it), so the
    // free-state check below also keeps windows from seeing their MR change.
    match mapping(mrs, mem, max_mr_size, pd, &a) {
        Some(map) => {
            let Some(mr) = mrs.get_mut(a.key.index()) else {
                return WcStatus::LocQpOpErr;
            };
            mr.iova = a.iova;
            mr.len = a.len;
            mr.access = a.access;
            mr.key = a.key;
            mr.map = map;
            mr.valid = true;
            WcStatus::Success
        }
        None => WcStatus::LocQpOpErr,
    }
}

/// The checks of a REG_MR and the mapping it makes, or `None` when it must fail.
fn mapping(
    mrs: &Table<Mr>,
    mem: &SharedMemory,
    max_mr_size: u64,
    pd: PdHandle,
    a: &RegArgs,
) -> Option<MrMap> {
    let mr = mrs.get(a.key.index())?;
    let max = mr.fast_reg?;
    // rxe: only a free (invalid) MR of the QP's PD, and only the key byte may change (the
    // index is the same by construction of the lookup).
    if mr.valid || mr.pd != pd || crate::mw::is_mw_key(a.key) {
        return None;
    }
    if !FAST_REG_ACCESS.contains(a.access)
        || (a
            .access
            .intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
            && !a.access.contains(Access::LOCAL_WRITE))
    {
        return None;
    }
    if !MR_PAGE_SHIFTS.contains(&a.page_shift)
        || a.len > max_mr_size
        || a.iova.checked_add(a.len).is_none()
    {
        return None;
    }
    // The page list covers the region exactly, within the MR's max_num_sg.
    if a.npages == 0
        || a.npages > max
        || pages_needed(a.iova, a.len, a.page_shift)? != a.npages as u64
    {
        return None;
    }
    // Bounded by MAX_FAST_REG_PAGES through max_num_sg, whatever the WR says.
    let mut raw = vec![0u8; a.npages as usize * 8];
    mem.read(a.page_list, &mut raw).ok()?;
    let psize = 1u64 << a.page_shift;
    let pages: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if pages.iter().any(|p| p & (psize - 1) != 0) {
        return None;
    }
    let map = MrMap::Pages {
        page_shift: a.page_shift,
        pages,
    };
    let probe = Mr {
        pd,
        iova: a.iova,
        len: a.len,
        access: a.access,
        key: a.key,
        map,
        valid: true,
        fast_reg: Some(max),
    };
    let mut segs = Segments::new();
    probe.translate(a.iova, a.len, &mut segs).ok()?;
    if !in_guest_memory(mem, &segs) {
        return None;
    }
    Some(probe.map)
}
