//! Delta checkpoints: a VF's state relative to an earlier full checkpoint of it (the base).
//!
//! A delta carries the identity, events and counters whole (they are small and change all the
//! time), every object that is new or different since the base, and the numbers of the base's
//! objects that no longer exist. Live migration can send the base while the VF still runs
//! and only the delta in the blackout. A delta names its base by [`digest`], so applying it to
//! any other state is refused ([`CheckpointError::WrongBase`]) instead of building a VF that
//! never existed.

use super::codec::BINARY;
use super::container::{encode_full, DeltaV2};
use super::v2::*;
use super::v2::{BaseStateV2, RemovedStateV2};
use super::CheckpointError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The SHA-256 of `s` as a full checkpoint in the binary codec: the same for the same state,
/// whatever codec it was read from or will be written in.
pub fn digest(s: &VfStateV2) -> Result<[u8; 32], CheckpointError> {
    Ok(Sha256::digest(encode_full(s, BINARY)?).into())
}

/// One table of numbered objects: what changed (new or different) and what was removed.
fn table<T: Clone + PartialEq>(base: &[(u32, T)], cur: &[(u32, T)]) -> (Vec<(u32, T)>, Vec<u32>) {
    let old: BTreeMap<u32, &T> = base.iter().map(|(n, o)| (*n, o)).collect();
    let now: BTreeMap<u32, &T> = cur.iter().map(|(n, o)| (*n, o)).collect();
    let changed = now
        .iter()
        .filter(|(n, o)| old.get(n) != Some(o))
        .map(|(n, o)| (*n, (*o).clone()))
        .collect();
    let removed = old
        .keys()
        .filter(|n| !now.contains_key(n))
        .copied()
        .collect();
    (changed, removed)
}

fn numbered_qps(qps: &[QpStateV2]) -> Vec<(u32, QpStateV2)> {
    qps.iter().map(|q| (q.qpn.0, q.clone())).collect()
}

fn numbered_pds(pds: &[u32]) -> Vec<(u32, ())> {
    pds.iter().map(|p| (*p, ())).collect()
}

/// A base as a migration keeps it: the state and its digest, computed once. The source makes
/// every delta of a pre-copy against the same base, and the destination applies them to it:
/// with the digest kept, neither re-encodes and hashes the whole base for each delta.
#[derive(Clone, Debug, PartialEq)]
pub struct Base {
    state: VfStateV2,
    digest: [u8; 32],
}

impl Base {
    pub fn new(state: VfStateV2) -> Result<Base, CheckpointError> {
        let digest = digest(&state)?;
        Ok(Base { state, digest })
    }

    pub fn state(&self) -> &VfStateV2 {
        &self.state
    }

    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The delta that turns this base into `cur`.
    pub fn delta(&self, cur: &VfStateV2) -> DeltaV2 {
        changes(&self.state, self.digest, cur)
    }

    /// The full state `d` describes; refused unless `d` names this base.
    pub fn apply(&self, d: DeltaV2) -> Result<VfStateV2, CheckpointError> {
        if self.digest != d.base.digest {
            return Err(CheckpointError::WrongBase);
        }
        merged(&self.state, d)
    }
}

/// The delta that turns `base` into `cur` (the base's digest computed here: see [`Base`]).
pub fn delta(base: &VfStateV2, cur: &VfStateV2) -> Result<DeltaV2, CheckpointError> {
    Ok(changes(base, digest(base)?, cur))
}

/// The full state `d` describes, given the `base` it names (whose digest is computed here).
pub fn apply(base: &VfStateV2, d: DeltaV2) -> Result<VfStateV2, CheckpointError> {
    if digest(base)? != d.base.digest {
        return Err(CheckpointError::WrongBase);
    }
    merged(base, d)
}

fn changes(base: &VfStateV2, digest: [u8; 32], cur: &VfStateV2) -> DeltaV2 {
    let (pds, removed_pds) = table(&numbered_pds(&base.pds), &numbered_pds(&cur.pds));
    let (mrs, removed_mrs) = table(&base.mrs, &cur.mrs);
    let (cqs, removed_cqs) = table(&base.cqs, &cur.cqs);
    let (srqs, removed_srqs) = table(&base.srqs, &cur.srqs);
    let (ahs, removed_ahs) = table(&base.ahs, &cur.ahs);
    let (qps, removed_qps) = table(&numbered_qps(&base.qps), &numbered_qps(&cur.qps));
    DeltaV2 {
        base: BaseStateV2 { digest },
        changed: VfStateV2 {
            identity: cur.identity,
            pds: pds.into_iter().map(|p| p.0).collect(),
            mrs,
            cqs,
            srqs,
            ahs,
            qps: qps.into_iter().map(|q| q.1).collect(),
            events: cur.events.clone(),
            counters: cur.counters.clone(),
            // Complete lists (container.rs, `SectionKind::Mws`).
            mws: cur.mws.clone(),
            fast_reg_mrs: cur.fast_reg_mrs.clone(),
        },
        removed: RemovedStateV2 {
            pds: removed_pds,
            mrs: removed_mrs,
            cqs: removed_cqs,
            srqs: removed_srqs,
            ahs: removed_ahs,
            qps: removed_qps,
        },
    }
}

/// `base`'s table with `removed` taken out and `changed` put in, ascending. Refuses a removal
/// of an object the base does not have, an object both removed and changed, and a number used
/// twice in one list.
fn merge<T>(
    what: &str,
    base: Vec<(u32, T)>,
    changed: Vec<(u32, T)>,
    removed: &[u32],
) -> Result<Vec<(u32, T)>, CheckpointError> {
    let bad = |m: String| Err(CheckpointError::Invalid(format!("delta: {what} {m}")));
    // Bounded by the base and the delta, both already decoded.
    let mut out: BTreeMap<u32, T> = BTreeMap::new();
    for (n, o) in base {
        if out.insert(n, o).is_some() {
            return bad(format!("{n} twice in the base"));
        }
    }
    for n in removed {
        if out.remove(n).is_none() {
            return bad(format!("{n} removed but not in the base"));
        }
    }
    let gone: BTreeSet<u32> = removed.iter().copied().collect();
    let mut seen = BTreeSet::new();
    for (n, o) in changed {
        if gone.contains(&n) {
            return bad(format!("{n} both removed and changed"));
        }
        if !seen.insert(n) {
            return bad(format!("{n} twice in the delta"));
        }
        out.insert(n, o);
    }
    Ok(out.into_iter().collect())
}

/// `base` with `d` applied, its base already checked.
fn merged(base: &VfStateV2, d: DeltaV2) -> Result<VfStateV2, CheckpointError> {
    let b = base.clone();
    let c = d.changed;
    let r = &d.removed;
    let pds = merge(
        "PD",
        b.pds.iter().map(|p| (*p, ())).collect(),
        c.pds.iter().map(|p| (*p, ())).collect(),
        &r.pds,
    )?;
    let qps = merge(
        "QP",
        b.qps.into_iter().map(|q| (q.qpn.0, q)).collect(),
        c.qps.into_iter().map(|q| (q.qpn.0, q)).collect(),
        &r.qps,
    )?;
    Ok(VfStateV2 {
        identity: c.identity,
        pds: pds.into_iter().map(|p| p.0).collect(),
        mrs: merge("MR", b.mrs, c.mrs, &r.mrs)?,
        cqs: merge("CQ", b.cqs, c.cqs, &r.cqs)?,
        srqs: merge("SRQ", b.srqs, c.srqs, &r.srqs)?,
        ahs: merge("AH", b.ahs, c.ahs, &r.ahs)?,
        qps: qps.into_iter().map(|q| q.1).collect(),
        events: c.events,
        counters: c.counters,
        mws: c.mws,
        fast_reg_mrs: c.fast_reg_mrs,
    })
}
