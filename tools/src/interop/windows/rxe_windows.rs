//! rxe as the responder: `windows_target` binds a type 1 window (`ibv_bind_mw`) and type 2
//! windows (`IBV_WR_BIND_MW` work requests) over its buffer, and vhca WRITEs and READs through
//! them, invalidates one with SEND_WITH_INV and checks what rxe refuses: the invalidated
//! window, a range past the MR, a type 2 window from another QP than its own, a type 1
//! window's key from before a rebind; and that rxe lets a SEND_WITH_INV on one QP invalidate a
//! type 2 window bound on another. Five QP pairs: each refusal ends one.
//!
//! Target buffer layout (offsets): W1 `[0, 0x1000)`, W2 `[0x2000, 0x3000)`, W3
//! `[0x4000, 0x5000)`, W1 rebound `[0x6000, 0x7000)`, W4 `[0x7000, 0x8000)`; the gaps are outside every window.

use super::target::{pattern, IBV_QPS_ERR};

/// libibverbs' `IBV_WC_WITH_INV`.
const IBV_WC_WITH_INV: u32 = 1 << 3;
/// The kernel's `IB_WC_WITH_INVALIDATE` (libibverbs' `IBV_WC_IP_CSUM_OK`).
const IB_WC_WITH_INVALIDATE: u32 = 1 << 2;
use super::{Opts, Report, Role, Side, WindowsError, DST_OFF, SRC_OFF};
use vhca_device::{MemKey, SendOp, Sge, Verbs, WcOpcode, WcStatus};

const WIN: u64 = 0x1000;

impl Side {
    /// vhca WRITEs pattern(`seed`) of `len` bytes to the target's `addr` under `rkey` on QP
    /// `q`; the completion status.
    fn write_to(
        &mut self,
        q: usize,
        rkey: MemKey,
        addr: u64,
        len: u32,
        seed: u8,
    ) -> Result<WcStatus, WindowsError> {
        self.v
            .write_buf(self.buf + SRC_OFF, &pattern(len as usize, seed))?;
        let sge = Sge {
            addr: self.buf + SRC_OFF,
            len,
            lkey: self.mr,
        };
        let wc = self.post(
            q,
            SendOp::Write {
                remote_addr: addr,
                rkey,
            },
            Some(sge),
        )?;
        if wc.is_ok() && wc.opcode != WcOpcode::RdmaWrite {
            return Err(WindowsError::Check(format!(
                "a WRITE completed as {:?}",
                wc.opcode
            )));
        }
        Ok(wc.status)
    }

    /// vhca READs `len` bytes of the target at `addr` under `rkey` on QP `q`: status and bytes.
    fn read_from(
        &mut self,
        q: usize,
        rkey: MemKey,
        addr: u64,
        len: u32,
    ) -> Result<(WcStatus, Vec<u8>), WindowsError> {
        self.v
            .write_buf(self.buf + DST_OFF, &vec![0; len as usize])?;
        let sge = Sge {
            addr: self.buf + DST_OFF,
            len,
            lkey: self.mr,
        };
        let wc = self.post(
            q,
            SendOp::Read {
                remote_addr: addr,
                rkey,
            },
            Some(sge),
        )?;
        Ok((
            wc.status,
            self.v.read_buf(self.buf + DST_OFF, len as usize)?,
        ))
    }

    /// A WRITE rxe must refuse: REM_ACCESS_ERR, and rxe's QP `q` in ERR afterwards. Under
    /// loss rxe's NAK may be lost; rxe, its QP in ERR, then never answers the resent WRITE,
    /// which ends in RETRY_EXC_ERR: accepted only then, and counted.
    fn refused(
        &mut self,
        q: usize,
        rkey: MemKey,
        addr: u64,
        what: &str,
        lossy: bool,
        by_timeout: &mut u32,
    ) -> Result<(), WindowsError> {
        let st = self.write_to(q, rkey, addr, 64, 0xee)?;
        let state = self.t.state(&mut self.v, q)?;
        let timeout = lossy && st == WcStatus::RetryExcErr;
        *by_timeout += u32::from(timeout);
        let ok = (st == WcStatus::RemAccessErr || timeout) && state == IBV_QPS_ERR;
        self.check(
            ok,
            format!("{what}: refused by rxe ({st:?}, rxe's QP {q} in state {state})"),
        )
    }
}

pub fn run(o: &Opts) -> Result<Report, WindowsError> {
    let mut s = Side::open(o, 5)?;
    let mut by_timeout = 0;
    let tb = s.t.buf;

    // The windows, and the addresses rxe says they have.
    let (k1, a1) = s.t.bind(&mut s.v, 1, 0, 0, WIN)?;
    let (k2, a2) = s.t.bind(&mut s.v, 2, 0, 0x2000, WIN)?;
    s.check(
        a1 == tb && a2 == tb + 0x2000 && k1.index() != k2.index(),
        format!(
            "rxe bound a type 1 window ({:#x}) and a type 2 window ({:#x}) on QP 0",
            k1.0, k2.0
        ),
    )?;

    // Through both: vhca's WRITE checked in rxe's memory, rxe's bytes checked in vhca's READ.
    for (name, k, a, off, seed) in [
        ("type 1", k1, a1, 0, 0x11),
        ("type 2", k2, a2, 0x2000, 0x21),
    ] {
        let st = s.write_to(0, k, a, WIN as u32, seed)?;
        s.check(
            st == WcStatus::Success,
            format!("WRITE through rxe's {name} window: {st:?}"),
        )?;
        let held = s.t.holds(&mut s.v, off, WIN, seed)?;
        s.check(
            held,
            format!("the WRITE through rxe's {name} window landed in its buffer"),
        )?;
        s.t.fill(&mut s.v, off, WIN, seed + 1)?;
        let (st, got) = s.read_from(0, k, a, WIN as u32)?;
        s.check(
            st == WcStatus::Success && got == pattern(WIN as usize, seed + 1),
            format!("READ through rxe's {name} window: {st:?}, rxe's bytes"),
        )?;
    }

    // SEND_WITH_INV of the type 2 window: rxe's receive reports it, then the window is gone.
    s.t.post_recv(&mut s.v, 0)?;
    let sge = Sge {
        addr: s.buf + SRC_OFF,
        len: 16,
        lkey: s.mr,
    };
    let wc = s.post(0, SendOp::SendWithInv { rkey: k2 }, Some(sge))?;
    s.check(
        wc.is_ok(),
        format!("SEND_WITH_INV of rxe's type 2 window: {:?}", wc.status),
    )?;
    // rxe reports the invalidation with the kernel's IB_WC_WITH_INVALIDATE (1 << 2) in the
    // wc_flags it shares with user space, which libibverbs reads as IBV_WC_IP_CSUM_OK;
    // IBV_WC_WITH_INV (1 << 3) stays clear. The key itself is right.
    let (st, flags, key) = s.t.recv_wc(&mut s.v, 0)?;
    let flagged = flags & (IBV_WC_WITH_INV | IB_WC_WITH_INVALIDATE) != 0;
    s.check(
        st == 0 && flagged && key == k2,
        format!(
            "rxe's receive: status {st}, wc_flags {flags:#x}, invalidated R_Key {:#x}",
            key.0
        ),
    )?;
    if flags & IBV_WC_WITH_INV == 0 {
        s.findings.push(format!("rxe flags a receive that invalidated a key with wc_flags {flags:#x}: the kernel's IB_WC_WITH_INVALIDATE (1 << 2), which libibverbs reads as IBV_WC_IP_CSUM_OK; IBV_WC_WITH_INV (1 << 3) is clear"));
    }
    s.refused(
        0,
        k2,
        a2,
        "a WRITE through the invalidated type 2 window",
        o.lossy,
        &mut by_timeout,
    )?;
    let held = s.t.holds(&mut s.v, 0x2000, WIN, 0x22)?;
    s.check(held, "nothing landed through the invalidated window")?;

    // Outside the window but inside the MR: rxe checks only the MR's range (rxe_resp.c
    // check_rkey: mr_check_range), so the WRITE lands. IBTA (and vhca) refuse it.
    let st = s.write_to(1, k1, a1 + WIN - 32, 64, 0x15)?;
    let held = s.t.holds(&mut s.v, WIN - 32, 64, 0x15)?;
    if st != WcStatus::Success || !held {
        return Err(WindowsError::Check(format!(
            "a WRITE across the end of rxe's type 1 window ended {st:?} (landed: {held}): the finding that rxe checks only the MR's range no longer holds"
        )));
    }
    s.findings.push("rxe accepts a WRITE through a window that leaves the window but stays inside its MR (it checks the MR's range only); vhca refuses it".into());
    s.check(
        true,
        "a WRITE across the end of rxe's type 1 window lands (rxe checks the MR's range only)",
    )?;
    // Past the MR's end: refused.
    s.refused(
        1,
        k1,
        tb + 0x10000 - 32,
        "a WRITE through the type 1 window past the end of its MR",
        o.lossy,
        &mut by_timeout,
    )?;

    // A type 2 window is valid only on the QP it was bound on (type 2B).
    let (k3, a3) = s.t.bind(&mut s.v, 2, 2, 0x4000, WIN)?;
    let st = s.write_to(2, k3, a3, WIN as u32, 0x31)?;
    let held = s.t.holds(&mut s.v, 0x4000, WIN, 0x31)?;
    s.check(
        st == WcStatus::Success && held,
        format!("WRITE through a type 2 window bound on QP 2: {st:?}, landed {held}"),
    )?;
    s.refused(
        3,
        k3,
        a3,
        "a WRITE through QP 2's type 2 window from QP 3",
        o.lossy,
        &mut by_timeout,
    )?;
    let held = s.t.holds(&mut s.v, 0x4000, WIN, 0x31)?;
    s.check(held, "nothing landed through another QP's type 2 window")?;

    // SEND_WITH_INV of a type 2 window from another QP than the one it is bound on: rxe
    // invalidates it all the same (rxe_invalidate_mw checks neither QP nor PD); vhca refuses.
    let (k4, a4) = s.t.bind(&mut s.v, 2, 4, 0x7000, WIN)?;
    let st = s.write_to(4, k4, a4, WIN as u32, 0x51)?;
    let held = s.t.holds(&mut s.v, 0x7000, WIN, 0x51)?;
    s.check(
        st == WcStatus::Success && held,
        format!("WRITE through a type 2 window bound on QP 4: {st:?}, landed {held}"),
    )?;
    s.t.post_recv(&mut s.v, 2)?;
    let wc = s.post(2, SendOp::SendWithInv { rkey: k4 }, Some(sge))?;
    let (st, _, key) = s.t.recv_wc(&mut s.v, 2)?;
    if !wc.is_ok() || st != 0 || key != k4 {
        return Err(WindowsError::Check(format!(
            "SEND_WITH_INV on QP 2 of QP 4's type 2 window: vhca {:?}, rxe's receive {st} key {:#x}: the finding that rxe invalidates a window bound on another QP no longer holds",
            wc.status, key.0
        )));
    }
    let st = s.write_to(4, k4, a4, 64, 0x52)?;
    let state = s.t.state(&mut s.v, 4)?;
    let gone = (st == WcStatus::RemAccessErr || (o.lossy && st == WcStatus::RetryExcErr))
        && state == IBV_QPS_ERR;
    if !gone {
        return Err(WindowsError::Check(format!(
            "QP 4's type 2 window after a SEND_WITH_INV on QP 2: {st:?}, rxe's QP 4 in state {state}: the finding that rxe invalidates a window bound on another QP no longer holds"
        )));
    }
    by_timeout += u32::from(st == WcStatus::RetryExcErr);
    s.findings.push("rxe invalidates a type 2 window named by a SEND_WITH_INV that arrives on another QP than the one the window is bound on; vhca refuses it".into());
    s.check(true, format!("a SEND_WITH_INV on QP 2 invalidated QP 4's type 2 window at rxe ({st:?} through it afterwards)"))?;

    // Rebinding the type 1 window gives it a new key byte; the old key grants nothing.
    let (k1b, a1b) = s.t.bind(&mut s.v, 1, 2, 0x6000, WIN)?;
    s.check(
        k1b.index() == k1.index() && k1b != k1 && a1b == tb + 0x6000,
        format!("rxe rebound its type 1 window: {:#x} -> {:#x}", k1.0, k1b.0),
    )?;
    let st = s.write_to(2, k1b, a1b, WIN as u32, 0x41)?;
    let held = s.t.holds(&mut s.v, 0x6000, WIN, 0x41)?;
    s.check(
        st == WcStatus::Success && held,
        format!("WRITE through the rebound type 1 window: {st:?}, landed {held}"),
    )?;
    s.refused(
        2,
        k1,
        a1,
        "a WRITE under the type 1 window's key from before the rebind",
        o.lossy,
        &mut by_timeout,
    )?;
    let held = s.t.holds(&mut s.v, 0, 64, 0x12)?;
    s.check(held, "nothing landed under the old key")?;

    s.into_report(Role::Responder, by_timeout)
}
