//! The peer's side of a side's own keys (`local_keys.rs`): its RDMA WRITEs, READs and atomics
//! sometimes go through this side's fast-register MR or bound type 2 window by the key the
//! model says it has now, and its SEND_WITH_INV sometimes invalidates one of them.
//!
//! Ordering is what makes the outcome predictable. The owner changes a key with local work
//! requests on its own send queue; the peer uses it with requests on its send queue, which the
//! owner's responder runs in PSN order. The two never overlap: the peer draws a keyed request
//! only while the owner has no local request on that object pending, and the owner draws none
//! on an object while one of the peer's requests naming it is in flight (`End::remote_users`);
//! nor does the peer invalidate one under its own requests still in flight (see `draw_inv`).
//! So the model's key and validity at the peer's post time are what the responder sees, and
//! each access must succeed (its bytes checked) or be refused with REMOTE_ACCESS_ERROR.

use super::local_keys::{LocalKey, CHUNK};
use super::*;

/// Which of `End::remote_users` counts the peer's requests naming `obj`.
pub(super) fn user_index(obj: Kind) -> usize {
    usize::from(obj == Kind::Window)
}

/// One of the peer's requests through the owner's fast-register MR or window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Via {
    /// `Kind::FastReg` or `Kind::Window`.
    pub(super) obj: Kind,
    pub(super) rkey: MemKey,
    /// The address the request names.
    pub(super) addr: u64,
    /// Where in the owner's memory its bytes are when it is allowed.
    pub(super) phys: u64,
    pub(super) len: u32,
    /// Why the responder must refuse it; `None`: it must succeed.
    pub(super) refused: Option<&'static str>,
    /// Atomics: the word's value after it ran.
    pub(super) after: Option<u64>,
}

fn state(owner: &End, obj: Kind) -> Option<LocalKey> {
    match obj {
        Kind::FastReg => owner.fast_reg,
        _ => owner.window,
    }
}

/// Whether the peer may name `obj` now: it exists and no local request of the owner on it is
/// pending (its key may be changing).
fn settled(owner: &End, obj: Kind) -> Option<LocalKey> {
    owner.region?;
    let s = state(owner, obj)?;
    (!owner.posted.iter().any(|p| p.kind == obj)).then_some(s)
}

/// Maybe routes the peer's `kind` request of its slot `slot` through one of the owner's keys:
/// mostly a valid key inside the range; with `errors`, rarely a stale key (the object
/// invalidated, or an older key byte) or a range outside it.
pub(super) fn draw(
    rng: &mut ChaCha8Rng,
    kind: Kind,
    owner: &End,
    slot: usize,
    errors: bool,
) -> Option<Via> {
    if !matches!(
        kind,
        Kind::Write | Kind::Read | Kind::CmpSwap | Kind::FetchAdd
    ) || owner.region.is_none()
        || !rng.gen_bool(0.25)
    {
        return None;
    }
    let obj = if rng.gen_bool(0.5) {
        Kind::FastReg
    } else {
        Kind::Window
    };
    let s = settled(owner, obj)?;
    let region = owner.region?;
    let atomic = matches!(kind, Kind::CmpSwap | Kind::FetchAdd);
    let (len, off) = if atomic {
        (8, 8 * rng.gen_range(0..CHUNK / 8))
    } else {
        let len = rng.gen_range(1..=CHUNK);
        (len, rng.gen_range(0..=CHUNK - len))
    };
    let (base, phys_base) = region.bases(obj);
    let at = slot as u64 * CHUNK + off;
    let mut via = Via {
        obj,
        rkey: s.key,
        addr: base + at,
        phys: phys_base + at,
        len: len as u32,
        refused: None,
        after: None,
    };
    if !s.valid {
        // Naming an invalid key ends the connection: rarely.
        if !(errors && rng.gen_bool(0.1)) {
            return None;
        }
        via.refused = Some("its key invalidated");
    } else if errors && rng.gen_bool(0.03) {
        if rng.gen_bool(0.5) {
            via.rkey = MemKey::from_parts(s.key.index(), s.key.key_byte().wrapping_sub(1));
            via.refused = Some("an older key byte");
        } else {
            // Atomics stay aligned: a misaligned one is another error.
            via.addr = match (rng.gen_bool(0.5), atomic) {
                (true, true) => base - 8,
                (true, false) => base - rng.gen_range(1..=len),
                (false, true) => base + region.len,
                (false, false) => base + region.len - len + rng.gen_range(1..=len),
            };
            via.refused = Some("a range outside it");
        }
    }
    Some(via)
}

/// Maybe makes the peer's SEND_WITH_INV invalidate one of the owner's valid keys.
pub(super) fn draw_inv(rng: &mut ChaCha8Rng, owner: &End) -> Option<Via> {
    if owner.region.is_none() || !rng.gen_bool(0.4) {
        return None;
    }
    let obj = if rng.gen_bool(0.5) {
        Kind::FastReg
    } else {
        Kind::Window
    };
    // Not while one of the peer's own requests naming it is in flight either: a READ's key is
    // checked again for every response packet, also when a lost response makes the requester
    // ask again (rxe's `rxe_recheck_mr` on a duplicate), and vhca runs the requests behind a
    // READ while its response stream is still queued; an invalidation right behind the READ
    // would fail it.
    if owner.remote_users[user_index(obj)] > 0 {
        return None;
    }
    let s = settled(owner, obj).filter(|s| s.valid)?;
    Some(Via {
        obj,
        rkey: s.key,
        addr: 0,
        phys: 0,
        len: 0,
        refused: None,
        after: None,
    })
}

/// Marks the owner's key invalid: the peer's SEND_WITH_INV naming it is posted, and runs
/// before anything the peer posts later.
pub(super) fn invalidated(owner: &mut End, obj: Kind) {
    let m = match obj {
        Kind::FastReg => &mut owner.fast_reg,
        _ => &mut owner.window,
    };
    if let Some(m) = m {
        m.valid = false;
    }
}

/// The peer's request for `via` (WRITE, READ or an atomic). An atomic's word is prepared in
/// the owner's memory, as its application would, so the value it returns and leaves are known.
pub(super) fn op(
    rng: &mut ChaCha8Rng,
    w: &World,
    owner: VfAddr,
    kind: Kind,
    via: &mut Via,
    posted: &mut Posted,
) -> SendOp {
    let (remote_addr, rkey) = (via.addr, via.rkey);
    match kind {
        Kind::Read => SendOp::Read { remote_addr, rkey },
        Kind::CmpSwap | Kind::FetchAdd => {
            let before: u64 = rng.gen();
            let _ = w.write(owner, via.phys, &before.to_le_bytes());
            posted.expect_orig = before;
            if kind == Kind::FetchAdd {
                let add = rng.gen::<u64>() >> rng.gen_range(0..64);
                via.after = Some(before.wrapping_add(add));
                SendOp::FetchAdd {
                    remote_addr,
                    rkey,
                    add,
                }
            } else {
                let compare = if rng.gen_bool(0.5) { before } else { rng.gen() };
                let swap = rng.gen();
                via.after = Some(if compare == before { swap } else { before });
                SendOp::CmpSwap {
                    remote_addr,
                    rkey,
                    compare,
                    swap,
                }
            }
        }
        _ => SendOp::Write { remote_addr, rkey },
    }
}

/// Checks what a successful request through a key left in the owner's memory beyond what
/// `rc.rs` checks for every WRITE, READ and atomic (an atomic's word), and counts it.
pub(super) fn check_done(w: &World, c: &mut Checker, what: &str, owner: VfAddr, via: &Via) {
    if let Some(after) = via.after {
        let got = w.read(owner, via.phys, 8).unwrap_or_default();
        if got != after.to_le_bytes() {
            c.violation(format!(
                "{what}: an atomic through the peer's {} left {got:x?}, model says {after:#x}",
                via.obj.name()
            ));
        }
    }
    if via.obj == Kind::FastReg {
        c.remote_keys.through_fast_reg += 1;
    } else {
        c.remote_keys.through_window += 1;
    }
}

/// Checks the owner's object no longer holds `key` validly after the peer's SEND_WITH_INV
/// named it (the object may hold a newer key already), and counts it.
pub(super) fn check_invalidated(
    w: &World,
    c: &mut Checker,
    what: &str,
    q: &QpEnd,
    obj: Kind,
    key: MemKey,
) {
    let vf = w.vf(q.vf);
    let holds = if obj == Kind::FastReg {
        vf.mr(key).is_some_and(|m| m.valid)
    } else {
        vf.mw(key)
            .is_some_and(|m| m.key == key && m.binding.is_some())
    };
    if holds {
        c.violation(format!(
            "{what}: SEND_WITH_INV of {key} left the {} valid",
            obj.name()
        ));
    }
    c.remote_keys.invalidated_by_send += 1;
}
