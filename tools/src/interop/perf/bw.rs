//! The bandwidth data phases: the send/write/read_bw client and the send_bw server, and
//! perftest's average and peak figures.

use super::*;

/// Post and completion times of a bandwidth client, seconds since the start.
pub(super) struct BwTimes {
    pub(super) posted: Vec<f64>,
    pub(super) completed: Vec<Option<f64>>,
    pub(super) bytes: u64,
}

pub(super) fn bw_client<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cycle: u32,
    rem: &KeyMsg,
    hook: Hook<'_, V>,
) -> Result<BwTimes, PerfError> {
    let n = o.iters as u64;
    let cq_mod = o.cq_mod.unwrap_or(1) as u64;
    let local = Cycler::new(r.buf, o.size, cycle);
    let remote = Cycler::new(rem.vaddr, o.size, cycle);
    let mut t = BwTimes {
        posted: vec![0.0; n as usize],
        completed: vec![None; n as usize],
        bytes: 0,
    };
    let (mut scnt, mut ccnt) = (0u64, 0u64);
    let mut wcs = Vec::with_capacity(16);
    let start = Instant::now();
    while ccnt < n {
        while scnt < n && scnt - ccnt < o.tx_depth as u64 {
            let op = request(o, remote.addr(scnt), MemKey(rem.rkey));
            let signaled = (scnt + 1) % cq_mod == 0 || scnt == n - 1;
            let mut wr = SendWr::new(scnt, op)
                .flags(if signaled {
                    SendFlags::SIGNALED
                } else {
                    SendFlags::empty()
                })
                .sge(Sge {
                    addr: local.addr(scnt),
                    len: o.size,
                    lkey: r.key,
                });
            if o.inline() {
                wr = wr.inline(&node.read_buf(local.addr(scnt), o.size as usize)?);
            }
            t.posted[scnt as usize] = start.elapsed().as_secs_f64();
            node.post_send(r.qpn, &wr)?;
            scnt += 1;
        }
        wait_cq(
            node,
            r.send_cq,
            16,
            &mut wcs,
            o.timeout,
            "waiting for send completions",
        )?;
        let now = start.elapsed().as_secs_f64();
        let before = ccnt;
        for wc in &wcs {
            // Completions come in order; a signaled one completes every earlier request.
            let k = wc.wr_id.min(n - 1);
            t.completed[k as usize] = Some(now);
            ccnt = ccnt.max(k + 1);
        }
        if ccnt > before {
            let p = Progress {
                done: Some(ccnt),
                total: n,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        }
    }
    t.bytes = n * o.size as u64;
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

/// The send_bw server: counts `iters` receives, re-posting while more are due.
pub(super) fn send_bw_server<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cyc: &Cycler,
    mut posted: u64,
    hook: Hook<'_, V>,
) -> Result<(f64, u64), PerfError> {
    let n = o.iters as u64;
    let (mut rcnt, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut wcs = Vec::with_capacity(16);
    while rcnt < n {
        wait_cq(
            node,
            r.recv_cq,
            16,
            &mut wcs,
            o.timeout,
            "waiting for SENDs",
        )?;
        first.get_or_insert_with(Instant::now);
        for wc in &wcs {
            rcnt += 1;
            bytes += wc.byte_len as u64;
            if posted < n {
                post_recv(node, r, o, cyc, posted)?;
                posted += 1;
            }
        }
        let p = Progress {
            done: Some(rcnt),
            total: n,
        };
        hook(node, p).map_err(PerfError::Hook)?;
    }
    Ok((
        first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0),
        bytes,
    ))
}
