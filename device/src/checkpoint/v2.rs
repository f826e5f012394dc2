//! Version 2 of the checkpoint's objects, as wire-only structs.
//!
//! These types are the format of a v2 section's payload (the container around them is
//! `container.rs`): their field order, field names, variant order and variant names are what
//! every codec writes (docs/checkpoint-format.md lists every field). The live device types do
//! not implement serde; a save converts them with `From<&Live>` here, a load converts back with
//! the checked `TryFrom`s in `load.rs`, and a v1 state becomes one of these with the
//! `From<…V1>`s in `v1.rs` (`vhca state upgrade`). A refactor of the device changes those
//! conversions, never these structs; a change here is a new format version.
//!
//! Against v1: the identity carries the MR key byte, the events are one section, the
//! requester's WQE index is a `u32` (v1's `usize` meant "whatever the writer's pointer width
//! was"), and no field has a serde default (postcard is positional; a default would mean
//! something in JSON only).
//!
//! The verbs vocabulary and the value types of `types.rs` are shared with v1 and the verbs API
//! (docs/checkpoint-format.md, "Shared value types").

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
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version 2 of a VF's whole state, each field one kind of section (`container.rs`). QP timers
/// are time remaining, not absolute times: the destination's clock has another origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VfStateV2 {
    pub identity: IdentityStateV2,
    /// PD numbers, ascending.
    pub pds: Vec<u32>,
    /// (MR number, MR), ascending numbers.
    pub mrs: Vec<(u32, MrStateV2)>,
    pub cqs: Vec<(u32, CqStateV2)>,
    pub srqs: Vec<(u32, SrqStateV2)>,
    pub ahs: Vec<(u32, AhStateV2)>,
    /// Ascending QPNs.
    pub qps: Vec<QpStateV2>,
    pub events: EventsStateV2,
    pub counters: CountersStateV2,
    /// (MW number, window), ascending numbers: section `Mws`. Sections are what is encoded,
    /// never this struct whole in a positional codec, so the default only matters to JSON
    /// documents (`vhca state export`) written before windows existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mws: Vec<(u32, super::windows::MwStateV2)>,
    /// (MR number, what makes it fast-register), ascending: section `FastRegMrs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fast_reg_mrs: Vec<(u32, super::windows::FastRegStateV2)>,
}

/// Who the VF is on the fabric, the limits it enforces, and the key byte its next MR gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityStateV2 {
    pub node_guid: Guid,
    pub port_guid: Guid,
    pub gid: Gid,
    pub mac: Mac,
    pub port_mtu: Mtu,
    pub limits: VfLimits,
    /// The key byte (`key & 0xff`) the next MR registration uses.
    pub key_byte: u8,
}

/// Events raised and not yet delivered to the driver, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventsStateV2 {
    pub async_events: Vec<AsyncEvent>,
    /// CQs that became notifiable.
    pub cq_events: Vec<CqHandle>,
}

/// A memory region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MrStateV2 {
    pub pd: PdHandle,
    pub iova: u64,
    /// Bytes.
    pub len: u64,
    pub access: Access,
    /// lkey = rkey; its index (`key >> 8`) is the MR's number.
    pub key: MemKey,
    pub map: MrMapStateV2,
    pub valid: bool,
}

/// How an MR's virtual range maps onto guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MrMapStateV2 {
    Contiguous { gpa: u64 },
    Pages { page_shift: u8, pages: Vec<u64> },
}

/// A completion queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CqStateV2 {
    pub capacity: u32,
    /// Completions not yet polled, oldest first.
    pub entries: Vec<WorkCompletion>,
    pub armed: Option<ArmStateV2>,
    pub overflowed: bool,
}

/// What an armed CQ notifies for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ArmStateV2 {
    Next,
    Solicited,
}

/// A shared receive queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SrqStateV2 {
    pub pd: PdHandle,
    pub max_wr: u32,
    pub max_sge: u32,
    /// Posted receive WQEs, oldest first.
    pub queue: Vec<RecvWr>,
    /// Armed limit; 0 = disarmed.
    pub limit: u32,
}

/// An address handle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AhStateV2 {
    pub pd: PdHandle,
    pub attr: AhAttr,
}

/// A queue pair with its transport state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QpStateV2 {
    pub qpn: Qpn,
    pub init: QpInitAttr,
    pub attr: QpAttr,
    /// Posted receive WQEs, oldest first (empty with an SRQ).
    pub rq: Vec<RecvWr>,
    pub req: RequesterStateV2,
    pub resp: ResponderStateV2,
    /// RoCEv2 UDP source port of the QP's packets.
    pub src_port: u16,
}

impl QpStateV2 {
    pub fn qp_type(&self) -> QpType {
        self.init.qp_type
    }

    pub fn state(&self) -> QpState {
        self.attr.qp_state
    }
}

/// The send side of a QP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RequesterStateV2 {
    /// Send WQEs not yet completed, oldest first.
    pub sq: Vec<SendWqeStateV2>,
    /// Index in `sq` of the WQE to transmit next, and its next packet.
    pub next: u32,
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
    /// The PSN a go-back-N retransmission restarted from, while it is under way.
    pub retrying_from: Option<Psn>,
}

/// A posted send WQE with its transport progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SendWqeStateV2 {
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResponderStateV2 {
    pub epsn: Psn,
    pub msn: Msn,
    pub nak_sent: bool,
    pub current: Option<InMessageStateV2>,
    pub resources: Vec<RdAtomicResourceStateV2>,
    pub out: Vec<OutgoingStateV2>,
}

/// A multi-packet request message being received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum InMessageStateV2 {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RdAtomicResourceStateV2 {
    Read {
        psn: Psn,
        npkts: u32,
    },
    Atomic {
        psn: Psn,
        orig: u64,
    },
    /// Appended: an ATOMIC WRITE or FLUSH executed at `psn`.
    Answered {
        psn: Psn,
    },
}

/// A response the responder still owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OutgoingStateV2 {
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CountersStateV2 {
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

impl IdentityStateV2 {
    /// The identity of a VF whose next MR gets `key_byte`.
    pub fn of(i: &VfIdentity, key_byte: u8) -> Self {
        IdentityStateV2 {
            node_guid: i.node_guid,
            port_guid: i.port_guid,
            gid: i.gid,
            mac: i.mac,
            port_mtu: i.port_mtu,
            limits: i.limits,
            key_byte,
        }
    }
}

impl From<&Mr> for MrStateV2 {
    fn from(m: &Mr) -> Self {
        MrStateV2 {
            pd: m.pd,
            iova: m.iova,
            len: m.len,
            access: m.access,
            key: m.key,
            map: match &m.map {
                MrMap::Contiguous { gpa } => MrMapStateV2::Contiguous { gpa: *gpa },
                MrMap::Pages { page_shift, pages } => MrMapStateV2::Pages {
                    page_shift: *page_shift,
                    pages: pages.clone(),
                },
            },
            valid: m.valid,
        }
    }
}

impl From<Arm> for ArmStateV2 {
    fn from(a: Arm) -> Self {
        match a {
            Arm::Next => ArmStateV2::Next,
            Arm::Solicited => ArmStateV2::Solicited,
        }
    }
}

impl From<&Cq> for CqStateV2 {
    fn from(c: &Cq) -> Self {
        CqStateV2 {
            capacity: c.capacity,
            entries: c.entries.iter().copied().collect(),
            armed: c.armed.map(ArmStateV2::from),
            overflowed: c.overflowed,
        }
    }
}

impl From<&Srq> for SrqStateV2 {
    fn from(s: &Srq) -> Self {
        SrqStateV2 {
            pd: s.pd,
            max_wr: s.max_wr,
            max_sge: s.max_sge,
            queue: s.queue.iter().cloned().collect(),
            limit: s.limit,
        }
    }
}

impl From<&Ah> for AhStateV2 {
    fn from(a: &Ah) -> Self {
        AhStateV2 {
            pd: a.pd,
            attr: a.attr,
        }
    }
}

impl From<&SendWqe> for SendWqeStateV2 {
    fn from(w: &SendWqe) -> Self {
        SendWqeStateV2 {
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

impl From<&Requester> for RequesterStateV2 {
    fn from(r: &Requester) -> Self {
        RequesterStateV2 {
            sq: r.sq.iter().map(SendWqeStateV2::from).collect(),
            // A send queue holds at most max_qp_wr (a u32) WQEs.
            next: u32::try_from(r.next).unwrap_or(u32::MAX),
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

impl From<&InMessage> for InMessageStateV2 {
    fn from(m: &InMessage) -> Self {
        match m {
            InMessage::Send { wqe, offset } => InMessageStateV2::Send {
                wqe: wqe.clone(),
                offset: *offset,
            },
            &InMessage::Write {
                va,
                rkey,
                len,
                offset,
            } => InMessageStateV2::Write {
                va,
                rkey,
                len,
                offset,
            },
        }
    }
}

impl From<&RdAtomicResource> for RdAtomicResourceStateV2 {
    fn from(r: &RdAtomicResource) -> Self {
        match *r {
            RdAtomicResource::Read { psn, npkts } => RdAtomicResourceStateV2::Read { psn, npkts },
            RdAtomicResource::Atomic { psn, orig } => RdAtomicResourceStateV2::Atomic { psn, orig },
            RdAtomicResource::Answered { psn } => RdAtomicResourceStateV2::Answered { psn },
        }
    }
}

impl From<&Outgoing> for OutgoingStateV2 {
    fn from(o: &Outgoing) -> Self {
        match *o {
            Outgoing::Ack { psn, syndrome, msn } => OutgoingStateV2::Ack { psn, syndrome, msn },
            Outgoing::AtomicAck { psn, orig, msn } => OutgoingStateV2::AtomicAck { psn, orig, msn },
            Outgoing::Read {
                psn,
                va,
                rkey,
                left,
                first,
                msn,
            } => OutgoingStateV2::Read {
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

impl From<&Responder> for ResponderStateV2 {
    fn from(r: &Responder) -> Self {
        ResponderStateV2 {
            epsn: r.epsn,
            msn: r.msn,
            nak_sent: r.nak_sent,
            current: r.current.as_ref().map(InMessageStateV2::from),
            resources: r.resources.iter().map(Into::into).collect(),
            out: r.out.iter().map(Into::into).collect(),
        }
    }
}

/// The QP's timers are copied as they are (absolute); `state_of` turns them into time
/// remaining, since only it knows `now`.
impl From<&Qp> for QpStateV2 {
    fn from(q: &Qp) -> Self {
        QpStateV2 {
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

impl From<&Counters> for CountersStateV2 {
    fn from(c: &Counters) -> Self {
        CountersStateV2 {
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

/// The base a delta applies to: the SHA-256 of the base's full checkpoint in the binary codec
/// ([`super::delta::digest`]), whatever codec either blob uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BaseStateV2 {
    pub digest: [u8; 32],
}

/// Objects of the base that a delta deletes, by number, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemovedStateV2 {
    pub pds: Vec<u32>,
    pub mrs: Vec<u32>,
    pub cqs: Vec<u32>,
    pub srqs: Vec<u32>,
    pub ahs: Vec<u32>,
    pub qps: Vec<u32>,
}

impl RemovedStateV2 {
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
    pub fn count(&self) -> usize {
        self.pds.len()
            + self.mrs.len()
            + self.cqs.len()
            + self.srqs.len()
            + self.ahs.len()
            + self.qps.len()
    }
}
