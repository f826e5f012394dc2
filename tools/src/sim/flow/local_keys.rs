//! An RC side's own keys that change under work requests: a fast-register MR (REG_MR with a
//! new key byte when it is invalid, LOCAL_INV when it is valid) and a type 2 window (BIND_MW
//! with a new key byte when it is free, LOCAL_INV when it is bound). Local work requests run in
//! send queue order, so the model of each key advances at post time; a completion is checked
//! against it. Separate from `rc.rs` because it is its own model with its own checks.

use super::*;

/// The model of one side's fast-register MR or window: its key now and whether it is valid
/// (registered, bound).
#[derive(Clone, Copy, Debug)]
pub(super) struct LocalKey {
    pub(super) key: MemKey,
    pub(super) valid: bool,
    /// Window: the MR it is bound in.
    pub(super) mr: MemKey,
}

/// The same object's key with the next key byte (what a consumer does before each REG_MR or
/// bind).
fn next_key(k: MemKey) -> MemKey {
    MemKey::from_parts(k.index(), k.key_byte().wrapping_add(1))
}

/// The object of `kind` (allocated on first use) with `state`, and the work request that
/// flips it: `None` after a violation. `local` is this WR's slot, which is its own until it
/// completes: the REG_MR page list goes there.
pub(super) fn next_op(
    w: &mut World,
    c: &mut Checker,
    kind: Kind,
    state: Option<LocalKey>,
    q: &QpEnd,
    local: u64,
) -> Option<(SendOp, LocalKey)> {
    let m = match state {
        Some(m) => m,
        None => match first_use(w, kind, q, local) {
            Ok(m) => m,
            Err(e) => {
                c.violation(format!("{}: {e}", kind.name()));
                return None;
            }
        },
    };
    if m.valid {
        return Some((
            SendOp::LocalInv { key: m.key },
            LocalKey { valid: false, ..m },
        ));
    }
    let key = next_key(m.key);
    let op = if kind == Kind::FastReg {
        // One page: the one holding the slot.
        let page = local & !4095;
        if let Err(e) = w.write(q.vf, local, &page.to_le_bytes()) {
            c.violation(format!("page list for REG_MR: {e}"));
            return None;
        }
        SendOp::RegMr {
            mr: key,
            page_list: local,
            npages: 1,
            page_shift: 12,
            iova: page,
            len: 4096,
            access: Access::LOCAL_WRITE,
        }
    } else {
        SendOp::BindMw {
            mw: m.key,
            rkey: key,
            mr: m.mr,
            addr: w.vf(q.vf).mr(m.mr).map_or(0, |r| r.iova),
            len: 64,
            access: Access::REMOTE_READ,
        }
    };
    Some((
        op,
        LocalKey {
            key,
            valid: true,
            ..m
        },
    ))
}

fn first_use(w: &mut World, kind: Kind, q: &QpEnd, local: u64) -> VerbsResult<LocalKey> {
    let vf = w.vf_mut(q.vf);
    if kind == Kind::FastReg {
        let key = vf.alloc_mr(q.pd, 1)?;
        return Ok(LocalKey {
            key,
            valid: false,
            mr: key,
        });
    }
    let mr = vf.reg_mr(q.pd, local, 64, Access::LOCAL_WRITE | Access::MW_BIND)?;
    let key = vf.alloc_mw(q.pd, MwType::Type2)?;
    Ok(LocalKey {
        key,
        valid: false,
        mr,
    })
}

/// Checks the successful completion of `p`: the opcode of the WR posted and, unless a later
/// WR of the same kind is pending (`later`), the key's state it left.
pub(super) fn check_done(
    w: &World,
    c: &mut Checker,
    what: &str,
    q: &QpEnd,
    p: &Posted,
    later: bool,
    wc: &WorkCompletion,
) {
    let Some((op, key)) = p.local else {
        return;
    };
    let vf = w.vf(q.vf);
    let valid = if p.kind == Kind::FastReg {
        vf.mr(key).map(|m| m.valid)
    } else {
        vf.mw(key).map(|m| m.key == key && m.binding.is_some())
    };
    let want = op != WcOpcode::LocalInv;
    if wc.opcode != op || (!later && valid != Some(want)) {
        c.violation(format!(
            "{what}: {} completed as {:?}, the key {key} now {valid:?}",
            p.kind.name(),
            wc.opcode
        ));
    }
}
