//! Memory windows: a remote-access view of part of an MR, with its own R_Key and rights.
//!
//! A window's key index lives above [`MW_INDEX_BASE`], so an R_Key says by itself whether it
//! names a window or an MR (rxe splits its key indices the same way). The checks follow rxe's
//! `rxe_mw.c`, stricter where IBTA is: a request through a window must lie inside the window,
//! not only inside its MR, and both window types check the QP's PD (docs/transport.md,
//! "Memory windows").

use crate::mr::Mr;
use crate::table::Table;
use crate::types::{MemKey, PdHandle, Qpn};
use crate::verbs::{Access, MwType, WcStatus};

/// Key indices at or above this name memory windows; below it, MRs. Window number `n` of the
/// VF's window table has key index `MW_INDEX_BASE + n`.
pub const MW_INDEX_BASE: u32 = 0x80_0000;

/// The most windows a VF holds, whatever its MR limit says: every window number must fit in
/// the 24-bit key index above [`MW_INDEX_BASE`].
pub const MAX_MW_NUMBER: u32 = MW_INDEX_BASE - 1;

/// Rights a window may grant (rxe: remote read, write and atomic).
pub const MW_ACCESS: Access = Access::REMOTE_READ
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_ATOMIC);

/// Whether `key` names a memory window.
pub fn is_mw_key(key: MemKey) -> bool {
    key.index() >= MW_INDEX_BASE
}

/// The window-table number of a window key.
pub fn mw_number(key: MemKey) -> u32 {
    key.index().wrapping_sub(MW_INDEX_BASE)
}

/// What a bound window grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MwBinding {
    /// The key of the MR the window lies in, as it was at bind time.
    pub mr: MemKey,
    pub addr: u64,
    pub len: u64,
    pub access: Access,
    /// Type 2: the QP it was bound on, the only one its R_Key is valid on.
    pub qpn: Option<Qpn>,
}

/// A memory window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mw {
    pub pd: PdHandle,
    pub kind: MwType,
    /// The current R_Key (its key byte changes with every bind).
    pub key: MemKey,
    /// `None`: unbound (type 2: free; type 1: allocated or bound with length 0).
    pub binding: Option<MwBinding>,
}

/// The bind verb's arguments, as the work request carries them.
#[derive(Clone, Copy, Debug)]
pub struct BindArgs {
    pub mw: MemKey,
    pub rkey: MemKey,
    pub mr: MemKey,
    pub addr: u64,
    pub len: u64,
    pub access: Access,
}

/// Executes a BIND_MW work request posted on QP `qpn` (PD `pd`). Every refusal is
/// `MW_BIND_ERR`, as in rxe's `rxe_bind_mw`.
pub fn bind(mws: &mut Table<Mw>, mrs: &Table<Mr>, qpn: Qpn, pd: PdHandle, a: BindArgs) -> WcStatus {
    match check_bind(mws, mrs, pd, &a) {
        Ok(()) => {}
        Err(()) => return WcStatus::MwBindErr,
    }
    let Some(mw) = mws.get_mut(mw_number(a.mw)) else {
        return WcStatus::MwBindErr;
    };
    mw.key = MemKey::from_parts(a.mw.index(), a.rkey.key_byte());
    mw.binding = (a.len > 0).then_some(MwBinding {
        mr: a.mr,
        addr: a.addr,
        len: a.len,
        access: a.access,
        qpn: (mw.kind == MwType::Type2).then_some(qpn),
    });
    WcStatus::Success
}

fn check_bind(mws: &Table<Mw>, mrs: &Table<Mr>, pd: PdHandle, a: &BindArgs) -> Result<(), ()> {
    if !is_mw_key(a.mw) {
        return Err(());
    }
    let mw = mws.get(mw_number(a.mw)).ok_or(())?;
    if mw.key != a.mw || mw.pd != pd {
        return Err(());
    }
    if !MW_ACCESS.contains(a.access) {
        // Local rights, MW_BIND or ZERO_BASED on a window.
        return Err(());
    }
    match mw.kind {
        // o10-37.2.30: a type 2 window is bound once, then invalidated before the next bind;
        // o10-37.2.40: binding one to nothing is not how it is invalidated.
        MwType::Type2 if mw.binding.is_some() || a.len == 0 => return Err(()),
        // A type 1 window bound with length 0 is unbound; the MR is not looked at.
        MwType::Type1 if a.len == 0 => return Ok(()),
        _ => {}
    }
    let mr = mrs.get(a.mr.index()).ok_or(())?;
    if is_mw_key(a.mr) || mr.key != a.mr || !mr.valid || mr.pd != pd {
        return Err(());
    }
    // C10-73: the MR must allow windows; C10-74: a writable window needs a writable MR.
    if !mr.access.contains(Access::MW_BIND) {
        return Err(());
    }
    if a.access
        .intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
        && !mr.access.contains(Access::LOCAL_WRITE)
    {
        return Err(());
    }
    // C10-75: the window lies inside the MR.
    let end = a.addr.checked_add(a.len).ok_or(())?;
    if a.addr < mr.iova || end > mr.iova.saturating_add(mr.len) {
        return Err(());
    }
    Ok(())
}

/// Invalidates the type 2 window `key`: by LOCAL_INV posted on a QP of PD `pd`
/// (`on_qp == None`), or by a SEND_WITH_INV arriving on QP `on_qp`, the QP it is bound on.
/// A type 1 window cannot be invalidated (o10-37.2.26). Whether it was invalidated.
pub fn invalidate(mws: &mut Table<Mw>, key: MemKey, pd: PdHandle, on_qp: Option<Qpn>) -> bool {
    let Some(mw) = mws.get_mut(mw_number(key)) else {
        return false;
    };
    let Some(b) = mw.binding else {
        return false;
    };
    if mw.key != key || mw.kind != MwType::Type2 || mw.pd != pd {
        return false;
    }
    if on_qp.is_some() && b.qpn != on_qp {
        return false;
    }
    mw.binding = None;
    true
}

/// Whether any window is bound inside the MR `key` (it cannot be invalidated or deregistered
/// then, as in rxe).
pub fn mr_has_windows(mws: &Table<Mw>, key: MemKey) -> bool {
    mws.iter()
        .any(|(_, w)| w.binding.is_some_and(|b| b.mr == key))
}
