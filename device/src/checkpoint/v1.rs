//! Version 1 of the checkpoint payload, as wire-only structs.
//!
//! v1 is read, never written: a v1 blob decodes into these structs and becomes a v2 state with
//! the conversions in `upgrade.rs`, which the v2 checks in `load.rs` then judge. These types are
//! the format: their field order, field names, variant order and variant names are what postcard
//! and JSON wrote (docs/checkpoint-format.md lists every field). They are frozen; a change here
//! would make the golden fixtures in `device/tests/fixtures` fail.
//!
//! Fields are plain data. The verbs vocabulary (`QpAttr`, `QpInitAttr`, `RecvWr`, `Sge`,
//! `SendOp`, `SendFlags`, `UdDest`, `WcStatus`, `WorkCompletion`, `AhAttr`, `AsyncEvent`,
//! `Access`, `Mtu`, `VfLimits`) and the value types of `types.rs` (`Psn`, `Qpn`, `Msn`,
//! `MemKey`, `Gid`, `Mac`, `Guid`, `Nanos`, handles) are shared with the verbs API and keep
//! their serde derives: they are values, not implementation state, and their encoding is part
//! of this format (the byte-exact fixtures in `device/tests/fixtures` catch a change).

use crate::types::{CqHandle, Gid, Guid, Mac, MemKey, Msn, Nanos, PdHandle, Psn, Qpn};
use crate::verbs::{
    Access, AhAttr, AsyncEvent, Mtu, QpAttr, QpInitAttr, QpState, QpType, RecvWr, SendFlags,
    SendOp, Sge, UdDest, VfLimits, WcStatus, WorkCompletion,
};
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
