//! The identity policy of a PF (docs/migration.md, "Identity policy"): who a slot's VF is on
//! the fabric (GID, which on a network fabric is its IPv4 address, MAC, node and port GUIDs)
//! and which limits it enforces are the PF's to assign, from its configuration. A loaded
//! device state names an identity and limits of its own; they are checked here before anything
//! of the state is built or installed.
//!
//! - Without `--accept-identity` a state must name exactly the slot's assigned identity (a
//!   migration between two processes configured alike, or back to the slot it came from).
//! - With it (a migration destination whose slots take VFs of other PFs) a state may name
//!   any identity no other slot of this PF has or is assigned.
//! - Either way its limits and port MTU may not exceed the slot's assigned ones.

use thiserror::Error;
use vhca_device::{VfIdentity, VfLimits};

/// Why a loaded state's identity or limits were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "the state names {what} {named}, but this slot's is {assigned}; a migration \
         destination that takes in VFs of other PFs runs `vhca serve --accept-identity`"
    )]
    NotAssigned {
        what: &'static str,
        named: String,
        assigned: String,
    },
    #[error("the state names {what} {named}, which is VF {other}'s of this PF")]
    Collides {
        what: &'static str,
        named: String,
        other: usize,
    },
    #[error("the state's {name} is {named}, above this PF's {allowed}")]
    AboveLimit {
        name: &'static str,
        named: u64,
        allowed: u64,
    },
    #[error("no VF slot {0}")]
    NoSlot(usize),
}

/// The fields that say who a VF is, each as (name, printable value), compared one by one.
fn fields(id: &VfIdentity) -> [(&'static str, String); 4] {
    [
        ("GID", id.gid.to_string()),
        ("MAC", id.mac.to_string()),
        ("node GUID", format!("{:016x}", id.node_guid.0)),
        ("port GUID", format!("{:016x}", id.port_guid.0)),
    ]
}

/// Every limit as (name, value), widened, for a field-by-field comparison.
fn limits(l: &VfLimits) -> [(&'static str, u64); 15] {
    [
        ("max_qp", l.max_qp.into()),
        ("max_qp_wr", l.max_qp_wr.into()),
        ("max_sge", l.max_sge.into()),
        ("max_inline_data", l.max_inline_data.into()),
        ("max_cq", l.max_cq.into()),
        ("max_cqe", l.max_cqe.into()),
        ("max_mr", l.max_mr.into()),
        ("max_mr_size", l.max_mr_size),
        ("max_pd", l.max_pd.into()),
        ("max_srq", l.max_srq.into()),
        ("max_srq_wr", l.max_srq_wr.into()),
        ("max_ah", l.max_ah.into()),
        ("max_qp_rd_atom", l.max_qp_rd_atom.into()),
        ("max_qp_init_rd_atom", l.max_qp_init_rd_atom.into()),
        ("max_msg_sz", l.max_msg_sz.into()),
    ]
}

/// Whether two identities are the same VF on the fabric (limits and MTU aside).
pub fn same_identity(a: &VfIdentity, b: &VfIdentity) -> bool {
    a.gid == b.gid && a.mac == b.mac && a.node_guid == b.node_guid && a.port_guid == b.port_guid
}

/// The identities a PF assigns to its slots and what a loaded state may name instead.
#[derive(Clone, Debug)]
pub struct IdentityPolicy {
    /// Slot `i`'s identity as the PF's configuration gives it, with the PF's limits.
    assigned: Vec<VfIdentity>,
    /// `vhca serve --accept-identity`: a state may bring an identity of its own.
    accept_foreign: bool,
}

impl IdentityPolicy {
    pub fn new(assigned: Vec<VfIdentity>, accept_foreign: bool) -> IdentityPolicy {
        IdentityPolicy {
            assigned,
            accept_foreign,
        }
    }

    /// Slot `slot`'s assigned identity.
    pub fn assigned(&self, slot: usize) -> Option<&VfIdentity> {
        self.assigned.get(slot)
    }

    pub fn accepts_foreign(&self) -> bool {
        self.accept_foreign
    }

    /// What can be checked from the configuration alone, before a state is built: the
    /// identity is the slot's own (or, accepting foreign ones, no other slot's assigned one)
    /// and the limits and MTU stay within the slot's.
    pub fn check_static(&self, slot: usize, id: &VfIdentity) -> Result<(), IdentityError> {
        let own = self.assigned(slot).ok_or(IdentityError::NoSlot(slot))?;
        for ((name, named), (_, allowed)) in limits(&id.limits).into_iter().zip(limits(&own.limits))
        {
            if named > allowed {
                return Err(IdentityError::AboveLimit {
                    name,
                    named,
                    allowed,
                });
            }
        }
        if id.port_mtu > own.port_mtu {
            return Err(IdentityError::AboveLimit {
                name: "port MTU",
                named: id.port_mtu.bytes().into(),
                allowed: own.port_mtu.bytes().into(),
            });
        }
        if !self.accept_foreign {
            for ((what, named), (_, assigned)) in fields(id).into_iter().zip(fields(own)) {
                if named != assigned {
                    return Err(IdentityError::NotAssigned {
                        what,
                        named,
                        assigned,
                    });
                }
            }
        }
        let others = self.assigned.iter().enumerate().filter(|(j, _)| *j != slot);
        collides(id, others)
    }

    /// The whole check, under the process lock just before a loaded VF is installed:
    /// [`IdentityPolicy::check_static`], and no other slot's VF has this identity now
    /// (`live[j]` is slot `j`'s current identity: a VF that migrated in keeps its own while
    /// its frontend stays).
    pub fn check(
        &self,
        slot: usize,
        id: &VfIdentity,
        live: &[VfIdentity],
    ) -> Result<(), IdentityError> {
        self.check_static(slot, id)?;
        collides(id, live.iter().enumerate().filter(|(j, _)| *j != slot))
    }
}

/// An error if `id` shares its GID, MAC or a GUID with any of `others` (slot, identity).
fn collides<'a>(
    id: &VfIdentity,
    others: impl Iterator<Item = (usize, &'a VfIdentity)>,
) -> Result<(), IdentityError> {
    let mine = fields(id);
    for (other, o) in others {
        for ((what, named), (_, theirs)) in mine.iter().zip(fields(o)) {
            if *named == theirs {
                return Err(IdentityError::Collides {
                    what,
                    named: named.clone(),
                    other,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhca_device::{Mac, Mtu, Pf};

    fn pf3(accept: bool) -> IdentityPolicy {
        let pf = Pf::new(0, 3);
        IdentityPolicy::new((0..3).map(|i| pf.default_identity(i)).collect(), accept)
    }

    fn foreign() -> VfIdentity {
        VfIdentity::new(Mac([0x02, 0x56, 0x48, 0x43, 9, 0]), [10, 200, 9, 1])
    }

    #[test]
    fn the_slots_own_identity_is_accepted() {
        let p = pf3(false);
        let own = *p.assigned(0).unwrap();
        let live: Vec<_> = (0..3).map(|i| *p.assigned(i).unwrap()).collect();
        assert_eq!(p.check(0, &own, &live), Ok(()));
    }

    #[test]
    fn another_identity_needs_accept_identity() {
        let e = pf3(false).check_static(0, &foreign()).unwrap_err();
        assert!(
            matches!(e, IdentityError::NotAssigned { what: "GID", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("--accept-identity"), "{e}");
        assert_eq!(pf3(true).check_static(0, &foreign()), Ok(()));
    }

    #[test]
    fn one_field_of_another_vf_is_refused_even_when_accepting() {
        for accept in [false, true] {
            let p = pf3(accept);
            let victim = *p.assigned(1).unwrap();
            // The victim's MAC alone, its GID alone, its port GUID alone.
            let mut mac = foreign();
            mac.mac = victim.mac;
            let mut gid = foreign();
            gid.gid = victim.gid;
            let mut guid = foreign();
            guid.port_guid = victim.port_guid;
            for id in [victim, mac, gid, guid] {
                let e = p.check_static(0, &id).unwrap_err();
                if accept {
                    assert!(matches!(e, IdentityError::Collides { other: 1, .. }), "{e}");
                }
            }
        }
    }

    #[test]
    fn an_identity_a_live_vf_migrated_in_with_is_refused() {
        let p = pf3(true);
        let mut live: Vec<_> = (0..3).map(|i| *p.assigned(i).unwrap()).collect();
        live[2] = foreign();
        let e = p.check(0, &foreign(), &live).unwrap_err();
        assert!(matches!(e, IdentityError::Collides { other: 2, .. }), "{e}");
        // Slot 2 itself may load it again.
        assert_eq!(p.check(2, &foreign(), &live), Ok(()));
    }

    #[test]
    fn limits_above_the_pfs_are_refused_and_below_accepted() {
        let p = pf3(false);
        let mut id = *p.assigned(0).unwrap();
        id.limits.max_qp = u32::MAX;
        let e = p.check_static(0, &id).unwrap_err();
        assert!(
            matches!(e, IdentityError::AboveLimit { name: "max_qp", .. }),
            "{e}"
        );
        let mut id = *p.assigned(0).unwrap();
        id.limits.max_mr_size = u64::MAX;
        assert!(p.check_static(0, &id).is_err());
        let mut id = *p.assigned(0).unwrap();
        id.limits.max_qp /= 2;
        id.port_mtu = Mtu::Mtu1024;
        assert_eq!(p.check_static(0, &id), Ok(()));
    }

    #[test]
    fn a_slot_the_pf_does_not_have_is_refused() {
        assert_eq!(
            pf3(true).check_static(3, &foreign()),
            Err(IdentityError::NoSlot(3))
        );
    }
}
