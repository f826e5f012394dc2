//! An in-process device context: a VF of a shared [`World`] behind the [`Verbs`] trait.
//!
//! Several contexts share one world (`Rc<RefCell<World>>`), as several processes share one
//! fabric. `poll_cq` pumps the world once before it polls, so a program that loops on
//! `poll_cq` — every verbs program — drives the simulation forward by itself.

use crate::world::{VfAddr, World};
use std::cell::RefCell;
use std::rc::Rc;
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, MemKey, PdHandle, QpAttr, QpAttrMask, QpInitAttr, Qpn,
    RecvWr, SendWr, SrqHandle, Verbs, VerbsResult, WorkCompletion,
};

/// A world shared by several contexts.
pub type SharedWorld = Rc<RefCell<World>>;

pub struct Context {
    world: SharedWorld,
    vf: VfAddr,
}

impl Context {
    /// Opens VF `vf` of `world` (`ibv_open_device`).
    pub fn open(world: &SharedWorld, vf: VfAddr) -> Context {
        Context {
            world: world.clone(),
            vf,
        }
    }

    pub fn vf(&self) -> VfAddr {
        self.vf
    }

    fn with<T>(&self, f: impl FnOnce(&mut vhca_device::Vf) -> T) -> T {
        let mut w = self.world.borrow_mut();
        f(w.vf_mut(self.vf))
    }
}

/// One unit of progress: a step at the current instant, or, if nothing moved, a jump of the
/// clock to the next scheduled event.
pub fn pump(world: &mut World) {
    if !world.step() {
        if let Some(t) = world.next_event() {
            if t > world.now {
                world.now = t;
            }
            world.step();
        }
    }
}

impl Verbs for Context {
    fn gid(&self) -> Gid {
        self.world.borrow().gid(self.vf)
    }

    fn alloc_buf(&mut self, len: u64) -> VerbsResult<u64> {
        self.world.borrow_mut().alloc(self.vf, len)
    }

    fn write_buf(&mut self, addr: u64, data: &[u8]) -> VerbsResult<()> {
        self.world.borrow().write(self.vf, addr, data)
    }

    fn read_buf(&mut self, addr: u64, len: usize) -> VerbsResult<Vec<u8>> {
        self.world.borrow().read(self.vf, addr, len)
    }

    fn alloc_pd(&mut self) -> VerbsResult<PdHandle> {
        self.with(|v| v.alloc_pd())
    }

    fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()> {
        self.with(|v| v.dealloc_pd(pd))
    }

    fn reg_mr(&mut self, pd: PdHandle, addr: u64, len: u64, access: Access) -> VerbsResult<MemKey> {
        self.with(|v| v.reg_mr(pd, addr, len, access))
    }

    fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()> {
        self.with(|v| v.dereg_mr(key))
    }

    fn alloc_mr(&mut self, pd: PdHandle, max_num_sg: u32) -> VerbsResult<MemKey> {
        self.with(|v| v.alloc_mr(pd, max_num_sg))
    }

    fn alloc_mw(&mut self, pd: PdHandle, kind: vhca_device::MwType) -> VerbsResult<MemKey> {
        self.with(|v| v.alloc_mw(pd, kind))
    }

    fn dealloc_mw(&mut self, mw: MemKey) -> VerbsResult<()> {
        self.with(|v| v.dealloc_mw(mw))
    }

    fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle> {
        self.with(|v| v.create_cq(cqe))
    }

    fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()> {
        self.with(|v| v.destroy_cq(cq))
    }

    fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()> {
        self.with(|v| v.req_notify_cq(cq, solicited_only))
    }

    fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        let mut w = self.world.borrow_mut();
        let n = w.vf_mut(self.vf).poll_cq(cq, max, out)?;
        if n > 0 {
            return Ok(n);
        }
        pump(&mut w);
        w.vf_mut(self.vf).poll_cq(cq, max, out)
    }

    fn create_srq(&mut self, pd: PdHandle, max_wr: u32, max_sge: u32) -> VerbsResult<SrqHandle> {
        self.with(|v| v.create_srq(pd, max_wr, max_sge))
    }

    fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()> {
        self.with(|v| v.modify_srq(srq, limit))
    }

    fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()> {
        self.with(|v| v.post_srq_recv(srq, wr))
    }

    fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()> {
        self.with(|v| v.destroy_srq(srq))
    }

    fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle> {
        self.with(|v| v.create_ah(pd, attr))
    }

    fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()> {
        self.with(|v| v.destroy_ah(ah))
    }

    fn create_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn> {
        self.with(|v| v.create_qp(init))
    }

    fn modify_qp(&mut self, qpn: Qpn, attr: &QpAttr, mask: QpAttrMask) -> VerbsResult<()> {
        self.with(|v| v.modify_qp(qpn, attr, mask))
    }

    fn query_qp(&mut self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)> {
        self.with(|v| v.query_qp(qpn))
    }

    fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()> {
        self.with(|v| v.destroy_qp(qpn))
    }

    fn post_send(&mut self, qpn: Qpn, wr: &SendWr) -> VerbsResult<()> {
        self.with(|v| v.post_send(qpn, wr))
    }

    fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> VerbsResult<()> {
        self.with(|v| v.post_recv(qpn, wr))
    }
}
