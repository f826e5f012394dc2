//! [`GuestContext`]: `vhca_device::Verbs` over a VF's vhost-user socket, the way a verbs
//! provider inside a guest would implement it on the device protocol.
//!
//! - Commands go over the controlq, synchronously; a status other than OK becomes the
//!   `VerbsError` a provider would return (the object name comes from the opcode).
//! - CQs are zeroed rings in guest memory; `poll_cq` reads CQEs by their owner byte and tells
//!   the device the new consumer index with a CQ_CONSUMED doorbell.
//! - Work requests are written into the QP's rings and announced with SQ/RQ/SRQ doorbells.
//!   The driver keeps at most `depth` WQEs outstanding per ring: a send slot is free again once
//!   a completion covers it (a successful signaled completion covers the unsignaled WQEs before
//!   it, as on mlx5), a receive slot once its completion arrived.
//! - Application buffers are guest RAM from the driver's allocator; their guest address is
//!   also their IOVA, and `reg_mr` registers them with a list of their 4 KiB guest pages.
//!
//! ## What an empty `poll_cq` does
//! `Verbs::poll_cq` must not block, but the device runs in another process and the programs
//! loop on `poll_cq` with a bound on empty polls. An empty poll therefore arms the CQ (a CQ_ARM
//! doorbell, once per completion event), waits until the device has taken that doorbell,
//! re-checks the ring and then waits on the eventq's call eventfd for at most
//! [`PollMode::Event`]'s `wait` (2 ms by default) before returning 0. A CQE written before the
//! device saw the arm is found by the re-check; one written after it raises the event that wakes
//! the poller at once. Nothing spins: a program waiting for
//! a completion sleeps in `epoll_wait` and leaves the CPU to the device. [`PollMode::Spin`]
//! returns 0 at once (for benchmarks that measure busy polling).

mod verbs;

use crate::driver::{DriverConfig, GuestDriver};
use crate::error::DriverError;
use crate::memory::PAGE_SIZE;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, MemKey, MwType, PdHandle, QpAttr, QpAttrMask,
    QpInitAttr, QpType, Qpn, RecvWr, SendFlags, SendWr, SrqHandle, Verbs, VerbsError, VerbsResult,
    WcOpcode, WcStatus, WorkCompletion,
};
use vhca_vhost::protocol::command::{body, opcode, Command, RingInfo, Status};
use vhca_vhost::protocol::doorbell::{Doorbell, Event};
use vhca_vhost::protocol::ring::{
    decode_cqe, encode_recv, encode_send, recv_stride, send_stride, Ring, CQE_SIZE,
};

/// What `poll_cq` does when the CQ is empty (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Arm the CQ and wait up to `wait` for its completion event.
    Event { wait: Duration },
    /// Return 0 at once.
    Spin,
}

impl Default for PollMode {
    fn default() -> PollMode {
        PollMode::Event {
            wait: Duration::from_millis(2),
        }
    }
}

/// A guest-memory allocation the context frees when its object goes.
#[derive(Clone, Copy, Debug)]
struct Alloc {
    addr: u64,
    len: u64,
}

struct CqState {
    ring: Ring,
    alloc: Alloc,
    /// Free-running consumer index.
    ci: u32,
    /// The driver armed the CQ for itself and no completion event came yet.
    armed: bool,
    /// Completion events the device delivered for this CQ.
    events: u64,
}

struct QpState {
    init: QpInitAttr,
    sq: Ring,
    rq: Option<Ring>,
    allocs: Vec<Alloc>,
    sq_pi: u32,
    rq_pi: u32,
    /// Outstanding send WQEs, oldest first: whether each is signaled.
    sq_pending: VecDeque<bool>,
    rq_outstanding: u32,
}

struct SrqState {
    ring: Ring,
    alloc: Alloc,
    max_sge: u32,
    pi: u32,
    outstanding: u32,
}

/// An open VF (`ibv_context`) reached through its vhost-user socket.
pub struct GuestContext {
    drv: GuestDriver,
    cqs: HashMap<u32, CqState>,
    qps: HashMap<u32, QpState>,
    srqs: HashMap<u32, SrqState>,
    mrs: std::collections::HashSet<u32>,
    poll_mode: PollMode,
    last_error: Option<String>,
    async_events: Vec<Event>,
    /// SQ/RQ doorbells held back by [`GuestContext::hold_doorbells`].
    held: Option<Vec<Doorbell>>,
}

/// The object a command's NOT_FOUND/BUSY/EXHAUSTED is about.
fn object_of(op: u16) -> &'static str {
    match op {
        opcode::CREATE_PD | opcode::DESTROY_PD => "PD",
        opcode::REG_MR | opcode::DEREG_MR | opcode::ALLOC_MR => "MR",
        opcode::ALLOC_MW | opcode::DEALLOC_MW => "MW",
        opcode::CREATE_CQ | opcode::DESTROY_CQ | opcode::RESIZE_CQ | opcode::REQ_NOTIFY_CQ => "CQ",
        opcode::CREATE_QP | opcode::MODIFY_QP | opcode::QUERY_QP | opcode::DESTROY_QP => "QP",
        opcode::CREATE_SRQ | opcode::MODIFY_SRQ | opcode::DESTROY_SRQ => "SRQ",
        opcode::CREATE_AH | opcode::DESTROY_AH => "AH",
        opcode::QUERY_GID => "GID",
        opcode::QUERY_PKEY => "P_Key",
        _ => "object",
    }
}

/// The verbs error a provider returns for a command status.
pub fn status_to_error(op: u16, s: Status) -> VerbsError {
    let what = object_of(op);
    match s {
        Status::Ok => VerbsError::Invalid("OK is not an error"),
        Status::NotFound => VerbsError::NotFound(what),
        Status::Exhausted => VerbsError::Exhausted(what),
        Status::Invalid => VerbsError::Invalid(what),
        Status::Busy => VerbsError::Busy(what),
        Status::BadState => VerbsError::BadState(what),
        Status::QueueFull => VerbsError::QueueFull,
        Status::Fault => VerbsError::Fault,
        Status::NoVf => VerbsError::NoVf,
        Status::Unsupported => VerbsError::Invalid("command not supported by the device"),
        Status::Malformed => VerbsError::Invalid("the device found the command malformed"),
        Status::ResponseTooSmall => VerbsError::Invalid("response buffer too small"),
    }
}

fn ring_depth(cap: u32) -> u32 {
    cap.max(1).next_power_of_two()
}

impl GuestContext {
    /// Connects to a VF socket and opens the device.
    pub fn connect(
        path: impl AsRef<Path>,
        cfg: &DriverConfig,
    ) -> Result<GuestContext, DriverError> {
        Ok(GuestContext::new(GuestDriver::connect(path, cfg)?))
    }

    pub fn new(drv: GuestDriver) -> GuestContext {
        GuestContext {
            drv,
            cqs: HashMap::new(),
            qps: HashMap::new(),
            srqs: HashMap::new(),
            mrs: Default::default(),
            poll_mode: PollMode::default(),
            last_error: None,
            async_events: Vec::new(),
            held: None,
        }
    }

    /// From now on, posting a WR writes its WQE but holds its doorbell back until
    /// [`GuestContext::ring_held_doorbells`]: many WRs on many QPs then reach the device at
    /// once, one doorbell per queue (as a provider batches `ibv_post_send` lists).
    pub fn hold_doorbells(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// Rings the held doorbells, the latest producer index of each queue only, and stops
    /// holding.
    pub fn ring_held_doorbells(&mut self) -> VerbsResult<()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        // Producer indices only grow: the last record of a queue covers the earlier ones.
        let mut last: HashMap<(u8, u32), usize> = HashMap::new();
        for (i, d) in held.iter().enumerate() {
            match *d {
                Doorbell::Sq { qpn, .. } => last.insert((1, qpn), i),
                Doorbell::Rq { qpn, .. } => last.insert((2, qpn), i),
                _ => None,
            };
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        let records: Vec<Doorbell> = keep.into_iter().map(|i| held[i]).collect();
        self.ring_doorbells(&records)
    }

    /// A posted WR's doorbell: rung now, or held.
    fn post_doorbell(&mut self, d: Doorbell) -> VerbsResult<()> {
        match self.held.as_mut() {
            Some(h) => {
                h.push(d);
                Ok(())
            }
            None => self.ring_doorbells(&[d]),
        }
    }

    pub fn driver(&self) -> &GuestDriver {
        &self.drv
    }

    /// Closes the context and hands back its driver (its objects stay on the device until
    /// the device is reset or the connection ends).
    pub fn into_driver(self) -> GuestDriver {
        self.drv
    }

    pub fn driver_mut(&mut self) -> &mut GuestDriver {
        &mut self.drv
    }

    pub fn set_poll_mode(&mut self, m: PollMode) {
        self.poll_mode = m;
    }

    /// The transport error behind the last `VerbsError` that was not a command status.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Completion events the device delivered for `cq` (armed with `req_notify_cq`).
    pub fn completion_events(&mut self, cq: CqHandle) -> VerbsResult<u64> {
        self.collect_events()?;
        Ok(self
            .cqs
            .get(&cq.0)
            .ok_or(VerbsError::NotFound("CQ"))?
            .events)
    }

    /// Asynchronous events delivered so far (QP fatal, CQ error, ...), taken.
    pub fn take_async_events(&mut self) -> VerbsResult<Vec<Event>> {
        self.collect_events()?;
        Ok(std::mem::take(&mut self.async_events))
    }

    /// Waits up to `timeout` for an asynchronous event and takes those delivered.
    pub fn wait_async_events(&mut self, timeout: Duration) -> VerbsResult<Vec<Event>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.collect_events()?;
            let now = std::time::Instant::now();
            if !self.async_events.is_empty() || now >= deadline {
                return Ok(std::mem::take(&mut self.async_events));
            }
            self.drv
                .wait_events(deadline - now)
                .map_err(|e| self.fail(e))?;
            self.count_completion_events();
        }
    }

    /// The port's GID at `index` as the device reports it now (`ibv_query_gid`, a QUERY_GID
    /// command). [`Verbs::gid`] answers from the configuration read at start-up; this asks the
    /// device, so it is what a program advertises to its peer.
    pub fn query_gid(&mut self, index: u32) -> VerbsResult<Gid> {
        let b = self.exec(Command::QueryGid { index })?;
        let g: [u8; 16] = b
            .get(..16)
            .and_then(|g| g.try_into().ok())
            .ok_or(VerbsError::Invalid("QUERY_GID answer shorter than a GID"))?;
        Ok(Gid(g))
    }

    /// Whether this context registered `key` (and did not deregister it).
    pub fn owns_key(&self, key: MemKey) -> bool {
        self.mrs.contains(&key.0)
    }

    /// Whether this context created CQ `cqn` (and did not destroy it).
    pub fn owns_cq(&self, cqn: u32) -> bool {
        self.cqs.contains_key(&cqn)
    }

    /// The rings of a QP: send ring, receive ring (none with an SRQ).
    pub fn qp_rings(&self, qpn: Qpn) -> Option<(Ring, Option<Ring>)> {
        self.qps.get(&qpn.0).map(|q| (q.sq, q.rq))
    }

    /// The send ring's producer index.
    pub fn sq_producer(&self, qpn: Qpn) -> Option<u32> {
        self.qps.get(&qpn.0).map(|q| q.sq_pi)
    }

    fn fail(&mut self, e: DriverError) -> VerbsError {
        let v = match &e {
            DriverError::Status { opcode, status } => return status_to_error(*opcode, *status),
            DriverError::OutsideMemory { .. } => VerbsError::Fault,
            DriverError::OutOfMemory(_) => VerbsError::Exhausted("guest memory"),
            DriverError::Timeout { .. } => VerbsError::Invalid("the device did not answer"),
            _ => VerbsError::Invalid("guest driver transport failed"),
        };
        self.last_error = Some(e.to_string());
        v
    }

    fn exec(&mut self, cmd: Command) -> VerbsResult<Vec<u8>> {
        self.drv.execute(&cmd).map_err(|e| self.fail(e))
    }

    fn exec_u32(&mut self, cmd: Command) -> VerbsResult<u32> {
        let b = self.exec(cmd)?;
        body::read_u32(&b).map_err(|source| {
            self.fail(DriverError::Decode {
                what: "response body",
                source,
            })
        })
    }

    fn ring_doorbells(&mut self, records: &[Doorbell]) -> VerbsResult<()> {
        self.drv.ring(records).map_err(|e| self.fail(e))
    }

    fn alloc(&mut self, len: u64, align: u64) -> VerbsResult<Alloc> {
        let addr = self
            .drv
            .ram_mut()
            .alloc(len, align)
            .map_err(|e| self.fail(e))?;
        Ok(Alloc { addr, len })
    }

    fn release(&mut self, a: Alloc) {
        self.drv.ram_mut().free(a.addr, a.len);
    }

    /// Moves delivered events into per-CQ counters (completion events) and the driver's
    /// queue (asynchronous events).
    fn collect_events(&mut self) -> VerbsResult<()> {
        self.drv.collect_events().map_err(|e| self.fail(e))?;
        self.count_completion_events();
        Ok(())
    }

    fn count_completion_events(&mut self) {
        for e in self.drv.take_events() {
            match e {
                Event::Completion { cqn } => {
                    if let Some(cq) = self.cqs.get_mut(&cqn) {
                        cq.events += 1;
                        cq.armed = false;
                    }
                }
                other => self.async_events.push(other),
            }
        }
    }

    /// Reads up to `max` valid CQEs, frees the ring slots they cover and reports the new
    /// consumer index.
    fn drain_cq(
        &mut self,
        cqn: u32,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> VerbsResult<usize> {
        let cq = self.cqs.get_mut(&cqn).ok_or(VerbsError::NotFound("CQ"))?;
        let ram = self.drv.ram();
        let mut got = Vec::new();
        while got.len() < max {
            let slot = cq.ring.slot(cq.ci);
            // The owner byte is written last by the device: read it with acquire ordering
            // before the rest of the CQE.
            let owner = ram
                .load_u8(slot + 11, Ordering::Acquire)
                .map_err(|_| VerbsError::Fault)?;
            if owner != vhca_vhost::protocol::ring::owner_bit(cq.ci, cq.ring.depth) {
                break;
            }
            let b = ram.read(slot, CQE_SIZE).map_err(|_| VerbsError::Fault)?;
            match decode_cqe(&b, cq.ci, cq.ring.depth) {
                Ok(Some(wc)) => got.push(wc),
                Ok(None) => break,
                Err(_) => {
                    // An undecodable CQE is the device's bug; report it as a failed
                    // completion rather than stalling the CQ.
                    let mut wc = WorkCompletion {
                        wr_id: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
                        status: WcStatus::GeneralErr,
                        opcode: WcOpcode::Send,
                        qpn: Qpn(u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"))),
                        byte_len: 0,
                        imm: None,
                        invalidated_rkey: None,
                        src_qp: Qpn(0),
                        src_gid: Gid([0; 16]),
                        grh: false,
                        solicited: false,
                    };
                    wc.opcode = if b[9] >= 128 {
                        WcOpcode::Recv
                    } else {
                        WcOpcode::Send
                    };
                    got.push(wc);
                }
            }
            cq.ci = cq.ci.wrapping_add(1);
        }
        let n = got.len();
        if n == 0 {
            return Ok(0);
        }
        let ci = cq.ci;
        for wc in &got {
            self.retire(wc);
        }
        out.extend(got);
        self.ring_doorbells(&[Doorbell::CqConsumed { cqn, ci }])?;
        Ok(n)
    }

    /// Frees the WQE slots a completion covers.
    fn retire(&mut self, wc: &WorkCompletion) {
        let Some(qp) = self.qps.get_mut(&wc.qpn.0) else {
            return;
        };
        let is_recv = matches!(wc.opcode, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm);
        if is_recv {
            match qp.init.srq {
                Some(srq) => {
                    if let Some(s) = self.srqs.get_mut(&srq.0) {
                        s.outstanding = s.outstanding.saturating_sub(1);
                    }
                }
                None => qp.rq_outstanding = qp.rq_outstanding.saturating_sub(1),
            }
            return;
        }
        if wc.status != WcStatus::Success {
            // Error and flush completions come one per WQE.
            qp.sq_pending.pop_front();
            return;
        }
        while let Some(signaled) = qp.sq_pending.pop_front() {
            if signaled {
                break;
            }
        }
    }
}

impl GuestContext {
    /// The ring the device will use, if it fits the allocation the driver made.
    fn check_geometry(&mut self, a: Alloc, info: RingInfo) -> VerbsResult<Ring> {
        let ring = Ring::new(a.addr, info.depth, info.stride)
            .map_err(|_| VerbsError::Invalid("ring geometry from the device"))?;
        if ring.bytes() > a.len {
            self.last_error = Some(format!(
                "the device chose a ring of {} × {} bytes, larger than the {} bytes allocated",
                info.depth, info.stride, a.len
            ));
            return Err(VerbsError::Invalid("ring geometry from the device"));
        }
        Ok(ring)
    }
}
