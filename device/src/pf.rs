//! The physical function: a container of VFs with a `totalvfs` limit, as SR-IOV has.

use crate::error::{VerbsError, VerbsResult};
use crate::memory::SharedMemory;
use crate::types::Mac;
use crate::vf::{Vf, VfIdentity};

/// One PF and its VFs, each in its own slot (the VF index).
pub struct Pf {
    pub index: u8,
    totalvfs: u16,
    vfs: Vec<Option<Vf>>,
}

impl Pf {
    pub fn new(index: u8, totalvfs: u16) -> Pf {
        Pf {
            index,
            totalvfs,
            vfs: (0..totalvfs).map(|_| None).collect(),
        }
    }

    pub fn totalvfs(&self) -> u16 {
        self.totalvfs
    }

    /// The identity vhca gives VF `vf` of this PF unless told otherwise: a locally administered
    /// MAC `02:56:48:43:<pf>:<vf>` and the IPv4 GID `::ffff:10.200.<pf>.<vf + 1>`.
    pub fn default_identity(&self, vf: u16) -> VfIdentity {
        let v = (vf & 0xff) as u8;
        VfIdentity::new(
            Mac([0x02, 0x56, 0x48, 0x43, self.index, v]),
            [10, 200, self.index, v.wrapping_add(1)],
        )
    }

    /// Creates a VF in the first free slot.
    pub fn create_vf(&mut self, identity: VfIdentity, mem: SharedMemory) -> VerbsResult<u16> {
        let slot = self
            .vfs
            .iter()
            .position(|v| v.is_none())
            .ok_or(VerbsError::NoVf)?;
        self.vfs[slot] = Some(Vf::new(identity, mem));
        Ok(slot as u16)
    }

    /// Puts an already built VF (a restored one) into slot `vf`.
    pub fn insert_vf(&mut self, vf: u16, dev: Vf) -> VerbsResult<()> {
        let slot = self.vfs.get_mut(vf as usize).ok_or(VerbsError::NoVf)?;
        if slot.is_some() {
            return Err(VerbsError::Busy("VF slot"));
        }
        *slot = Some(dev);
        Ok(())
    }

    pub fn destroy_vf(&mut self, vf: u16) -> VerbsResult<Vf> {
        self.vfs
            .get_mut(vf as usize)
            .and_then(|s| s.take())
            .ok_or(VerbsError::NotFound("VF"))
    }

    pub fn vf(&self, vf: u16) -> Option<&Vf> {
        self.vfs.get(vf as usize).and_then(|s| s.as_ref())
    }

    pub fn vf_mut(&mut self, vf: u16) -> Option<&mut Vf> {
        self.vfs.get_mut(vf as usize).and_then(|s| s.as_mut())
    }

    pub fn vfs(&self) -> impl Iterator<Item = (u16, &Vf)> {
        self.vfs
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (i as u16, v)))
    }

    pub fn vfs_mut(&mut self) -> impl Iterator<Item = (u16, &mut Vf)> {
        self.vfs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| v.as_mut().map(|v| (i as u16, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;

    #[test]
    fn totalvfs_is_enforced_and_slots_are_reused() {
        let mut pf = Pf::new(0, 2);
        let a = pf
            .create_vf(pf.default_identity(0), VecMemory::shared(4096))
            .unwrap();
        let b = pf
            .create_vf(pf.default_identity(1), VecMemory::shared(4096))
            .unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(
            pf.create_vf(pf.default_identity(2), VecMemory::shared(4096))
                .err(),
            Some(VerbsError::NoVf)
        );
        pf.destroy_vf(0).unwrap();
        assert_eq!(
            pf.create_vf(pf.default_identity(0), VecMemory::shared(4096))
                .unwrap(),
            0
        );
        assert_ne!(pf.vf(0).unwrap().gid(), pf.vf(1).unwrap().gid());
    }
}
