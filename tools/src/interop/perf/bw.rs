//! The bandwidth data phases: the send/write/read_bw client and the send_bw server, and
//! perftest's average and peak figures.

use super::*;

/// Post and completion times of a bandwidth client, seconds since the start.
pub(super) struct BwTimes {
    pub(super) posted: Vec<f64>,
    pub(super) completed: Vec<Option<f64>>,
    pub(super) bytes: u64,
}

/// `run_iter_bw`: round robin over the QPs, each posting while it has fewer than `tx_depth`
/// outstanding and `iters` are not all posted; a completion every `cq_mod` requests of a QP
/// and on its last. `rems[i]` is QP i's peer.
pub(super) fn bw_client<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cycle: u32,
    rems: &[KeyMsg],
    hook: Hook<'_, V>,
) -> Result<BwTimes, PerfError> {
    let n = o.iters as u64;
    let q = r.qps.len();
    let total = n * q as u64;
    let cq_mod = o.cq_mod.unwrap_or(1) as u64;
    let local: Vec<Cycler> = (0..q)
        .map(|i| Cycler::new(r.local(i), o.size, cycle))
        .collect();
    let remote: Vec<Cycler> = rems
        .iter()
        .map(|k| Cycler::new(k.vaddr, o.size, cycle))
        .collect();
    let mut t = BwTimes {
        posted: vec![0.0; total as usize],
        completed: vec![None; total as usize],
        bytes: 0,
    };
    let (mut scnt, mut ccnt) = (vec![0u64; q], vec![0u64; q]);
    let (mut totscnt, mut totccnt) = (0u64, 0u64);
    let mut wcs = Vec::with_capacity(16);
    let start = Instant::now();
    while totccnt < total {
        for i in 0..q {
            while scnt[i] < n && scnt[i] - ccnt[i] < o.tx_depth as u64 {
                let k = scnt[i];
                let op = request(o, remote[i].addr(k), MemKey(rems[i].rkey));
                let signaled = (k + 1) % cq_mod == 0 || k == n - 1;
                // The QP in the high half, its request count in the low.
                let mut wr = SendWr::new(((i as u64) << 32) | k, op)
                    .flags(if signaled {
                        SendFlags::SIGNALED
                    } else {
                        SendFlags::empty()
                    })
                    .sge(Sge {
                        addr: local[i].addr(k),
                        len: o.size,
                        lkey: r.key,
                    });
                if o.inline() {
                    wr = wr.inline(&node.read_buf(local[i].addr(k), o.size as usize)?);
                }
                t.posted[totscnt as usize] = start.elapsed().as_secs_f64();
                node.post_send(r.qps[i].0, &wr)?;
                scnt[i] += 1;
                totscnt += 1;
            }
        }
        await_cq(
            node,
            r.send_cq,
            16,
            &mut wcs,
            o,
            "waiting for send completions",
        )?;
        let now = start.elapsed().as_secs_f64();
        let before = totccnt;
        for wc in &wcs {
            // A QP's completions come in order; a signaled one completes its earlier requests.
            let i = (wc.wr_id >> 32) as usize;
            let k = wc.wr_id & 0xffff_ffff;
            if let Some(c) = ccnt.get_mut(i) {
                *c = (*c).max(k.min(n - 1) + 1);
            }
            totccnt = ccnt.iter().sum();
            t.completed[(totccnt.max(1) - 1) as usize] = Some(now);
        }
        if totccnt > before {
            let p = Progress {
                done: Some(totccnt),
                total,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        }
    }
    t.bytes = total * o.size as u64;
    Ok(t)
}

pub(super) const MB: f64 = 1048576.0;
/// Bytes per second in a Gb/s (`--report_gbits`).
const GBIT: f64 = 125_000_000.0;

/// The bytes in one unit of the report's bandwidth (perftest's `format_factor`).
pub(super) fn unit_bytes(o: &Options) -> f64 {
    if o.report_gbits {
        GBIT
    } else {
        MB
    }
}

/// The request a client of `o.test` posts against `remote_addr` (`ctx_set_send_wqes`): atomics
/// add 1 (`ATOMIC_ADD_VALUE`) or swap 0 for 0 (`ATOMIC_SWAP_VALUE`, compare left 0).
pub(super) fn request(o: &Options, remote_addr: u64, rkey: MemKey) -> SendOp {
    match o.test.verb() {
        Verb::Send => SendOp::Send,
        Verb::Write => SendOp::Write { remote_addr, rkey },
        Verb::Read => SendOp::Read { remote_addr, rkey },
        Verb::Atomic => match o.atomic_op() {
            AtomicOp::FetchAndAdd => SendOp::FetchAdd {
                remote_addr,
                rkey,
                add: 1,
            },
            AtomicOp::CmpAndSwap => SendOp::CmpSwap {
                remote_addr,
                rkey,
                compare: 0,
                swap: 0,
            },
        },
    }
}

/// `print_report_bw`: average over the whole run, peak over the best stretch from a post to a
/// later completion.
pub(super) fn bw_numbers(t: &BwTimes, o: &Options) -> WireReport {
    let n = t.posted.len();
    let size = o.size as f64;
    let total = t.completed[n - 1].unwrap_or(0.0) - t.posted[0];
    let total = total.max(1e-9);
    let unit = unit_bytes(o);
    let avg = size * n as f64 / total / unit;
    let mut best = total;
    if o.iters <= PEAK_ITERS_LIMIT {
        let done: Vec<(usize, f64)> = t
            .completed
            .iter()
            .enumerate()
            .filter_map(|(j, c)| c.map(|c| (j, c)))
            .collect();
        for (i, p) in t.posted.iter().enumerate() {
            for &(j, c) in done.iter().filter(|(j, _)| *j >= i) {
                let d = (c - p) / (j - i + 1) as f64;
                if d > 0.0 && d < best {
                    best = d;
                }
            }
        }
    }
    let peak = if o.iters <= PEAK_ITERS_LIMIT {
        size / best.max(1e-12) / unit
    } else {
        0.0
    };
    WireReport {
        size: o.size as u64,
        iters: n as u64,
        bw_peak: peak,
        bw_avg: avg,
        msg_rate: n as f64 / total / 1e6,
    }
}

/// The send_bw server (`run_iter_bw_server`): counts `iters` receives per QP, re-posting on a
/// QP while more are due there. `posted[i]`: receives QP i has posted so far.
pub(super) fn send_bw_server<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    areas: &[Cycler],
    mut posted: Vec<u64>,
    hook: Hook<'_, V>,
) -> Result<(f64, u64), PerfError> {
    let n = o.iters as u64;
    let total = n * r.qps.len() as u64;
    let (mut rcnt, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut wcs = Vec::with_capacity(16);
    while rcnt < total {
        await_cq(node, r.recv_cq, 16, &mut wcs, o, "waiting for SENDs")?;
        first.get_or_insert_with(Instant::now);
        for wc in &wcs {
            rcnt += 1;
            bytes += wc.byte_len as u64;
            // A receive's wr_id is its QP's index.
            let i = wc.wr_id as usize;
            if let (Some(p), Some(area)) = (posted.get_mut(i), areas.get(i)) {
                if *p < n {
                    post_recv(node, r, i, o, area, *p)?;
                    *p += 1;
                }
            }
        }
        let p = Progress {
            done: Some(rcnt),
            total,
        };
        hook(node, p).map_err(PerfError::Hook)?;
    }
    Ok((
        first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0),
        bytes,
    ))
}

/// `run_iter_bi` for send_bw `-b`: the client's sends (as [`bw_client`]: round robin, up to
/// `tx_depth` outstanding per QP) while counting the peer's SENDs into the receives posted
/// before the start and re-posting while more are due; done when every send completed and
/// every receive arrived. The figures are the sends'.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_bw_bidir<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cycle: u32,
    areas: &[Cycler],
    mut posted: Vec<u64>,
    hook: Hook<'_, V>,
) -> Result<(BwTimes, u64), PerfError> {
    let n = o.iters as u64;
    let q = r.qps.len();
    let total = n * q as u64;
    let cq_mod = o.cq_mod.unwrap_or(1) as u64;
    let local: Vec<Cycler> = (0..q)
        .map(|i| Cycler::new(r.local(i), o.size, cycle))
        .collect();
    let mut t = BwTimes {
        posted: vec![0.0; total as usize],
        completed: vec![None; total as usize],
        bytes: 0,
    };
    let (mut scnt, mut ccnt) = (vec![0u64; q], vec![0u64; q]);
    let (mut totscnt, mut totccnt, mut rcnt, mut rbytes) = (0u64, 0u64, 0u64, 0u64);
    let mut wcs = Vec::with_capacity(16);
    let start = Instant::now();
    let mut last_progress = Instant::now();
    while totccnt < total || rcnt < total {
        for i in 0..q {
            while scnt[i] < n && scnt[i] - ccnt[i] < o.tx_depth as u64 {
                let k = scnt[i];
                let signaled = (k + 1) % cq_mod == 0 || k == n - 1;
                let mut wr = SendWr::new(((i as u64) << 32) | k, SendOp::Send)
                    .flags(if signaled {
                        SendFlags::SIGNALED
                    } else {
                        SendFlags::empty()
                    })
                    .sge(Sge {
                        addr: local[i].addr(k),
                        len: o.size,
                        lkey: r.key,
                    });
                if o.inline() {
                    wr = wr.inline(&node.read_buf(local[i].addr(k), o.size as usize)?);
                }
                t.posted[totscnt as usize] = start.elapsed().as_secs_f64();
                node.post_send(r.qps[i].0, &wr)?;
                scnt[i] += 1;
                totscnt += 1;
            }
        }
        let before = (totccnt, rcnt);
        wcs.clear();
        node.poll_cq(r.send_cq, 16, &mut wcs)?;
        let now = start.elapsed().as_secs_f64();
        for wc in &wcs {
            if wc.status != WcStatus::Success {
                return Err(PerfError::Completion(*wc));
            }
            let i = (wc.wr_id >> 32) as usize;
            let k = wc.wr_id & 0xffff_ffff;
            if let Some(c) = ccnt.get_mut(i) {
                *c = (*c).max(k.min(n - 1) + 1);
            }
            totccnt = ccnt.iter().sum();
            t.completed[(totccnt.max(1) - 1) as usize] = Some(now);
        }
        wcs.clear();
        node.poll_cq(r.recv_cq, 16, &mut wcs)?;
        for wc in &wcs {
            if wc.status != WcStatus::Success {
                return Err(PerfError::Completion(*wc));
            }
            rcnt += 1;
            rbytes += wc.byte_len as u64;
            let i = wc.wr_id as usize;
            if let (Some(p), Some(area)) = (posted.get_mut(i), areas.get(i)) {
                if *p < n {
                    post_recv(node, r, i, o, area, *p)?;
                    *p += 1;
                }
            }
        }
        if (totccnt, rcnt) != before {
            last_progress = Instant::now();
            let p = Progress {
                done: Some(totccnt.min(rcnt)),
                total,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        } else if last_progress.elapsed() > o.timeout {
            return Err(PerfError::Stalled(
                o.timeout,
                "waiting for completions both ways",
            ));
        }
    }
    t.bytes = total * o.size as u64;
    Ok((t, rbytes))
}
