//! Connection set-up: the run's PD, CQ, MR and QP, its key message, RTR/RTS, receives and
//! completion polling; and the remote-address cycle of the data phases.

use super::*;

/// `INC`: the step between messages in a cycled buffer.
pub(super) fn inc(size: u32) -> u64 {
    if size > CACHE_LINE {
        (size as u64).next_multiple_of(CACHE_LINE as u64)
    } else {
        CACHE_LINE as u64
    }
}

/// Message addresses cycle through `cycle` bytes from `base` when a message fits twice.
pub(super) struct Cycler {
    pub(super) base: u64,
    pub(super) step: u64,
    pub(super) slots: u64,
}

impl Cycler {
    pub(super) fn new(base: u64, size: u32, cycle: u32) -> Cycler {
        let step = inc(size);
        let slots = if size <= cycle / 2 {
            (cycle as u64 / step).max(1)
        } else {
            1
        };
        Cycler { base, step, slots }
    }

    pub(super) fn addr(&self, n: u64) -> u64 {
        self.base + (n % self.slots) * self.step
    }
}

pub(super) struct Res {
    pub(super) send_cq: CqHandle,
    pub(super) recv_cq: CqHandle,
    /// QP 0's number (the latency tests have only it).
    pub(super) qpn: Qpn,
    /// Every QP (`-q`), QP 0 first.
    pub(super) qps: Vec<(Qpn, Psn)>,
    pub(super) buf: u64,
    /// `BUFF_SIZE` rounded to the cache line: each QP's local region, then the regions the
    /// peer targets (perftest's layout: QP i's at `buf + i × half` and `buf + (q + i) × half`).
    pub(super) half: u64,
    pub(super) key: MemKey,
}

impl Res {
    /// QP `i`'s local region (what it sends from or reads into).
    pub(super) fn local(&self, i: usize) -> u64 {
        self.buf + i as u64 * self.half
    }

    /// QP `i`'s region the peer targets (and SENDs land in).
    pub(super) fn target(&self, i: usize) -> u64 {
        self.buf + (self.qps.len() + i) as u64 * self.half
    }
}

pub(super) fn node_mem(o: &Options) -> usize {
    let region = (o.size.max(PAGE_SIZE) as usize).next_multiple_of(CACHE_LINE as usize);
    (64usize << 20).max(2 * o.qps as usize * region + 2 * o.size as usize + (16 << 20))
}

pub(super) fn create_resources<V: Endpoint>(
    node: &mut V,
    o: &Options,
    cycle: u32,
    gid: Gid,
) -> Result<Res, PerfError> {
    let q = o.qps.max(1);
    let pd = node.alloc_pd()?;
    let send_cq = node.create_cq(o.tx_depth * q + 16)?;
    let recv_cq = node.create_cq(o.rx_depth * q + 16)?;
    let half = (o.size.max(cycle) as u64).next_multiple_of(CACHE_LINE as u64);
    let buf = node.alloc_buf(2 * q as u64 * half)?;
    let key = node.reg_mr(pd, buf, 2 * q as u64 * half, o.test.mr_access())?;
    let mut qps = Vec::with_capacity(q as usize);
    for i in 0..q {
        let qpn = node.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq,
            recv_cq,
            srq: None,
            cap: QpCap {
                max_send_wr: o.tx_depth + 1,
                max_recv_wr: o.rx_depth + 1,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: o.inline_size,
            },
            sq_sig_all: false,
        })?;
        let a = QpAttr {
            qp_state: QpState::Init,
            pkey_index: 0,
            port_num: 1,
            qp_access_flags: o.test.qp_access(),
            ..QpAttr::default()
        };
        node.modify_qp(
            qpn,
            &a,
            QpAttrMask::STATE
                | QpAttrMask::PKEY_INDEX
                | QpAttrMask::PORT
                | QpAttrMask::ACCESS_FLAGS,
        )?;
        let psn = Psn::new(random_psn(gid).0 ^ i.wrapping_mul(0x9e37_79b9));
        qps.push((qpn, psn));
    }
    Ok(Res {
        send_cq,
        recv_cq,
        qpn: qps[0].0,
        qps,
        buf,
        half,
        key,
    })
}

/// Each QP's key message.
pub(super) fn my_keys(gid: Gid, r: &Res, o: &Options) -> Vec<KeyMsg> {
    r.qps
        .iter()
        .enumerate()
        .map(|(i, (qpn, psn))| KeyMsg {
            lid: 0,
            out_reads: o.out_reads as u16,
            qpn: qpn.0,
            psn: psn.0,
            // rxe gives an MR without remote access R_Key 0; send tests advertise that.
            rkey: if o.test.is_send() { 0 } else { r.key.0 },
            vaddr: r.target(i),
            gid,
            srqn: 0,
        })
        .collect()
}

/// `ctx_connect` for QP `i`: RTR with the peer's address, then RTS (perftest's bw server stops
/// at RTR; RTS changes nothing on the wire for a side that never sends a request).
pub(super) fn connect<V: Endpoint>(
    node: &mut V,
    r: &Res,
    i: usize,
    o: &Options,
    mtu: Mtu,
    rem: &KeyMsg,
) -> Result<(), PerfError> {
    let peer = PeerInfo {
        qpn: Qpn(rem.qpn),
        psn: Psn::new(rem.psn),
        gid: rem.gid,
    };
    let path = RcPath {
        mtu,
        timeout: o.qp_timeout,
        hop_limit: 0xff,
        dest_rd_atomic: o.out_reads,
        rd_atomic: rem.out_reads.clamp(1, 128) as u8,
    };
    let (qpn, psn) = r.qps[i];
    rc_rtr_rts(node, qpn, psn, peer, path)?;
    Ok(())
}

/// A receive on QP `qp` into the `n`-th slot of `cyc`.
pub(super) fn post_recv<V: Endpoint>(
    node: &mut V,
    r: &Res,
    qp: usize,
    o: &Options,
    cyc: &Cycler,
    n: u64,
) -> Result<(), PerfError> {
    node.post_recv(
        r.qps[qp].0,
        RecvWr {
            wr_id: qp as u64,
            sgl: vec![Sge {
                addr: cyc.addr(n),
                len: o.size,
                lkey: r.key,
            }],
        },
    )?;
    Ok(())
}

/// Polls `cq` until at least one completion arrives; fails on an error completion or after
/// `timeout` without one.
pub(super) fn wait_cq<V: Endpoint>(
    node: &mut V,
    cq: CqHandle,
    max: usize,
    out: &mut Vec<WorkCompletion>,
    timeout: Duration,
    what: &'static str,
) -> Result<(), PerfError> {
    out.clear();
    let start = Instant::now();
    while out.is_empty() {
        node.poll_cq(cq, max, out)?;
        if out.is_empty() && start.elapsed() > timeout {
            return Err(PerfError::Stalled(timeout, what));
        }
    }
    if let Some(bad) = out.iter().find(|wc| wc.status != WcStatus::Success) {
        return Err(PerfError::Completion(*bad));
    }
    Ok(())
}

/// [`wait_cq`], or with `-e` as perftest's `ctx_notify_events` does it: the CQ armed
/// (`req_notify_cq`), polled, and while empty a completion event waited for. Arming before the
/// poll means a completion that arrives after the poll raises an event; nothing on the wire
/// changes.
pub(super) fn await_cq<V: Endpoint>(
    node: &mut V,
    cq: CqHandle,
    max: usize,
    out: &mut Vec<WorkCompletion>,
    o: &Options,
    what: &'static str,
) -> Result<(), PerfError> {
    if !o.events {
        return wait_cq(node, cq, max, out, o.timeout, what);
    }
    out.clear();
    let start = Instant::now();
    // The device's running count of this CQ's events, where it keeps one.
    let mut seen = node.take_cq_events(cq, None)?;
    loop {
        node.req_notify_cq(cq, false)?;
        node.poll_cq(cq, max, out)?;
        if !out.is_empty() {
            break;
        }
        while node.take_cq_events(cq, Some(&mut seen))? == 0 {
            if start.elapsed() > o.timeout {
                return Err(PerfError::Stalled(o.timeout, what));
            }
            node.idle(vhca_fabric::node::MAX_WAIT)?;
        }
    }
    if let Some(bad) = out.iter().find(|wc| wc.status != WcStatus::Success) {
        return Err(PerfError::Completion(*bad));
    }
    Ok(())
}
