//! Control commands: what the driver sends on the control queue and what the device answers.
//!
//! A request is an 8-byte header (`opcode: u16, flags: u16, reserved: u32`) and a body, in the
//! device-readable part of a descriptor chain; the answer is an 8-byte header (`status: u32,
//! reserved: u32`) and a body, written into the chain's device-writable part.

use super::codec::{DecodeError, Reader, Writer};
use vhca_device::{Access, AhAttr, Gid, MemKey, Mtu, Psn, QpAttr, QpCap, QpState, Qpn, VerbsError};

pub const HEADER_SIZE: usize = 8;

/// Command opcodes.
pub mod opcode {
    pub const QUERY_DEVICE: u16 = 1;
    pub const QUERY_PORT: u16 = 2;
    pub const QUERY_GID: u16 = 3;
    pub const QUERY_PKEY: u16 = 4;
    pub const CREATE_PD: u16 = 10;
    pub const DESTROY_PD: u16 = 11;
    pub const REG_MR: u16 = 12;
    pub const DEREG_MR: u16 = 13;
    pub const CREATE_CQ: u16 = 20;
    pub const DESTROY_CQ: u16 = 21;
    pub const RESIZE_CQ: u16 = 22;
    pub const REQ_NOTIFY_CQ: u16 = 23;
    pub const CREATE_QP: u16 = 30;
    pub const MODIFY_QP: u16 = 31;
    pub const QUERY_QP: u16 = 32;
    pub const DESTROY_QP: u16 = 33;
    pub const CREATE_SRQ: u16 = 40;
    pub const MODIFY_SRQ: u16 = 41;
    pub const DESTROY_SRQ: u16 = 42;
    pub const CREATE_AH: u16 = 50;
    pub const DESTROY_AH: u16 = 51;
    /// Memory windows and fast-register MRs (docs/device-protocol.md §6).
    pub const ALLOC_MW: u16 = 60;
    pub const DEALLOC_MW: u16 = 61;
    pub const ALLOC_MR: u16 = 62;
}

/// Command status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    Exhausted = 2,
    Invalid = 3,
    Busy = 4,
    BadState = 5,
    QueueFull = 6,
    Fault = 7,
    NoVf = 8,
    /// Unknown opcode.
    Unsupported = 9,
    /// The request was shorter than its opcode needs, or a field was out of range.
    Malformed = 10,
    /// The response buffer was too small for the answer.
    ResponseTooSmall = 11,
}

impl Status {
    pub fn from_error(e: VerbsError) -> Status {
        match e {
            VerbsError::NotFound(_) => Status::NotFound,
            VerbsError::Exhausted(_) => Status::Exhausted,
            VerbsError::Invalid(_) => Status::Invalid,
            VerbsError::Busy(_) => Status::Busy,
            VerbsError::BadState(_) => Status::BadState,
            VerbsError::QueueFull => Status::QueueFull,
            VerbsError::Fault => Status::Fault,
            VerbsError::NoVf => Status::NoVf,
        }
    }

    pub fn from_code(c: u32) -> Option<Status> {
        use Status::*;
        [
            Ok,
            NotFound,
            Exhausted,
            Invalid,
            Busy,
            BadState,
            QueueFull,
            Fault,
            NoVf,
            Unsupported,
            Malformed,
            ResponseTooSmall,
        ]
        .into_iter()
        .find(|s| *s as u32 == c)
    }
}

/// Guest buffer queue geometry as the device chose it (from the requested capacities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RingInfo {
    pub depth: u32,
    pub stride: u32,
}

/// A control command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    QueryDevice,
    QueryPort,
    QueryGid {
        index: u32,
    },
    QueryPkey {
        index: u32,
    },
    CreatePd,
    DestroyPd {
        pd: u32,
    },
    /// Register `length` bytes at virtual `iova`, backed by `npages` guest pages of
    /// 2^`page_shift` bytes whose addresses (u64 each) the device reads at `page_list_gpa`.
    RegMr {
        pd: u32,
        access: u32,
        iova: u64,
        length: u64,
        page_shift: u8,
        npages: u32,
        page_list_gpa: u64,
    },
    DeregMr {
        key: u32,
    },
    /// A memory window of `mw_type` 1 or 2 (`ibv_mw_type`) in `pd`; answers its R_Key.
    AllocMw {
        pd: u32,
        mw_type: u32,
    },
    DeallocMw {
        key: u32,
    },
    /// A fast-register MR (`ib_alloc_mr`) in `pd` for up to `max_num_sg` pages; answers its
    /// key. It is invalid until a REG_MR work request registers it.
    AllocMr {
        pd: u32,
        max_num_sg: u32,
    },
    /// A CQ of `depth` entries (a power of two) whose ring is at `ring_gpa`.
    CreateCq {
        depth: u32,
        ring_gpa: u64,
    },
    DestroyCq {
        cqn: u32,
    },
    /// Move to a new ring of `depth` entries; unpolled completions are carried over.
    ResizeCq {
        cqn: u32,
        depth: u32,
        ring_gpa: u64,
    },
    ReqNotifyCq {
        cqn: u32,
        solicited: bool,
    },
    /// `qp_type` is `ib_qp_type` (1 = GSI, 2 = RC, 3 = UC, 4 = UD). `srq` 0 means none. The rings' geometry
    /// follows from the capacities (`ring::send_stride`, `ring::recv_stride`, depths rounded up
    /// to powers of two) and is returned.
    CreateQp {
        qp_type: u8,
        sq_sig_all: bool,
        pd: u32,
        send_cq: u32,
        recv_cq: u32,
        srq: u32,
        cap: QpCap,
        sq_ring_gpa: u64,
        rq_ring_gpa: u64,
    },
    ModifyQp {
        qpn: u32,
        mask: u32,
        attr: QpAttr,
    },
    QueryQp {
        qpn: u32,
    },
    DestroyQp {
        qpn: u32,
    },
    CreateSrq {
        pd: u32,
        max_wr: u32,
        max_sge: u32,
        ring_gpa: u64,
    },
    ModifySrq {
        srqn: u32,
        limit: u32,
    },
    DestroySrq {
        srqn: u32,
    },
    CreateAh {
        pd: u32,
        attr: AhAttr,
    },
    DestroyAh {
        ah: u32,
    },
}

fn state_code(s: QpState) -> u8 {
    match s {
        QpState::Reset => 0,
        QpState::Init => 1,
        QpState::Rtr => 2,
        QpState::Rts => 3,
        QpState::Sqd => 4,
        QpState::Sqe => 5,
        QpState::Err => 6,
    }
}

fn state_from(c: u8) -> Result<QpState, DecodeError> {
    Ok(match c {
        0 => QpState::Reset,
        1 => QpState::Init,
        2 => QpState::Rtr,
        3 => QpState::Rts,
        4 => QpState::Sqd,
        5 => QpState::Sqe,
        6 => QpState::Err,
        _ => return Err(DecodeError::Invalid("qp_state")),
    })
}

pub fn encode_ah(w: &mut Writer, a: &AhAttr) {
    w.bytes(&a.dgid.0)
        .u32(a.flow_label)
        .u8(a.sgid_index)
        .u8(a.hop_limit)
        .u8(a.traffic_class)
        .u8(a.sl);
}

pub fn decode_ah(r: &mut Reader<'_>) -> Result<AhAttr, DecodeError> {
    Ok(AhAttr {
        dgid: Gid(r.array()?),
        flow_label: r.u32()?,
        sgid_index: r.u8()?,
        hop_limit: r.u8()?,
        traffic_class: r.u8()?,
        sl: r.u8()?,
    })
}

pub fn encode_cap(w: &mut Writer, c: &QpCap) {
    w.u32(c.max_send_wr)
        .u32(c.max_recv_wr)
        .u32(c.max_send_sge)
        .u32(c.max_recv_sge)
        .u32(c.max_inline_data);
}

pub fn decode_cap(r: &mut Reader<'_>) -> Result<QpCap, DecodeError> {
    Ok(QpCap {
        max_send_wr: r.u32()?,
        max_recv_wr: r.u32()?,
        max_send_sge: r.u32()?,
        max_recv_sge: r.u32()?,
        max_inline_data: r.u32()?,
    })
}

/// `QpAttr` on the wire (88 bytes).
pub fn encode_qp_attr(w: &mut Writer, a: &QpAttr) {
    w.u8(state_code(a.qp_state))
        .u8(state_code(a.cur_qp_state))
        .u8(a.path_mtu as u8)
        .u8(a.timeout);
    w.u8(a.retry_cnt)
        .u8(a.rnr_retry)
        .u8(a.min_rnr_timer)
        .u8(a.max_rd_atomic);
    w.u8(a.max_dest_rd_atomic)
        .u8(a.en_sqd_async_notify as u8)
        .u8(a.port_num)
        .u8(a.sq_draining as u8);
    w.u16(a.pkey_index)
        .u16(0)
        .u32(a.qp_access_flags.bits())
        .u32(a.qkey);
    w.u32(a.rq_psn.0).u32(a.sq_psn.0).u32(a.dest_qp_num.0);
    encode_ah(w, &a.ah_attr);
    encode_cap(w, &a.cap);
}

pub fn decode_qp_attr(r: &mut Reader<'_>) -> Result<QpAttr, DecodeError> {
    let qp_state = state_from(r.u8()?)?;
    let cur_qp_state = state_from(r.u8()?)?;
    let path_mtu = Mtu::from_enum(r.u8()?).ok_or(DecodeError::Invalid("path_mtu"))?;
    let timeout = r.u8()?;
    let retry_cnt = r.u8()?;
    let rnr_retry = r.u8()?;
    let min_rnr_timer = r.u8()?;
    let max_rd_atomic = r.u8()?;
    let max_dest_rd_atomic = r.u8()?;
    let en_sqd_async_notify = r.u8()? != 0;
    let port_num = r.u8()?;
    let sq_draining = r.u8()? != 0;
    let pkey_index = r.u16()?;
    r.skip(2)?;
    let qp_access_flags =
        Access::from_bits(r.u32()?).ok_or(DecodeError::Invalid("access flags"))?;
    let qkey = r.u32()?;
    let rq_psn = r.u32()?;
    let sq_psn = r.u32()?;
    let dest_qp_num = r.u32()?;
    if rq_psn > Psn::MASK || sq_psn > Psn::MASK || dest_qp_num > Qpn::MASK {
        return Err(DecodeError::Invalid("24-bit field"));
    }
    let ah_attr = decode_ah(r)?;
    let cap = decode_cap(r)?;
    Ok(QpAttr {
        qp_state,
        cur_qp_state,
        en_sqd_async_notify,
        qp_access_flags,
        pkey_index,
        port_num,
        qkey,
        ah_attr,
        path_mtu,
        timeout,
        retry_cnt,
        rnr_retry,
        rq_psn: Psn(rq_psn),
        max_rd_atomic,
        min_rnr_timer,
        sq_psn: Psn(sq_psn),
        max_dest_rd_atomic,
        dest_qp_num: Qpn(dest_qp_num),
        cap,
        sq_draining,
    })
}

impl Command {
    pub fn opcode(&self) -> u16 {
        use opcode::*;
        match self {
            Command::QueryDevice => QUERY_DEVICE,
            Command::QueryPort => QUERY_PORT,
            Command::QueryGid { .. } => QUERY_GID,
            Command::QueryPkey { .. } => QUERY_PKEY,
            Command::CreatePd => CREATE_PD,
            Command::DestroyPd { .. } => DESTROY_PD,
            Command::RegMr { .. } => REG_MR,
            Command::DeregMr { .. } => DEREG_MR,
            Command::AllocMw { .. } => ALLOC_MW,
            Command::DeallocMw { .. } => DEALLOC_MW,
            Command::AllocMr { .. } => ALLOC_MR,
            Command::CreateCq { .. } => CREATE_CQ,
            Command::DestroyCq { .. } => DESTROY_CQ,
            Command::ResizeCq { .. } => RESIZE_CQ,
            Command::ReqNotifyCq { .. } => REQ_NOTIFY_CQ,
            Command::CreateQp { .. } => CREATE_QP,
            Command::ModifyQp { .. } => MODIFY_QP,
            Command::QueryQp { .. } => QUERY_QP,
            Command::DestroyQp { .. } => DESTROY_QP,
            Command::CreateSrq { .. } => CREATE_SRQ,
            Command::ModifySrq { .. } => MODIFY_SRQ,
            Command::DestroySrq { .. } => DESTROY_SRQ,
            Command::CreateAh { .. } => CREATE_AH,
            Command::DestroyAh { .. } => DESTROY_AH,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(self.opcode()).u16(0).u32(0);
        match self {
            Command::QueryDevice | Command::QueryPort | Command::CreatePd => {}
            Command::QueryGid { index } | Command::QueryPkey { index } => {
                w.u32(*index);
            }
            Command::DestroyPd { pd: x }
            | Command::DeregMr { key: x }
            | Command::DeallocMw { key: x }
            | Command::DestroyCq { cqn: x }
            | Command::QueryQp { qpn: x }
            | Command::DestroyQp { qpn: x }
            | Command::DestroySrq { srqn: x }
            | Command::DestroyAh { ah: x } => {
                w.u32(*x);
            }
            Command::RegMr {
                pd,
                access,
                iova,
                length,
                page_shift,
                npages,
                page_list_gpa,
            } => {
                w.u32(*pd)
                    .u32(*access)
                    .u64(*iova)
                    .u64(*length)
                    .u8(*page_shift)
                    .zeros(3)
                    .u32(*npages)
                    .u64(*page_list_gpa);
            }
            Command::CreateCq { depth, ring_gpa } => {
                w.u32(*depth).u32(0).u64(*ring_gpa);
            }
            Command::AllocMw { pd, mw_type } => {
                w.u32(*pd).u32(*mw_type);
            }
            Command::AllocMr { pd, max_num_sg } => {
                w.u32(*pd).u32(*max_num_sg);
            }
            Command::ResizeCq {
                cqn,
                depth,
                ring_gpa,
            } => {
                w.u32(*cqn).u32(*depth).u64(*ring_gpa);
            }
            Command::ReqNotifyCq { cqn, solicited } => {
                w.u32(*cqn).u32(*solicited as u32);
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
                w.u8(*qp_type)
                    .u8(*sq_sig_all as u8)
                    .u16(0)
                    .u32(*pd)
                    .u32(*send_cq)
                    .u32(*recv_cq)
                    .u32(*srq);
                encode_cap(&mut w, cap);
                w.u64(*sq_ring_gpa).u64(*rq_ring_gpa);
            }
            Command::ModifyQp { qpn, mask, attr } => {
                w.u32(*qpn).u32(*mask);
                encode_qp_attr(&mut w, attr);
            }
            Command::CreateSrq {
                pd,
                max_wr,
                max_sge,
                ring_gpa,
            } => {
                w.u32(*pd).u32(*max_wr).u32(*max_sge).u32(0).u64(*ring_gpa);
            }
            Command::ModifySrq { srqn, limit } => {
                w.u32(*srqn).u32(*limit);
            }
            Command::CreateAh { pd, attr } => {
                w.u32(*pd);
                encode_ah(&mut w, attr);
            }
        }
        w.finish()
    }

    /// Decodes a request. `Err(Status::Unsupported)` for an unknown opcode,
    /// `Err(Status::Malformed)` for a short or invalid body.
    pub fn decode(b: &[u8]) -> Result<Command, Status> {
        use opcode::*;
        let mut r = Reader::new(b);
        let m = |_: DecodeError| Status::Malformed;
        let op = r.u16().map_err(m)?;
        r.skip(6).map_err(m)?;
        let u32v = |r: &mut Reader<'_>| r.u32().map_err(m);
        Ok(match op {
            QUERY_DEVICE => Command::QueryDevice,
            QUERY_PORT => Command::QueryPort,
            CREATE_PD => Command::CreatePd,
            QUERY_GID => Command::QueryGid {
                index: u32v(&mut r)?,
            },
            QUERY_PKEY => Command::QueryPkey {
                index: u32v(&mut r)?,
            },
            DESTROY_PD => Command::DestroyPd { pd: u32v(&mut r)? },
            DEREG_MR => Command::DeregMr { key: u32v(&mut r)? },
            DEALLOC_MW => Command::DeallocMw { key: u32v(&mut r)? },
            ALLOC_MW => Command::AllocMw {
                pd: u32v(&mut r)?,
                mw_type: u32v(&mut r)?,
            },
            ALLOC_MR => Command::AllocMr {
                pd: u32v(&mut r)?,
                max_num_sg: u32v(&mut r)?,
            },
            DESTROY_CQ => Command::DestroyCq { cqn: u32v(&mut r)? },
            QUERY_QP => Command::QueryQp { qpn: u32v(&mut r)? },
            DESTROY_QP => Command::DestroyQp { qpn: u32v(&mut r)? },
            DESTROY_SRQ => Command::DestroySrq {
                srqn: u32v(&mut r)?,
            },
            DESTROY_AH => Command::DestroyAh { ah: u32v(&mut r)? },
            REG_MR => {
                let pd = u32v(&mut r)?;
                let access = u32v(&mut r)?;
                let iova = r.u64().map_err(m)?;
                let length = r.u64().map_err(m)?;
                let page_shift = r.u8().map_err(m)?;
                r.skip(3).map_err(m)?;
                let npages = u32v(&mut r)?;
                let page_list_gpa = r.u64().map_err(m)?;
                Command::RegMr {
                    pd,
                    access,
                    iova,
                    length,
                    page_shift,
                    npages,
                    page_list_gpa,
                }
            }
            CREATE_CQ => {
                let depth = u32v(&mut r)?;
                r.skip(4).map_err(m)?;
                Command::CreateCq {
                    depth,
                    ring_gpa: r.u64().map_err(m)?,
                }
            }
            RESIZE_CQ => Command::ResizeCq {
                cqn: u32v(&mut r)?,
                depth: u32v(&mut r)?,
                ring_gpa: r.u64().map_err(m)?,
            },
            REQ_NOTIFY_CQ => Command::ReqNotifyCq {
                cqn: u32v(&mut r)?,
                solicited: u32v(&mut r)? != 0,
            },
            CREATE_QP => {
                let qp_type = r.u8().map_err(m)?;
                let sq_sig_all = r.u8().map_err(m)? != 0;
                r.skip(2).map_err(m)?;
                let pd = u32v(&mut r)?;
                let send_cq = u32v(&mut r)?;
                let recv_cq = u32v(&mut r)?;
                let srq = u32v(&mut r)?;
                let cap = decode_cap(&mut r).map_err(m)?;
                let sq_ring_gpa = r.u64().map_err(m)?;
                let rq_ring_gpa = r.u64().map_err(m)?;
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
                }
            }
            MODIFY_QP => {
                let qpn = u32v(&mut r)?;
                let mask = u32v(&mut r)?;
                let attr = decode_qp_attr(&mut r).map_err(m)?;
                Command::ModifyQp { qpn, mask, attr }
            }
            CREATE_SRQ => {
                let pd = u32v(&mut r)?;
                let max_wr = u32v(&mut r)?;
                let max_sge = u32v(&mut r)?;
                r.skip(4).map_err(m)?;
                Command::CreateSrq {
                    pd,
                    max_wr,
                    max_sge,
                    ring_gpa: r.u64().map_err(m)?,
                }
            }
            MODIFY_SRQ => Command::ModifySrq {
                srqn: u32v(&mut r)?,
                limit: u32v(&mut r)?,
            },
            CREATE_AH => {
                let pd = u32v(&mut r)?;
                Command::CreateAh {
                    pd,
                    attr: decode_ah(&mut r).map_err(m)?,
                }
            }
            _ => return Err(Status::Unsupported),
        })
    }
}

/// A response: status and body bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(body: Vec<u8>) -> Response {
        Response {
            status: Status::Ok,
            body,
        }
    }

    pub fn err(status: Status) -> Response {
        Response {
            status,
            body: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.status as u32).u32(0).bytes(&self.body);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(b);
        let status = Status::from_code(r.u32()?).ok_or(DecodeError::Invalid("status"))?;
        r.skip(4)?;
        Ok(Response {
            status,
            body: r.rest().to_vec(),
        })
    }
}

/// Bodies of successful responses that carry values.
pub mod body;

pub use body::PortInfo;

#[cfg(test)]
mod tests {
    use super::*;

    fn all_commands() -> Vec<Command> {
        let attr = QpAttr {
            qp_state: QpState::Rtr,
            qp_access_flags: Access::REMOTE_WRITE | Access::LOCAL_WRITE,
            dest_qp_num: Qpn(0x123456),
            rq_psn: Psn(0xabcdef),
            ah_attr: AhAttr {
                dgid: Gid::from_ipv4([10, 0, 0, 9]),
                hop_limit: 64,
                ..Default::default()
            },
            ..QpAttr::default()
        };
        vec![
            Command::QueryDevice,
            Command::QueryPort,
            Command::QueryGid { index: 0 },
            Command::QueryPkey { index: 0 },
            Command::CreatePd,
            Command::DestroyPd { pd: 1 },
            Command::RegMr {
                pd: 1,
                access: 7,
                iova: 0x7f00_0000_1000,
                length: 8192,
                page_shift: 12,
                npages: 2,
                page_list_gpa: 0x9000,
            },
            Command::DeregMr { key: 0x101 },
            Command::AllocMw { pd: 1, mw_type: 2 },
            Command::DeallocMw { key: 0x8000_0105 },
            Command::AllocMr {
                pd: 1,
                max_num_sg: 16,
            },
            Command::CreateCq {
                depth: 64,
                ring_gpa: 0x10000,
            },
            Command::DestroyCq { cqn: 2 },
            Command::ResizeCq {
                cqn: 2,
                depth: 128,
                ring_gpa: 0x20000,
            },
            Command::ReqNotifyCq {
                cqn: 2,
                solicited: true,
            },
            Command::CreateQp {
                qp_type: 2,
                sq_sig_all: true,
                pd: 1,
                send_cq: 2,
                recv_cq: 3,
                srq: 0,
                cap: QpCap::default(),
                sq_ring_gpa: 0x30000,
                rq_ring_gpa: 0x40000,
            },
            Command::ModifyQp {
                qpn: 17,
                mask: 0x1f,
                attr,
            },
            Command::QueryQp { qpn: 17 },
            Command::DestroyQp { qpn: 17 },
            Command::CreateSrq {
                pd: 1,
                max_wr: 32,
                max_sge: 2,
                ring_gpa: 0x50000,
            },
            Command::ModifySrq { srqn: 1, limit: 4 },
            Command::DestroySrq { srqn: 1 },
            Command::CreateAh {
                pd: 1,
                attr: AhAttr {
                    dgid: Gid::from_ipv4([1, 2, 3, 4]),
                    ..Default::default()
                },
            },
            Command::DestroyAh { ah: 1 },
        ]
    }

    #[test]
    fn every_command_round_trips() {
        for c in all_commands() {
            let b = c.encode();
            assert_eq!(Command::decode(&b), Ok(c.clone()), "{c:?}");
            // Every strict prefix of a command with a body is malformed, never a panic.
            for n in 0..b.len() {
                if n >= HEADER_SIZE && Command::decode(&b[..n]).is_ok() {
                    continue; // commands without a body
                }
                assert!(Command::decode(&b[..n]).is_err() || n >= HEADER_SIZE);
            }
        }
        assert_eq!(
            Command::decode(&[0xff, 0xff, 0, 0, 0, 0, 0, 0]),
            Err(Status::Unsupported)
        );
        assert_eq!(
            Command::decode(&[30, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(Status::Malformed)
        );
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::ok(body::create_qp(
            17,
            RingInfo {
                depth: 64,
                stride: 128,
            },
            RingInfo {
                depth: 32,
                stride: 64,
            },
        ));
        let d = Response::decode(&r.encode()).unwrap();
        assert_eq!(d, r);
        assert_eq!(body::read_create_qp(&d.body).unwrap().0, 17);
        assert_eq!(
            Response::decode(&Response::err(Status::Busy).encode())
                .unwrap()
                .status,
            Status::Busy
        );
        let a = QpAttr::default();
        assert_eq!(body::read_qp_attr(&body::qp_attr(&a)).unwrap(), a);
    }
}
