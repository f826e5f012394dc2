//! One VF as its driver sees it: the [`Vf`] plus what the guest-visible protocol adds around
//! it — ring geometry and indices of every QP, SRQ and CQ, the event backlog, error counters.
//!
//! Nothing here knows about virtqueues or threads: [`VfPort::execute`] takes a command's bytes
//! and returns the response, [`VfPort::doorbell`] takes one doorbell record,
//! [`VfPort::drain_completions`] moves completions into the guest CQ rings and events into the
//! backlog that [`VfPort::pop_event`] hands to the eventq. The vhost-user backend drives it.

use crate::protocol::command::{body, Command, Response, RingInfo, Status};
use crate::protocol::config::RdmaConfig;
use crate::protocol::doorbell::{async_code, Doorbell, Event};
use crate::protocol::ring::{self, Ring};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use vhca_device::mr::{MrMap, MR_PAGE_SHIFTS};
use vhca_device::{
    Access, AhHandle, CqHandle, MemKey, PdHandle, QpAttrMask, QpCap, QpInitAttr, QpState, QpType,
    Qpn, SharedMemory, SrqHandle, Vf, VfIdentity, WcOpcode, WcStatus, WorkCompletion,
};

pub mod state;

/// Events kept while the driver has no eventq buffer posted (docs/device-protocol.md §9).
pub const MAX_PENDING_EVENTS: usize = 1024;
/// Largest page list REG_MR reads (8 MiB of addresses: 4 GiB in 4 KiB pages, 1 PiB in 1 GiB).
pub const MAX_MR_PAGES: u32 = 1 << 20;

/// Counters of what the driver got wrong and what the device dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    pub commands: u64,
    pub command_errors: u64,
    pub doorbells: u64,
    /// Doorbells naming no object, moving backwards or too far ahead.
    pub bad_doorbells: u64,
    /// WQEs that could not be read or decoded, or that the VF refused.
    pub bad_wqes: u64,
    /// Virtqueue buffers returned unused: outside guest memory, too short, too long.
    pub bad_buffers: u64,
    pub cqes_written: u64,
    pub cq_overruns: u64,
    pub events_delivered: u64,
    pub events_lost: u64,
}

/// A QP's work queue rings and the producer indices the device has consumed up to.
#[derive(Clone, Debug)]
struct QpRings {
    qp_type: QpType,
    cap: QpCap,
    sq: Ring,
    sq_pi: u32,
    rq: Option<Ring>,
    rq_pi: u32,
    send_cq: u32,
    recv_cq: u32,
}

#[derive(Clone, Debug)]
struct SrqRing {
    ring: Ring,
    pi: u32,
    max_sge: u32,
}

/// A CQ ring: the device produces, the driver consumes and says how far (CQ_CONSUMED).
#[derive(Clone, Debug)]
struct CqRing {
    ring: Ring,
    pi: u32,
    ci: u32,
    /// Overran (or its ring left guest memory): IBTA makes the CQ unusable.
    failed: bool,
    /// Completions the backend itself generates (malformed WQEs), after the VF's own.
    injected: VecDeque<WorkCompletion>,
}

/// A QP as the control socket shows it.
#[derive(Clone, Debug, Serialize)]
pub struct QpInfo {
    pub qpn: u32,
    #[serde(rename = "type")]
    pub qp_type: String,
    pub state: String,
    pub sq_psn: u32,
    pub expected_psn: u32,
    pub una: u32,
    pub sq_depth: u32,
    pub sq_pi: u32,
    pub rq_depth: u32,
    pub rq_pi: u32,
}

/// One VF with its protocol state.
pub struct VfPort {
    pub vf: Vf,
    qps: BTreeMap<u32, QpRings>,
    srqs: BTreeMap<u32, SrqRing>,
    cqs: BTreeMap<u32, CqRing>,
    events: VecDeque<Event>,
    pub counters: PortCounters,
    wcs: Vec<WorkCompletion>,
}

fn st(e: vhca_device::VerbsError) -> Status {
    Status::from_error(e)
}

fn qp_type_name(t: QpType) -> &'static str {
    match t {
        QpType::Rc => "RC",
        QpType::Ud => "UD",
    }
}

fn state_name(s: QpState) -> &'static str {
    match s {
        QpState::Reset => "RESET",
        QpState::Init => "INIT",
        QpState::Rtr => "RTR",
        QpState::Rts => "RTS",
        QpState::Sqd => "SQD",
        QpState::Sqe => "SQE",
        QpState::Err => "ERR",
    }
}

fn error_wc(wr_id: u64, status: WcStatus, opcode: WcOpcode, qpn: u32) -> WorkCompletion {
    WorkCompletion {
        wr_id,
        status,
        opcode,
        qpn: Qpn(qpn),
        byte_len: 0,
        imm: None,
        invalidated_rkey: None,
        src_qp: Qpn(0),
        src_gid: Default::default(),
        grh: false,
        solicited: false,
    }
}

impl VfPort {
    pub fn new(identity: VfIdentity, mem: SharedMemory) -> VfPort {
        VfPort {
            vf: Vf::new(identity, mem),
            qps: BTreeMap::new(),
            srqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            events: VecDeque::new(),
            counters: PortCounters::default(),
            wcs: Vec::new(),
        }
    }

    /// Back to a fresh VF with the same identity (a new frontend, or RESET_DEVICE): every
    /// object, ring and pending event is gone; the counters stay.
    pub fn reset(&mut self, mem: SharedMemory) {
        drop(self.reset_keeping_old(mem));
    }

    /// [`VfPort::reset`], handing back the old port so the caller can drop it after releasing
    /// the process lock: freeing a VF of 16,384 QPs takes tens of milliseconds, which another
    /// VF's migration stop would otherwise wait out.
    pub fn reset_keeping_old(&mut self, mem: SharedMemory) -> VfPort {
        let counters = std::mem::take(&mut self.counters);
        let mut old = std::mem::replace(self, VfPort::new(*self.vf.identity(), mem));
        self.counters = counters;
        old.counters = PortCounters::default();
        old
    }

    pub fn identity(&self) -> &VfIdentity {
        self.vf.identity()
    }

    /// The config space (docs/device-protocol.md §4).
    pub fn config(&self) -> Vec<u8> {
        RdmaConfig::from_identity(self.vf.identity()).encode()
    }

    fn mem(&self) -> &SharedMemory {
        self.vf.memory()
    }

    /// Whether `ring` lies wholly in guest memory now.
    fn ring_in_memory(&self, ring: &Ring) -> bool {
        let mut b = [0u8; 1];
        let last = ring.gpa + ring.bytes() - 1;
        self.mem().read(ring.gpa, &mut b).is_ok() && self.mem().read(last, &mut b).is_ok()
    }

    // ---- commands ---------------------------------------------------------------------------

    /// Executes one control command (the readable part of a controlq chain).
    pub fn execute(&mut self, request: &[u8]) -> Response {
        self.counters.commands += 1;
        let r = match Command::decode(request) {
            Ok(cmd) => self.run(cmd),
            Err(s) => Err(s),
        };
        match r {
            Ok(body) => Response::ok(body),
            Err(s) => {
                self.counters.command_errors += 1;
                tracing::debug!(status = ?s, "command failed");
                Response::err(s)
            }
        }
    }

    fn run(&mut self, cmd: Command) -> Result<Vec<u8>, Status> {
        let vf = &mut self.vf;
        Ok(match cmd {
            Command::QueryDevice => RdmaConfig::from_identity(vf.identity()).encode(),
            Command::QueryPort => {
                let mtu = vf.identity().port_mtu as u8;
                body::port(4, mtu, mtu)
            }
            Command::QueryGid { index } => {
                if index != 0 {
                    return Err(Status::Invalid);
                }
                vf.gid().0.to_vec()
            }
            Command::QueryPkey { index } => {
                if index != 0 {
                    return Err(Status::Invalid);
                }
                0xffffu16.to_le_bytes().to_vec()
            }
            Command::CreatePd => body::u32v(vf.alloc_pd().map_err(st)?.0),
            Command::DestroyPd { pd } => {
                vf.dealloc_pd(PdHandle(pd)).map_err(st)?;
                Vec::new()
            }
            Command::RegMr {
                pd,
                access,
                iova,
                length,
                page_shift,
                npages,
                page_list_gpa,
            } => body::key(self.reg_mr(
                pd,
                access,
                iova,
                length,
                page_shift,
                npages,
                page_list_gpa,
            )?),
            Command::DeregMr { key } => {
                vf.dereg_mr(MemKey(key)).map_err(st)?;
                Vec::new()
            }
            Command::CreateCq { depth, ring_gpa } => body::u32v(self.create_cq(depth, ring_gpa)?),
            Command::DestroyCq { cqn } => {
                vf.destroy_cq(CqHandle(cqn)).map_err(st)?;
                self.cqs.remove(&cqn);
                Vec::new()
            }
            Command::ResizeCq {
                cqn,
                depth,
                ring_gpa,
            } => {
                self.resize_cq(cqn, depth, ring_gpa)?;
                Vec::new()
            }
            Command::ReqNotifyCq { cqn, solicited } => {
                vf.req_notify_cq(CqHandle(cqn), solicited).map_err(st)?;
                Vec::new()
            }
            Command::CreateQp {
                qp_type,
                sq_sig_all,
                pd,
                send_cq,
                recv_cq,
                srq,
                cap,
                sq_ring_gpa,
                rq_ring_gpa,
            } => {
                let (qpn, sq, rq) = self.create_qp(
                    qp_type,
                    sq_sig_all,
                    pd,
                    send_cq,
                    recv_cq,
                    srq,
                    cap,
                    sq_ring_gpa,
                    rq_ring_gpa,
                )?;
                body::create_qp(qpn, sq, rq)
            }
            Command::ModifyQp { qpn, mask, attr } => {
                let mask = QpAttrMask::from_bits(mask).ok_or(Status::Invalid)?;
                vf.modify_qp(Qpn(qpn), &attr, mask).map_err(st)?;
                if mask.contains(QpAttrMask::STATE) && attr.qp_state == QpState::Reset {
                    // RESET empties the work queues: the driver starts its rings over at 0.
                    if let Some(r) = self.qps.get_mut(&qpn) {
                        r.sq_pi = 0;
                        r.rq_pi = 0;
                    }
                }
                Vec::new()
            }
            Command::QueryQp { qpn } => {
                let (attr, _) = vf.query_qp(Qpn(qpn)).map_err(st)?;
                body::qp_attr(&attr)
            }
            Command::DestroyQp { qpn } => {
                vf.destroy_qp(Qpn(qpn)).map_err(st)?;
                self.qps.remove(&qpn);
                Vec::new()
            }
            Command::CreateSrq {
                pd,
                max_wr,
                max_sge,
                ring_gpa,
            } => {
                let (srqn, info) = self.create_srq(pd, max_wr, max_sge, ring_gpa)?;
                body::create_srq(srqn, info)
            }
            Command::ModifySrq { srqn, limit } => {
                vf.modify_srq(SrqHandle(srqn), limit).map_err(st)?;
                Vec::new()
            }
            Command::DestroySrq { srqn } => {
                vf.destroy_srq(SrqHandle(srqn)).map_err(st)?;
                self.srqs.remove(&srqn);
                Vec::new()
            }
            Command::CreateAh { pd, attr } => {
                body::u32v(vf.create_ah(PdHandle(pd), attr).map_err(st)?.0)
            }
            Command::DestroyAh { ah } => {
                vf.destroy_ah(AhHandle(ah)).map_err(st)?;
                Vec::new()
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn reg_mr(
        &mut self,
        pd: u32,
        access: u32,
        iova: u64,
        length: u64,
        page_shift: u8,
        npages: u32,
        page_list_gpa: u64,
    ) -> Result<MemKey, Status> {
        let access = Access::from_bits(access).ok_or(Status::Invalid)?;
        if !MR_PAGE_SHIFTS.contains(&page_shift) || length == 0 {
            return Err(Status::Invalid);
        }
        let end = iova.checked_add(length).ok_or(Status::Invalid)?;
        let psize = 1u64 << page_shift;
        let first = iova >> page_shift;
        let last = (end - 1) >> page_shift;
        let needed = last - first + 1;
        if u64::from(npages) < needed {
            return Err(Status::Invalid);
        }
        // The whole page list must be guest memory (FAULT) before its size is judged.
        let list_end = (u64::from(npages) * 8)
            .checked_add(page_list_gpa)
            .ok_or(Status::Fault)?;
        let mut probe = [0u8; 1];
        if self.mem().read(page_list_gpa, &mut probe).is_err()
            || self.mem().read(list_end - 1, &mut probe).is_err()
        {
            return Err(Status::Fault);
        }
        if npages > MAX_MR_PAGES {
            return Err(Status::Invalid);
        }
        let mut raw = vec![0u8; npages as usize * 8];
        self.mem()
            .read(page_list_gpa, &mut raw)
            .map_err(|_| Status::Fault)?;
        let pages: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if pages.iter().any(|p| p & (psize - 1) != 0) {
            return Err(Status::Invalid);
        }
        self.vf
            .reg_mr_mapped(
                PdHandle(pd),
                iova,
                length,
                access,
                MrMap::Pages { page_shift, pages },
            )
            .map_err(st)
    }

    fn cq_ring(&self, depth: u32, ring_gpa: u64) -> Result<Ring, Status> {
        if depth == 0 || depth > self.vf.identity().limits.max_cqe {
            return Err(Status::Invalid);
        }
        let ring =
            Ring::new(ring_gpa, depth, ring::CQE_SIZE as u32).map_err(|_| Status::Invalid)?;
        if !self.ring_in_memory(&ring) {
            return Err(Status::Fault);
        }
        Ok(ring)
    }

    fn create_cq(&mut self, depth: u32, ring_gpa: u64) -> Result<u32, Status> {
        let ring = self.cq_ring(depth, ring_gpa)?;
        // The VF's own CQ is only a staging buffer, emptied into the ring after every batch;
        // the ring's depth is what overruns.
        let max = self.vf.identity().limits.max_cqe;
        let cq = self.vf.create_cq(max).map_err(st)?;
        self.cqs.insert(
            cq.0,
            CqRing {
                ring,
                pi: 0,
                ci: 0,
                failed: false,
                injected: VecDeque::new(),
            },
        );
        Ok(cq.0)
    }

    /// RESIZE_CQ: the CQEs the driver has not consumed yet (between the last CQ_CONSUMED index
    /// and the device's producer index) are copied to the start of the new ring; indices
    /// restart at 0.
    fn resize_cq(&mut self, cqn: u32, depth: u32, ring_gpa: u64) -> Result<(), Status> {
        let new = self.cq_ring(depth, ring_gpa)?;
        // Whatever the VF holds goes into the old ring first, so nothing is reordered.
        self.drain_cq(cqn);
        let mem = self.vf.memory().clone();
        let cq = self.cqs.get_mut(&cqn).ok_or(Status::NotFound)?;
        let pending = cq.pi.wrapping_sub(cq.ci);
        if pending > depth {
            return Err(Status::Invalid);
        }
        let mut slot = [0u8; ring::CQE_SIZE];
        for k in 0..pending {
            let i = cq.ci.wrapping_add(k);
            mem.read(cq.ring.slot(i), &mut slot)
                .map_err(|_| Status::Fault)?;
            let Ok(Some(wc)) = ring::decode_cqe(&slot, i, cq.ring.depth) else {
                return Err(Status::Invalid);
            };
            write_cqe(&mem, &new, k, &wc).map_err(|_| Status::Fault)?;
        }
        cq.ring = new;
        cq.pi = pending;
        cq.ci = 0;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_qp(
        &mut self,
        qp_type: u8,
        sq_sig_all: bool,
        pd: u32,
        send_cq: u32,
        recv_cq: u32,
        srq: u32,
        cap: QpCap,
        sq_gpa: u64,
        rq_gpa: u64,
    ) -> Result<(u32, RingInfo, RingInfo), Status> {
        let qp_type = match qp_type {
            2 => QpType::Rc,
            4 => QpType::Ud,
            _ => return Err(Status::Invalid),
        };
        let l = self.vf.identity().limits;
        if cap.max_send_wr == 0
            || cap.max_send_wr > l.max_qp_wr
            || cap.max_recv_wr > l.max_qp_wr
            || cap.max_send_sge > l.max_sge
            || cap.max_recv_sge > l.max_sge
            || cap.max_inline_data > l.max_inline_data
        {
            return Err(Status::Invalid);
        }
        let sq_depth = cap.max_send_wr.next_power_of_two();
        let sq_stride = ring::send_stride(cap.max_send_sge, cap.max_inline_data);
        let sq = Ring::new(sq_gpa, sq_depth, sq_stride).map_err(|_| Status::Invalid)?;
        let srq = (srq != 0).then_some(SrqHandle(srq));
        let (rq, rq_info) = if srq.is_some() || cap.max_recv_wr == 0 {
            (None, RingInfo::default())
        } else {
            let depth = cap.max_recv_wr.next_power_of_two();
            let stride = ring::recv_stride(cap.max_recv_sge);
            let r = Ring::new(rq_gpa, depth, stride).map_err(|_| Status::Invalid)?;
            (Some(r), RingInfo { depth, stride })
        };
        if sq_depth > l.max_qp_wr || rq_info.depth > l.max_qp_wr {
            return Err(Status::Invalid);
        }
        if !self.ring_in_memory(&sq) || rq.as_ref().is_some_and(|r| !self.ring_in_memory(r)) {
            return Err(Status::Fault);
        }
        // The VF's queues are as deep as the rings, so a driver may fill its ring.
        let vcap = QpCap {
            max_send_wr: sq_depth,
            max_recv_wr: rq_info.depth,
            ..cap
        };
        let qpn = self
            .vf
            .create_qp(QpInitAttr {
                qp_type,
                pd: PdHandle(pd),
                send_cq: CqHandle(send_cq),
                recv_cq: CqHandle(recv_cq),
                srq,
                cap: vcap,
                sq_sig_all,
            })
            .map_err(st)?;
        // A CQ created through the VF is always a ring CQ here; a missing ring cannot happen
        // but costs nothing to refuse.
        if !self.cqs.contains_key(&send_cq) || !self.cqs.contains_key(&recv_cq) {
            let _ = self.vf.destroy_qp(qpn);
            return Err(Status::NotFound);
        }
        self.qps.insert(
            qpn.0,
            QpRings {
                qp_type,
                cap,
                sq,
                sq_pi: 0,
                rq,
                rq_pi: 0,
                send_cq,
                recv_cq,
            },
        );
        Ok((
            qpn.0,
            RingInfo {
                depth: sq_depth,
                stride: sq_stride,
            },
            rq_info,
        ))
    }

    fn create_srq(
        &mut self,
        pd: u32,
        max_wr: u32,
        max_sge: u32,
        ring_gpa: u64,
    ) -> Result<(u32, RingInfo), Status> {
        let l = self.vf.identity().limits;
        if max_wr == 0 || max_wr > l.max_srq_wr || max_sge > l.max_sge {
            return Err(Status::Invalid);
        }
        let depth = max_wr.next_power_of_two();
        if depth > l.max_srq_wr {
            return Err(Status::Invalid);
        }
        let stride = ring::recv_stride(max_sge);
        let r = Ring::new(ring_gpa, depth, stride).map_err(|_| Status::Invalid)?;
        if !self.ring_in_memory(&r) {
            return Err(Status::Fault);
        }
        let srqn = self
            .vf
            .create_srq(PdHandle(pd), depth, max_sge)
            .map_err(st)?;
        self.srqs.insert(
            srqn.0,
            SrqRing {
                ring: r,
                pi: 0,
                max_sge,
            },
        );
        Ok((srqn.0, RingInfo { depth, stride }))
    }

    // ---- doorbells --------------------------------------------------------------------------

    /// Handles one doorbell record.
    pub fn doorbell(&mut self, db: Doorbell) {
        self.counters.doorbells += 1;
        match db {
            Doorbell::Sq { qpn, pi } => self.sq_doorbell(qpn, pi),
            Doorbell::Rq { qpn, pi } => self.rq_doorbell(qpn, pi),
            Doorbell::Srq { srqn, pi } => self.srq_doorbell(srqn, pi),
            Doorbell::CqConsumed { cqn, ci } => {
                let Some(cq) = self.cqs.get_mut(&cqn) else {
                    self.counters.bad_doorbells += 1;
                    return;
                };
                // The consumer index may only move forward, and not past what was produced.
                if ci.wrapping_sub(cq.ci) <= cq.pi.wrapping_sub(cq.ci) {
                    cq.ci = ci;
                } else {
                    self.counters.bad_doorbells += 1;
                }
            }
            Doorbell::CqArm { cqn, solicited } => {
                if self.vf.req_notify_cq(CqHandle(cqn), solicited).is_err() {
                    self.counters.bad_doorbells += 1;
                }
            }
        }
    }

    /// A driver error on a QP's ring: the QP goes to ERR and the driver hears of it.
    fn fail_qp(&mut self, qpn: u32) {
        let attr = vhca_device::QpAttr {
            qp_state: QpState::Err,
            ..Default::default()
        };
        if self
            .vf
            .modify_qp(Qpn(qpn), &attr, QpAttrMask::STATE)
            .is_ok()
        {
            self.push_event(Event::Async {
                code: async_code::QP_FATAL,
                handle: qpn,
            });
        }
    }

    /// How many WQEs a producer index announces, or `None` when it is a driver error.
    fn advance(last: u32, pi: u32, depth: u32) -> Option<u32> {
        let n = pi.wrapping_sub(last);
        (n <= depth).then_some(n)
    }

    fn read_slot(&self, ring: &Ring, i: u32) -> Option<Vec<u8>> {
        let mut b = vec![0u8; ring.stride as usize];
        self.mem().read(ring.slot(i), &mut b).ok().map(|_| b)
    }

    fn sq_doorbell(&mut self, qpn: u32, pi: u32) {
        let Some(r) = self.qps.get(&qpn).cloned() else {
            self.counters.bad_doorbells += 1;
            return;
        };
        let Some(n) = Self::advance(r.sq_pi, pi, r.sq.depth) else {
            self.counters.bad_doorbells += 1;
            self.fail_qp(qpn);
            return;
        };
        let is_ud = r.qp_type == QpType::Ud;
        let mut failed = false;
        for k in 0..n {
            let i = r.sq_pi.wrapping_add(k);
            let slot = self.read_slot(&r.sq, i);
            let wr_id = slot
                .as_ref()
                .and_then(|b| b.get(..8))
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            let opcode = slot
                .as_ref()
                .and_then(|b| b.get(8))
                .map(|&o| send_wc_opcode(o))
                .unwrap_or(WcOpcode::Send);
            let status = if failed {
                // After a bad WQE the QP is in ERR: what follows is flushed, in order.
                Some(WcStatus::WrFlushErr)
            } else {
                match slot {
                    None => Some(WcStatus::LocProtErr),
                    Some(b) => match ring::decode_send(
                        &b,
                        r.cap.max_send_sge,
                        r.cap.max_inline_data,
                        is_ud,
                    ) {
                        Err(_) => Some(WcStatus::LocQpOpErr),
                        Ok(wr) => match self.vf.post_send(Qpn(qpn), &wr) {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::debug!(qpn, error = %e, "send WQE refused");
                                Some(WcStatus::LocQpOpErr)
                            }
                        },
                    },
                }
            };
            if let Some(s) = status {
                if !failed {
                    self.counters.bad_wqes += 1;
                    // Flush what the VF holds before this WQE's error completion.
                    self.fail_qp_quietly(qpn);
                    self.drain_cq(r.send_cq);
                    failed = true;
                }
                self.inject(r.send_cq, error_wc(wr_id, s, opcode, qpn));
            }
        }
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.sq_pi = pi;
        }
    }

    fn rq_doorbell(&mut self, qpn: u32, pi: u32) {
        let Some(r) = self.qps.get(&qpn).cloned() else {
            self.counters.bad_doorbells += 1;
            return;
        };
        let Some(rq) = r.rq else {
            self.counters.bad_doorbells += 1;
            self.fail_qp(qpn);
            return;
        };
        let Some(n) = Self::advance(r.rq_pi, pi, rq.depth) else {
            self.counters.bad_doorbells += 1;
            self.fail_qp(qpn);
            return;
        };
        let mut failed = false;
        for k in 0..n {
            let i = r.rq_pi.wrapping_add(k);
            let slot = self.read_slot(&rq, i);
            let wr_id = slot
                .as_ref()
                .and_then(|b| b.get(..8))
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            let status = if failed {
                Some(WcStatus::WrFlushErr)
            } else {
                match slot {
                    None => Some(WcStatus::LocProtErr),
                    Some(b) => match ring::decode_recv(&b, r.cap.max_recv_sge) {
                        Err(_) => Some(WcStatus::LocQpOpErr),
                        Ok(wr) => match self.vf.post_recv(Qpn(qpn), wr) {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::debug!(qpn, error = %e, "receive WQE refused");
                                Some(WcStatus::LocQpOpErr)
                            }
                        },
                    },
                }
            };
            if let Some(s) = status {
                if !failed {
                    self.counters.bad_wqes += 1;
                    self.fail_qp_quietly(qpn);
                    self.drain_cq(r.recv_cq);
                    failed = true;
                }
                self.inject(r.recv_cq, error_wc(wr_id, s, WcOpcode::Recv, qpn));
            }
        }
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.rq_pi = pi;
        }
    }

    fn srq_doorbell(&mut self, srqn: u32, pi: u32) {
        let Some(s) = self.srqs.get(&srqn).cloned() else {
            self.counters.bad_doorbells += 1;
            return;
        };
        let fail_srq_qps = |p: &mut VfPort| {
            let qpns: Vec<u32> =
                p.vf.qps()
                    .filter(|q| q.srq() == Some(SrqHandle(srqn)))
                    .map(|q| q.qpn.0)
                    .collect();
            for q in qpns {
                p.fail_qp(q);
            }
        };
        let Some(n) = Self::advance(s.pi, pi, s.ring.depth) else {
            self.counters.bad_doorbells += 1;
            fail_srq_qps(self);
            return;
        };
        for k in 0..n {
            let i = s.pi.wrapping_add(k);
            let ok = self
                .read_slot(&s.ring, i)
                .and_then(|b| ring::decode_recv(&b, s.max_sge).ok())
                .is_some_and(|wr| self.vf.post_srq_recv(SrqHandle(srqn), wr).is_ok());
            if !ok {
                // No QP owns an SRQ WQE yet: every QP on the SRQ hears of it.
                self.counters.bad_wqes += 1;
                fail_srq_qps(self);
                break;
            }
        }
        if let Some(x) = self.srqs.get_mut(&srqn) {
            x.pi = pi;
        }
    }

    /// Moves a QP to ERR without an async event (its error completion tells the driver).
    fn fail_qp_quietly(&mut self, qpn: u32) {
        let attr = vhca_device::QpAttr {
            qp_state: QpState::Err,
            ..Default::default()
        };
        let _ = self.vf.modify_qp(Qpn(qpn), &attr, QpAttrMask::STATE);
    }

    fn inject(&mut self, cqn: u32, wc: WorkCompletion) {
        if let Some(cq) = self.cqs.get_mut(&cqn) {
            cq.injected.push_back(wc);
        }
    }

    // ---- completions and events -------------------------------------------------------------

    fn push_event(&mut self, ev: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.counters.events_lost += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    /// Moves one CQ's completions (the VF's, then the backend's own) into its guest ring.
    fn drain_cq(&mut self, cqn: u32) {
        let mut wcs = std::mem::take(&mut self.wcs);
        wcs.clear();
        let _ = self.vf.poll_cq(CqHandle(cqn), usize::MAX, &mut wcs);
        let mem = self.vf.memory().clone();
        let mut overrun = false;
        if let Some(cq) = self.cqs.get_mut(&cqn) {
            wcs.extend(cq.injected.drain(..));
            for wc in &wcs {
                if cq.failed {
                    continue;
                }
                if cq.pi.wrapping_sub(cq.ci) >= cq.ring.depth
                    || write_cqe(&mem, &cq.ring, cq.pi, wc).is_err()
                {
                    cq.failed = true;
                    overrun = true;
                    continue;
                }
                cq.pi = cq.pi.wrapping_add(1);
                self.counters.cqes_written += 1;
            }
        }
        self.wcs = wcs;
        if overrun {
            self.counters.cq_overruns += 1;
            self.push_event(Event::Async {
                code: async_code::CQ_ERR,
                handle: cqn,
            });
        }
    }

    /// After a batch: completions into the CQ rings, then completion and async events into the
    /// backlog (a completion event always follows the CQE it announces).
    pub fn drain_completions(&mut self) {
        let cqns: Vec<u32> = self.cqs.keys().copied().collect();
        for cqn in cqns {
            self.drain_cq(cqn);
        }
        while let Some(cq) = self.vf.poll_cq_event() {
            self.push_event(Event::Completion { cqn: cq.0 });
        }
        while let Some(ev) = self.vf.poll_async_event() {
            self.push_event(Event::from_device(&ev));
        }
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Puts back an event that found no buffer after all.
    pub fn unpop_event(&mut self, ev: Event) {
        self.events.push_front(ev);
    }

    /// QPs for the control socket.
    pub fn qp_infos(&self) -> Vec<QpInfo> {
        self.vf
            .qps()
            .map(|q| {
                let r = self.qps.get(&q.qpn.0);
                QpInfo {
                    qpn: q.qpn.0,
                    qp_type: qp_type_name(q.qp_type()).into(),
                    state: state_name(q.state()).into(),
                    sq_psn: q.req.psn.0,
                    expected_psn: q.resp.epsn.0,
                    una: q.req.una.0,
                    sq_depth: r.map_or(0, |r| r.sq.depth),
                    sq_pi: r.map_or(0, |r| r.sq_pi),
                    rq_depth: r.and_then(|r| r.rq).map_or(0, |x| x.depth),
                    rq_pi: r.map_or(0, |r| r.rq_pi),
                }
            })
            .collect()
    }
}

fn send_wc_opcode(op: u8) -> WcOpcode {
    use ring::op;
    match op {
        op::RDMA_WRITE | op::RDMA_WRITE_WITH_IMM => WcOpcode::RdmaWrite,
        op::RDMA_READ => WcOpcode::RdmaRead,
        op::ATOMIC_CMP_AND_SWP => WcOpcode::CmpSwap,
        op::ATOMIC_FETCH_AND_ADD => WcOpcode::FetchAdd,
        op::LOCAL_INV => WcOpcode::LocalInv,
        _ => WcOpcode::Send,
    }
}

/// Offset of the owner byte in a CQE.
const OWNER: usize = 11;

/// Writes CQE `i` into `ring`, its owner byte last so the driver never sees half a CQE.
fn write_cqe(
    mem: &SharedMemory,
    ring: &Ring,
    i: u32,
    wc: &WorkCompletion,
) -> Result<(), vhca_device::memory::MemoryError> {
    let b = ring::encode_cqe(wc, i, ring.depth);
    let at = ring.slot(i);
    mem.write(at, &b[..OWNER])?;
    mem.write(at + OWNER as u64 + 1, &b[OWNER + 1..])?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    mem.write(at + OWNER as u64, &b[OWNER..OWNER + 1])
}

#[cfg(test)]
mod tests {
    //! Two ports over heap memory and the in-process switch, driven by hand the way the
    //! backend drives them: commands, WQEs written into rings, doorbells, pump, drain.

    use super::*;
    use crate::fabric::{Fabric, SwitchFabric};
    use crate::protocol::command::body;
    use crate::protocol::ring::{decode_cqe, encode_recv, encode_send};
    use vhca_device::{
        AhAttr, Gid, Nanos, Pf, Psn, QpAttr, RecvWr, SendOp, SendWr, Sge, UdDest, VecMemory,
    };

    const MEM: usize = 4 << 20;

    struct Side {
        port: VfPort,
        next: u64,
    }

    impl Side {
        fn new(i: u16) -> Side {
            let pf = Pf::new(0, 2);
            Side {
                port: VfPort::new(pf.default_identity(i), VecMemory::shared(MEM)),
                next: 0x10000,
            }
        }
        fn alloc(&mut self, len: u64) -> u64 {
            let a = self.next;
            self.next += len.div_ceil(4096) * 4096;
            a
        }
        fn ok(&mut self, c: Command) -> Vec<u8> {
            let r = self.port.execute(&c.encode());
            assert_eq!(r.status, Status::Ok, "{c:?}");
            r.body
        }
        fn u32(&mut self, c: Command) -> u32 {
            body::read_u32(&self.ok(c)).unwrap()
        }
        fn mem(&self) -> SharedMemory {
            self.port.vf.memory().clone()
        }
        /// A registered buffer of `len` bytes (one page list entry per 4 KiB page).
        fn mr(&mut self, pd: u32, len: u64) -> (u64, u32) {
            let buf = self.alloc(len);
            let n = len.div_ceil(4096);
            let list = self.alloc(n * 8);
            for i in 0..n {
                self.mem()
                    .write(list + 8 * i, &(buf + 4096 * i).to_le_bytes())
                    .unwrap();
            }
            let key = self.u32(Command::RegMr {
                pd,
                access: 7,
                iova: buf,
                length: len,
                page_shift: 12,
                npages: n as u32,
                page_list_gpa: list,
            });
            (buf, key)
        }
        fn cq(&mut self, depth: u32) -> (u32, u64) {
            let gpa = self.alloc(depth as u64 * 64);
            (
                self.u32(Command::CreateCq {
                    depth,
                    ring_gpa: gpa,
                }),
                gpa,
            )
        }
        fn qp(&mut self, ty: u8, pd: u32, cq: u32) -> (u32, Ring, Ring) {
            let cap = QpCap {
                max_send_wr: 8,
                max_recv_wr: 8,
                max_send_sge: 2,
                max_recv_sge: 2,
                max_inline_data: 64,
            };
            let (sq, rq) = (self.alloc(8 * 256), self.alloc(8 * 64));
            let b = self.ok(Command::CreateQp {
                qp_type: ty,
                sq_sig_all: false,
                pd,
                send_cq: cq,
                recv_cq: cq,
                srq: 0,
                cap,
                sq_ring_gpa: sq,
                rq_ring_gpa: rq,
            });
            let (qpn, s, r) = body::read_create_qp(&b).unwrap();
            (
                qpn,
                Ring::new(sq, s.depth, s.stride).unwrap(),
                Ring::new(rq, r.depth, r.stride).unwrap(),
            )
        }
        fn modify(&mut self, qpn: u32, attr: QpAttr, mask: QpAttrMask) {
            self.ok(Command::ModifyQp {
                qpn,
                mask: mask.bits(),
                attr,
            });
        }
        fn cqes(&self, ring: u64, depth: u32, from: u32) -> Vec<WorkCompletion> {
            let mut out = Vec::new();
            let mut i = from;
            loop {
                let mut b = [0u8; 64];
                self.mem()
                    .read(ring + 64 * (i % depth) as u64, &mut b)
                    .unwrap();
                match decode_cqe(&b, i, depth).unwrap() {
                    Some(w) => out.push(w),
                    None => return out,
                }
                i += 1;
            }
        }
    }

    fn pump(a: &mut Side, b: &mut Side, fabric: &mut SwitchFabric) {
        let now = Nanos(1);
        for _ in 0..100 {
            let mut moved = false;
            for (i, s) in [&mut *a, &mut *b].into_iter().enumerate() {
                while let Some(p) = s.port.vf.poll_transmit(now) {
                    let _ = i;
                    fabric.send(now, p);
                    moved = true;
                }
            }
            while let Some((port, pkt)) = fabric.poll_deliver(now) {
                let s = if port == 0 { &mut *a } else { &mut *b };
                s.port.vf.handle_packet(now, &pkt);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        a.port.drain_completions();
        b.port.drain_completions();
    }

    fn fabric(a: &Side, b: &Side) -> SwitchFabric {
        let mut f = SwitchFabric::ideal();
        f.attach(a.port.identity().gid, 0);
        f.attach(b.port.identity().gid, 1);
        f
    }

    fn ud_qp(s: &mut Side, qkey: u32) -> (u32, u32, u32, u64, Ring, Ring) {
        ud_qp_cq(s, qkey, 16)
    }

    fn ud_qp_cq(s: &mut Side, qkey: u32, cq_depth: u32) -> (u32, u32, u32, u64, Ring, Ring) {
        let pd = s.u32(Command::CreatePd);
        let (cq, cq_ring) = s.cq(cq_depth);
        let (qpn, sq, rq) = s.qp(4, pd, cq);
        let mut a = QpAttr {
            qp_state: QpState::Init,
            qkey,
            port_num: 1,
            ..QpAttr::default()
        };
        s.modify(
            qpn,
            a,
            QpAttrMask::STATE | QpAttrMask::PKEY_INDEX | QpAttrMask::PORT | QpAttrMask::QKEY,
        );
        a.qp_state = QpState::Rtr;
        s.modify(qpn, a, QpAttrMask::STATE);
        a.qp_state = QpState::Rts;
        a.sq_psn = Psn(5);
        s.modify(qpn, a, QpAttrMask::STATE | QpAttrMask::SQ_PSN);
        (pd, cq, qpn, cq_ring, sq, rq)
    }

    #[test]
    fn ud_send_through_rings_completes_on_both_sides() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, _cqa, qa, cqa_ring, sqa, _) = ud_qp(&mut a, 7);
        let (pdb, _cqb, qb, cqb_ring, _, rqb) = ud_qp(&mut b, 7);
        let (abuf, akey) = a.mr(pda, 4096);
        let (bbuf, bkey) = b.mr(pdb, 4096);
        a.mem().write(abuf, b"hello ud").unwrap();
        let ah = a.u32(Command::CreateAh {
            pd: pda,
            attr: AhAttr {
                dgid: b.port.identity().gid,
                hop_limit: 64,
                ..Default::default()
            },
        });
        let rwr = RecvWr {
            wr_id: 40,
            sgl: vec![Sge {
                addr: bbuf,
                len: 200,
                lkey: MemKey(bkey),
            }],
        };
        b.mem()
            .write(rqb.slot(0), &encode_recv(&rwr, rqb.stride))
            .unwrap();
        b.port.doorbell(Doorbell::Rq { qpn: qb, pi: 1 });
        let swr = SendWr::new(41, SendOp::Send)
            .sge(Sge {
                addr: abuf,
                len: 8,
                lkey: MemKey(akey),
            })
            .ud(UdDest {
                ah: AhHandle(ah),
                remote_qpn: Qpn(qb),
                remote_qkey: 7,
            });
        a.mem()
            .write(sqa.slot(0), &encode_send(&swr, sqa.stride))
            .unwrap();
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 1 });
        pump(&mut a, &mut b, &mut f);
        let wa = a.cqes(cqa_ring, 16, 0);
        assert_eq!(
            wa.len(),
            1,
            "{:?} {:?}",
            a.port.counters,
            a.port.vf.counters()
        );
        assert_eq!(wa[0].status, WcStatus::Success);
        let wb = b.cqes(cqb_ring, 16, 0);
        assert_eq!(wb.len(), 1, "{:?}", b.port.vf.counters());
        assert_eq!(
            (wb[0].wr_id, wb[0].byte_len, wb[0].src_qp),
            (40, 48, Qpn(qa))
        );
        let _ = Gid::default();
    }

    /// A UD send from `a` to `b`'s QP `qb` through `a`'s AH `ah`.
    fn ud_send(wr_id: u64, ah: u32, qb: u32, buf: u64, key: u32) -> SendWr {
        SendWr::new(wr_id, SendOp::Send)
            .sge(Sge {
                addr: buf,
                len: 8,
                lkey: MemKey(key),
            })
            .ud(UdDest {
                ah: AhHandle(ah),
                remote_qpn: Qpn(qb),
                remote_qkey: 7,
            })
    }

    fn ah_to(a: &mut Side, pd: u32, b: &Side) -> u32 {
        a.u32(Command::CreateAh {
            pd,
            attr: AhAttr {
                dgid: b.port.identity().gid,
                hop_limit: 64,
                ..Default::default()
            },
        })
    }

    #[test]
    fn a_malformed_wqe_completes_with_loc_qp_op_err_and_flushes_the_rest() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, _, qa, cq_ring, sq, _) = ud_qp(&mut a, 7);
        let (_, _, qb, _, _, _) = ud_qp(&mut b, 7);
        let (buf, key) = a.mr(pda, 4096);
        let ah = ah_to(&mut a, pda, &b);
        let good = encode_send(&ud_send(1, ah, qb, buf, key), sq.stride);
        let mut bad = encode_send(&ud_send(2, ah, qb, buf, key), sq.stride);
        bad[8] = 99; // no such opcode
        let after = encode_send(&ud_send(3, ah, qb, buf, key), sq.stride);
        let also_good = encode_send(&ud_send(4, ah, qb, buf, key), sq.stride);
        for (i, w) in [good, also_good, bad, after].iter().enumerate() {
            a.mem().write(sq.slot(i as u32), w).unwrap();
        }
        // The first WQE goes out alone; the second is still queued when the third (bad) one is
        // read, so it is flushed before the bad one's error, and the fourth after it.
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 1 });
        pump(&mut a, &mut b, &mut f);
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 4 });
        pump(&mut a, &mut b, &mut f);
        let w = a.cqes(cq_ring, 16, 0);
        let got: Vec<_> = w.iter().map(|w| (w.wr_id, w.status)).collect();
        assert_eq!(
            got,
            vec![
                (1, WcStatus::Success),
                (4, WcStatus::WrFlushErr),
                (2, WcStatus::LocQpOpErr),
                (3, WcStatus::WrFlushErr)
            ]
        );
        assert_eq!(a.port.vf.qp(Qpn(qa)).unwrap().state(), QpState::Err);
        assert_eq!(a.port.counters.bad_wqes, 1);
    }

    #[test]
    fn a_producer_index_too_far_ahead_fails_the_qp_with_an_async_event() {
        let mut a = Side::new(0);
        let (_, _, qa, _, sq, _) = ud_qp(&mut a, 7);
        a.port.doorbell(Doorbell::Sq {
            qpn: qa,
            pi: sq.depth + 1,
        });
        assert_eq!(a.port.vf.qp(Qpn(qa)).unwrap().state(), QpState::Err);
        a.port.drain_completions();
        assert_eq!(
            a.port.pop_event(),
            Some(Event::Async {
                code: async_code::QP_FATAL,
                handle: qa
            })
        );
        // Doorbells for objects this VF does not have are counted and ignored.
        a.port.doorbell(Doorbell::Sq { qpn: 999, pi: 1 });
        a.port.doorbell(Doorbell::CqConsumed { cqn: 77, ci: 1 });
        assert_eq!(a.port.counters.bad_doorbells, 3);
    }

    #[test]
    fn a_full_cq_ring_overruns_unless_the_driver_consumes() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, cqa, qa, cq_ring, sq, _) = ud_qp_cq(&mut a, 7, 2);
        let (_, _, qb, _, _, _) = ud_qp(&mut b, 7);
        let (buf, key) = a.mr(pda, 4096);
        let ah = ah_to(&mut a, pda, &b);
        let post = |a: &mut Side, i: u32| {
            let w = encode_send(&ud_send(i as u64, ah, qb, buf, key), sq.stride);
            a.mem().write(sq.slot(i), &w).unwrap();
            a.port.doorbell(Doorbell::Sq { qpn: qa, pi: i + 1 });
        };
        for i in 0..4 {
            post(&mut a, i);
            pump(&mut a, &mut b, &mut f);
            // The driver consumes what it polled.
            let n = a.cqes(cq_ring, 2, i).len() as u32;
            assert_eq!(n, 1, "send {i}");
            a.port.doorbell(Doorbell::CqConsumed {
                cqn: cqa,
                ci: i + 1,
            });
        }
        assert!(!a.port.has_events());
        // Now without consuming: two fit, the third overruns.
        for i in 4..7 {
            post(&mut a, i);
            pump(&mut a, &mut b, &mut f);
        }
        assert_eq!(a.port.counters.cq_overruns, 1);
        assert_eq!(
            a.port.pop_event(),
            Some(Event::Async {
                code: async_code::CQ_ERR,
                handle: cqa
            })
        );
    }

    #[test]
    fn hostile_commands_get_statuses_not_panics() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        assert_eq!(a.port.execute(&[]).status, Status::Malformed);
        assert_eq!(
            a.port.execute(&[0xee, 0xee, 0, 0, 0, 0, 0, 0]).status,
            Status::Unsupported
        );
        let cfg = a.ok(Command::QueryDevice);
        assert_eq!(RdmaConfig::decode(&cfg).unwrap().gid, a.port.identity().gid);
        // Handles of another VF are unknown numbers here.
        let pdb = b.u32(Command::CreatePd);
        let _ = b.u32(Command::CreatePd);
        let (cqb, _) = b.cq(4);
        fn st(s: &mut Side, c: Command) -> Status {
            s.port.execute(&c.encode()).status
        }
        assert_eq!(
            st(&mut a, Command::DestroyPd { pd: pdb + 1 }),
            Status::NotFound
        );
        assert_eq!(
            st(&mut a, Command::DestroyCq { cqn: cqb }),
            Status::NotFound
        );
        assert_eq!(st(&mut a, Command::QueryQp { qpn: 17 }), Status::NotFound);
        // Rings and page lists outside guest memory.
        let outside = MEM as u64 + 4096;
        assert_eq!(
            st(
                &mut a,
                Command::CreateCq {
                    depth: 4,
                    ring_gpa: outside
                }
            ),
            Status::Fault
        );
        assert_eq!(
            st(
                &mut a,
                Command::CreateCq {
                    depth: 3,
                    ring_gpa: 0
                }
            ),
            Status::Invalid
        );
        let pd = a.u32(Command::CreatePd);
        let reg = |npages: u32, list: u64| Command::RegMr {
            pd,
            access: 1,
            iova: 0x1000,
            length: 4096,
            page_shift: 12,
            npages,
            page_list_gpa: list,
        };
        assert_eq!(st(&mut a, reg(1, outside)), Status::Fault);
        assert_eq!(st(&mut a, reg(u32::MAX, 0x1000)), Status::Fault);
        assert_eq!(st(&mut a, reg(0, 0x1000)), Status::Invalid);
        let list = a.alloc(4096);
        a.mem().write(list, &outside.to_le_bytes()).unwrap();
        assert_eq!(
            st(&mut a, reg(1, list)),
            Status::Fault,
            "a page outside guest memory"
        );
        let qp = |sq: u64| Command::CreateQp {
            qp_type: 2,
            sq_sig_all: false,
            pd,
            send_cq: 1,
            recv_cq: 1,
            srq: 0,
            cap: QpCap {
                max_send_wr: 4,
                max_recv_wr: 4,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_ring_gpa: sq,
            rq_ring_gpa: 0x2000,
        };
        let _ = a.cq(4);
        assert_eq!(st(&mut a, qp(outside)), Status::Fault);
        assert_eq!(st(&mut a, qp(u64::MAX - 64)), Status::Invalid);
        assert_eq!(a.port.vf.qps().count(), 0);
    }

    #[test]
    fn resize_cq_moves_unconsumed_cqes_to_the_new_ring() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, cqa, qa, cq_ring, sq, _) = ud_qp_cq(&mut a, 7, 4);
        let (_, _, qb, _, _, _) = ud_qp(&mut b, 7);
        let (buf, key) = a.mr(pda, 4096);
        let ah = ah_to(&mut a, pda, &b);
        for i in 0..3u32 {
            let w = encode_send(&ud_send(10 + i as u64, ah, qb, buf, key), sq.stride);
            a.mem().write(sq.slot(i), &w).unwrap();
        }
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 3 });
        pump(&mut a, &mut b, &mut f);
        assert_eq!(a.cqes(cq_ring, 4, 0).len(), 3);
        a.port.doorbell(Doorbell::CqConsumed { cqn: cqa, ci: 1 });
        let new = a.alloc(8 * 64);
        a.ok(Command::ResizeCq {
            cqn: cqa,
            depth: 8,
            ring_gpa: new,
        });
        let moved: Vec<u64> = a.cqes(new, 8, 0).iter().map(|w| w.wr_id).collect();
        assert_eq!(moved, vec![11, 12]);
    }
}
