//! rxe as the requester: vhca binds a type 1 window (`bind_mw`), two type 2 windows
//! (BIND_MW work requests) and registers a fast-register MR over two pages in reverse order
//! (a REG_MR work request with a page list); `windows_target` WRITEs and READs through each,
//! then its accesses must be refused (`IBV_WC_REM_ACCESS_ERR`) through a range leaving a
//! window, a type 2 window from another QP, a window rxe invalidated by SEND_WITH_INV (vhca's
//! receive reports the key), a window and the MR vhca invalidated by LOCAL_INV, and a type 1
//! window's key from before a rebind; and a SEND_WITH_INV of a type 2 window arriving on another
//! QP than its own must be refused, the window staying valid. Eight QP pairs: each refusal ends
//! one. (libibverbs has no
//! user-space fast-register MR, so only vhca registers one.)
//!
//! vhca's buffer layout (offsets): W1 `[0, 0x1000)`, W2 `[0x2000, 0x3000)`, W3
//! `[0x4000, 0x5000)`, W1 rebound `[0x6000, 0x7000)`, W4 `[0x7000, 0x8000)`.

use super::target::{pattern, IBV_WC_REM_ACCESS_ERR, IBV_WC_REM_OP_ERR, IBV_WC_SUCCESS};
use super::{Opts, Report, Role, Side, WindowsError};
use vhca_device::{Access, MemKey, MwBindInfo, MwType, SendOp, Verbs, WcOpcode, WcStatus};

const WIN: u64 = 0x1000;
/// Where the fast-register MR starts in the I/O address space vhca gives it.
const IOVA: u64 = 0x5000_0000;

impl Side {
    /// Binds a type 2 window over `[off, off + WIN)` of this side's buffer on QP `q` with key
    /// byte `kb`; its R_Key.
    fn bind_type2(&mut self, q: usize, off: u64, kb: u8) -> Result<MemKey, WindowsError> {
        let mw = self.v.alloc_mw(self.pd, MwType::Type2)?;
        let rkey = MemKey::from_parts(mw.index(), kb);
        let op = SendOp::BindMw {
            mw,
            rkey,
            mr: self.mr,
            addr: self.buf + off,
            len: WIN,
            access: Access::REMOTE_WRITE | Access::REMOTE_READ,
        };
        let wc = self.post(q, op, None)?;
        self.check(
            wc.is_ok() && wc.opcode == WcOpcode::BindMw,
            format!(
                "vhca bound a type 2 window ({:#x}) on QP {q}: {:?}",
                rkey.0, wc.status
            ),
        )?;
        Ok(rkey)
    }

    /// Binds the type 1 window `mw` over `[off, off + WIN)` by `bind_mw` on QP `q`.
    fn bind_type1(&mut self, q: usize, mw: MemKey, off: u64) -> Result<MemKey, WindowsError> {
        let info = MwBindInfo {
            mr: self.mr,
            addr: self.buf + off,
            len: WIN,
            access: Access::REMOTE_WRITE | Access::REMOTE_READ,
        };
        let qpn = self.qps[q].0;
        let rkey = self.v.bind_mw(qpn, 7, mw, info)?;
        let wc = self.next_wc(q)?;
        self.check(
            wc.is_ok() && wc.opcode == WcOpcode::BindMw,
            format!(
                "vhca bound its type 1 window ({:#x}) on QP {q}: {:?}",
                rkey.0, wc.status
            ),
        )?;
        Ok(rkey)
    }

    /// rxe WRITEs through `rkey` at `addr` and READs back what vhca then puts there; `mem`
    /// are the addresses of vhca's memory behind `[addr, addr + len)` in 4 KiB pieces.
    fn through(
        &mut self,
        q: usize,
        name: &str,
        rkey: MemKey,
        addr: u64,
        mem: &[u64],
        seed: u8,
    ) -> Result<(), WindowsError> {
        let len = WIN as usize * mem.len();
        let st = self.t.write(&mut self.v, q, rkey, addr, len as u32, seed)?;
        let want = pattern(len, seed);
        let mut got = Vec::new();
        for m in mem {
            got.extend(self.v.read_buf(*m, WIN as usize)?);
        }
        self.check(
            st == IBV_WC_SUCCESS && got == want,
            format!("rxe's WRITE through {name} on QP {q}: status {st}, landed in vhca's memory"),
        )?;
        let want = pattern(len, seed + 1);
        for (i, m) in mem.iter().enumerate() {
            self.v
                .write_buf(*m, &want[i * WIN as usize..(i + 1) * WIN as usize])?;
        }
        let (st, same) = self
            .t
            .read(&mut self.v, q, rkey, addr, len as u32, seed + 1)?;
        self.check(
            st == IBV_WC_SUCCESS && same,
            format!("rxe's READ through {name} on QP {q}: status {st}, vhca's bytes"),
        )
    }

    /// rxe's WRITE through `rkey` at `addr` on QP `q` must end REM_ACCESS_ERR (vhca's NAK goes
    /// toward the lossless side), and vhca's memory at `mem` (64 bytes) must not change.
    fn refused_by_vhca(
        &mut self,
        q: usize,
        rkey: MemKey,
        addr: u64,
        mem: u64,
        what: &str,
    ) -> Result<(), WindowsError> {
        let before = self.v.read_buf(mem, 64)?;
        let st = self.t.write(&mut self.v, q, rkey, addr, 64, 0xee)?;
        let after = self.v.read_buf(mem, 64)?;
        self.check(st == IBV_WC_REM_ACCESS_ERR && before == after, format!("{what}: rxe's WRITE ended with status {st} (REM_ACCESS_ERR is {IBV_WC_REM_ACCESS_ERR}), vhca's memory unchanged"))
    }
}

pub fn run(o: &Opts) -> Result<Report, WindowsError> {
    let mut s = Side::open(o, 8)?;
    let b = s.buf;

    let mw1 = s.v.alloc_mw(s.pd, MwType::Type1)?;
    let k1 = s.bind_type1(0, mw1, 0)?;
    let k2 = s.bind_type2(1, 0x2000, 0x5a)?;
    let k3 = s.bind_type2(2, 0x4000, 0x6b)?;

    // The fast-register MR: two pages, the second first, at an I/O address of vhca's choice.
    let pages = s.v.alloc_buf(3 * WIN)?;
    let p0 = pages.next_multiple_of(WIN);
    let p1 = p0 + WIN;
    let list = s.v.alloc_buf(16)?;
    let bytes: Vec<u8> = [p1, p0].iter().flat_map(|p| p.to_le_bytes()).collect();
    s.v.write_buf(list, &bytes)?;
    let fr = s.v.alloc_mr(s.pd, 4)?;
    let kf = MemKey::from_parts(fr.index(), 0x77);
    let reg = SendOp::RegMr {
        mr: kf,
        page_list: list,
        npages: 2,
        page_shift: 12,
        iova: IOVA,
        len: 2 * WIN,
        access: Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
    };
    let wc = s.post(0, reg, None)?;
    s.check(
        wc.is_ok() && wc.opcode == WcOpcode::RegMr,
        format!(
            "vhca registered a fast-register MR ({:#x}) over two pages: {:?}",
            kf.0, wc.status
        ),
    )?;

    s.through(0, "vhca's type 1 window", k1, b, &[b], 0x31)?;
    s.through(
        1,
        "vhca's type 2 window",
        k2,
        b + 0x2000,
        &[b + 0x2000],
        0x41,
    )?;
    s.through(
        2,
        "vhca's other type 2 window",
        k3,
        b + 0x4000,
        &[b + 0x4000],
        0x51,
    )?;
    s.through(
        0,
        "vhca's fast-register MR (pages reversed)",
        kf,
        IOVA,
        &[p1, p0],
        0x61,
    )?;

    // A SEND_WITH_INV of W4 (bound on QP 6) arriving on QP 7: vhca refuses it (its receive
    // ends LOC_QP_OP_ERR, rxe's SEND REM_OP_ERR) and W4 stays valid. (rxe would invalidate.)
    let k4 = s.bind_type2(6, 0x7000, 0x7c)?;
    s.post_recv(7)?;
    let st = s.t.send_inv(&mut s.v, 7, k4)?;
    let wc = s.next_wc(7)?;
    s.check(st == IBV_WC_REM_OP_ERR && wc.status == WcStatus::LocQpOpErr && wc.invalidated_rkey.is_none(), format!("rxe's SEND_WITH_INV on QP 7 of QP 6's window: its status {st} (REM_OP_ERR is {IBV_WC_REM_OP_ERR}), vhca's receive {:?}", wc.status))?;
    s.through(
        6,
        "vhca's type 2 window after a refused SEND_WITH_INV from another QP",
        k4,
        b + 0x7000,
        &[b + 0x7000],
        0x81,
    )?;

    // vhca checks the window's range, not only its MR's (rxe does not; docs/transport.md).
    s.refused_by_vhca(
        5,
        k1,
        b + WIN - 32,
        b + WIN - 32,
        "a WRITE leaving vhca's type 1 window (inside its MR)",
    )?;
    // Type 2B: W2 was bound on QP 1.
    s.refused_by_vhca(
        3,
        k2,
        b + 0x2000,
        b + 0x2000,
        "a WRITE through QP 1's type 2 window from QP 3",
    )?;

    // rxe's SEND_WITH_INV invalidates W3 on the QP it is bound on; vhca's receive reports it.
    s.post_recv(2)?;
    let st = s.t.send_inv(&mut s.v, 2, k3)?;
    let wc = s.next_wc(2)?;
    s.check(st == IBV_WC_SUCCESS && wc.status == WcStatus::Success && wc.opcode == WcOpcode::Recv && wc.invalidated_rkey == Some(k3), format!("rxe's SEND_WITH_INV of {:#x}: its status {st}, vhca's receive {:?} {:?} invalidated {:?}", k3.0, wc.status, wc.opcode, wc.invalidated_rkey))?;
    s.refused_by_vhca(
        2,
        k3,
        b + 0x4000,
        b + 0x4000,
        "a WRITE through the window rxe invalidated",
    )?;

    // LOCAL_INV by vhca: of W2, then of the fast-register MR.
    let wc = s.post(1, SendOp::LocalInv { key: k2 }, None)?;
    s.check(
        wc.is_ok() && wc.opcode == WcOpcode::LocalInv,
        format!("vhca's LOCAL_INV of its type 2 window: {:?}", wc.status),
    )?;
    s.refused_by_vhca(
        1,
        k2,
        b + 0x2000,
        b + 0x2000,
        "a WRITE through the window vhca invalidated",
    )?;
    let wc = s.post(0, SendOp::LocalInv { key: kf }, None)?;
    s.check(
        wc.is_ok() && wc.opcode == WcOpcode::LocalInv,
        format!("vhca's LOCAL_INV of its fast-register MR: {:?}", wc.status),
    )?;
    s.refused_by_vhca(
        4,
        kf,
        IOVA,
        p1,
        "a WRITE through the invalidated fast-register MR",
    )?;

    // Rebinding the type 1 window: the new key works, the old one grants nothing.
    let k1b = s.bind_type1(0, k1, 0x6000)?;
    s.check(
        k1b.index() == k1.index() && k1b != k1,
        format!(
            "the rebound type 1 window has a new key byte: {:#x} -> {:#x}",
            k1.0, k1b.0
        ),
    )?;
    s.through(
        0,
        "vhca's rebound type 1 window",
        k1b,
        b + 0x6000,
        &[b + 0x6000],
        0x71,
    )?;
    s.refused_by_vhca(
        0,
        k1,
        b,
        b,
        "a WRITE under the type 1 window's key from before the rebind",
    )?;

    s.into_report(Role::Requester, 0)
}
