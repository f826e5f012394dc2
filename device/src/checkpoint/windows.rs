//! Memory windows and fast-register MRs in a v2 checkpoint: their wire structs (two section
//! kinds added to v2, `Mws` and `FastRegMrs`; a blob without them is one that has none), the
//! save conversions, and the load checks that tie them to the MRs, PDs and QPs of the same
//! state. Their own file because they came after the rest of v2 and reference several kinds.
//!
//! In a delta both sections are complete lists, not changes: a handful of small objects, and
//! the `RemovedStateV2` section (positional) has no room for their numbers.

use super::{invalid, CheckpointError, MrStateV2, QpStateV2};
use crate::fast_reg::MAX_FAST_REG_PAGES;
use crate::mr::Mr;
use crate::mw::{Mw, MwBinding, MW_ACCESS, MW_INDEX_BASE};
use crate::types::{MemKey, PdHandle, Qpn};
use crate::verbs::{Access, MwType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A memory window (section `Mws`: `[(u32, MwStateV2)]`, its number first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MwStateV2 {
    pub pd: PdHandle,
    pub kind: MwType,
    /// The current R_Key; its index is `0x800000 + number`.
    pub key: MemKey,
    /// `None`: unbound (type 2: free).
    pub binding: Option<MwBindingStateV2>,
}

/// What a bound window grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MwBindingStateV2 {
    /// The key of the MR the window lies in.
    pub mr: MemKey,
    pub addr: u64,
    pub len: u64,
    pub access: Access,
    /// Type 2: the QP it is bound on; type 1: none.
    pub qpn: Option<Qpn>,
}

/// What makes an MR a fast-register MR (section `FastRegMrs`: `[(u32, FastRegStateV2)]`, the
/// MR's number first; the MR itself is in the `Mrs` section).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FastRegStateV2 {
    pub max_num_sg: u32,
}

impl From<&Mw> for MwStateV2 {
    fn from(w: &Mw) -> Self {
        MwStateV2 {
            pd: w.pd,
            kind: w.kind,
            key: w.key,
            binding: w.binding.map(|b| MwBindingStateV2 {
                mr: b.mr,
                addr: b.addr,
                len: b.len,
                access: b.access,
                qpn: b.qpn,
            }),
        }
    }
}

/// What the window checks look up, sorted by number so that each lookup is a binary search
/// (a hostile blob with many windows and many MRs must not cost their product).
pub struct Lookup<'a> {
    pub pds: &'a [u32],
    mrs: Vec<(u32, &'a MrStateV2)>,
    qps: Vec<(Qpn, PdHandle)>,
}

impl<'a> Lookup<'a> {
    pub fn new(pds: &'a [u32], mrs: &'a [(u32, MrStateV2)], qps: &[QpStateV2]) -> Lookup<'a> {
        let mut m: Vec<(u32, &MrStateV2)> = mrs.iter().map(|(n, s)| (*n, s)).collect();
        m.sort_unstable_by_key(|e| e.0);
        let mut q: Vec<(Qpn, PdHandle)> = qps.iter().map(|p| (p.qpn, p.init.pd)).collect();
        q.sort_unstable_by_key(|e| e.0 .0);
        Lookup {
            pds,
            mrs: m,
            qps: q,
        }
    }

    fn mr(&self, n: u32) -> Option<&'a MrStateV2> {
        let i = self.mrs.binary_search_by_key(&n, |e| e.0).ok()?;
        Some(self.mrs[i].1)
    }

    fn qp_pd(&self, q: Qpn) -> Option<PdHandle> {
        let i = self.qps.binary_search_by_key(&q.0, |e| e.0 .0).ok()?;
        Some(self.qps[i].1)
    }
}

/// Window number `n`, checked against the state it belongs to: its key names it, its PD
/// exists, and a binding is one a bind could have made and nothing since has undone — inside
/// a valid MR of its PD that allows windows (and local write for a writable window), rights a
/// window may have, a length, and for type 2 (only) a QP of its PD.
pub fn check_mw(n: u32, w: &MwStateV2, cx: &Lookup<'_>) -> Result<Mw, CheckpointError> {
    let bad = |what: &str| invalid(format!("MW {n}: {what}"));
    if n == 0 || w.key.index() != MW_INDEX_BASE.wrapping_add(n) || n >= MW_INDEX_BASE {
        return bad("key index");
    }
    if cx.pds.binary_search(&w.pd.0).is_err() {
        return bad("no such PD");
    }
    let binding = match w.binding {
        None => None,
        Some(b) => {
            let Some(mr) = cx.mr(b.mr.index()) else {
                return bad("bound to a missing MR");
            };
            if mr.key != b.mr || !mr.valid || mr.pd != w.pd {
                return bad("bound to an invalid MR, a stale key or an MR of another PD");
            }
            if !mr.access.contains(Access::MW_BIND)
                || !MW_ACCESS.contains(b.access)
                || (b
                    .access
                    .intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
                    && !mr.access.contains(Access::LOCAL_WRITE))
            {
                return bad("rights the MR does not allow");
            }
            let end = b.addr.checked_add(b.len);
            if b.len == 0 || b.addr < mr.iova || end.is_none_or(|e| e > mr.iova + mr.len) {
                return bad("range outside its MR");
            }
            match (w.kind, b.qpn) {
                (MwType::Type1, None) => {}
                (MwType::Type2, Some(q)) => {
                    if cx.qp_pd(q) != Some(w.pd) {
                        return bad("bound on a missing QP or a QP of another PD");
                    }
                }
                _ => return bad("a type 1 window names a QP, or a type 2 one none"),
            }
            Some(MwBinding {
                mr: b.mr,
                addr: b.addr,
                len: b.len,
                access: b.access,
                qpn: b.qpn,
            })
        }
    };
    Ok(Mw {
        pd: w.pd,
        kind: w.kind,
        key: w.key,
        binding,
    })
}

/// Marks MR `n` fast-register, checked: the MR exists, `max_num_sg` is one `alloc_mr` accepts,
/// and its page list (once registered) fits it.
pub fn apply_fast_reg(
    n: u32,
    f: FastRegStateV2,
    mr: Option<&mut Mr>,
) -> Result<(), CheckpointError> {
    let Some(mr) = mr else {
        return invalid(format!("fast-register MR {n}: no such MR"));
    };
    if f.max_num_sg == 0 || f.max_num_sg > MAX_FAST_REG_PAGES || mr.fast_reg.is_some() {
        return invalid(format!("fast-register MR {n}: max_num_sg or listed twice"));
    }
    if let crate::mr::MrMap::Pages { pages, .. } = &mr.map {
        if pages.len() as u64 > f.max_num_sg as u64 {
            return invalid(format!("fast-register MR {n}: more pages than max_num_sg"));
        }
    } else {
        return invalid(format!("fast-register MR {n}: not a page-list MR"));
    }
    mr.fast_reg = Some(f.max_num_sg);
    Ok(())
}
