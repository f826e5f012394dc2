//! An RC side's own keys that change under work requests: a fast-register MR (REG_MR with a
//! new key byte when it is invalid, LOCAL_INV when it is valid) and a type 2 window (BIND_MW
//! with a new key byte when it is free, LOCAL_INV when it is bound). Local work requests run in
//! send queue order, so the model of each key advances at post time; a completion is checked
//! against it. Separate from `rc.rs` because it is its own model with its own checks. The
//! peer's requests through these keys are `remote_keys.rs`.

use super::*;

/// Bytes of the key region each of the peer's slots uses: one slot's request at a time, so a
/// READ's prepared bytes or an atomic's prepared word cannot be overwritten under it.
pub(super) const CHUNK: u64 = 512;

/// Where the fast-register MR's I/O virtual addresses start: far from the guest-physical
/// address of its pages, so an access lands right only through the page list.
const FRMR_IOVA: u64 = 0x5a00_0000_0000;

/// A side's memory for its fast-register MR and window (only with `RcPlan::local_keys`), where
/// the peer's requests reach them (`remote_keys.rs`).
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyRegion {
    /// Page aligned: the pages the fast-register MR maps, `len` bytes of them used.
    pub(super) frmr_pages: u64,
    pub(super) npages: u32,
    /// The window's MR, and the window bound over all of it.
    pub(super) window_base: u64,
    /// The REG_MR page list.
    pub(super) page_list: u64,
    /// Bytes of each object: a chunk per peer slot.
    pub(super) len: u64,
}

impl KeyRegion {
    pub(super) fn alloc(w: &mut World, v: VfAddr, peer_depth: usize) -> VerbsResult<KeyRegion> {
        let len = peer_depth.max(1) as u64 * CHUNK;
        let npages = len.div_ceil(4096);
        // A page of slack for the alignment: `World::alloc` aligns to 64 bytes only.
        let base = w.alloc(v, 4096 + npages * 4096 + len + npages * 8)?;
        let frmr_pages = base.next_multiple_of(4096);
        let window_base = frmr_pages + npages * 4096;
        Ok(KeyRegion {
            frmr_pages,
            npages: npages as u32,
            window_base,
            page_list: window_base + len,
            len,
        })
    }

    /// The REG_MR the next valid key of the fast-register MR comes from: the page list is
    /// written into guest memory as a driver would.
    pub(super) fn reg_mr(&self, w: &World, vf: VfAddr, key: MemKey) -> VerbsResult<SendOp> {
        let list: Vec<u8> = (0..self.npages as u64)
            .flat_map(|i| (self.frmr_pages + i * 4096).to_le_bytes())
            .collect();
        w.write(vf, self.page_list, &list)?;
        Ok(SendOp::RegMr {
            mr: key,
            page_list: self.page_list,
            npages: self.npages,
            page_shift: 12,
            iova: FRMR_IOVA,
            len: self.len,
            access: Access::LOCAL_WRITE
                | Access::REMOTE_READ
                | Access::REMOTE_WRITE
                | Access::REMOTE_ATOMIC,
        })
    }

    /// Where `obj`'s range starts as the peer names it, and in guest-physical memory.
    pub(super) fn bases(&self, obj: Kind) -> (u64, u64) {
        match obj {
            Kind::FastReg => (FRMR_IOVA, self.frmr_pages),
            _ => (self.window_base, self.window_base),
        }
    }
}

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
/// flips it: `None` after a violation. The objects live in `region`, where the peer's
/// requests may reach them (`remote_keys.rs`).
pub(super) fn next_op(
    w: &mut World,
    c: &mut Checker,
    kind: Kind,
    state: Option<LocalKey>,
    q: &QpEnd,
    region: Option<KeyRegion>,
) -> Option<(SendOp, LocalKey)> {
    let Some(region) = region else {
        c.violation(format!("{}: no key region", kind.name()));
        return None;
    };
    let m = match state {
        Some(m) => m,
        None => match first_use(w, kind, q, &region) {
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
        match region.reg_mr(w, q.vf, key) {
            Ok(op) => op,
            Err(e) => {
                c.violation(format!("page list for REG_MR: {e}"));
                return None;
            }
        }
    } else {
        // The whole of its MR, with every remote right: the peer's requests use them.
        SendOp::BindMw {
            mw: m.key,
            rkey: key,
            mr: m.mr,
            addr: region.window_base,
            len: region.len,
            access: Access::REMOTE_READ | Access::REMOTE_WRITE | Access::REMOTE_ATOMIC,
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

fn first_use(w: &mut World, kind: Kind, q: &QpEnd, region: &KeyRegion) -> VerbsResult<LocalKey> {
    let vf = w.vf_mut(q.vf);
    if kind == Kind::FastReg {
        let key = vf.alloc_mr(q.pd, region.npages)?;
        return Ok(LocalKey {
            key,
            valid: false,
            mr: key,
        });
    }
    let mr = vf.reg_mr(
        q.pd,
        region.window_base,
        region.len,
        Access::LOCAL_WRITE | Access::MW_BIND,
    )?;
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
