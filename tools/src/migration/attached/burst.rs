//! The traffic of `vhca migrate-attached`: each side's objects, and the bursts of every RC
//! opcode in both directions on every QP, posted, collected and checked byte for byte.

use super::*;

/// WRs each side posts per QP and burst: SEND, SEND_WITH_IMM, WRITE, WRITE_WITH_IMM, READ,
/// FETCH_ADD, CMP_SWAP.
pub(super) const SENDS: u64 = 7;
/// Receives each side posts per QP and burst: for the SEND, the SEND_WITH_IMM and the
/// WRITE_WITH_IMM of the other side.
pub(super) const RECVS: u64 = 3;

/// One side's objects: one PD, CQ and MR; QP `i` uses the `i`-th slice of the buffer.
pub(super) struct Side {
    pub(super) cq: CqHandle,
    pub(super) qpns: Vec<Qpn>,
    pub(super) buf: u64,
    pub(super) key: MemKey,
    pub(super) slice: u64,
    pub(super) size: u32,
}

/// Offsets inside a QP's slice.
impl Side {
    pub(super) fn base(&self, qp: usize) -> u64 {
        self.buf + qp as u64 * self.slice
    }
    /// What this side sends (and what the other side READs).
    pub(super) fn src(&self, qp: usize) -> u64 {
        self.base(qp)
    }
    /// Landing places of the other side's SEND, SEND_WITH_IMM, WRITE, WRITE_WITH_IMM.
    pub(super) fn landing(&self, qp: usize, k: u64) -> u64 {
        self.base(qp) + (1 + k) * u64::from(self.size)
    }
    /// Where this side's READ puts the other side's data.
    pub(super) fn read_back(&self, qp: usize) -> u64 {
        self.base(qp) + 5 * u64::from(self.size)
    }
    /// The word the other side's atomics work on (8-byte aligned, as atomics require).
    pub(super) fn atomic_word(&self, qp: usize) -> u64 {
        self.base(qp) + atomics_at(self.size)
    }
    /// Where this side's FETCH_ADD and CMP_SWAP return the old value.
    pub(super) fn atomic_result(&self, qp: usize, k: u64) -> u64 {
        self.atomic_word(qp) + 8 * (1 + k)
    }
}

/// Offset of the atomic word in a QP's slice: after six messages, 8-byte aligned.
pub(super) fn atomics_at(size: u32) -> u64 {
    (6 * u64::from(size)).next_multiple_of(8)
}

/// A QP's slice: six messages, the atomic word and the two atomic results; slices start
/// 64-byte aligned.
pub(super) fn slice_len(size: u32) -> u64 {
    (atomics_at(size) + 24).next_multiple_of(64)
}

/// Guest RAM for `qps` QPs: the buffer, each QP's rings (≤ 4 KiB apiece at depth 16) and the
/// CQ, plus the driver's own areas.
pub(super) fn guest_ram(qps: u32, size: u32) -> u64 {
    let buf = u64::from(qps) * slice_len(size);
    let rings = u64::from(qps) * 16 * 1024;
    (buf + rings + (16 << 20)).next_multiple_of(1 << 20)
}

pub(super) fn setup(g: &mut GuestContext, o: &Options) -> Result<Side, AttachedError> {
    let size = o.msg_size;
    let slice = slice_len(size);
    let len = slice * u64::from(o.qps);
    let pd = g.alloc_pd().ctx("ALLOC_PD")?;
    let depth = (SENDS + RECVS) as u32 * o.qps + 64;
    let cq = g.create_cq(depth).ctx("CREATE_CQ")?;
    let buf = g.alloc_buf(len).ctx("guest buffer")?;
    let key = g.reg_mr(pd, buf, len, FULL_ACCESS).ctx("REG_MR")?;
    let mut qpns = Vec::with_capacity(o.qps as usize);
    for _ in 0..o.qps {
        let qpn = g
            .create_qp(QpInitAttr {
                qp_type: QpType::Rc,
                pd,
                send_cq: cq,
                recv_cq: cq,
                srq: None,
                cap: QpCap {
                    max_send_wr: 16,
                    max_recv_wr: 16,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: 0,
                },
                sq_sig_all: true,
            })
            .ctx("CREATE_QP")?;
        qpns.push(qpn);
    }
    Ok(Side {
        cq,
        qpns,
        buf,
        key,
        slice,
        size,
    })
}

/// INIT → RTR → RTS against the peer's QP, with the given ACK timeout: the peer's requests
/// wait out the blackout on its retransmit timer and retries (7 of them), so the timeout
/// must make them outlast it.
pub(super) fn connect(
    g: &mut GuestContext,
    qpn: Qpn,
    peer: (Qpn, Psn),
    my_psn: Psn,
    gid: vhca_device::Gid,
    o: &Options,
) -> Result<(), AttachedError> {
    let peer = PeerInfo {
        qpn: peer.0,
        psn: peer.1,
        gid,
    };
    let path = RcPath {
        mtu: o.mtu,
        timeout: o.qp_timeout,
        hop_limit: 64,
        ..RcPath::default()
    };
    rc_connect_qp(g, qpn, my_psn, peer, path).ctx("connecting a QP")
}

/// Starting PSNs: spread over the space, some near the wrap.
pub(super) fn psn(qp: usize, side: u32) -> Psn {
    Psn(((qp as u32).wrapping_mul(0x9e37) ^ (side * 0x5a5a5)).wrapping_sub(8) & 0xff_ffff)
}

/// The bytes side `dir` (0: the migrating VF, 1: the peer) sends on QP `qp` in burst `burst`.
pub(super) fn pattern(burst: u32, qp: usize, dir: u32, size: u32) -> Vec<u8> {
    (0..size)
        .map(|j| {
            let x = j
                .wrapping_mul(31)
                .wrapping_add(burst.wrapping_mul(131))
                .wrapping_add((qp as u32).wrapping_mul(7))
                .wrapping_add(dir * 57);
            (x ^ (x >> 8)) as u8
        })
        .collect()
}

/// The atomic word's value before a burst, what FETCH_ADD adds, what CMP_SWAP swaps in.
pub(super) fn atomics(burst: u32, qp: usize, dir: u32) -> (u64, u64, u64) {
    let start = (u64::from(dir) + 1) << 48 | u64::from(burst) << 16 | qp as u64;
    (start, 3 + qp as u64, !start)
}

pub(super) fn imm(burst: u32, qp: usize, dir: u32, k: u32) -> u32 {
    (burst << 20) ^ ((qp as u32) << 4) ^ (dir << 2) ^ k
}

pub(super) fn wr_id(burst: u32, qp: usize, k: u64) -> u64 {
    u64::from(burst) << 40 | (qp as u64) << 8 | k
}

/// The order QP `qp` posts its WRs in (by index into the burst: 0 SEND … 6 CMP_SWAP). Each
/// QP starts at another opcode (FETCH_ADD and CMP_SWAP stay together and in that order: the
/// swap compares with the add's result): the last WRs of a send queue are the ones most likely
/// still in flight at the stop, and so every opcode is last on some QP.
pub(super) fn send_order(qp: usize) -> Vec<u64> {
    let units: [&[u64]; 6] = [&[0], &[1], &[2], &[3], &[4], &[5, 6]];
    (0..units.len())
        .flat_map(|i| units[(qp + i) % units.len()].iter().copied())
        .collect()
}

/// The order QP `qp` posts its receives in (0: for the SEND, 1: the SEND_WITH_IMM, 2: the
/// WRITE_WITH_IMM): the order the other side sends those in, since a QP's receives are
/// consumed in order.
pub(super) fn recv_order(qp: usize) -> Vec<u64> {
    send_order(qp)
        .into_iter()
        .filter_map(|k| match k {
            0 => Some(0),
            1 => Some(1),
            3 => Some(2),
            _ => None,
        })
        .collect()
}

/// Writes this burst's data and atomic words on both sides, then posts every receive, then
/// every WR of every opcode in both directions on every QP; does not wait.
pub(super) fn post_burst(
    a: &mut GuestContext,
    sa: &Side,
    b: &mut GuestContext,
    sb: &Side,
    burst: u32,
) -> Result<(), AttachedError> {
    let size = sa.size;
    for (g, me, dir) in [(&mut *a, sa, 0u32), (&mut *b, sb, 1)] {
        for qp in 0..me.qpns.len() {
            g.write_buf(me.src(qp), &pattern(burst, qp, dir, size))
                .ctx("writing the data")?;
            // This side's word is the other side's target.
            let (start, _, _) = atomics(burst, qp, 1 - dir);
            g.write_buf(me.atomic_word(qp), &start.to_le_bytes())
                .ctx("writing the atomic word")?;
        }
    }
    // Receives first, one doorbell per queue, taken by the device before any send is rung:
    // the sends then find their receives, and no doorbell buffer is still queued when the
    // sends' doorbells go out (a full doorbell queue would make the driver wait).
    for (g, me) in [(&mut *a, sa), (&mut *b, sb)] {
        g.hold_doorbells();
        for (qp, &qpn) in me.qpns.iter().enumerate() {
            for k in recv_order(qp) {
                // The WRITE_WITH_IMM's receive takes no data: the payload goes where the RETH
                // says.
                let sgl = if k < 2 {
                    vec![Sge {
                        addr: me.landing(qp, k),
                        len: size,
                        lkey: me.key,
                    }]
                } else {
                    vec![]
                };
                g.post_recv(
                    qpn,
                    RecvWr {
                        wr_id: wr_id(burst, qp, 8 + k),
                        sgl,
                    },
                )
                .ctx("POST_RECV")?;
            }
        }
    }
    for g in [&mut *a, &mut *b] {
        g.ring_held_doorbells().ctx("doorbells")?;
        g.driver_mut().flush_doorbells().ctx("doorbells taken")?;
    }
    // Every WR's doorbell is held until all are written: the device then starts them all at
    // once, rather than keeping pace with the posting (and finishing before the stop).
    a.hold_doorbells();
    b.hold_doorbells();
    for (g, me, other, dir) in [(&mut *a, sa, sb, 0u32), (&mut *b, sb, sa, 1)] {
        for (qp, &qpn) in me.qpns.iter().enumerate() {
            let (start, add, swap) = atomics(burst, qp, dir);
            let data = Sge {
                addr: me.src(qp),
                len: size,
                lkey: me.key,
            };
            let result = |k| Sge {
                addr: me.atomic_result(qp, k),
                len: 8,
                lkey: me.key,
            };
            let (rkey, word) = (other.key, other.atomic_word(qp));
            let wrs = [
                SendWr::new(wr_id(burst, qp, 0), SendOp::Send).sge(data),
                SendWr::new(
                    wr_id(burst, qp, 1),
                    SendOp::SendWithImm {
                        imm: imm(burst, qp, dir, 1),
                    },
                )
                .sge(data),
                SendWr::new(
                    wr_id(burst, qp, 2),
                    SendOp::Write {
                        remote_addr: other.landing(qp, 2),
                        rkey,
                    },
                )
                .sge(data),
                SendWr::new(
                    wr_id(burst, qp, 3),
                    SendOp::WriteWithImm {
                        remote_addr: other.landing(qp, 3),
                        rkey,
                        imm: imm(burst, qp, dir, 3),
                    },
                )
                .sge(data),
                SendWr::new(
                    wr_id(burst, qp, 4),
                    SendOp::Read {
                        remote_addr: other.src(qp),
                        rkey,
                    },
                )
                .sge(Sge {
                    addr: me.read_back(qp),
                    len: size,
                    lkey: me.key,
                }),
                SendWr::new(
                    wr_id(burst, qp, 5),
                    SendOp::FetchAdd {
                        remote_addr: word,
                        rkey,
                        add,
                    },
                )
                .sge(result(0)),
                SendWr::new(
                    wr_id(burst, qp, 6),
                    SendOp::CmpSwap {
                        remote_addr: word,
                        rkey,
                        compare: start + add,
                        swap,
                    },
                )
                .sge(result(1)),
            ];
            for k in send_order(qp) {
                g.post_send(qpn, &wrs[k as usize]).ctx("POST_SEND")?;
            }
        }
    }
    a.ring_held_doorbells().ctx("doorbells")?;
    b.ring_held_doorbells().ctx("doorbells")
}

/// What a completion of WR `k` must look like.
pub(super) fn expected(
    k: u64,
    size: u32,
    imm_of: impl Fn(u32) -> u32,
) -> (WcOpcode, Option<u32>, u32) {
    match k {
        0 | 1 => (WcOpcode::Send, None, size),
        2 | 3 => (WcOpcode::RdmaWrite, None, size),
        4 => (WcOpcode::RdmaRead, None, size),
        5 => (WcOpcode::FetchAdd, None, 8),
        6 => (WcOpcode::CmpSwap, None, 8),
        8 => (WcOpcode::Recv, None, size),
        9 => (WcOpcode::Recv, Some(imm_of(1)), size),
        _ => (WcOpcode::RecvRdmaWithImm, Some(imm_of(3)), size),
    }
}

/// Polls until every WR of `burst` on this side completed; each must be there exactly once,
/// successful and as posted.
pub(super) fn collect(
    g: &mut GuestContext,
    me: &Side,
    dir: u32,
    burst: u32,
) -> Result<(), AttachedError> {
    let mut got: Vec<WorkCompletion> = Vec::new();
    let want = (SENDS + RECVS) as usize * me.qpns.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < want {
        let before = got.len();
        g.poll_cq(me.cq, want - got.len(), &mut got)
            .ctx("POLL_CQ")?;
        if got.len() == before {
            if Instant::now() > deadline {
                return Err(AttachedError::Check(format!(
                    "side {dir}, burst {burst}: {} of {want} completions after 120 s",
                    got.len()
                )));
            }
            std::thread::yield_now();
        }
    }
    let index: HashMap<Qpn, usize> = me.qpns.iter().enumerate().map(|(i, q)| (*q, i)).collect();
    let mut seen = std::collections::HashSet::new();
    for wc in &got {
        if wc.status != WcStatus::Success {
            return Err(AttachedError::Check(format!(
                "side {dir}: an error completion: {wc:?}"
            )));
        }
        let (b, qp, k) = (
            (wc.wr_id >> 40) as u32,
            ((wc.wr_id >> 8) & 0xffff_ffff) as usize,
            wc.wr_id & 0xff,
        );
        if b != burst || index.get(&wc.qpn) != Some(&qp) || !seen.insert(wc.wr_id) {
            return Err(AttachedError::Check(format!(
                "side {dir}, burst {burst}: unexpected or duplicate completion {wc:?}"
            )));
        }
        // The immediates come from the other side.
        let (op, imm_want, len) = expected(k, me.size, |kk| imm(burst, qp, 1 - dir, kk));
        let len_ok = k < 8 || wc.byte_len == len;
        if wc.opcode != op || (k >= 8 && wc.imm != imm_want) || !len_ok {
            return Err(AttachedError::Check(format!(
                "side {dir}: completion {wc:?} is not what WR {k} of QP {qp} should give"
            )));
        }
    }
    Ok(())
}

/// Compares every byte this side received, read back and got from its atomics in `burst`.
pub(super) fn verify_data(
    g: &mut GuestContext,
    me: &Side,
    dir: u32,
    burst: u32,
) -> Result<(), AttachedError> {
    let size = me.size as usize;
    for qp in 0..me.qpns.len() {
        let theirs = pattern(burst, qp, 1 - dir, me.size);
        for (k, what) in [
            (0, "SEND"),
            (1, "SEND_WITH_IMM"),
            (2, "WRITE"),
            (3, "WRITE_WITH_IMM"),
        ] {
            let got = g.read_buf(me.landing(qp, k), size).ctx("read")?;
            if got != theirs {
                return Err(AttachedError::Check(format!(
                    "side {dir}, QP {qp}: the {what} data differs"
                )));
            }
        }
        if g.read_buf(me.read_back(qp), size).ctx("read")? != theirs {
            return Err(AttachedError::Check(format!(
                "side {dir}, QP {qp}: the READ returned other data"
            )));
        }
        let word = |g: &mut GuestContext, at| -> Result<u64, AttachedError> {
            let b = g.read_buf(at, 8).ctx("read")?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        // My atomics on the other side's word: FETCH_ADD saw the start, CMP_SWAP saw
        // start + add — an atomic executed twice would show here.
        let (start, add, _) = atomics(burst, qp, dir);
        let (fa, cs) = (
            word(g, me.atomic_result(qp, 0))?,
            word(g, me.atomic_result(qp, 1))?,
        );
        if fa != start || cs != start + add {
            return Err(AttachedError::Check(format!(
                "side {dir}, QP {qp}: FETCH_ADD returned {fa:#x} (want {start:#x}), CMP_SWAP {cs:#x} (want {:#x})",
                start + add
            )));
        }
        // The other side's atomics on my word: swapped exactly once.
        let (_, _, swapped) = atomics(burst, qp, 1 - dir);
        let w = word(g, me.atomic_word(qp))?;
        if w != swapped {
            return Err(AttachedError::Check(format!(
                "side {dir}, QP {qp}: the atomic word is {w:#x}, want {swapped:#x}"
            )));
        }
    }
    Ok(())
}

/// A whole burst: post, wait for every completion on both sides, compare every byte.
pub(super) fn burst(
    a: &mut GuestContext,
    sa: &Side,
    b: &mut GuestContext,
    sb: &Side,
    n: u32,
) -> Result<(), AttachedError> {
    post_burst(a, sa, b, sb, n)?;
    collect(a, sa, 0, n)?;
    collect(b, sb, 1, n)?;
    verify_data(a, sa, 0, n)?;
    verify_data(b, sb, 1, n)
}
