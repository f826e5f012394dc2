//! The latency data phases: send_lat (a SEND ping-pong), write_lat (an RDMA WRITE ping-pong
//! detected by polling the buffer's last byte), read_lat and atomic_lat (one request at a
//! time); and perftest's latency figures.

use super::*;

/// The send_lat ping-pong; returns the post times (seconds) and the bytes received.
pub(super) fn send_lat<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    client: bool,
    recv_area: &Cycler,
    posted_recvs: u64,
    hook: Hook<'_, V>,
) -> Result<LatRun, PerfError> {
    let timer = o.duration.map(Timer::start);
    let n = if timer.is_some() {
        u64::MAX
    } else {
        o.iters as u64
    };
    let (mut scnt, mut rcnt, mut bytes) = (0u64, 0u64, 0u64);
    let mut posted = Vec::with_capacity(o.iters as usize);
    let mut wcs = Vec::with_capacity(1);
    let mut iterations = 0u64;
    let mut counted = 0u64;
    let start = Instant::now();
    while scnt < n || rcnt < n {
        if timer.as_ref().is_some_and(Timer::ended) {
            break;
        }
        if rcnt < n && !(client && scnt == 0) {
            let what = "waiting for the peer's SEND";
            if !wait_cq_until(node, r.recv_cq, &mut wcs, o, what, timer.as_ref())? {
                break;
            }
            rcnt += 1;
            bytes += wcs[0].byte_len as u64;
            if rcnt + posted_recvs <= n {
                post_recv(node, r, 0, o, recv_area, rcnt)?;
            }
        }
        if scnt < n {
            if timer.is_none() {
                posted.push(start.elapsed().as_secs_f64());
            }
            let mut wr = SendWr::new(scnt, SendOp::Send).sge(Sge {
                addr: r.buf,
                len: o.size,
                lkey: r.key,
            });
            if o.inline() {
                wr = wr.inline(&node.read_buf(r.buf, o.size as usize)?);
            }
            node.post_send(r.qpn, &wr)?;
            scnt += 1;
            await_cq(node, r.send_cq, 1, &mut wcs, o, "waiting for a SEND's ACK")?;
            if timer.as_ref().is_some_and(Timer::in_sample) {
                counted += 1;
            }
        }
        // An iteration is a SEND and a receive (the client's first round only sends).
        if scnt.min(rcnt) > iterations {
            iterations = scnt.min(rcnt);
            let p = Progress {
                done: Some(iterations),
                total: o.iters as u64,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        }
    }
    Ok(LatRun::new(posted, bytes, timer, counted))
}

/// What a latency data phase measured: the post times, or with `-D` the sample's count.
pub(super) struct LatRun {
    pub(super) posted: Vec<f64>,
    pub(super) bytes: u64,
    pub(super) sampled: Option<Sampled>,
}

impl LatRun {
    fn new(posted: Vec<f64>, bytes: u64, timer: Option<Timer>, counted: u64) -> LatRun {
        LatRun {
            posted,
            bytes,
            sampled: timer.map(|t| Sampled {
                iters: counted,
                secs: t.sample_secs(),
            }),
        }
    }
}

/// [`wait_cq`] for one completion that gives up at the timer's end (`Ok(false)`).
fn wait_cq_until<V: Endpoint>(
    node: &mut V,
    cq: CqHandle,
    out: &mut Vec<WorkCompletion>,
    o: &Options,
    what: &'static str,
    timer: Option<&Timer>,
) -> Result<bool, PerfError> {
    let timeout = o.timeout;
    let Some(t) = timer else {
        await_cq(node, cq, 1, out, o, what)?;
        return Ok(true);
    };
    out.clear();
    let start = Instant::now();
    while out.is_empty() {
        if t.ended() {
            return Ok(false);
        }
        node.poll_cq(cq, 1, out)?;
        if out.is_empty() && start.elapsed() > timeout {
            return Err(PerfError::Stalled(timeout, what));
        }
    }
    if let Some(bad) = out.iter().find(|wc| wc.status != WcStatus::Success) {
        return Err(PerfError::Completion(*bad));
    }
    Ok(true)
}

/// `run_iter_lat_write`: each side WRITEs its buffer's first `size` bytes to the peer's, the
/// last byte set to its count (mod 256), and waits for the peer's by polling the last byte of
/// its own receive half. The server writes first. Returns the post times (seconds) and the
/// bytes the peer wrote here.
pub(super) fn write_lat<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    client: bool,
    rem: &KeyMsg,
    hook: Hook<'_, V>,
) -> Result<LatRun, PerfError> {
    let timer = o.duration.map(Timer::start);
    let n = if timer.is_some() {
        u64::MAX
    } else {
        o.iters as u64
    };
    let mut counted = 0u64;
    let size = o.size as u64;
    let post_at = r.buf + size - 1;
    let poll_at = r.buf + r.half + size - 1;
    let (mut scnt, mut ccnt, mut rcnt) = (0u64, 0u64, 0u64);
    let mut posted = Vec::with_capacity(o.iters as usize);
    let mut wcs = Vec::with_capacity(1);
    let mut iterations = 0u64;
    let start = Instant::now();
    while scnt < n || ccnt < n || rcnt < n {
        if timer.as_ref().is_some_and(Timer::ended) {
            break;
        }
        // The server writes first; after that each side waits for the peer's next WRITE.
        if rcnt < n && (client || scnt != 0) {
            if !wait_byte(node, poll_at, (rcnt + 1) as u8, o.timeout, timer.as_ref())? {
                break;
            }
            rcnt += 1;
        }
        if scnt < n {
            if timer.is_none() {
                posted.push(start.elapsed().as_secs_f64());
            }
            scnt += 1;
            node.write_buf(post_at, &[scnt as u8])?;
            let op = SendOp::Write {
                remote_addr: rem.vaddr,
                rkey: MemKey(rem.rkey),
            };
            let mut wr = SendWr::new(scnt, op).sge(Sge {
                addr: r.buf,
                len: o.size,
                lkey: r.key,
            });
            if o.inline() {
                wr = wr.inline(&node.read_buf(r.buf, o.size as usize)?);
            }
            node.post_send(r.qpn, &wr)?;
        }
        if ccnt < n {
            match wait_cq(
                node,
                r.send_cq,
                1,
                &mut wcs,
                o.timeout,
                "waiting for a WRITE's ACK",
            ) {
                Ok(()) => {}
                // ib_write_lat has no closing handshake: a peer that has all it waits for
                // exits, and the ACK of this side's last WRITE may be lost with it.
                Err(PerfError::Completion(wc))
                    if wc.status == WcStatus::RetryExcErr && timer.is_none() && scnt == n =>
                {
                    // The peer WRITEs k only once it saw this side's k: its last WRITE having
                    // landed proves this one arrived. Without it nothing does.
                    if client || node.read_buf(poll_at, 1)?[0] != n as u8 {
                        return Err(PerfError::LastWriteUnacknowledged);
                    }
                }
                Err(e) => return Err(e),
            }
            ccnt += 1;
            if timer.as_ref().is_some_and(Timer::in_sample) {
                counted += 1;
            }
        }
        if ccnt.min(rcnt) > iterations {
            iterations = ccnt.min(rcnt);
            let p = Progress {
                done: Some(iterations),
                total: o.iters as u64,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        }
    }
    Ok(LatRun::new(posted, rcnt * size, timer, counted))
}

/// Polls the byte at `addr` until it is `want` (perftest spins on it; a node is pumped
/// meanwhile, a VF of another process is left the CPU); `Ok(false)` at the timer's end.
fn wait_byte<V: Endpoint>(
    node: &mut V,
    addr: u64,
    want: u8,
    timeout: Duration,
    timer: Option<&Timer>,
) -> Result<bool, PerfError> {
    let start = Instant::now();
    loop {
        let b = node.read_buf(addr, 1)?;
        if b.first() == Some(&want) {
            return Ok(true);
        }
        if timer.is_some_and(Timer::ended) {
            return Ok(false);
        }
        if start.elapsed() > timeout {
            return Err(PerfError::Stalled(
                timeout,
                "waiting for the peer's RDMA WRITE",
            ));
        }
        if node.rx_packets().is_some() {
            node.idle(vhca_fabric::node::MAX_WAIT)?;
        } else {
            std::thread::yield_now();
        }
    }
}

/// `run_iter_lat` (read_lat, atomic_lat client): one signaled request at a time on the same
/// addresses. An atomic's fetched value is checked: only this client touches the target, whose
/// first value is whatever the server left there (perftest fills its buffer with random bytes;
/// vhca's is zero), so FETCH_AND_ADD fetches that value, then one more each time, and
/// CMP_AND_SWAP (compare 0, swap 0) never changes it. Returns the post times and the bytes read
/// or fetched.
pub(super) fn rdma_lat<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    rem: &KeyMsg,
    hook: Hook<'_, V>,
) -> Result<LatRun, PerfError> {
    let timer = o.duration.map(Timer::start);
    let n = if timer.is_some() {
        u64::MAX
    } else {
        o.iters as u64
    };
    let mut counted = 0u64;
    let mut posted = Vec::with_capacity(o.iters as usize);
    let mut wcs = Vec::with_capacity(1);
    let atomic = o.test.verb() == Verb::Atomic;
    let mut base: Option<u64> = None;
    let start = Instant::now();
    let mut i = 0u64;
    while i < n && !timer.as_ref().is_some_and(Timer::ended) {
        if timer.is_none() {
            posted.push(start.elapsed().as_secs_f64());
        }
        let wr = SendWr::new(i, request(o, rem.vaddr, MemKey(rem.rkey))).sge(Sge {
            addr: r.buf,
            len: o.size,
            lkey: r.key,
        });
        node.post_send(r.qpn, &wr)?;
        await_cq(node, r.send_cq, 1, &mut wcs, o, "waiting for a response")?;
        if timer.as_ref().is_some_and(Timer::in_sample) {
            counted += 1;
        }
        if atomic {
            let got = read_u64(node, r.buf)?;
            let first = *base.get_or_insert(got);
            let want = match o.atomic_op() {
                AtomicOp::FetchAndAdd => first.wrapping_add(i),
                AtomicOp::CmpAndSwap => first,
            };
            if got != want {
                return Err(PerfError::Data(format!(
                    "iteration {i}: {} fetched {got}, expected {want}",
                    o.atomic_op().name()
                )));
            }
        }
        i += 1;
        let p = Progress {
            done: Some(i),
            total: o.iters as u64,
        };
        hook(node, p).map_err(PerfError::Hook)?;
    }
    Ok(LatRun::new(posted, i * o.size as u64, timer, counted))
}

/// The 8-byte word at `addr` as an atomic leaves it (host order: little-endian, as on rxe's
/// x86 hosts).
pub(super) fn read_u64<V: Endpoint>(node: &mut V, addr: u64) -> Result<u64, PerfError> {
    let b = node.read_buf(addr, 8)?;
    Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// `print_report_lat`: the gaps between consecutive posts (halved for ping-pongs, whole for
/// reads and atomics: perftest's `rtt_factor`), sorted, the two largest dropped.
pub(super) fn lat_numbers(posted: &[f64], rtt_factor: f64) -> (f64, f64, f64, f64, f64, f64, f64) {
    let mut d: Vec<f64> = posted
        .windows(2)
        .map(|w| (w[1] - w[0]) * 1e6 / rtt_factor)
        .collect();
    d.sort_by(|a, b| a.total_cmp(b));
    let m = d.len().saturating_sub(LAT_MEASURE_TAIL).max(1);
    let median = if (m - 1) % 2 == 1 {
        (d[m / 2] + d[m / 2 - 1]) / 2.0
    } else {
        d[m / 2]
    };
    let avg = d[..m].iter().sum::<f64>() / m as f64;
    let var = d[..m].iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / m as f64;
    let at = |q: f64| d[((m as f64 * q).ceil() as usize).min(d.len() - 1)];
    (
        d[0],
        d[m.min(d.len() - 1)],
        median,
        avg,
        var.sqrt(),
        at(0.99),
        at(0.999),
    )
}
