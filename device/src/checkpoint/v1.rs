//! Version 1 of the checkpoint payload, as wire-only structs.
//!
//! These types are the format: their field order, field names, variant order and variant names
//! are what postcard and JSON write (docs/checkpoint-format.md lists every field). The live
//! device types (`Qp`, `Requester`, `Responder`, `Mr`, `Cq`, `Srq`, `Ah`, `Counters`, ...) do
//! not implement serde; a save converts them with `From<&Live>` here, a load converts back with
//! the checked `TryFrom`s in `load.rs`. A refactor of the device changes those conversions,
//! never these structs; a change here is a new format version.
//!
//! Fields are plain data. The verbs vocabulary (`QpAttr`, `QpInitAttr`, `RecvWr`, `Sge`,
//! `SendOp`, `SendFlags`, `UdDest`, `WcStatus`, `WorkCompletion`, `AhAttr`, `AsyncEvent`,
//! `Access`, `Mtu`, `VfLimits`) and the value types of `types.rs` (`Psn`, `Qpn`, `Msn`,
//! `MemKey`, `Gid`, `Mac`, `Guid`, `Nanos`, handles) are shared with the verbs API and keep
//! their serde derives: they are values, not implementation state, and their encoding is part
//! of this format (the byte-exact fixtures in `device/tests/fixtures` catch a change).

use crate::cq::{Arm, Cq};
use crate::mr::{Mr, MrMap};
use crate::qp::requester::{Requester, SendWqe};
use crate::qp::responder::{InMessage, Outgoing, RdAtomicResource, Responder};
use crate::qp::Qp;
use crate::resources::{Ah, Counters};
use crate::srq::Srq;
use crate::types::{CqHandle, Gid, Guid, Mac, MemKey, Msn, Nanos, PdHandle, Psn, Qpn};
use crate::verbs::{
    Access, AhAttr, AsyncEvent, Mtu, QpAttr, QpInitAttr, QpState, QpType, RecvWr, SendFlags,
    SendOp, Sge, UdDest, VfLimits, WcStatus, WorkCompletion,
};
use crate::vf::VfIdentity;
use serde::{Deserialize, Serialize};

/// Version 1 of a VF's state: identity, every object table as (number, object) pairs, and the
/// events not yet delivered. QP timers are stored as time remaining, not as absolute times:
/// the destination's clock has another origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VfStateV1 {
    pub identity: IdentityStateV1,
    /// The key byte the next MR registration uses.
    pub key_byte: u8,
    pub pds: Vec<u32>,
    pub mrs: Vec<(u32, MrStateV1)>,
    pub cqs: Vec<(u32, CqStateV1)>,
    pub srqs: Vec<(u32, SrqStateV1)>,
    pub ahs: Vec<(u32, AhStateV1)>,
    pub qps: Vec<QpStateV1>,
    pub async_events: Vec<AsyncEvent>,
    pub cq_events: Vec<CqHandle>,
    pub counters: CountersStateV1,
}

/// Who the VF is on the fabric, and the limits it enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStateV1 {
    pub node_guid: Guid,
    pub port_guid: Guid,
    pub gid: Gid,
    pub mac: Mac,
    pub port_mtu: Mtu,
    pub limits: VfLimits,
}

/// A memory region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MrStateV1 {
    pub pd: PdHandle,
    pub iova: u64,
    /// Bytes.
    pub len: u64,
    pub access: Access,
    /// lkey = rkey; its index (`key >> 8`) is the MR's number.
    pub key: MemKey,
    pub map: MrMapStateV1,
    pub valid: bool,
}

/// How an MR's virtual range maps onto guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MrMapStateV1 {
    Contiguous { gpa: u64 },
    Pages { page_shift: u8, pages: Vec<u64> },
}

/// A completion queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CqStateV1 {
    pub capacity: u32,
    /// Completions not yet polled, oldest first.
    pub entries: Vec<WorkCompletion>,
    pub armed: Option<ArmStateV1>,
    pub overflowed: bool,
}

/// What an armed CQ notifies for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArmStateV1 {
    Next,
    Solicited,
}

/// A shared receive queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SrqStateV1 {
    pub pd: PdHandle,
    pub max_wr: u32,
    pub max_sge: u32,
    /// Posted receive WQEs, oldest first.
    pub queue: Vec<RecvWr>,
    /// Armed limit; 0 = disarmed.
    pub limit: u32,
}

/// An address handle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AhStateV1 {
    pub pd: PdHandle,
    pub attr: AhAttr,
}

/// A queue pair with its transport state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QpStateV1 {
    pub qpn: Qpn,
    pub init: QpInitAttr,
    pub attr: QpAttr,
    /// Posted receive WQEs, oldest first (empty with an SRQ).
    pub rq: Vec<RecvWr>,
    pub req: RequesterStateV1,
    pub resp: ResponderStateV1,
    /// RoCEv2 UDP source port of the QP's packets.
    pub src_port: u16,
}

impl QpStateV1 {
    pub fn qp_type(&self) -> QpType {
        self.init.qp_type
    }

    pub fn state(&self) -> QpState {
        self.attr.qp_state
    }
}

/// The send side of a QP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequesterStateV1 {
    /// Send WQEs not yet completed, oldest first.
    pub sq: Vec<SendWqeStateV1>,
    /// Index in `sq` of the WQE to transmit next, and its next packet.
    pub next: usize,
    pub next_pkt: u32,
    pub psn: Psn,
    pub una: Psn,
    pub sent_hw: Psn,
    pub retry_left: u8,
    pub rnr_left: u8,
    /// Retransmit deadline, as time remaining at the save (ns).
    pub deadline: Option<Nanos>,
    /// End of an RNR wait, as time remaining at the save (ns).
    pub rnr_until: Option<Nanos>,
    pub since_ack_req: u32,
    pub halted: bool,
    pub drained_notified: bool,
    /// Added after the first v1 JSON blobs: JSON without it reads `None` (postcard is
    /// positional and has always had it).
    #[serde(default)]
    pub retrying_from: Option<Psn>,
}

/// A posted send WQE with its transport progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendWqeStateV1 {
    pub wr_id: u64,
    pub op: SendOp,
    pub flags: SendFlags,
    pub signaled: bool,
    pub sgl: Vec<Sge>,
    pub inline: Option<Vec<u8>>,
    /// Message length, bytes.
    pub len: u32,
    pub ud: Option<UdDest>,
    pub started: bool,
    pub first_psn: Psn,
    pub npkts: u32,
    pub resp_pkts: u32,
    pub done: Option<WcStatus>,
}

/// The receive side of an RC QP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponderStateV1 {
    pub epsn: Psn,
    pub msn: Msn,
    pub nak_sent: bool,
    pub current: Option<InMessageStateV1>,
    pub resources: Vec<RdAtomicResourceStateV1>,
    pub out: Vec<OutgoingStateV1>,
}

/// A multi-packet request message being received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum InMessageStateV1 {
    Send {
        wqe: RecvWr,
        offset: u32,
    },
    Write {
        va: u64,
        rkey: MemKey,
        len: u32,
        offset: u32,
    },
}

/// A saved READ or atomic request (responder resources), for duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RdAtomicResourceStateV1 {
    Read { psn: Psn, npkts: u32 },
    Atomic { psn: Psn, orig: u64 },
}

/// A response the responder still owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutgoingStateV1 {
    Ack {
        psn: Psn,
        syndrome: u8,
        msn: Msn,
    },
    AtomicAck {
        psn: Psn,
        orig: u64,
        msn: Msn,
    },
    Read {
        psn: Psn,
        va: u64,
        rkey: MemKey,
        left: u32,
        first: bool,
        msn: Msn,
    },
}

/// The VF's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersStateV1 {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub retransmits: u64,
    pub retry_timeouts: u64,
    pub rnr_naks_sent: u64,
    pub rnr_naks_received: u64,
    pub seq_naks_sent: u64,
    pub seq_naks_received: u64,
    pub duplicate_requests: u64,
    pub out_of_sequence: u64,
    pub implied_naks: u64,
    pub rx_dropped: u64,
    pub qkey_violations: u64,
    pub ud_no_recv: u64,
    pub completions: u64,
    pub error_completions: u64,
}

// Saving: live → wire. Infallible, and the only place that reads live fields for the format.

impl From<&VfIdentity> for IdentityStateV1 {
    fn from(i: &VfIdentity) -> Self {
        IdentityStateV1 {
            node_guid: i.node_guid,
            port_guid: i.port_guid,
            gid: i.gid,
            mac: i.mac,
            port_mtu: i.port_mtu,
            limits: i.limits,
        }
    }
}

impl From<&Mr> for MrStateV1 {
    fn from(m: &Mr) -> Self {
        MrStateV1 {
            pd: m.pd,
            iova: m.iova,
            len: m.len,
            access: m.access,
            key: m.key,
            map: match &m.map {
                MrMap::Contiguous { gpa } => MrMapStateV1::Contiguous { gpa: *gpa },
                MrMap::Pages { page_shift, pages } => MrMapStateV1::Pages {
                    page_shift: *page_shift,
                    pages: pages.clone(),
                },
            },
            valid: m.valid,
        }
    }
}

impl From<Arm> for ArmStateV1 {
    fn from(a: Arm) -> Self {
        match a {
            Arm::Next => ArmStateV1::Next,
            Arm::Solicited => ArmStateV1::Solicited,
        }
    }
}

impl From<&Cq> for CqStateV1 {
    fn from(c: &Cq) -> Self {
        CqStateV1 {
            capacity: c.capacity,
            entries: c.entries.iter().copied().collect(),
            armed: c.armed.map(ArmStateV1::from),
            overflowed: c.overflowed,
        }
    }
}

impl From<&Srq> for SrqStateV1 {
    fn from(s: &Srq) -> Self {
        SrqStateV1 {
            pd: s.pd,
            max_wr: s.max_wr,
            max_sge: s.max_sge,
            queue: s.queue.iter().cloned().collect(),
            limit: s.limit,
        }
    }
}

impl From<&Ah> for AhStateV1 {
    fn from(a: &Ah) -> Self {
        AhStateV1 {
            pd: a.pd,
            attr: a.attr,
        }
    }
}

impl From<&SendWqe> for SendWqeStateV1 {
    fn from(w: &SendWqe) -> Self {
        SendWqeStateV1 {
            wr_id: w.wr_id,
            op: w.op,
            flags: w.flags,
            signaled: w.signaled,
            sgl: w.sgl.clone(),
            inline: w.inline.clone(),
            len: w.len,
            ud: w.ud,
            started: w.started,
            first_psn: w.first_psn,
            npkts: w.npkts,
            resp_pkts: w.resp_pkts,
            done: w.done,
        }
    }
}

impl From<&Requester> for RequesterStateV1 {
    fn from(r: &Requester) -> Self {
        RequesterStateV1 {
            sq: r.sq.iter().map(SendWqeStateV1::from).collect(),
            next: r.next,
            next_pkt: r.next_pkt,
            psn: r.psn,
            una: r.una,
            sent_hw: r.sent_hw,
            retry_left: r.retry_left,
            rnr_left: r.rnr_left,
            deadline: r.deadline,
            rnr_until: r.rnr_until,
            since_ack_req: r.since_ack_req,
            halted: r.halted,
            drained_notified: r.drained_notified,
            retrying_from: r.retrying_from,
        }
    }
}

impl From<&InMessage> for InMessageStateV1 {
    fn from(m: &InMessage) -> Self {
        match m {
            InMessage::Send { wqe, offset } => InMessageStateV1::Send {
                wqe: wqe.clone(),
                offset: *offset,
            },
            &InMessage::Write {
                va,
                rkey,
                len,
                offset,
            } => InMessageStateV1::Write {
                va,
                rkey,
                len,
                offset,
            },
        }
    }
}

impl From<&RdAtomicResource> for RdAtomicResourceStateV1 {
    fn from(r: &RdAtomicResource) -> Self {
        match *r {
            RdAtomicResource::Read { psn, npkts } => RdAtomicResourceStateV1::Read { psn, npkts },
            RdAtomicResource::Atomic { psn, orig } => RdAtomicResourceStateV1::Atomic { psn, orig },
        }
    }
}

impl From<&Outgoing> for OutgoingStateV1 {
    fn from(o: &Outgoing) -> Self {
        match *o {
            Outgoing::Ack { psn, syndrome, msn } => OutgoingStateV1::Ack { psn, syndrome, msn },
            Outgoing::AtomicAck { psn, orig, msn } => OutgoingStateV1::AtomicAck { psn, orig, msn },
            Outgoing::Read {
                psn,
                va,
                rkey,
                left,
                first,
                msn,
            } => OutgoingStateV1::Read {
                psn,
                va,
                rkey,
                left,
                first,
                msn,
            },
        }
    }
}

impl From<&Responder> for ResponderStateV1 {
    fn from(r: &Responder) -> Self {
        ResponderStateV1 {
            epsn: r.epsn,
            msn: r.msn,
            nak_sent: r.nak_sent,
            current: r.current.as_ref().map(InMessageStateV1::from),
            resources: r.resources.iter().map(Into::into).collect(),
            out: r.out.iter().map(Into::into).collect(),
        }
    }
}

/// The QP's timers are copied as they are (absolute); `state_of` turns them into time
/// remaining, since only it knows `now`.
impl From<&Qp> for QpStateV1 {
    fn from(q: &Qp) -> Self {
        QpStateV1 {
            qpn: q.qpn,
            init: q.init,
            attr: q.attr,
            rq: q.rq.iter().cloned().collect(),
            req: (&q.req).into(),
            resp: (&q.resp).into(),
            src_port: q.src_port,
        }
    }
}

impl From<&Counters> for CountersStateV1 {
    fn from(c: &Counters) -> Self {
        CountersStateV1 {
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            retransmits: c.retransmits,
            retry_timeouts: c.retry_timeouts,
            rnr_naks_sent: c.rnr_naks_sent,
            rnr_naks_received: c.rnr_naks_received,
            seq_naks_sent: c.seq_naks_sent,
            seq_naks_received: c.seq_naks_received,
            duplicate_requests: c.duplicate_requests,
            out_of_sequence: c.out_of_sequence,
            implied_naks: c.implied_naks,
            rx_dropped: c.rx_dropped,
            qkey_violations: c.qkey_violations,
            ud_no_recv: c.ud_no_recv,
            completions: c.completions,
            error_completions: c.error_completions,
        }
    }
}
