//! The send_lat data phase (a SEND ping-pong) and perftest's latency figures.

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
) -> Result<(Vec<f64>, u64), PerfError> {
    let n = o.iters as u64;
    let (mut scnt, mut rcnt, mut bytes) = (0u64, 0u64, 0u64);
    let mut posted = Vec::with_capacity(n as usize);
    let mut wcs = Vec::with_capacity(1);
    let mut iterations = 0u64;
    let start = Instant::now();
    while scnt < n || rcnt < n {
        if rcnt < n && !(client && scnt == 0) {
            wait_cq(
                node,
                r.recv_cq,
                1,
                &mut wcs,
                o.timeout,
                "waiting for the peer's SEND",
            )?;
            rcnt += 1;
            bytes += wcs[0].byte_len as u64;
            if rcnt + posted_recvs <= n {
                post_recv(node, r, o, recv_area, rcnt)?;
            }
        }
        if scnt < n {
            posted.push(start.elapsed().as_secs_f64());
            let wr = SendWr::new(scnt, SendOp::Send).sge(Sge {
                addr: r.buf,
                len: o.size,
                lkey: r.key,
            });
            node.post_send(r.qpn, &wr)?;
            scnt += 1;
            wait_cq(
                node,
                r.send_cq,
                1,
                &mut wcs,
                o.timeout,
                "waiting for a SEND's ACK",
            )?;
        }
        // An iteration is a SEND and a receive (the client's first round only sends).
        if scnt.min(rcnt) > iterations {
            iterations = scnt.min(rcnt);
            let p = Progress {
                done: Some(iterations),
                total: n,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        }
    }
    Ok((posted, bytes))
}

/// `print_report_lat`: half round trips between consecutive posts, sorted, the two largest
/// dropped.
pub(super) fn lat_numbers(posted: &[f64]) -> (f64, f64, f64, f64, f64, f64, f64) {
    let mut d: Vec<f64> = posted
        .windows(2)
        .map(|w| (w[1] - w[0]) * 1e6 / 2.0)
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
