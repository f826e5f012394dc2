//! Many connected RC QPs between two contexts: the scale case of migration (issue 5).
//!
//! Each side has one PD, one CQ and one registered buffer shared by all its QPs, so the state
//! a QP adds is its own (an idle QP's cost is what the ≤ 512-byte target is about). The buffer
//! holds a send slot and a receive slot per QP. Traffic is one SEND per QP in each direction,
//! posted for a whole batch of QPs before any is polled, every message checked byte for byte
//! and every completion matched to its QP.

use crate::programs::{rc_connect, Endpoint, FULL_ACCESS};
use std::time::Instant;
use vhca_device::{
    CqHandle, MemKey, Mtu, PdHandle, Psn, QpCap, QpInitAttr, QpType, Qpn, RecvWr, SendFlags,
    SendOp, SendWr, Sge, Verbs, VerbsError, VerbsResult, WcOpcode, WcStatus, WorkCompletion,
};

/// QPs whose messages are posted before the first completion is polled: bounds the CQ.
pub const BATCH: usize = 1024;

/// One side's QPs and the objects they share.
#[derive(Clone, Debug)]
pub struct QpSet {
    pub pd: PdHandle,
    pub cq: CqHandle,
    pub qpns: Vec<Qpn>,
    pub psns: Vec<Psn>,
    pub buf: u64,
    pub key: MemKey,
    /// Bytes per QP in each half of the buffer (the largest message).
    pub slot: u32,
}

impl QpSet {
    fn send_slot(&self, i: usize) -> u64 {
        self.buf + i as u64 * u64::from(self.slot)
    }

    fn recv_slot(&self, i: usize) -> u64 {
        self.buf + (self.qpns.len() + i) as u64 * u64::from(self.slot)
    }

    /// QP `i` as an [`Endpoint`] (for the two-QP programs and `rc_connect`).
    pub fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint {
            pd: self.pd,
            cq: self.cq,
            qpn: self.qpns[i],
            buf: self.buf,
            len: 2 * self.qpns.len() as u64 * u64::from(self.slot),
            key: self.key,
            psn: self.psns[i],
        }
    }
}

/// Guest RAM a side of `n` QPs with `slot`-byte slots needs beyond the driver's own: two
/// pages of rings per QP (each ring is page-aligned), the CQ ring, the buffer.
pub fn ram_needed(n: usize, slot: u32) -> u64 {
    let rings = n as u64 * 2 * 4096;
    let cq = (2 * BATCH as u64 + 16).next_power_of_two() * 64;
    let buf = 2 * n as u64 * u64::from(slot);
    rings + cq + buf
}

/// The starting PSN of QP `i` on side `side`: spread over the 24-bit space, a few near the
/// wrap.
fn psn_of(i: usize, side: u32) -> Psn {
    Psn((i as u32)
        .wrapping_mul(0x9e37_79b1)
        .wrapping_add(side * 0x55_5555)
        & 0xff_ffff)
}

fn one_side<V: Verbs>(v: &mut V, n: usize, slot: u32, side: u32) -> VerbsResult<QpSet> {
    let pd = v.alloc_pd()?;
    let cq = v.create_cq(2 * BATCH.min(n) as u32 + 16)?;
    let buf = v.alloc_buf(2 * n as u64 * u64::from(slot))?;
    let key = v.reg_mr(pd, buf, 2 * n as u64 * u64::from(slot), FULL_ACCESS)?;
    let mut qpns = Vec::with_capacity(n);
    for _ in 0..n {
        qpns.push(v.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: QpCap {
                max_send_wr: 2,
                max_recv_wr: 2,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: false,
        })?);
    }
    Ok(QpSet {
        pd,
        cq,
        psns: (0..n).map(|i| psn_of(i, side)).collect(),
        qpns,
        buf,
        key,
        slot,
    })
}

/// `n` RC QPs on each side, QP `i` of `a` connected to QP `i` of `b` at `mtu`; messages up
/// to `slot` bytes.
pub fn rc_qp_sets<A: Verbs, B: Verbs>(
    a: &mut A,
    b: &mut B,
    n: usize,
    slot: u32,
    mtu: Mtu,
) -> VerbsResult<(QpSet, QpSet)> {
    if n == 0 || slot == 0 {
        return Err(VerbsError::Invalid("no QPs or empty slots"));
    }
    let sa = one_side(a, n, slot, 1)?;
    let sb = one_side(b, n, slot, 2)?;
    for i in 0..n {
        let (ea, eb) = (sa.endpoint(i), sb.endpoint(i));
        rc_connect(a, &ea, eb.info(b), mtu)?;
        rc_connect(b, &eb, ea.info(a), mtu)?;
    }
    Ok((sa, sb))
}

/// The message QP `i` carries in round `round`, direction `dir`.
fn message(i: usize, round: u32, dir: u8, size: u32) -> Vec<u8> {
    let seed = (i as u32).wrapping_mul(31).wrapping_add(round * 7) as u8 ^ dir;
    (0..size)
        .map(|j| seed.wrapping_add(j as u8).rotate_left(j % 7))
        .collect()
}

/// Messages posted and not yet checked: one per QP of `batch`, from `tx` to `rx`.
#[must_use = "posted messages must be completed"]
pub struct Posted {
    batch: std::ops::Range<usize>,
    round: u32,
    dir: u8,
    size: u32,
}

/// Posts a receive on `rx` and a signaled SEND of `size` bytes on `tx` for every QP of
/// `batch` (at most [`BATCH`] QPs); nothing is polled.
#[allow(clippy::too_many_arguments)]
pub fn post_batch<T: Verbs, R: Verbs>(
    tx: &mut T,
    st: &QpSet,
    rx: &mut R,
    sr: &QpSet,
    batch: std::ops::Range<usize>,
    round: u32,
    dir: u8,
    size: u32,
) -> VerbsResult<Posted> {
    if size > st.slot || size > sr.slot || batch.len() > BATCH || batch.end > st.qpns.len() {
        return Err(VerbsError::Invalid("batch does not fit the QP sets"));
    }
    let mut area = Vec::with_capacity(batch.len() * st.slot as usize);
    for i in batch.clone() {
        let mut m = message(i, round, dir, size);
        m.resize(st.slot as usize, 0);
        area.extend_from_slice(&m);
    }
    tx.write_buf(st.send_slot(batch.start), &area)?;
    for i in batch.clone() {
        rx.post_recv(
            sr.qpns[i],
            RecvWr {
                wr_id: i as u64,
                sgl: vec![Sge {
                    addr: sr.recv_slot(i),
                    len: size.max(1),
                    lkey: sr.key,
                }],
            },
        )?;
    }
    for i in batch.clone() {
        tx.post_send(
            st.qpns[i],
            &SendWr::new(i as u64, SendOp::Send)
                .flags(SendFlags::SIGNALED)
                .sge(Sge {
                    addr: st.send_slot(i),
                    len: size,
                    lkey: st.key,
                }),
        )?;
    }
    Ok(Posted {
        batch,
        round,
        dir,
        size,
    })
}

/// Polls `cq` until `n` completions arrived (up to [`crate::programs::WAIT_LIMIT`]); the time
/// the first one was seen.
fn collect<V: Verbs>(
    v: &mut V,
    cq: CqHandle,
    n: usize,
) -> VerbsResult<(Vec<WorkCompletion>, Option<Instant>)> {
    let deadline = Instant::now() + crate::programs::WAIT_LIMIT;
    let mut got = Vec::with_capacity(n);
    let mut first = None;
    while got.len() < n {
        if v.poll_cq(cq, n - got.len(), &mut got)? > 0 {
            first.get_or_insert_with(Instant::now);
        } else if Instant::now() > deadline {
            return Err(VerbsError::Invalid("completions did not arrive"));
        }
    }
    Ok((got, first))
}

/// Checks one side's completions of a batch: all successful, of the expected opcode, one per
/// QP (by wr_id and QPN).
fn check_wcs(wcs: &[WorkCompletion], s: &QpSet, p: &Posted, opcode: WcOpcode) -> VerbsResult<()> {
    let mut seen = vec![false; p.batch.len()];
    for w in wcs {
        if w.status != WcStatus::Success {
            tracing::warn!(?w, "work completion failed");
            return Err(VerbsError::Invalid("a work completion failed"));
        }
        let i = w.wr_id as usize;
        if w.opcode != opcode
            || !p.batch.contains(&i)
            || s.qpns[i] != w.qpn
            || std::mem::replace(&mut seen[i - p.batch.start], true)
            || (opcode == WcOpcode::Recv && w.byte_len != p.size)
        {
            return Err(VerbsError::Invalid("a completion does not match its QP"));
        }
    }
    Ok(())
}

impl Posted {
    /// Waits for the batch's completions on both sides and checks every message; returns
    /// when the first completion was seen.
    pub fn complete<T: Verbs, R: Verbs>(
        self,
        tx: &mut T,
        st: &QpSet,
        rx: &mut R,
        sr: &QpSet,
    ) -> VerbsResult<Instant> {
        let n = self.batch.len();
        let (wr, first_r) = collect(rx, sr.cq, n)?;
        check_wcs(&wr, sr, &self, WcOpcode::Recv)?;
        let (ws, first_s) = collect(tx, st.cq, n)?;
        check_wcs(&ws, st, &self, WcOpcode::Send)?;
        let got = rx.read_buf(sr.recv_slot(self.batch.start), n * sr.slot as usize)?;
        for (k, i) in self.batch.clone().enumerate() {
            let at = k * sr.slot as usize;
            if got[at..at + self.size as usize] != message(i, self.round, self.dir, self.size)[..] {
                return Err(VerbsError::Invalid("a message arrived wrong"));
            }
        }
        let first = match (first_r, first_s) {
            (Some(x), Some(y)) => x.min(y),
            (x, y) => x.or(y).unwrap_or_else(Instant::now),
        };
        Ok(first)
    }
}

/// One SEND of `size` bytes on every QP from `a` to `b` and one back, batch by batch, all
/// checked. Returns the bytes moved.
pub fn qp_set_traffic<A: Verbs, B: Verbs>(
    a: &mut A,
    sa: &QpSet,
    b: &mut B,
    sb: &QpSet,
    size: u32,
    round: u32,
) -> VerbsResult<u64> {
    let n = sa.qpns.len();
    let mut start = 0;
    while start < n {
        let batch = start..(start + BATCH).min(n);
        post_batch(a, sa, b, sb, batch.clone(), round, 0, size)?.complete(a, sa, b, sb)?;
        post_batch(b, sb, a, sa, batch.clone(), round, 0xff, size)?.complete(b, sb, a, sa)?;
        start = batch.end;
    }
    Ok(2 * n as u64 * u64::from(size))
}
