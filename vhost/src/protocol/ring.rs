//! Work queue and completion queue rings in guest memory: their entries and geometry.
//!
//! A ring is `depth` slots (a power of two) of `stride` bytes (a power of two) at a
//! guest-physical address the driver gives when it creates the queue. Indices are free-running
//! u32 counters; slot = index % depth. The driver produces WQEs and tells the device the new
//! producer index in a doorbell; the device produces CQEs and marks each with an owner bit that
//! flips on every pass, so the driver polls its CQ in memory without a command.

use super::codec::{DecodeError, Reader, Writer};
use vhca_device::{
    AhHandle, FlushLevel, FlushPlacement, Gid, MemKey, Qpn, RecvWr, SendFlags, SendOp, SendWr, Sge,
    UdDest, WcOpcode, WcStatus, WorkCompletion,
};

/// Bytes of a send WQE before its SGEs or inline data.
pub const SEND_WQE_HEADER: usize = 64;
/// Bytes of a receive WQE before its SGEs.
pub const RECV_WQE_HEADER: usize = 16;
pub const SGE_SIZE: usize = 16;
pub const CQE_SIZE: usize = 64;

/// Geometry of one ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub gpa: u64,
    pub depth: u32,
    pub stride: u32,
}

impl Ring {
    /// Checks a geometry a driver asked for: powers of two, not empty, no address wrap.
    pub fn new(gpa: u64, depth: u32, stride: u32) -> Result<Ring, DecodeError> {
        if depth == 0 || !depth.is_power_of_two() || depth > 1 << 20 {
            return Err(DecodeError::Invalid("ring depth"));
        }
        if stride < 16 || !stride.is_power_of_two() || stride > 1 << 16 {
            return Err(DecodeError::Invalid("ring stride"));
        }
        gpa.checked_add(depth as u64 * stride as u64)
            .ok_or(DecodeError::Invalid("ring address"))?;
        Ok(Ring { gpa, depth, stride })
    }

    /// Guest address of the slot for free-running index `i`.
    pub fn slot(&self, i: u32) -> u64 {
        self.gpa + (i & (self.depth - 1)) as u64 * self.stride as u64
    }

    pub fn bytes(&self) -> u64 {
        self.depth as u64 * self.stride as u64
    }
}

/// The smallest power-of-two stride that holds a send WQE with `max_sge` SGEs or
/// `max_inline` bytes of inline data.
pub fn send_stride(max_sge: u32, max_inline: u32) -> u32 {
    let body = (max_sge as usize * SGE_SIZE).max(max_inline as usize);
    ((SEND_WQE_HEADER + body) as u32).next_power_of_two()
}

pub fn recv_stride(max_sge: u32) -> u32 {
    ((RECV_WQE_HEADER + max_sge as usize * SGE_SIZE) as u32).next_power_of_two()
}

/// Send opcodes on the wire of the ring.
pub mod op {
    pub const SEND: u8 = 0;
    pub const SEND_WITH_IMM: u8 = 1;
    pub const SEND_WITH_INV: u8 = 2;
    pub const RDMA_WRITE: u8 = 3;
    pub const RDMA_WRITE_WITH_IMM: u8 = 4;
    pub const RDMA_READ: u8 = 5;
    pub const ATOMIC_CMP_AND_SWP: u8 = 6;
    pub const ATOMIC_FETCH_AND_ADD: u8 = 7;
    pub const LOCAL_INV: u8 = 8;
    /// Binds a memory window (docs/device-protocol.md §7.1 has its fields).
    pub const BIND_MW: u8 = 9;
    /// Registers a fast-register MR from a page list in guest memory.
    pub const REG_MR: u8 = 10;
    pub const ATOMIC_WRITE: u8 = 11;
    pub const FLUSH: u8 = 12;
}

fn encode_sges(w: &mut Writer, sgl: &[Sge]) {
    for s in sgl {
        w.u64(s.addr).u32(s.len).u32(s.lkey.0);
    }
}

fn decode_sges(r: &mut Reader<'_>, n: usize) -> Result<Vec<Sge>, DecodeError> {
    (0..n)
        .map(|_| {
            Ok(Sge {
                addr: r.u64()?,
                len: r.u32()?,
                lkey: MemKey(r.u32()?),
            })
        })
        .collect()
}

/// Encodes a send work request into a WQE of `stride` bytes.
pub fn encode_send(wr: &SendWr, stride: u32) -> Vec<u8> {
    let (opcode, imm_key, raddr, rkey, a, b) = match wr.op {
        SendOp::Send => (op::SEND, 0, 0, 0, 0, 0),
        SendOp::SendWithImm { imm } => (op::SEND_WITH_IMM, imm, 0, 0, 0, 0),
        SendOp::SendWithInv { rkey } => (op::SEND_WITH_INV, rkey.0, 0, 0, 0, 0),
        SendOp::Write { remote_addr, rkey } => (op::RDMA_WRITE, 0, remote_addr, rkey.0, 0, 0),
        SendOp::WriteWithImm {
            remote_addr,
            rkey,
            imm,
        } => (op::RDMA_WRITE_WITH_IMM, imm, remote_addr, rkey.0, 0, 0),
        SendOp::Read { remote_addr, rkey } => (op::RDMA_READ, 0, remote_addr, rkey.0, 0, 0),
        SendOp::CmpSwap {
            remote_addr,
            rkey,
            compare,
            swap,
        } => (
            op::ATOMIC_CMP_AND_SWP,
            0,
            remote_addr,
            rkey.0,
            compare,
            swap,
        ),
        SendOp::FetchAdd {
            remote_addr,
            rkey,
            add,
        } => (op::ATOMIC_FETCH_AND_ADD, 0, remote_addr, rkey.0, add, 0),
        SendOp::LocalInv { key } => (op::LOCAL_INV, key.0, 0, 0, 0, 0),
        SendOp::AtomicWrite {
            remote_addr,
            rkey,
            value,
        } => (op::ATOMIC_WRITE, 0, remote_addr, rkey.0, value, 0),
        SendOp::Flush {
            remote_addr,
            rkey,
            len,
            placement,
            level,
        } => (
            op::FLUSH,
            len,
            remote_addr,
            rkey.0,
            placement.bits() as u64,
            match level {
                FlushLevel::Range => 0,
                FlushLevel::Mr => 1,
            },
        ),
        SendOp::BindMw {
            mw,
            rkey,
            addr,
            len,
            access,
            ..
        } => (op::BIND_MW, mw.0, addr, rkey.0, len, access.bits() as u64),
        SendOp::RegMr {
            mr,
            page_list,
            iova,
            len,
            access,
            ..
        } => (op::REG_MR, mr.0, iova, access.bits(), len, page_list),
    };
    let inline = wr.flags.contains(SendFlags::INLINE);
    // BIND_MW and REG_MR have no UD destination; their remaining fields use its slots.
    let ud = match wr.op {
        SendOp::BindMw { mr, .. } => UdDest {
            ah: AhHandle(mr.0),
            remote_qpn: Qpn(0),
            remote_qkey: 0,
        },
        SendOp::RegMr {
            npages, page_shift, ..
        } => UdDest {
            ah: AhHandle(npages),
            remote_qpn: Qpn(page_shift as u32),
            remote_qkey: 0,
        },
        _ => wr.ud.unwrap_or(UdDest {
            ah: AhHandle(0),
            remote_qpn: Qpn(0),
            remote_qkey: 0,
        }),
    };
    let mut w = Writer::new();
    w.u64(wr.wr_id)
        .u8(opcode)
        .u8(wr.flags.bits() as u8)
        .u16(if inline { 0 } else { wr.sgl.len() as u16 });
    w.u32(imm_key)
        .u64(raddr)
        .u32(rkey)
        .u32(ud.ah.0)
        .u64(a)
        .u64(b)
        .u32(ud.remote_qpn.0)
        .u32(ud.remote_qkey);
    w.u32(if inline {
        wr.inline_data.len() as u32
    } else {
        0
    })
    .u32(0);
    if inline {
        w.bytes(&wr.inline_data);
    } else {
        encode_sges(&mut w, &wr.sgl);
    }
    w.pad_to(stride as usize);
    w.finish()
}

/// Decodes a send WQE. `max_sge`/`max_inline` are the QP's capacities: a WQE claiming more is
/// malformed (the device completes it with an error instead of reading past its slot).
pub fn decode_send(
    b: &[u8],
    max_sge: u32,
    max_inline: u32,
    is_ud: bool,
) -> Result<SendWr, DecodeError> {
    let mut r = Reader::new(b);
    let wr_id = r.u64()?;
    let opcode = r.u8()?;
    let flags = SendFlags::from_bits(r.u8()? as u32).ok_or(DecodeError::Invalid("send flags"))?;
    let num_sge = r.u16()? as u32;
    let imm_key = r.u32()?;
    let remote_addr = r.u64()?;
    let rkey = MemKey(r.u32()?);
    let ah = AhHandle(r.u32()?);
    let a = r.u64()?;
    let bb = r.u64()?;
    let remote_qpn = Qpn(r.u32()?);
    let remote_qkey = r.u32()?;
    let inline_len = r.u32()?;
    r.skip(4)?;
    let op = match opcode {
        op::SEND => SendOp::Send,
        op::SEND_WITH_IMM => SendOp::SendWithImm { imm: imm_key },
        op::SEND_WITH_INV => SendOp::SendWithInv {
            rkey: MemKey(imm_key),
        },
        op::RDMA_WRITE => SendOp::Write { remote_addr, rkey },
        op::RDMA_WRITE_WITH_IMM => SendOp::WriteWithImm {
            remote_addr,
            rkey,
            imm: imm_key,
        },
        op::RDMA_READ => SendOp::Read { remote_addr, rkey },
        op::ATOMIC_CMP_AND_SWP => SendOp::CmpSwap {
            remote_addr,
            rkey,
            compare: a,
            swap: bb,
        },
        op::ATOMIC_FETCH_AND_ADD => SendOp::FetchAdd {
            remote_addr,
            rkey,
            add: a,
        },
        op::LOCAL_INV => SendOp::LocalInv {
            key: MemKey(imm_key),
        },
        op::ATOMIC_WRITE => SendOp::AtomicWrite {
            remote_addr,
            rkey,
            value: a,
        },
        op::FLUSH => SendOp::Flush {
            remote_addr,
            rkey,
            len: imm_key,
            placement: u8::try_from(a)
                .ok()
                .and_then(FlushPlacement::from_bits)
                .filter(|p| !p.is_empty())
                .ok_or(DecodeError::Invalid("FLUSH placement type"))?,
            level: match bb {
                0 => FlushLevel::Range,
                1 => FlushLevel::Mr,
                _ => return Err(DecodeError::Invalid("FLUSH selectivity level")),
            },
        },
        op::BIND_MW => SendOp::BindMw {
            mw: MemKey(imm_key),
            rkey,
            mr: MemKey(ah.0),
            addr: remote_addr,
            len: a,
            access: access_of(bb)?,
        },
        op::REG_MR => SendOp::RegMr {
            mr: MemKey(imm_key),
            page_list: bb,
            npages: ah.0,
            page_shift: u8::try_from(remote_qpn.0)
                .map_err(|_| DecodeError::Invalid("REG_MR page shift"))?,
            iova: remote_addr,
            len: a,
            access: access_of(rkey.0 as u64)?,
        },
        _ => return Err(DecodeError::Invalid("send opcode")),
    };
    let mut wr = SendWr::new(wr_id, op).flags(flags);
    if flags.contains(SendFlags::INLINE) {
        if inline_len > max_inline {
            return Err(DecodeError::Invalid("inline length"));
        }
        wr.inline_data = r.take(inline_len as usize)?.to_vec();
    } else {
        if num_sge > max_sge {
            return Err(DecodeError::Invalid("num_sge"));
        }
        wr.sgl = decode_sges(&mut r, num_sge as usize)?;
    }
    if is_ud {
        // A window bind or a fast registration is an RC/UC work request (rxe's opcode table
        // has neither for UD); their fields fill the UD destination's slots, so on a UD QP
        // such a WQE could not even be read consistently.
        if matches!(wr.op, SendOp::BindMw { .. } | SendOp::RegMr { .. }) {
            return Err(DecodeError::Invalid("BIND_MW/REG_MR on a UD QP"));
        }
        wr.ud = Some(UdDest {
            ah,
            remote_qpn,
            remote_qkey,
        });
    }
    Ok(wr)
}

/// Access flags from a WQE field: unknown bits make the WQE malformed.
fn access_of(v: u64) -> Result<vhca_device::Access, DecodeError> {
    u32::try_from(v)
        .ok()
        .and_then(vhca_device::Access::from_bits)
        .ok_or(DecodeError::Invalid("access flags"))
}

pub fn encode_recv(wr: &RecvWr, stride: u32) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(wr.wr_id).u16(wr.sgl.len() as u16).u16(0).u32(0);
    encode_sges(&mut w, &wr.sgl);
    w.pad_to(stride as usize);
    w.finish()
}

pub fn decode_recv(b: &[u8], max_sge: u32) -> Result<RecvWr, DecodeError> {
    let mut r = Reader::new(b);
    let wr_id = r.u64()?;
    let n = r.u16()? as u32;
    r.skip(6)?;
    if n > max_sge {
        return Err(DecodeError::Invalid("num_sge"));
    }
    Ok(RecvWr {
        wr_id,
        sgl: decode_sges(&mut r, n as usize)?,
    })
}

/// CQE flags.
pub mod cqe_flags {
    pub const GRH: u8 = 1;
    pub const WITH_IMM: u8 = 2;
    pub const WITH_INV: u8 = 4;
    pub const SOLICITED: u8 = 8;
}

fn wc_opcode_code(o: WcOpcode) -> u8 {
    match o {
        WcOpcode::Send => 0,
        WcOpcode::RdmaWrite => 1,
        WcOpcode::RdmaRead => 2,
        WcOpcode::CmpSwap => 3,
        WcOpcode::FetchAdd => 4,
        WcOpcode::LocalInv => 6,
        WcOpcode::Flush => 8,
        WcOpcode::AtomicWrite => 9,
        WcOpcode::BindMw => 5,
        // The kernel's IB_WC_REG_MR (libibverbs has no REG_MR completion).
        WcOpcode::RegMr => 10,
        WcOpcode::Recv => 128,
        WcOpcode::RecvRdmaWithImm => 129,
    }
}

fn wc_opcode_from(c: u8) -> Option<WcOpcode> {
    Some(match c {
        0 => WcOpcode::Send,
        1 => WcOpcode::RdmaWrite,
        2 => WcOpcode::RdmaRead,
        3 => WcOpcode::CmpSwap,
        4 => WcOpcode::FetchAdd,
        5 => WcOpcode::BindMw,
        6 => WcOpcode::LocalInv,
        8 => WcOpcode::Flush,
        9 => WcOpcode::AtomicWrite,
        10 => WcOpcode::RegMr,
        128 => WcOpcode::Recv,
        129 => WcOpcode::RecvRdmaWithImm,
        _ => return None,
    })
}

const STATUSES: [WcStatus; 15] = [
    WcStatus::Success,
    WcStatus::LocLenErr,
    WcStatus::LocQpOpErr,
    WcStatus::LocProtErr,
    WcStatus::WrFlushErr,
    WcStatus::MwBindErr,
    WcStatus::BadRespErr,
    WcStatus::LocAccessErr,
    WcStatus::RemInvReqErr,
    WcStatus::RemAccessErr,
    WcStatus::RemOpErr,
    WcStatus::RetryExcErr,
    WcStatus::RnrRetryExcErr,
    WcStatus::FatalErr,
    WcStatus::GeneralErr,
];

/// The owner bit a CQE written at free-running index `i` carries: 1 on the first pass over the
/// ring, 0 on the second, and so on (a zeroed ring holds no valid CQE).
pub fn owner_bit(i: u32, depth: u32) -> u8 {
    (((i / depth) & 1) ^ 1) as u8
}

/// Encodes a completion as the CQE at free-running index `i` of a ring of `depth`.
pub fn encode_cqe(wc: &WorkCompletion, i: u32, depth: u32) -> [u8; CQE_SIZE] {
    let mut flags = 0;
    if wc.grh {
        flags |= cqe_flags::GRH;
    }
    if wc.imm.is_some() {
        flags |= cqe_flags::WITH_IMM;
    }
    if wc.invalidated_rkey.is_some() {
        flags |= cqe_flags::WITH_INV;
    }
    if wc.solicited {
        flags |= cqe_flags::SOLICITED;
    }
    let mut w = Writer::new();
    w.u64(wc.wr_id)
        .u8(wc.status.code() as u8)
        .u8(wc_opcode_code(wc.opcode))
        .u8(flags)
        .u8(owner_bit(i, depth));
    w.u32(wc.byte_len)
        .u32(wc.qpn.0)
        .u32(wc.imm.or(wc.invalidated_rkey.map(|k| k.0)).unwrap_or(0));
    w.u32(wc.src_qp.0).u32(0).bytes(&wc.src_gid.0);
    w.pad_to(CQE_SIZE);
    let mut out = [0u8; CQE_SIZE];
    out.copy_from_slice(&w.buf);
    out
}

/// Decodes a CQE; `None` when its owner bit says the device has not written it on this pass.
pub fn decode_cqe(b: &[u8], i: u32, depth: u32) -> Result<Option<WorkCompletion>, DecodeError> {
    let mut r = Reader::new(b);
    let wr_id = r.u64()?;
    let status = r.u8()?;
    let opcode = r.u8()?;
    let flags = r.u8()?;
    let owner = r.u8()?;
    if owner != owner_bit(i, depth) {
        return Ok(None);
    }
    let byte_len = r.u32()?;
    let qpn = Qpn(r.u32()?);
    let imm_inv = r.u32()?;
    let src_qp = Qpn(r.u32()?);
    r.skip(4)?;
    let src_gid = Gid(r.array()?);
    let status = STATUSES
        .iter()
        .copied()
        .find(|s| s.code() == status as u32)
        .ok_or(DecodeError::Invalid("cqe status"))?;
    Ok(Some(WorkCompletion {
        wr_id,
        status,
        opcode: wc_opcode_from(opcode).ok_or(DecodeError::Invalid("cqe opcode"))?,
        qpn,
        byte_len,
        imm: (flags & cqe_flags::WITH_IMM != 0).then_some(imm_inv),
        invalidated_rkey: (flags & cqe_flags::WITH_INV != 0).then_some(MemKey(imm_inv)),
        src_qp,
        src_gid,
        grh: flags & cqe_flags::GRH != 0,
        solicited: flags & cqe_flags::SOLICITED != 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_op() -> Vec<SendOp> {
        let k = MemKey(0x0012_3456);
        vec![
            SendOp::Send,
            SendOp::SendWithImm { imm: 7 },
            SendOp::SendWithInv { rkey: k },
            SendOp::Write {
                remote_addr: 0x1000,
                rkey: k,
            },
            SendOp::WriteWithImm {
                remote_addr: 0x2000,
                rkey: k,
                imm: 9,
            },
            SendOp::Read {
                remote_addr: 0x3000,
                rkey: k,
            },
            SendOp::CmpSwap {
                remote_addr: 0x4000,
                rkey: k,
                compare: 1,
                swap: 2,
            },
            SendOp::FetchAdd {
                remote_addr: 0x5000,
                rkey: k,
                add: 3,
            },
            SendOp::LocalInv { key: k },
            SendOp::AtomicWrite {
                remote_addr: 0x6000,
                rkey: k,
                value: 0x0102_0304_0506_0708,
            },
            SendOp::Flush {
                remote_addr: 0x7000,
                rkey: k,
                len: 4096,
                placement: FlushPlacement::GLOBAL,
                level: FlushLevel::Mr,
            },
            SendOp::BindMw {
                mw: MemKey(0x8000_0107),
                rkey: MemKey(0x8000_0108),
                mr: k,
                addr: 0x6000,
                len: 0x1_0000_0000,
                access: vhca_device::Access::REMOTE_READ | vhca_device::Access::REMOTE_WRITE,
            },
            SendOp::RegMr {
                mr: k,
                page_list: 0x7000,
                npages: 3,
                page_shift: 12,
                iova: 0xdead_0000,
                len: 0x2800,
                access: vhca_device::Access::LOCAL_WRITE | vhca_device::Access::MW_BIND,
            },
        ]
    }

    #[test]
    fn a_flush_wqe_with_an_unknown_placement_or_level_is_malformed() {
        let flush = |placement: u64, level: u64| {
            let wr = SendWr::new(
                1,
                SendOp::Flush {
                    remote_addr: 0,
                    rkey: MemKey(1),
                    len: 8,
                    placement: FlushPlacement::GLOBAL,
                    level: FlushLevel::Range,
                },
            );
            let mut b = encode_send(&wr, 128);
            b[32..40].copy_from_slice(&placement.to_le_bytes());
            b[40..48].copy_from_slice(&level.to_le_bytes());
            decode_send(&b, 4, 64, false)
        };
        assert!(flush(1, 0).is_ok());
        assert!(flush(3, 1).is_ok());
        assert!(flush(0, 0).is_err(), "a placement type naming nothing");
        assert!(flush(4, 0).is_err(), "a reserved placement bit");
        assert!(flush(0x101, 0).is_err(), "placement beyond 8 bits");
        assert!(flush(1, 2).is_err(), "a reserved selectivity level");
    }

    #[test]
    fn bind_and_reg_wqes_on_a_ud_qp_are_decode_errors() {
        // Found by the ring_entries fuzzer: their fields use the UD destination's slots.
        for op in every_op()
            .into_iter()
            .filter(|o| matches!(o, SendOp::BindMw { .. } | SendOp::RegMr { .. }))
        {
            let b = encode_send(&SendWr::new(1, op), 128);
            assert_eq!(
                decode_send(&b, 4, 64, true),
                Err(DecodeError::Invalid("BIND_MW/REG_MR on a UD QP"))
            );
            assert!(decode_send(&b, 4, 64, false).is_ok());
        }
    }

    #[test]
    fn malformed_bind_and_reg_fields_are_decode_errors() {
        let stride = send_stride(4, 64);
        let ops = every_op();
        let bind = SendWr::new(1, ops[ops.len() - 2]);
        let reg = SendWr::new(1, ops[ops.len() - 1]);
        // BIND_MW access flags at 40..48: a bit no access flag has, and one beyond 32 bits.
        for bad in [1u64 << 20, 1 << 40] {
            let mut b = encode_send(&bind, stride);
            b[40..48].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(
                decode_send(&b, 4, 64, false),
                Err(DecodeError::Invalid("access flags"))
            );
        }
        // REG_MR access flags at 24..28, page shift at 48..52.
        let mut b = encode_send(&reg, stride);
        b[24..28].copy_from_slice(&(1u32 << 20).to_le_bytes());
        assert_eq!(
            decode_send(&b, 4, 64, false),
            Err(DecodeError::Invalid("access flags"))
        );
        let mut b = encode_send(&reg, stride);
        b[48..52].copy_from_slice(&256u32.to_le_bytes());
        assert_eq!(
            decode_send(&b, 4, 64, false),
            Err(DecodeError::Invalid("REG_MR page shift"))
        );
    }

    #[test]
    fn send_wqes_round_trip_for_every_opcode() {
        let stride = send_stride(4, 64);
        assert_eq!(stride, 128);
        for op in every_op() {
            let wr = SendWr::new(42, op)
                .flags(SendFlags::SIGNALED | SendFlags::FENCE)
                .sge(Sge {
                    addr: 0x10,
                    len: 20,
                    lkey: MemKey(5),
                })
                .sge(Sge {
                    addr: 0x40,
                    len: 8,
                    lkey: MemKey(6),
                });
            let b = encode_send(&wr, stride);
            assert_eq!(b.len(), stride as usize);
            assert_eq!(decode_send(&b, 4, 64, false).unwrap(), wr);
        }
        let inl = SendWr::new(1, SendOp::Send).inline(b"hello inline");
        assert_eq!(
            decode_send(&encode_send(&inl, stride), 4, 64, false).unwrap(),
            inl
        );
        let ud = SendWr::new(1, SendOp::Send).ud(UdDest {
            ah: AhHandle(3),
            remote_qpn: Qpn(17),
            remote_qkey: 0x11,
        });
        assert_eq!(
            decode_send(&encode_send(&ud, stride), 4, 64, true).unwrap(),
            ud
        );
    }

    #[test]
    fn hostile_wqes_are_errors() {
        let wr = SendWr::new(1, SendOp::Send).sge(Sge {
            addr: 0,
            len: 1,
            lkey: MemKey(1),
        });
        let mut b = encode_send(&wr, 128);
        b[10] = 200; // num_sge beyond the QP's capacity
        assert!(decode_send(&b, 4, 64, false).is_err());
        let mut b = encode_send(&wr, 128);
        b[8] = 99; // unknown opcode
        assert!(decode_send(&b, 4, 64, false).is_err());
        let inl = SendWr::new(1, SendOp::Send).inline(&[1; 32]);
        assert!(
            decode_send(&encode_send(&inl, 128), 4, 16, false).is_err(),
            "inline too long"
        );
        assert!(decode_send(&[0u8; 10], 4, 64, false).is_err());
        assert!(decode_recv(&[0u8; 3], 4).is_err());
        assert!(Ring::new(0, 3, 64).is_err());
        assert!(Ring::new(u64::MAX - 10, 4, 64).is_err());
    }

    #[test]
    fn cqes_round_trip_and_owner_bits_flip_per_pass() {
        let wc = WorkCompletion {
            wr_id: 9,
            status: WcStatus::RemAccessErr,
            opcode: WcOpcode::RecvRdmaWithImm,
            qpn: Qpn(18),
            byte_len: 77,
            imm: Some(5),
            invalidated_rkey: None,
            src_qp: Qpn(0),
            src_gid: Gid::from_ipv4([10, 0, 0, 1]),
            grh: true,
            solicited: true,
        };
        for i in [0u32, 3, 4, 7, 8, u32::MAX] {
            let b = encode_cqe(&wc, i, 4);
            assert_eq!(decode_cqe(&b, i, 4).unwrap(), Some(wc));
            // The same slot one pass later is not valid yet.
            assert_eq!(decode_cqe(&b, i.wrapping_add(4), 4).unwrap(), None);
        }
        assert_eq!(
            decode_cqe(&[0u8; CQE_SIZE], 0, 4).unwrap(),
            None,
            "a zeroed ring is empty"
        );
    }
}
