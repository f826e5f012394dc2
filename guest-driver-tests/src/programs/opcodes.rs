//! Programs that cover the RC operations one by one, data and completions checked: every
//! classic opcode, the invalidations, and IBTA 1.5's ATOMIC WRITE and FLUSH. Separate from the
//! set-up and traffic programs in `mod.rs` because each of these is a checklist of opcodes.

use super::{expect_ok, wait, Endpoint, FULL_ACCESS};
use vhca_device::{
    Access, FlushLevel, FlushPlacement, QpAttr, QpAttrMask as M, QpState, RecvWr, SendOp, SendWr,
    Sge, Verbs, VerbsError, VerbsResult, WcOpcode, WcStatus,
};

/// One of each RC operation from `a` to `b`, data checked: SEND, SEND_WITH_IMM, RDMA WRITE,
/// RDMA WRITE_WITH_IMM, RDMA READ, both atomics.
pub fn rc_every_opcode<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
    size: u32,
) -> VerbsResult<()> {
    let half = ea.len.min(eb.len) / 2;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    a.write_buf(ea.buf, &data)?;
    let sge = Sge {
        addr: ea.buf,
        len: size,
        lkey: ea.key,
    };
    // SEND and SEND_WITH_IMM
    for (i, op) in [SendOp::Send, SendOp::SendWithImm { imm: 0x1234 }]
        .into_iter()
        .enumerate()
    {
        b.post_recv(
            eb.qpn,
            RecvWr {
                wr_id: 10 + i as u64,
                sgl: vec![Sge {
                    addr: eb.buf,
                    len: size.max(1),
                    lkey: eb.key,
                }],
            },
        )?;
        a.post_send(ea.qpn, &SendWr::new(i as u64, op).sge(sge))?;
        let wb = wait(b, eb.cq, 1, 100_000)?;
        expect_ok(&wb)?;
        if b.read_buf(eb.buf, size as usize)? != data || wb[0].imm != (i == 1).then_some(0x1234) {
            return Err(VerbsError::Invalid("SEND arrived wrong"));
        }
        expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
    }
    // RDMA WRITE, then WRITE_WITH_IMM, to b's upper half.
    let dst = eb.buf + half;
    a.post_send(
        ea.qpn,
        &SendWr::new(
            3,
            SendOp::Write {
                remote_addr: dst,
                rkey: eb.key,
            },
        )
        .sge(sge),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
    if b.read_buf(dst, size as usize)? != data {
        return Err(VerbsError::Invalid("RDMA WRITE landed wrong"));
    }
    b.post_recv(
        eb.qpn,
        RecvWr {
            wr_id: 20,
            sgl: vec![],
        },
    )?;
    a.post_send(
        ea.qpn,
        &SendWr::new(
            4,
            SendOp::WriteWithImm {
                remote_addr: dst,
                rkey: eb.key,
                imm: 77,
            },
        )
        .sge(sge),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
    let wb = wait(b, eb.cq, 1, 100_000)?;
    if wb[0].opcode != WcOpcode::RecvRdmaWithImm || wb[0].imm != Some(77) || wb[0].byte_len != size
    {
        return Err(VerbsError::Invalid("WRITE_WITH_IMM completed wrong"));
    }
    // RDMA READ it back into a's upper half.
    let back = ea.buf + half;
    a.post_send(
        ea.qpn,
        &SendWr::new(
            5,
            SendOp::Read {
                remote_addr: dst,
                rkey: eb.key,
            },
        )
        .sge(Sge {
            addr: back,
            len: size,
            lkey: ea.key,
        }),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
    if a.read_buf(back, size as usize)? != data {
        return Err(VerbsError::Invalid("RDMA READ returned wrong data"));
    }
    // Atomics on b's last 8 bytes.
    let word = eb.buf + eb.len - 8;
    b.write_buf(word, &40u64.to_le_bytes())?;
    let res = Sge {
        addr: ea.buf + ea.len - 16,
        len: 8,
        lkey: ea.key,
    };
    a.post_send(
        ea.qpn,
        &SendWr::new(
            6,
            SendOp::FetchAdd {
                remote_addr: word,
                rkey: eb.key,
                add: 2,
            },
        )
        .sge(res),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
    if a.read_buf(res.addr, 8)? != 40u64.to_le_bytes() {
        return Err(VerbsError::Invalid("FETCH_ADD returned wrong"));
    }
    a.post_send(
        ea.qpn,
        &SendWr::new(
            7,
            SendOp::CmpSwap {
                remote_addr: word,
                rkey: eb.key,
                compare: 42,
                swap: 9,
            },
        )
        .sge(res),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
    if a.read_buf(res.addr, 8)? != 42u64.to_le_bytes() || b.read_buf(word, 8)? != 9u64.to_le_bytes()
    {
        return Err(VerbsError::Invalid("CMP_SWAP wrong"));
    }
    Ok(())
}

/// SEND_WITH_INV and LOCAL_INV over a connected RC pair: `b` registers a second key over its
/// buffer that `a` invalidates remotely, `a` registers one over its own buffer and invalidates
/// it locally; then a WRITE with the remotely invalidated key must fail. The connection is in
/// ERR afterwards (a remote access error ends an RC connection).
pub fn rc_invalidate<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
) -> VerbsResult<()> {
    let size = 64u32;
    let data: Vec<u8> = (0..size).map(|i| i as u8 ^ 0x5a).collect();
    a.write_buf(ea.buf, &data)?;
    let sge = Sge {
        addr: ea.buf,
        len: size,
        lkey: ea.key,
    };
    // LOCAL_INV of a second local key.
    let local = a.reg_mr(ea.pd, ea.buf, ea.len, FULL_ACCESS)?;
    a.post_send(ea.qpn, &SendWr::new(30, SendOp::LocalInv { key: local }))?;
    let w = wait(a, ea.cq, 1, 1_000_000)?;
    expect_ok(&w)?;
    if w[0].opcode != WcOpcode::LocalInv {
        return Err(VerbsError::Invalid("LOCAL_INV completed wrong"));
    }
    // SEND_WITH_INV of a key b handed out.
    let target = b.reg_mr(eb.pd, eb.buf, eb.len, FULL_ACCESS)?;
    b.post_recv(
        eb.qpn,
        RecvWr {
            wr_id: 31,
            sgl: vec![Sge {
                addr: eb.buf,
                len: size,
                lkey: eb.key,
            }],
        },
    )?;
    a.post_send(
        ea.qpn,
        &SendWr::new(32, SendOp::SendWithInv { rkey: target }).sge(sge),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 1_000_000)?)?;
    let wb = wait(b, eb.cq, 1, 1_000_000)?;
    expect_ok(&wb)?;
    if wb[0].invalidated_rkey != Some(target) || b.read_buf(eb.buf, size as usize)? != data {
        return Err(VerbsError::Invalid("SEND_WITH_INV arrived wrong"));
    }
    // The invalidated key no longer grants remote access.
    a.post_send(
        ea.qpn,
        &SendWr::new(
            33,
            SendOp::Write {
                remote_addr: eb.buf,
                rkey: target,
            },
        )
        .sge(sge),
    )?;
    let w = wait(a, ea.cq, 1, 1_000_000)?;
    if w[0].status != WcStatus::RemAccessErr {
        return Err(VerbsError::Invalid(
            "a WRITE with an invalidated key did not fail",
        ));
    }
    Ok(())
}

/// ATOMIC WRITE and FLUSH (IBTA 1.5) over a connected RC pair: `b` opens its QP and a second
/// key over its buffer to FLUSH_GLOBAL (an RTS→RTS modify of its access flags), `a` WRITEs a
/// block, FLUSHes that range, ATOMIC WRITEs `value` into the 8 bytes after it and FLUSHes the
/// whole region; every completion must succeed with its own opcode and `b`'s memory must hold
/// the block and the value. Then a misaligned ATOMIC WRITE must fail with REM_INV_REQ_ERR,
/// which ends the connection (ERR on both sides).
pub fn rc_placement<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
    value: u64,
) -> VerbsResult<()> {
    let size = 256u32;
    if ea.len < size as u64 || eb.len < size as u64 + 16 {
        return Err(VerbsError::Invalid("buffers too small for rc_placement"));
    }
    let flushable = FULL_ACCESS | Access::FLUSH_GLOBAL;
    let open = QpAttr {
        qp_state: QpState::Rts,
        qp_access_flags: flushable,
        ..QpAttr::default()
    };
    b.modify_qp(eb.qpn, &open, M::ACCESS_FLAGS)?;
    let target = b.reg_mr(eb.pd, eb.buf, eb.len, flushable)?;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(13) ^ 0xa5)
        .collect();
    a.write_buf(ea.buf, &data)?;
    let ops = [
        (
            40,
            SendOp::Write {
                remote_addr: eb.buf,
                rkey: target,
            },
            WcOpcode::RdmaWrite,
        ),
        (
            41,
            SendOp::Flush {
                remote_addr: eb.buf,
                rkey: target,
                len: size,
                placement: FlushPlacement::GLOBAL,
                level: FlushLevel::Range,
            },
            WcOpcode::Flush,
        ),
        (
            42,
            SendOp::AtomicWrite {
                remote_addr: eb.buf + size as u64,
                rkey: target,
                value,
            },
            WcOpcode::AtomicWrite,
        ),
        (
            43,
            SendOp::Flush {
                remote_addr: 0,
                rkey: target,
                len: 0,
                placement: FlushPlacement::GLOBAL,
                level: FlushLevel::Mr,
            },
            WcOpcode::Flush,
        ),
    ];
    for (id, op, _) in ops {
        let mut wr = SendWr::new(id, op);
        if id == 40 {
            wr = wr.sge(Sge {
                addr: ea.buf,
                len: size,
                lkey: ea.key,
            });
        }
        a.post_send(ea.qpn, &wr)?;
    }
    let w = wait(a, ea.cq, ops.len(), 1_000_000)?;
    expect_ok(&w)?;
    let got: Vec<(u64, WcOpcode)> = w.iter().map(|c| (c.wr_id, c.opcode)).collect();
    let want: Vec<(u64, WcOpcode)> = ops.iter().map(|(id, _, o)| (*id, *o)).collect();
    if got != want {
        return Err(VerbsError::Invalid(
            "ATOMIC WRITE/FLUSH completed out of order or wrong",
        ));
    }
    if b.read_buf(eb.buf, size as usize)? != data
        || b.read_buf(eb.buf + size as u64, 8)? != value.to_le_bytes()
    {
        return Err(VerbsError::Invalid(
            "ATOMIC WRITE/FLUSH target holds the wrong bytes",
        ));
    }
    a.post_send(
        ea.qpn,
        &SendWr::new(
            44,
            SendOp::AtomicWrite {
                remote_addr: eb.buf + 4,
                rkey: target,
                value,
            },
        ),
    )?;
    let w = wait(a, ea.cq, 1, 1_000_000)?;
    if w[0].status != WcStatus::RemInvReqErr {
        return Err(VerbsError::Invalid(
            "a misaligned ATOMIC WRITE did not fail",
        ));
    }
    Ok(())
}
