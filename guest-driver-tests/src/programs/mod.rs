//! Verbs programs written once against [`Verbs`]: they run on in-process VFs now and on VFs
//! behind vhost-user sockets through the guest driver, unchanged.
//!
//! They read like their libibverbs counterparts (`ibv_rc_pingpong`): open, allocate a PD,
//! register a buffer, create a CQ and a QP, exchange QPN/PSN/GID out of band, move the QP to
//! RTS, post and poll.

pub mod windows;

use vhca_device::{
    Access, AhAttr, CqHandle, Gid, MemKey, Mtu, PdHandle, Psn, QpAttr, QpAttrMask as M, QpCap,
    QpInitAttr, QpState, QpType, Qpn, RecvWr, SendFlags, SendOp, SendWr, Sge, UdDest, Verbs,
    VerbsError, VerbsResult, WcOpcode, WcStatus, WorkCompletion,
};

mod opcodes;

pub use opcodes::{rc_every_opcode, rc_invalidate, rc_placement};

/// What two sides exchange out of band before connecting (the 52-byte message of
/// `ibv_rc_pingpong`, as values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub qpn: Qpn,
    pub psn: Psn,
    pub gid: Gid,
}

/// One side's objects: PD, CQ, QP and a registered buffer.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub pd: PdHandle,
    pub cq: CqHandle,
    pub qpn: Qpn,
    pub buf: u64,
    pub len: u64,
    pub key: MemKey,
    pub psn: Psn,
}

impl Endpoint {
    pub fn info(&self, v: &impl Verbs) -> PeerInfo {
        PeerInfo {
            qpn: self.qpn,
            psn: self.psn,
            gid: v.gid(),
        }
    }
}

pub const FULL_ACCESS: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ)
    .union(Access::REMOTE_ATOMIC);

/// Creates the objects of one RC side with a `len`-byte buffer.
pub fn rc_endpoint<V: Verbs>(v: &mut V, len: u64, depth: u32, psn: Psn) -> VerbsResult<Endpoint> {
    let pd = v.alloc_pd()?;
    let cq = v.create_cq(depth * 2 + 16)?;
    let qpn = v.create_qp(QpInitAttr {
        qp_type: QpType::Rc,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap {
            max_send_wr: depth,
            max_recv_wr: depth,
            max_send_sge: 4,
            max_recv_sge: 4,
            max_inline_data: 64,
        },
        sq_sig_all: false,
    })?;
    let buf = v.alloc_buf(len)?;
    let key = v.reg_mr(pd, buf, len, FULL_ACCESS)?;
    Ok(Endpoint {
        pd,
        cq,
        qpn,
        buf,
        len,
        key,
        psn,
    })
}

/// An RC endpoint on each side (`len`-byte buffers, `depth` WQEs, starting PSNs `psns`),
/// connected to each other at `mtu`: the set-up every two-sided program starts from.
pub fn rc_pair<A: Verbs, B: Verbs>(
    a: &mut A,
    b: &mut B,
    len: u64,
    depth: u32,
    psns: (Psn, Psn),
    mtu: Mtu,
) -> VerbsResult<(Endpoint, Endpoint)> {
    let ea = rc_endpoint(a, len, depth, psns.0)?;
    let eb = rc_endpoint(b, len, depth, psns.1)?;
    let (ia, ib) = (ea.info(a), eb.info(b));
    rc_connect(a, &ea, ib, mtu)?;
    rc_connect(b, &eb, ia, mtu)?;
    Ok((ea, eb))
}

/// RESET → INIT → RTR → RTS against `peer`, with `ibv_rc_pingpong`'s attributes.
pub fn rc_connect<V: Verbs>(v: &mut V, me: &Endpoint, peer: PeerInfo, mtu: Mtu) -> VerbsResult<()> {
    let path = RcPath {
        mtu,
        ..RcPath::default()
    };
    rc_connect_qp(v, me.qpn, me.psn, peer, path)
}

/// What differs between the programs' RC connections (rdma-core's and perftest's tools each
/// set their own).
#[derive(Clone, Copy, Debug)]
pub struct RcPath {
    pub mtu: Mtu,
    /// ACK timeout exponent: 4.096 µs × 2^timeout, 7 retries.
    pub timeout: u8,
    pub hop_limit: u8,
    /// READs/atomics this QP answers at once (`max_dest_rd_atomic`).
    pub dest_rd_atomic: u8,
    /// READs/atomics this QP keeps outstanding (`max_rd_atomic`).
    pub rd_atomic: u8,
}

impl Default for RcPath {
    /// `ibv_rc_pingpong`'s timeout and hop limit, 16 READs/atomics each way.
    fn default() -> RcPath {
        RcPath {
            mtu: Mtu::Mtu1024,
            timeout: 14,
            hop_limit: 1,
            dest_rd_atomic: 16,
            rd_atomic: 16,
        }
    }
}

/// RESET → INIT → RTR → RTS of QP `qpn` (sending from `my_psn`) against `peer`: full remote
/// access, then [`rc_rtr_rts`].
pub fn rc_connect_qp<V: Verbs>(
    v: &mut V,
    qpn: Qpn,
    my_psn: Psn,
    peer: PeerInfo,
    path: RcPath,
) -> VerbsResult<()> {
    let a = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        qp_access_flags: FULL_ACCESS,
        ..QpAttr::default()
    };
    v.modify_qp(
        qpn,
        &a,
        M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS,
    )?;
    rc_rtr_rts(v, qpn, my_psn, peer, path)
}

/// INIT → RTR → RTS of QP `qpn` (sending from `my_psn`) against `peer`: RNR and retry counts
/// of 7, the rest from `path`.
pub fn rc_rtr_rts<V: Verbs>(
    v: &mut V,
    qpn: Qpn,
    my_psn: Psn,
    peer: PeerInfo,
    path: RcPath,
) -> VerbsResult<()> {
    let mut a = QpAttr {
        qp_state: QpState::Rtr,
        ..QpAttr::default()
    };
    a.path_mtu = path.mtu;
    a.dest_qp_num = peer.qpn;
    a.rq_psn = peer.psn;
    a.max_dest_rd_atomic = path.dest_rd_atomic;
    a.min_rnr_timer = 12;
    a.ah_attr = AhAttr {
        dgid: peer.gid,
        hop_limit: path.hop_limit,
        ..AhAttr::default()
    };
    v.modify_qp(
        qpn,
        &a,
        M::STATE
            | M::AV
            | M::PATH_MTU
            | M::DEST_QPN
            | M::RQ_PSN
            | M::MAX_DEST_RD_ATOMIC
            | M::MIN_RNR_TIMER,
    )?;
    a.qp_state = QpState::Rts;
    a.timeout = path.timeout;
    a.retry_cnt = 7;
    a.rnr_retry = 7;
    a.sq_psn = my_psn;
    a.max_rd_atomic = path.rd_atomic;
    v.modify_qp(
        qpn,
        &a,
        M::STATE | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::SQ_PSN | M::MAX_QP_RD_ATOMIC,
    )
}

/// How long [`wait`] waits for completions at most, however many polls that takes.
pub const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The shortest stretch of empty polls [`wait`] gives up after. Counting polls alone is not
/// enough: a busy-polling context (`PollMode::Spin`) does 100,000 empty polls in a few
/// milliseconds, less than one scheduler time slice of a device process on a loaded machine.
pub const IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls until `n` completions arrived, or `max_polls` polls in a row found nothing over at
/// least [`IDLE_LIMIT`], or [`WAIT_LIMIT`] passed.
pub fn wait<V: Verbs>(
    v: &mut V,
    cq: CqHandle,
    n: usize,
    max_polls: usize,
) -> VerbsResult<Vec<WorkCompletion>> {
    let deadline = std::time::Instant::now() + WAIT_LIMIT;
    let mut got = Vec::new();
    let mut idle = 0;
    let mut idle_since = None;
    while got.len() < n {
        if v.poll_cq(cq, n - got.len(), &mut got)? == 0 {
            idle += 1;
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            let gave_up = idle > max_polls && since.elapsed() >= IDLE_LIMIT;
            if gave_up || std::time::Instant::now() > deadline {
                return Err(VerbsError::Invalid("completions did not arrive"));
            }
        } else {
            idle = 0;
            idle_since = None;
        }
    }
    Ok(got)
}

pub(crate) fn expect_ok(wcs: &[WorkCompletion]) -> VerbsResult<()> {
    match wcs.iter().find(|w| w.status != WcStatus::Success) {
        Some(w) => {
            tracing::warn!(?w, "work completion failed");
            Err(VerbsError::Invalid("a work completion failed"))
        }
        None => Ok(()),
    }
}

/// `ibv_rc_pingpong`'s data phase between two contexts: `iters` round trips of `size` bytes;
/// every received message is checked byte for byte. Returns the bytes moved.
pub fn rc_pingpong<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
    size: u32,
    iters: u32,
) -> VerbsResult<u64> {
    let half = ea.len.min(eb.len) / 2;
    if size as u64 > half {
        return Err(VerbsError::Invalid("size larger than half the buffer"));
    }
    let recv = |e: &Endpoint| RecvWr {
        wr_id: 2,
        sgl: vec![Sge {
            addr: e.buf + half,
            len: size.max(1),
            lkey: e.key,
        }],
    };
    let send = |e: &Endpoint| {
        SendWr::new(1, SendOp::Send)
            .flags(SendFlags::SIGNALED)
            .sge(Sge {
                addr: e.buf,
                len: size,
                lkey: e.key,
            })
    };
    for i in 0..iters {
        // a → b
        let msg: Vec<u8> = (0..size).map(|j| (i as u8).wrapping_add(j as u8)).collect();
        a.write_buf(ea.buf, &msg)?;
        b.post_recv(eb.qpn, recv(eb))?;
        a.post_send(ea.qpn, &send(ea))?;
        let wb = wait(b, eb.cq, 1, 100_000)?;
        expect_ok(&wb)?;
        if wb[0].opcode != WcOpcode::Recv
            || wb[0].byte_len != size
            || b.read_buf(eb.buf + half, size as usize)? != msg
        {
            return Err(VerbsError::Invalid("ping arrived wrong"));
        }
        expect_ok(&wait(a, ea.cq, 1, 100_000)?)?;
        // b → a
        let reply: Vec<u8> = msg.iter().map(|x| !x).collect();
        b.write_buf(eb.buf, &reply)?;
        a.post_recv(ea.qpn, recv(ea))?;
        b.post_send(eb.qpn, &send(eb))?;
        let wa = wait(a, ea.cq, 1, 100_000)?;
        expect_ok(&wa)?;
        if wa[0].byte_len != size || a.read_buf(ea.buf + half, size as usize)? != reply {
            return Err(VerbsError::Invalid("pong arrived wrong"));
        }
        expect_ok(&wait(b, eb.cq, 1, 100_000)?)?;
    }
    Ok(2 * size as u64 * iters as u64)
}

/// One UD side: PD, CQ, UD QP in RTS with `qkey`, a registered buffer.
pub fn ud_endpoint<V: Verbs>(v: &mut V, len: u64, qkey: u32) -> VerbsResult<Endpoint> {
    let pd = v.alloc_pd()?;
    let cq = v.create_cq(64)?;
    let qpn = v.create_qp(QpInitAttr {
        qp_type: QpType::Ud,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap {
            max_send_wr: 16,
            max_recv_wr: 16,
            max_send_sge: 2,
            max_recv_sge: 2,
            max_inline_data: 64,
        },
        sq_sig_all: true,
    })?;
    let mut a = QpAttr {
        qp_state: QpState::Init,
        qkey,
        port_num: 1,
        ..QpAttr::default()
    };
    v.modify_qp(qpn, &a, M::STATE | M::PKEY_INDEX | M::PORT | M::QKEY)?;
    a.qp_state = QpState::Rtr;
    v.modify_qp(qpn, &a, M::STATE)?;
    a.qp_state = QpState::Rts;
    a.sq_psn = Psn(0x321);
    v.modify_qp(qpn, &a, M::STATE | M::SQ_PSN)?;
    let buf = v.alloc_buf(len)?;
    let key = v.reg_mr(pd, buf, len, Access::LOCAL_WRITE)?;
    Ok(Endpoint {
        pd,
        cq,
        qpn,
        buf,
        len,
        key,
        psn: Psn(0x321),
    })
}

/// Bytes of the GRH a UD receive buffer gets before the payload.
pub const GRH_LEN: u32 = 40;

/// A UD datagram of `size` bytes from `a` to `b` and a SEND_WITH_IMM reply; checks payload,
/// GRH, source QP and source GID on both sides.
pub fn ud_exchange<A: Verbs, B: Verbs>(a: &mut A, b: &mut B, size: u32) -> VerbsResult<()> {
    let qkey = 0x1111_2222;
    let room = size.max(64) + GRH_LEN;
    let len = 2 * room as u64 + 4096;
    let ea = ud_endpoint(a, len, qkey)?;
    let eb = ud_endpoint(b, len, qkey)?;
    let (ga, gb) = (a.gid(), b.gid());
    let to_b = a.create_ah(
        ea.pd,
        AhAttr {
            dgid: gb,
            hop_limit: 64,
            ..AhAttr::default()
        },
    )?;
    let to_a = b.create_ah(
        eb.pd,
        AhAttr {
            dgid: ga,
            hop_limit: 64,
            ..AhAttr::default()
        },
    )?;
    let rbuf = |e: &Endpoint| Sge {
        addr: e.buf + len / 2,
        len: room,
        lkey: e.key,
    };
    let msg: Vec<u8> = (0..size).map(|i| (i * 3 + 1) as u8).collect();
    a.write_buf(ea.buf, &msg)?;
    b.post_recv(
        eb.qpn,
        RecvWr {
            wr_id: 40,
            sgl: vec![rbuf(&eb)],
        },
    )?;
    a.post_send(
        ea.qpn,
        &SendWr::new(41, SendOp::Send)
            .sge(Sge {
                addr: ea.buf,
                len: size,
                lkey: ea.key,
            })
            .ud(UdDest {
                ah: to_b,
                remote_qpn: eb.qpn,
                remote_qkey: qkey,
            }),
    )?;
    expect_ok(&wait(a, ea.cq, 1, 1_000_000)?)?;
    let wb = wait(b, eb.cq, 1, 1_000_000)?;
    expect_ok(&wb)?;
    let got = b.read_buf(eb.buf + len / 2, (size + GRH_LEN) as usize)?;
    if wb[0].byte_len != size + GRH_LEN
        || !wb[0].grh
        || wb[0].src_qp != ea.qpn
        || wb[0].src_gid != ga
        || got[GRH_LEN as usize..] != msg[..]
        || got[8..24] != ga.0
    {
        return Err(VerbsError::Invalid("UD datagram arrived wrong"));
    }
    // The reply, with immediate data, inline.
    a.post_recv(
        ea.qpn,
        RecvWr {
            wr_id: 42,
            sgl: vec![rbuf(&ea)],
        },
    )?;
    let reply = b"ud reply";
    b.post_send(
        eb.qpn,
        &SendWr::new(43, SendOp::SendWithImm { imm: 0xabcd })
            .inline(reply)
            .ud(UdDest {
                ah: to_a,
                remote_qpn: ea.qpn,
                remote_qkey: qkey,
            }),
    )?;
    expect_ok(&wait(b, eb.cq, 1, 1_000_000)?)?;
    let wa = wait(a, ea.cq, 1, 1_000_000)?;
    expect_ok(&wa)?;
    let got = a.read_buf(ea.buf + len / 2 + GRH_LEN as u64, reply.len())?;
    if wa[0].imm != Some(0xabcd) || wa[0].src_qp != eb.qpn || got != reply {
        return Err(VerbsError::Invalid("UD reply arrived wrong"));
    }
    Ok(())
}
