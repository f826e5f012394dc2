//! The verbs commands for a VF's shared objects: protection domains, memory regions (with the
//! check that every byte is guest memory), completion queues and their events, shared receive
//! queues and address handles. Separate from `queue_pairs.rs` because these objects only
//! allocate and validate; none of them runs the transport.

use super::Vf;
use crate::cq::{Arm, Cq};
use crate::error::{VerbsError as E, VerbsResult};
use crate::mr::{Mr, MrMap};
use crate::mw::Mw;
use crate::resources::{Ah, Pd};
use crate::srq::Srq;
use crate::types::{AhHandle, CqHandle, MemKey, PdHandle, SrqHandle};
use crate::verbs::{Access, AhAttr, AsyncEvent, MwType, RecvWr, WorkCompletion};
use std::collections::VecDeque;

fn bad_key(_: ()) -> E {
    E::NotFound("memory region")
}

impl Vf {
    // ---- protection domains -------------------------------------------------------------

    pub fn alloc_pd(&mut self) -> VerbsResult<PdHandle> {
        self.res
            .pds
            .insert(Pd)
            .map(PdHandle)
            .ok_or(E::Exhausted("PD"))
    }

    pub fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        let used = self.res.mrs.iter().any(|(_, m)| m.pd == pd)
            || self.qps.iter().any(|(_, q)| q.pd() == pd)
            || self.res.srqs.iter().any(|(_, s)| s.pd == pd)
            || self.res.ahs.iter().any(|(_, a)| a.pd == pd)
            || self.res.mws.iter().any(|(_, w)| w.pd == pd);
        if used {
            return Err(E::Busy("PD"));
        }
        self.res.pds.remove(pd.0);
        Ok(())
    }

    // ---- memory regions -----------------------------------------------------------------

    /// Registers `[iova, iova + len)` where virtual equals guest-physical.
    pub fn reg_mr(
        &mut self,
        pd: PdHandle,
        iova: u64,
        len: u64,
        access: Access,
    ) -> VerbsResult<MemKey> {
        self.reg_mr_mapped(pd, iova, len, access, MrMap::Contiguous { gpa: iova })
    }

    /// Registers a region with an explicit mapping (a driver's guest page list).
    pub fn reg_mr_mapped(
        &mut self,
        pd: PdHandle,
        iova: u64,
        len: u64,
        access: Access,
        map: MrMap,
    ) -> VerbsResult<MemKey> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        // A page shift outside 4 KiB..1 GiB from a guest would overflow `1 << page_shift`.
        if let MrMap::Pages { page_shift, .. } = &map {
            if !crate::mr::MR_PAGE_SHIFTS.contains(page_shift) {
                return Err(E::Invalid("MR page size"));
            }
        }
        if len > self.res.limits.max_mr_size || iova.checked_add(len).is_none() {
            return Err(E::Invalid("MR length"));
        }
        // IBTA: remote write or atomic access requires local write.
        if access.intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
            && !access.contains(Access::LOCAL_WRITE)
        {
            return Err(E::Invalid("remote write/atomic access needs local write"));
        }
        // Guest memory has no persistence domain a FLUSH could reach; rxe refuses the flag
        // for memory that is not pmem the same way.
        if access.contains(Access::FLUSH_PERSISTENT) {
            return Err(E::Invalid(
                "FLUSH_PERSISTENT: guest memory is not persistent",
            ));
        }
        if access.contains(Access::ZERO_BASED) {
            return Err(E::Invalid("zero-based MRs are not supported"));
        }
        let probe = Mr {
            pd,
            iova,
            len,
            access,
            key: MemKey(0),
            map,
            valid: true,
            fast_reg: None,
        };
        // Every byte of the region must be guest memory now.
        let mut segs = crate::packet::Segments::new();
        probe
            .translate(iova, len, &mut segs)
            .map_err(|_| E::Fault)?;
        if !crate::fast_reg::in_guest_memory(&self.res.mem, &segs) {
            return Err(E::Fault);
        }
        self.insert_mr(probe)
    }

    /// Numbers a new MR and gives it the next key byte.
    fn insert_mr(&mut self, mr: Mr) -> VerbsResult<MemKey> {
        self.key_byte = self.key_byte.wrapping_add(1);
        let kb = self.key_byte;
        let idx = self.res.mrs.insert(mr).ok_or(E::Exhausted("MR"))?;
        // Key indices from MW_INDEX_BASE up name windows.
        if idx >= crate::mw::MW_INDEX_BASE {
            self.res.mrs.remove(idx);
            return Err(E::Exhausted("MR key indices"));
        }
        let key = MemKey::from_parts(idx, kb);
        if let Some(m) = self.res.mrs.get_mut(idx) {
            m.key = key;
        }
        Ok(key)
    }

    /// `ib_alloc_mr(pd, IB_MR_TYPE_MEM_REG, max_num_sg)`: a fast-register MR, unmapped and
    /// invalid until a REG_MR work request registers it.
    pub fn alloc_mr(&mut self, pd: PdHandle, max_num_sg: u32) -> VerbsResult<MemKey> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        if max_num_sg == 0 || max_num_sg > crate::fast_reg::MAX_FAST_REG_PAGES {
            return Err(E::Invalid("max_num_sg"));
        }
        self.insert_mr(Mr {
            pd,
            iova: 0,
            len: 0,
            access: Access::empty(),
            key: MemKey(0),
            map: MrMap::Pages {
                page_shift: 12,
                pages: Vec::new(),
            },
            valid: false,
            fast_reg: Some(max_num_sg),
        })
    }

    pub fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()> {
        match self.res.mrs.get(key.index()) {
            Some(m) if m.key == key && !crate::mw::is_mw_key(key) => {}
            _ => return Err(bad_key(())),
        }
        // rxe refuses too: a bound window must not outlive the memory it names.
        if crate::mw::mr_has_windows(&self.res.mws, key) {
            return Err(E::Busy("MR (memory windows are bound to it)"));
        }
        self.res.mrs.remove(key.index());
        Ok(())
    }

    // ---- memory windows -----------------------------------------------------------------

    /// `ibv_alloc_mw`: a type 1 window is unbound until `bind_mw`; a type 2 window is free
    /// until a BIND_MW work request binds it.
    pub fn alloc_mw(&mut self, pd: PdHandle, kind: MwType) -> VerbsResult<MemKey> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        let n = self
            .res
            .mws
            .insert(Mw {
                pd,
                kind,
                key: MemKey(0),
                binding: None,
            })
            .ok_or(E::Exhausted("MW"))?;
        if n > crate::mw::MAX_MW_NUMBER {
            self.res.mws.remove(n);
            return Err(E::Exhausted("MW key indices"));
        }
        self.key_byte = self.key_byte.wrapping_add(1);
        let key = MemKey::from_parts(crate::mw::MW_INDEX_BASE + n, self.key_byte);
        if let Some(w) = self.res.mws.get_mut(n) {
            w.key = key;
        }
        Ok(key)
    }

    /// `ibv_dealloc_mw`: a bound window is unbound with it (rxe's cleanup). The key may carry
    /// any key byte the window has had: the consumer holds the window, not its latest R_Key.
    pub fn dealloc_mw(&mut self, key: MemKey) -> VerbsResult<()> {
        if !crate::mw::is_mw_key(key) {
            return Err(E::NotFound("memory window"));
        }
        self.res
            .mws
            .remove(crate::mw::mw_number(key))
            .map(|_| ())
            .ok_or(E::NotFound("memory window"))
    }

    pub fn mw(&self, key: MemKey) -> Option<&Mw> {
        if !crate::mw::is_mw_key(key) {
            return None;
        }
        self.res.mws.get(crate::mw::mw_number(key))
    }

    pub fn mr(&self, key: MemKey) -> Option<&Mr> {
        self.res.mrs.get(key.index()).filter(|m| m.key == key)
    }

    // ---- completion queues --------------------------------------------------------------

    pub fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle> {
        if cqe == 0 || cqe > self.res.limits.max_cqe {
            return Err(E::Invalid("CQ size"));
        }
        self.res
            .cqs
            .insert(Cq::new(cqe))
            .map(CqHandle)
            .ok_or(E::Exhausted("CQ"))
    }

    pub fn resize_cq(&mut self, cq: CqHandle, cqe: u32) -> VerbsResult<()> {
        let max = self.res.limits.max_cqe;
        let q = self.res.cqs.get_mut(cq.0).ok_or(E::NotFound("CQ"))?;
        if cqe == 0 || cqe > max || (cqe as usize) < q.entries.len() {
            return Err(E::Invalid("CQ size"));
        }
        q.capacity = cqe;
        Ok(())
    }

    pub fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()> {
        self.res.cqs.get(cq.0).ok_or(E::NotFound("CQ"))?;
        if self
            .qps
            .iter()
            .any(|(_, q)| q.send_cq() == cq || q.recv_cq() == cq)
        {
            return Err(E::Busy("CQ"));
        }
        self.res.cqs.remove(cq.0);
        Ok(())
    }

    /// Arms the CQ: the next completion (or the next solicited one) raises a CQ event.
    pub fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()> {
        let q = self.res.cqs.get_mut(cq.0).ok_or(E::NotFound("CQ"))?;
        q.armed = Some(if solicited_only {
            Arm::Solicited
        } else {
            Arm::Next
        });
        Ok(())
    }

    /// Moves up to `max` completions into `out`; returns how many.
    pub fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        let q = self.res.cqs.get_mut(cq.0).ok_or(E::NotFound("CQ"))?;
        Ok(q.poll(max, out))
    }

    /// The next CQ that raised a completion event.
    pub fn poll_cq_event(&mut self) -> Option<CqHandle> {
        self.res.cq_events.pop_front()
    }

    pub fn poll_async_event(&mut self) -> Option<AsyncEvent> {
        self.res.async_events.pop_front()
    }

    // ---- shared receive queues ----------------------------------------------------------

    pub fn create_srq(
        &mut self,
        pd: PdHandle,
        max_wr: u32,
        max_sge: u32,
    ) -> VerbsResult<SrqHandle> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        let l = &self.res.limits;
        if max_wr == 0 || max_wr > l.max_srq_wr || max_sge > l.max_sge {
            return Err(E::Invalid("SRQ size"));
        }
        let srq = Srq {
            pd,
            max_wr,
            max_sge,
            queue: VecDeque::new(),
            limit: 0,
        };
        self.res
            .srqs
            .insert(srq)
            .map(SrqHandle)
            .ok_or(E::Exhausted("SRQ"))
    }

    /// Arms the SRQ limit event (`ibv_modify_srq` with `IBV_SRQ_LIMIT`).
    pub fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()> {
        let s = self.res.srqs.get_mut(srq.0).ok_or(E::NotFound("SRQ"))?;
        if limit > s.max_wr {
            return Err(E::Invalid("SRQ limit above its size"));
        }
        s.limit = limit;
        Ok(())
    }

    pub fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()> {
        let s = self.res.srqs.get_mut(srq.0).ok_or(E::NotFound("SRQ"))?;
        if wr.sgl.len() as u32 > s.max_sge {
            return Err(E::Invalid("too many SGEs"));
        }
        if s.queue.len() as u32 >= s.max_wr {
            return Err(E::QueueFull);
        }
        s.queue.push_back(wr);
        // A QP waiting on RNR may proceed sooner; RNR timers handle it, nothing to do here.
        Ok(())
    }

    pub fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()> {
        self.res.srqs.get(srq.0).ok_or(E::NotFound("SRQ"))?;
        if self.qps.iter().any(|(_, q)| q.srq() == Some(srq)) {
            return Err(E::Busy("SRQ"));
        }
        self.res.srqs.remove(srq.0);
        Ok(())
    }

    // ---- address handles ----------------------------------------------------------------

    pub fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle> {
        self.res.pds.get(pd.0).ok_or(E::NotFound("PD"))?;
        if attr.dgid.is_zero() {
            return Err(E::Invalid("RoCE address handles need a GID"));
        }
        self.res
            .ahs
            .insert(Ah { pd, attr })
            .map(AhHandle)
            .ok_or(E::Exhausted("AH"))
    }

    pub fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()> {
        self.res
            .ahs
            .remove(ah.0)
            .map(|_| ())
            .ok_or(E::NotFound("AH"))
    }
}
