//! The verbs vocabulary: work requests, completions, QP attributes, access flags.
//!
//! Shaped after libibverbs (`ibv_send_wr`, `ibv_wc`, `ibv_qp_attr`, ...), with Rust types.

use crate::types::{AhHandle, CqHandle, Gid, MemKey, PdHandle, Psn, Qpn, SrqHandle};
use bitflags::bitflags;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

bitflags! {
    /// Memory region access rights (`ibv_access_flags`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct Access: u32 {
        const LOCAL_WRITE = 1 << 0;
        const REMOTE_WRITE = 1 << 1;
        const REMOTE_READ = 1 << 2;
        const REMOTE_ATOMIC = 1 << 3;
        /// The MR may have memory windows bound to it (`IBV_ACCESS_MW_BIND`).
        const MW_BIND = 1 << 4;
        /// A zero-based region or window (`IBV_ACCESS_ZERO_BASED`). vhca supports neither:
        /// registration refuses it and a bind with it fails with `MW_BIND_ERR`.
        const ZERO_BASED = 1 << 5;
        /// The target of FLUSH with the global-visibility placement type (IBTA 1.5).
        const FLUSH_GLOBAL = 1 << 8;
        /// The target of FLUSH with the persistence placement type. Guest memory has no
        /// persistence domain: a VF refuses to register an MR with it (as rxe does for memory
        /// that is not pmem).
        const FLUSH_PERSISTENT = 1 << 9;
    }
}

bitflags! {
    /// What a FLUSH makes durable (`enum ib_placement_type`, the FETH placement bits).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct FlushPlacement: u8 {
        const GLOBAL = 1 << 0;
        const PERSISTENT = 1 << 1;
    }
}

impl JsonSchema for FlushPlacement {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FlushPlacement".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        flags_schema::<FlushPlacement>("FLUSH placement type")
    }
}

/// Which memory a FLUSH covers (`enum ib_selectivity_level`, the FETH selectivity field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FlushLevel {
    /// The range `[remote_addr, remote_addr + len)`.
    Range,
    /// The whole memory region the R_Key names (`remote_addr` and `len` are not checked).
    Mr,
}

bitflags! {
    /// Send work request flags (`ibv_send_flags`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct SendFlags: u32 {
        const FENCE = 1 << 0;
        const SIGNALED = 1 << 1;
        const SOLICITED = 1 << 2;
        const INLINE = 1 << 3;
    }
}

/// Bitflags are the flag names joined by ` | ` in the human-readable codecs (JSON), their bits
/// as a `u32` in the binary ones; the schema describes the JSON form.
fn flags_schema<F: bitflags::Flags>(what: &str) -> schemars::Schema {
    let names: Vec<&str> = F::all().iter_names().map(|(n, _)| n).collect();
    let one = names.join("|");
    schemars::json_schema!({
        "type": "string",
        "description": format!("{what}: flag names joined by \" | \" (\"\" for none)"),
        "pattern": format!("^(({one})( \\| ({one}))*)?$"),
    })
}

impl JsonSchema for Access {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Access".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        flags_schema::<Access>("access rights")
    }
}

impl JsonSchema for SendFlags {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SendFlags".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        flags_schema::<SendFlags>("send flags")
    }
}

/// A scatter/gather element: `len` bytes at virtual address `addr` of the MR named by `lkey`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: MemKey,
}

/// What a send work request asks for (`ibv_wr_opcode` with its per-opcode fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SendOp {
    Send,
    SendWithImm {
        imm: u32,
    },
    SendWithInv {
        rkey: MemKey,
    },
    Write {
        remote_addr: u64,
        rkey: MemKey,
    },
    WriteWithImm {
        remote_addr: u64,
        rkey: MemKey,
        imm: u32,
    },
    Read {
        remote_addr: u64,
        rkey: MemKey,
    },
    CmpSwap {
        remote_addr: u64,
        rkey: MemKey,
        compare: u64,
        swap: u64,
    },
    FetchAdd {
        remote_addr: u64,
        rkey: MemKey,
        add: u64,
    },
    LocalInv {
        key: MemKey,
    },
    /// ATOMIC WRITE (IBTA 1.5): the 8 bytes of `value` (in memory order, as
    /// `ibv_wr_atomic_write` takes them) stored at the 8-byte aligned `remote_addr` as one
    /// indivisible write, after every earlier request of the QP has executed. RC only.
    AtomicWrite {
        remote_addr: u64,
        rkey: MemKey,
        value: u64,
    },
    /// FLUSH (IBTA 1.5): completes once the writes the responder executed before it are
    /// globally visible (or persistent) in `[remote_addr, remote_addr + len)` or the whole MR.
    /// RC only.
    Flush {
        remote_addr: u64,
        rkey: MemKey,
        len: u32,
        placement: FlushPlacement,
        level: FlushLevel,
    },
    /// Binds a memory window (`IBV_WR_BIND_MW`; `ibv_bind_mw` posts the same WR for a type 1
    /// window). `mw` is the window's current R_Key; the window's new R_Key keeps its index and
    /// takes the key byte (low 8 bits) of `rkey`. The window covers `[addr, addr + len)` of
    /// the MR named by `mr` with the remote rights in `access`. A type 1 window bound with
    /// `len == 0` is unbound.
    BindMw {
        mw: MemKey,
        rkey: MemKey,
        mr: MemKey,
        addr: u64,
        len: u64,
        access: Access,
    },
    /// Registers a fast-register MR (`IB_WR_REG_MR`): `mr` is its new key (same index, the
    /// consumer's key byte). The region `[iova, iova + len)` maps onto `npages` guest pages of
    /// `1 << page_shift` bytes whose addresses (little-endian u64s) are read from guest memory
    /// at `page_list` when the WR executes, as a NIC reads its translation table.
    RegMr {
        mr: MemKey,
        page_list: u64,
        npages: u32,
        page_shift: u8,
        iova: u64,
        len: u64,
        access: Access,
    },
}

impl SendOp {
    pub fn wc_opcode(&self) -> WcOpcode {
        match self {
            SendOp::Send | SendOp::SendWithImm { .. } | SendOp::SendWithInv { .. } => {
                WcOpcode::Send
            }
            SendOp::Write { .. } | SendOp::WriteWithImm { .. } => WcOpcode::RdmaWrite,
            SendOp::Read { .. } => WcOpcode::RdmaRead,
            SendOp::CmpSwap { .. } => WcOpcode::CmpSwap,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
            SendOp::LocalInv { .. } => WcOpcode::LocalInv,
            SendOp::AtomicWrite { .. } => WcOpcode::AtomicWrite,
            SendOp::Flush { .. } => WcOpcode::Flush,
            SendOp::BindMw { .. } => WcOpcode::BindMw,
            SendOp::RegMr { .. } => WcOpcode::RegMr,
        }
    }

    /// Work requests the requester executes itself, in send queue order, without a packet
    /// (rxe's `WR_LOCAL_OP_MASK`).
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            SendOp::LocalInv { .. } | SendOp::BindMw { .. } | SendOp::RegMr { .. }
        )
    }

    /// READ, atomics, ATOMIC WRITE and FLUSH need responder resources, obey `max_rd_atomic`
    /// and fences, and are answered by a response packet rather than an ACK.
    pub fn is_read_or_atomic(&self) -> bool {
        matches!(
            self,
            SendOp::Read { .. }
                | SendOp::CmpSwap { .. }
                | SendOp::FetchAdd { .. }
                | SendOp::AtomicWrite { .. }
                | SendOp::Flush { .. }
        )
    }

    /// ATOMIC WRITE and FLUSH: answered by a zero-length READ RESPONSE ONLY.
    pub fn is_flush_or_atomic_write(&self) -> bool {
        matches!(self, SendOp::AtomicWrite { .. } | SendOp::Flush { .. })
    }

    pub fn is_atomic(&self) -> bool {
        matches!(self, SendOp::CmpSwap { .. } | SendOp::FetchAdd { .. })
    }

    /// Operations that carry local data out (the SGL is a source).
    pub fn is_outbound_data(&self) -> bool {
        matches!(
            self,
            SendOp::Send
                | SendOp::SendWithImm { .. }
                | SendOp::SendWithInv { .. }
                | SendOp::Write { .. }
                | SendOp::WriteWithImm { .. }
        )
    }
}

/// UD destination of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UdDest {
    pub ah: AhHandle,
    pub remote_qpn: Qpn,
    pub remote_qkey: u32,
}

/// A send work request (`ibv_send_wr`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SendWr {
    pub wr_id: u64,
    pub op: SendOp,
    pub flags: SendFlags,
    pub sgl: Vec<Sge>,
    /// Data for `SendFlags::INLINE`; copied at post time, the SGL is then ignored.
    pub inline_data: Vec<u8>,
    /// Destination for UD QPs.
    pub ud: Option<UdDest>,
}

impl SendWr {
    pub fn new(wr_id: u64, op: SendOp) -> SendWr {
        SendWr {
            wr_id,
            op,
            flags: SendFlags::SIGNALED,
            sgl: Vec::new(),
            inline_data: Vec::new(),
            ud: None,
        }
    }

    pub fn sge(mut self, sge: Sge) -> SendWr {
        self.sgl.push(sge);
        self
    }

    pub fn flags(mut self, flags: SendFlags) -> SendWr {
        self.flags = flags;
        self
    }

    pub fn inline(mut self, data: &[u8]) -> SendWr {
        self.flags |= SendFlags::INLINE;
        self.inline_data = data.to_vec();
        self
    }

    pub fn ud(mut self, dest: UdDest) -> SendWr {
        self.ud = Some(dest);
        self
    }
}

/// A receive work request (`ibv_recv_wr`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecvWr {
    pub wr_id: u64,
    pub sgl: Vec<Sge>,
}

/// Completion status (`ibv_wc_status`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum WcStatus {
    Success,
    LocLenErr,
    LocQpOpErr,
    LocProtErr,
    WrFlushErr,
    MwBindErr,
    BadRespErr,
    LocAccessErr,
    RemInvReqErr,
    RemAccessErr,
    RemOpErr,
    RetryExcErr,
    RnrRetryExcErr,
    FatalErr,
    GeneralErr,
}

impl WcStatus {
    /// The numeric value libibverbs uses.
    pub fn code(self) -> u32 {
        match self {
            WcStatus::Success => 0,
            WcStatus::LocLenErr => 1,
            WcStatus::LocQpOpErr => 2,
            WcStatus::LocProtErr => 4,
            WcStatus::WrFlushErr => 5,
            WcStatus::MwBindErr => 6,
            WcStatus::BadRespErr => 7,
            WcStatus::LocAccessErr => 8,
            WcStatus::RemInvReqErr => 9,
            WcStatus::RemAccessErr => 10,
            WcStatus::RemOpErr => 11,
            WcStatus::RetryExcErr => 12,
            WcStatus::RnrRetryExcErr => 13,
            WcStatus::FatalErr => 19,
            WcStatus::GeneralErr => 21,
        }
    }
}

/// Completion opcode (`ibv_wc_opcode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WcOpcode {
    Send,
    RdmaWrite,
    RdmaRead,
    CmpSwap,
    FetchAdd,
    LocalInv,
    Recv,
    RecvRdmaWithImm,
    /// Appended (a variant's index is its checkpoint encoding).
    Flush,
    AtomicWrite,
    BindMw,
    RegMr,
}

/// A work completion (`ibv_wc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkCompletion {
    pub wr_id: u64,
    pub status: WcStatus,
    pub opcode: WcOpcode,
    pub qpn: Qpn,
    pub byte_len: u32,
    pub imm: Option<u32>,
    /// The R_Key a SEND_WITH_INV invalidated.
    pub invalidated_rkey: Option<MemKey>,
    /// UD: the sender's QPN and GID, and whether a GRH is in the buffer's first 40 bytes.
    pub src_qp: Qpn,
    pub src_gid: Gid,
    pub grh: bool,
    /// The receive was solicited (SE bit).
    pub solicited: bool,
}

impl WorkCompletion {
    pub fn is_ok(&self) -> bool {
        self.status == WcStatus::Success
    }
}

/// QP transport service type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum QpType {
    Rc,
    Ud,
    /// Unreliable connected. Appended after `Ud`: a variant's index is its checkpoint encoding.
    Uc,
    /// The general services interface QP (QP1): a UD QP with the fixed number 1, one per VF,
    /// that sends and accepts only the GSI Q_Key and carries 256-byte MADs. Appended last.
    Gsi,
}

impl QpType {
    /// Datagram service: UD and the GSI QP (one packet per message, DETH, GRH area).
    pub fn is_datagram(self) -> bool {
        matches!(self, QpType::Ud | QpType::Gsi)
    }
}

/// IBTA QP states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum QpState {
    Reset,
    Init,
    Rtr,
    Rts,
    Sqd,
    Sqe,
    Err,
}

/// Path MTU (`ibv_mtu`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Mtu {
    Mtu256 = 1,
    Mtu512 = 2,
    Mtu1024 = 3,
    Mtu2048 = 4,
    Mtu4096 = 5,
}

impl Mtu {
    pub const ALL: [Mtu; 5] = [
        Mtu::Mtu256,
        Mtu::Mtu512,
        Mtu::Mtu1024,
        Mtu::Mtu2048,
        Mtu::Mtu4096,
    ];

    pub fn bytes(self) -> u32 {
        256 << (self as u32 - 1)
    }

    pub fn from_enum(v: u8) -> Option<Mtu> {
        Mtu::ALL.get((v as usize).wrapping_sub(1)).copied()
    }

    /// The MTU of `bytes` (256, 512, 1024, 2048 or 4096), as the command-line tools take it.
    pub fn from_bytes(bytes: u32) -> Option<Mtu> {
        Mtu::ALL.into_iter().find(|m| m.bytes() == bytes)
    }
}

/// Address vector (`ibv_ah_attr` with its GRH, RoCE-style: the GID is the address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AhAttr {
    pub dgid: Gid,
    pub sgid_index: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub sl: u8,
}

bitflags! {
    /// Which fields of a [`QpAttr`] a modify applies (`ibv_qp_attr_mask`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct QpAttrMask: u32 {
        const STATE = 1 << 0;
        const CUR_STATE = 1 << 1;
        const EN_SQD_ASYNC_NOTIFY = 1 << 2;
        const ACCESS_FLAGS = 1 << 3;
        const PKEY_INDEX = 1 << 4;
        const PORT = 1 << 5;
        const QKEY = 1 << 6;
        const AV = 1 << 7;
        const PATH_MTU = 1 << 8;
        const TIMEOUT = 1 << 9;
        const RETRY_CNT = 1 << 10;
        const RNR_RETRY = 1 << 11;
        const RQ_PSN = 1 << 12;
        const MAX_QP_RD_ATOMIC = 1 << 13;
        const ALT_PATH = 1 << 14;
        const MIN_RNR_TIMER = 1 << 15;
        const SQ_PSN = 1 << 16;
        const MAX_DEST_RD_ATOMIC = 1 << 17;
        const PATH_MIG_STATE = 1 << 18;
        const CAP = 1 << 19;
        const DEST_QPN = 1 << 20;
    }
}

/// QP attributes (`ibv_qp_attr`), read by query and applied by modify under a mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QpAttr {
    pub qp_state: QpState,
    pub cur_qp_state: QpState,
    pub en_sqd_async_notify: bool,
    pub qp_access_flags: Access,
    pub pkey_index: u16,
    pub port_num: u8,
    pub qkey: u32,
    pub ah_attr: AhAttr,
    pub path_mtu: Mtu,
    /// Local ACK timeout: 4.096 µs × 2^timeout; 0 disables the retransmit timer.
    pub timeout: u8,
    pub retry_cnt: u8,
    /// 7 means retry forever.
    pub rnr_retry: u8,
    pub rq_psn: Psn,
    pub max_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub sq_psn: Psn,
    pub max_dest_rd_atomic: u8,
    pub dest_qp_num: Qpn,
    pub cap: QpCap,
    /// Query only: the SQ is drained (in SQD).
    pub sq_draining: bool,
}

impl Default for QpAttr {
    fn default() -> QpAttr {
        QpAttr {
            qp_state: QpState::Reset,
            cur_qp_state: QpState::Reset,
            en_sqd_async_notify: false,
            qp_access_flags: Access::empty(),
            pkey_index: 0,
            port_num: 1,
            qkey: 0,
            ah_attr: AhAttr::default(),
            path_mtu: Mtu::Mtu1024,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            rq_psn: Psn(0),
            max_rd_atomic: 1,
            min_rnr_timer: 12,
            sq_psn: Psn(0),
            max_dest_rd_atomic: 1,
            dest_qp_num: Qpn(0),
            cap: QpCap::default(),
            sq_draining: false,
        }
    }
}

/// QP capacities (`ibv_qp_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

impl Default for QpCap {
    fn default() -> QpCap {
        QpCap {
            max_send_wr: 128,
            max_recv_wr: 128,
            max_send_sge: 4,
            max_recv_sge: 4,
            max_inline_data: 64,
        }
    }
}

/// QP creation attributes (`ibv_qp_init_attr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QpInitAttr {
    pub qp_type: QpType,
    pub pd: PdHandle,
    pub send_cq: CqHandle,
    pub recv_cq: CqHandle,
    pub srq: Option<SrqHandle>,
    pub cap: QpCap,
    /// Every send WR produces a completion, not only signaled ones.
    pub sq_sig_all: bool,
}

/// Affiliated and unaffiliated asynchronous events (`ibv_event_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AsyncEvent {
    /// A QP went to ERR because of an error it could not report in a completion.
    QpFatal(Qpn),
    /// The remote side sent a request the QP could not accept (invalid request class).
    QpReqErr(Qpn),
    /// A remote access violation put the QP in ERR.
    QpAccessErr(Qpn),
    /// The last WQE of an SRQ-attached QP in ERR has been consumed.
    QpLastWqeReached(Qpn),
    /// The SQ of a QP in SQD is drained.
    SqDrained(Qpn),
    /// A CQ overran; the CQ is now in error.
    CqErr(CqHandle),
    /// An SRQ's available WQEs fell below its armed limit.
    SrqLimitReached(SrqHandle),
    /// The port became active (a VF came up, or resumed after migration).
    PortActive,
}

/// Limits a VF enforces (a subset of `ibv_device_attr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VfLimits {
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_inline_data: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_mr_size: u64,
    pub max_pd: u32,
    pub max_srq: u32,
    pub max_srq_wr: u32,
    pub max_ah: u32,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    /// Largest message (rxe: 8 MiB).
    pub max_msg_sz: u32,
}

impl Default for VfLimits {
    fn default() -> VfLimits {
        VfLimits {
            max_qp: 65536,
            max_qp_wr: 16384,
            max_sge: 32,
            max_inline_data: 256,
            max_cq: 65536,
            max_cqe: 1 << 20,
            max_mr: 65536,
            max_mr_size: 1 << 40,
            max_pd: 65536,
            max_srq: 4096,
            max_srq_wr: 16384,
            max_ah: 65536,
            max_qp_rd_atom: 128,
            max_qp_init_rd_atom: 128,
            max_msg_sz: 0x80_0000,
        }
    }
}

/// Memory window type (`ibv_mw_type`). Type 2 windows are IBTA's type 2B, as in rxe: bound by
/// a BIND_MW work request to the QP that posted it, and only valid for requests arriving on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MwType {
    Type1,
    Type2,
}

/// What `ibv_bind_mw` binds a window to (`ibv_mw_bind_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MwBindInfo {
    pub mr: MemKey,
    pub addr: u64,
    pub len: u64,
    pub access: Access,
}
