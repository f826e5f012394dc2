//! The verbs-shaped programming interface: what a libibverbs program calls, as a trait.
//!
//! Test programs and tools are written against [`Verbs`], so the same program runs on an
//! in-process VF (`vhca_fabric::Context`) and, through the guest driver, on a VF behind a
//! vhost-user socket. A context also owns the application's buffers: in a VM they live in guest
//! memory, so allocating and touching them is part of the interface.

use crate::error::VerbsResult;
use crate::types::{AhHandle, CqHandle, Gid, MemKey, PdHandle, Qpn, SrqHandle};
use crate::verbs::{
    Access, AhAttr, MwBindInfo, MwType, QpAttr, QpAttrMask, QpInitAttr, RecvWr, SendOp, SendWr,
    WorkCompletion,
};

/// An open device context (`ibv_context`) with its verbs.
pub trait Verbs {
    /// The port's GID (index 0; on RoCEv2 the IPv4-mapped address).
    fn gid(&self) -> Gid;

    /// Reserves `len` bytes of application memory; returns its address.
    fn alloc_buf(&mut self, len: u64) -> VerbsResult<u64>;
    fn write_buf(&mut self, addr: u64, data: &[u8]) -> VerbsResult<()>;
    fn read_buf(&mut self, addr: u64, len: usize) -> VerbsResult<Vec<u8>>;

    fn alloc_pd(&mut self) -> VerbsResult<PdHandle>;
    fn dealloc_pd(&mut self, pd: PdHandle) -> VerbsResult<()>;
    fn reg_mr(&mut self, pd: PdHandle, addr: u64, len: u64, access: Access) -> VerbsResult<MemKey>;
    fn dereg_mr(&mut self, key: MemKey) -> VerbsResult<()>;
    /// `ib_alloc_mr(pd, IB_MR_TYPE_MEM_REG, max_num_sg)`: a fast-register MR, invalid until a
    /// `SendOp::RegMr` work request registers it.
    fn alloc_mr(&mut self, pd: PdHandle, max_num_sg: u32) -> VerbsResult<MemKey>;
    /// `ibv_alloc_mw`: answers the window's R_Key.
    fn alloc_mw(&mut self, pd: PdHandle, kind: MwType) -> VerbsResult<MemKey>;
    fn dealloc_mw(&mut self, mw: MemKey) -> VerbsResult<()>;

    /// `ibv_bind_mw` for a type 1 window: posts the BIND_MW work request libibverbs posts
    /// (ordered with the QP's other work requests) with the window's next key byte, and
    /// answers the R_Key the window has once it completes.
    fn bind_mw(
        &mut self,
        qpn: Qpn,
        wr_id: u64,
        mw: MemKey,
        bind: MwBindInfo,
    ) -> VerbsResult<MemKey> {
        let rkey = MemKey::from_parts(mw.index(), mw.key_byte().wrapping_add(1));
        let op = SendOp::BindMw {
            mw,
            rkey,
            mr: bind.mr,
            addr: bind.addr,
            len: bind.len,
            access: bind.access,
        };
        self.post_send(qpn, &SendWr::new(wr_id, op))?;
        Ok(rkey)
    }

    fn create_cq(&mut self, cqe: u32) -> VerbsResult<CqHandle>;
    fn destroy_cq(&mut self, cq: CqHandle) -> VerbsResult<()>;
    fn req_notify_cq(&mut self, cq: CqHandle, solicited_only: bool) -> VerbsResult<()>;
    /// Moves up to `max` completions into `out` (appending); returns how many. Like
    /// `ibv_poll_cq` it never waits, but it lets the device make progress first.
    fn poll_cq(
        &mut self,
        cq: CqHandle,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize>;

    fn create_srq(&mut self, pd: PdHandle, max_wr: u32, max_sge: u32) -> VerbsResult<SrqHandle>;
    fn modify_srq(&mut self, srq: SrqHandle, limit: u32) -> VerbsResult<()>;
    fn post_srq_recv(&mut self, srq: SrqHandle, wr: RecvWr) -> VerbsResult<()>;
    fn destroy_srq(&mut self, srq: SrqHandle) -> VerbsResult<()>;

    fn create_ah(&mut self, pd: PdHandle, attr: AhAttr) -> VerbsResult<AhHandle>;
    fn destroy_ah(&mut self, ah: AhHandle) -> VerbsResult<()>;

    fn create_qp(&mut self, init: QpInitAttr) -> VerbsResult<Qpn>;
    fn modify_qp(&mut self, qpn: Qpn, attr: &QpAttr, mask: QpAttrMask) -> VerbsResult<()>;
    fn query_qp(&mut self, qpn: Qpn) -> VerbsResult<(QpAttr, QpInitAttr)>;
    fn destroy_qp(&mut self, qpn: Qpn) -> VerbsResult<()>;

    fn post_send(&mut self, qpn: Qpn, wr: &SendWr) -> VerbsResult<()>;
    fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> VerbsResult<()>;
}
