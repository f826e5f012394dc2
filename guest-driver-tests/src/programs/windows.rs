//! Memory windows and fast-register MRs between two peers, written against [`Verbs`]: `b`
//! hands out a type 1 window, a type 2 window and a fast-register MR over its memory, `a`
//! writes and reads through each, and `b` changes their keys and invalidates them (by LOCAL_INV
//! and by `a`'s SEND_WITH_INV). The last step is a WRITE under a key that is no longer valid:
//! it must fail with REM_ACCESS_ERR, which ends the connection (docs/transport.md, "Memory
//! windows" and "Fast-register MRs").

use super::{expect_ok, wait, Endpoint};
use vhca_device::{
    Access, MemKey, MwBindInfo, MwType, RecvWr, SendOp, SendWr, Sge, Verbs, VerbsError,
    VerbsResult, WcOpcode, WcStatus,
};

const POLLS: usize = 1_000_000;

fn check(ok: bool, what: &'static str) -> VerbsResult<()> {
    if ok {
        Ok(())
    } else {
        Err(VerbsError::Invalid(what))
    }
}

/// Runs `op` on `ep`'s QP and expects one successful completion with `opcode`.
fn run_local<V: Verbs>(v: &mut V, ep: &Endpoint, op: SendOp, opcode: WcOpcode) -> VerbsResult<()> {
    v.post_send(ep.qpn, &SendWr::new(50, op))?;
    let w = wait(v, ep.cq, 1, POLLS)?;
    expect_ok(&w)?;
    check(
        w[0].opcode == opcode,
        "a local work request completed as another",
    )
}

/// `a` WRITEs `data` from its buffer to `b`'s `remote_addr` under `rkey`; the status.
fn write<A: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    remote_addr: u64,
    rkey: MemKey,
    data: &[u8],
) -> VerbsResult<WcStatus> {
    a.write_buf(ea.buf, data)?;
    let sge = Sge {
        addr: ea.buf,
        len: data.len() as u32,
        lkey: ea.key,
    };
    a.post_send(
        ea.qpn,
        &SendWr::new(51, SendOp::Write { remote_addr, rkey }).sge(sge),
    )?;
    Ok(wait(a, ea.cq, 1, POLLS)?[0].status)
}

/// `a` READs `len` bytes of `b` at `remote_addr` under `rkey`; what arrived.
fn read<A: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    remote_addr: u64,
    rkey: MemKey,
    len: u32,
) -> VerbsResult<Vec<u8>> {
    let dst = ea.buf + ea.len / 2;
    let sge = Sge {
        addr: dst,
        len,
        lkey: ea.key,
    };
    a.post_send(
        ea.qpn,
        &SendWr::new(52, SendOp::Read { remote_addr, rkey }).sge(sge),
    )?;
    expect_ok(&wait(a, ea.cq, 1, POLLS)?)?;
    a.read_buf(dst, len as usize)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The program. `ea.len` and `eb.len` must be at least 16 KiB.
pub fn rc_windows<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
) -> VerbsResult<()> {
    check(
        ea.len >= 16384 && eb.len >= 16384,
        "buffers of at least 16 KiB",
    )?;
    let rights = Access::REMOTE_WRITE | Access::REMOTE_READ;
    // An MR windows may be bound to; it grants no remote right itself.
    let mr = b.reg_mr(eb.pd, eb.buf, eb.len, Access::LOCAL_WRITE | Access::MW_BIND)?;

    // Type 1: bound by `ibv_bind_mw`, then bound again (a new key byte, a smaller window).
    let mw1 = b.alloc_mw(eb.pd, MwType::Type1)?;
    let info = |addr: u64, len: u64| MwBindInfo {
        mr,
        addr,
        len,
        access: rights,
    };
    let k1 = b.bind_mw(eb.qpn, 40, mw1, info(eb.buf, 4096))?;
    let w = wait(b, eb.cq, 1, POLLS)?;
    expect_ok(&w)?;
    check(
        w[0].opcode == WcOpcode::BindMw,
        "BIND_MW completed as another",
    )?;
    let data = pattern(1024, 1);
    check(
        write(a, ea, eb.buf, k1, &data)? == WcStatus::Success,
        "WRITE through a type 1 window",
    )?;
    check(
        b.read_buf(eb.buf, 1024)? == data,
        "WRITE through a type 1 window landed wrong",
    )?;
    check(
        read(a, ea, eb.buf, k1, 1024)? == data,
        "READ through a type 1 window",
    )?;
    let k1b = b.bind_mw(eb.qpn, 41, k1, info(eb.buf + 2048, 2048))?;
    expect_ok(&wait(b, eb.cq, 1, POLLS)?)?;
    check(
        k1b != k1 && k1b.index() == k1.index(),
        "a bind changes the key byte only",
    )?;
    let data = pattern(2048, 2);
    check(
        write(a, ea, eb.buf + 2048, k1b, &data)? == WcStatus::Success,
        "WRITE through a rebound window",
    )?;
    check(
        b.read_buf(eb.buf + 2048, 2048)? == data,
        "the rebound window landed wrong",
    )?;

    // Type 2: bound by a BIND_MW work request on b's QP, invalidated by a's SEND_WITH_INV,
    // bound again with another key byte, invalidated by b's LOCAL_INV.
    let mw2 = b.alloc_mw(eb.pd, MwType::Type2)?;
    let bind2 = |mw: MemKey, kb: u8| SendOp::BindMw {
        mw,
        rkey: MemKey::from_parts(mw.index(), kb),
        mr,
        addr: eb.buf + 4096,
        len: 4096,
        access: rights,
    };
    run_local(b, eb, bind2(mw2, 0x5a), WcOpcode::BindMw)?;
    let k2 = MemKey::from_parts(mw2.index(), 0x5a);
    let data = pattern(4096, 3);
    check(
        write(a, ea, eb.buf + 4096, k2, &data)? == WcStatus::Success,
        "WRITE through a type 2 window",
    )?;
    check(
        read(a, ea, eb.buf + 4096, k2, 4096)? == data,
        "READ through a type 2 window",
    )?;
    b.post_recv(
        eb.qpn,
        RecvWr {
            wr_id: 53,
            sgl: vec![Sge {
                addr: eb.buf + 12288,
                len: 64,
                lkey: eb.key,
            }],
        },
    )?;
    let sge = Sge {
        addr: ea.buf,
        len: 16,
        lkey: ea.key,
    };
    a.post_send(
        ea.qpn,
        &SendWr::new(54, SendOp::SendWithInv { rkey: k2 }).sge(sge),
    )?;
    expect_ok(&wait(a, ea.cq, 1, POLLS)?)?;
    let r = wait(b, eb.cq, 1, POLLS)?;
    expect_ok(&r)?;
    check(
        r[0].invalidated_rkey == Some(k2),
        "SEND_WITH_INV did not invalidate the window",
    )?;
    run_local(b, eb, bind2(k2, 0x5b), WcOpcode::BindMw)?;
    let k2b = MemKey::from_parts(mw2.index(), 0x5b);
    check(
        write(a, ea, eb.buf + 4096, k2b, &[7; 64])? == WcStatus::Success,
        "WRITE through a type 2 window bound again",
    )?;
    run_local(b, eb, SendOp::LocalInv { key: k2b }, WcOpcode::LocalInv)?;

    // A fast-register MR over two of b's pages, in reverse order, at an iova b chooses.
    let fr = b.alloc_mr(eb.pd, 4)?;
    let pages = b.alloc_buf(3 * 4096)?;
    let p0 = pages.next_multiple_of(4096);
    let p1 = p0 + 4096;
    let list = b.alloc_buf(16)?;
    let bytes: Vec<u8> = [p1, p0].iter().flat_map(|p| p.to_le_bytes()).collect();
    b.write_buf(list, &bytes)?;
    let iova = 0x5000_0000;
    let reg = |kb: u8| SendOp::RegMr {
        mr: MemKey::from_parts(fr.index(), kb),
        page_list: list,
        npages: 2,
        page_shift: 12,
        iova,
        len: 8192,
        access: Access::LOCAL_WRITE | rights,
    };
    run_local(b, eb, reg(0x77), WcOpcode::RegMr)?;
    let f1 = MemKey::from_parts(fr.index(), 0x77);
    let data = pattern(8192, 4);
    check(
        write(a, ea, iova, f1, &data)? == WcStatus::Success,
        "WRITE through a fast-register MR",
    )?;
    check(
        b.read_buf(p1, 4096)? == data[..4096] && b.read_buf(p0, 4096)? == data[4096..],
        "the fast-register MR maps its pages wrong",
    )?;
    check(
        read(a, ea, iova + 4000, f1, 200)? == data[4000..4200],
        "READ across the fast-register MR's pages",
    )?;
    // Invalidated and registered again under a new key byte.
    run_local(b, eb, SendOp::LocalInv { key: f1 }, WcOpcode::LocalInv)?;
    run_local(b, eb, reg(0x78), WcOpcode::RegMr)?;
    let f2 = MemKey::from_parts(fr.index(), 0x78);
    check(
        write(a, ea, iova, f2, &[9; 32])? == WcStatus::Success,
        "WRITE under the new key",
    )?;
    check(
        b.read_buf(p1, 32)? == [9; 32],
        "the new key reaches the same pages",
    )?;
    // The old key byte grants nothing any more; this ends the connection.
    check(
        write(a, ea, iova, f1, &[1; 32])? == WcStatus::RemAccessErr,
        "a WRITE under an invalidated key did not fail",
    )?;
    check(
        b.read_buf(p1, 32)? == [9; 32],
        "a refused WRITE changed memory",
    )
}
