//! `-D SECS`: runs that last a time instead of a number of iterations. perftest's alarm-driven
//! states (`catch_alarm`): a warm-up margin of SECS/4 (whole seconds), then the sample, whose
//! completions are counted and timed, then the margin again, then the end. The bandwidth data
//! phases for it; the latency loops take a [`Timer`] themselves.

use super::*;

/// perftest's `START_STATE` → `SAMPLE_STATE` → `STOP_SAMPLE_STATE` → `END_STATE`, as times.
pub(super) struct Timer {
    sample_from: Instant,
    sample_to: Instant,
    end: Instant,
}

impl Timer {
    pub(super) fn start(secs: u32) -> Timer {
        let now = Instant::now();
        let margin = Duration::from_secs((secs / 4) as u64);
        let total = Duration::from_secs(secs as u64);
        Timer {
            sample_from: now + margin,
            sample_to: now + total.saturating_sub(margin),
            end: now + total,
        }
    }

    pub(super) fn ended(&self) -> bool {
        Instant::now() >= self.end
    }

    pub(super) fn in_sample(&self) -> bool {
        let now = Instant::now();
        now >= self.sample_from && now < self.sample_to
    }

    /// The sample's length in seconds (perftest's `tcompleted[0] - tposted[0]`).
    pub(super) fn sample_secs(&self) -> f64 {
        (self.sample_to - self.sample_from).as_secs_f64().max(1e-9)
    }
}

/// What a timed data phase counted: iterations completed during the sample, its length.
pub(super) struct Sampled {
    pub(super) iters: u64,
    pub(super) secs: f64,
}

impl Sampled {
    /// `print_report_bw` in duration mode: no peak (perftest's `noPeak`), the average over the
    /// sample, the iterations not multiplied by the QPs.
    pub(super) fn bw(&self, o: &Options) -> WireReport {
        WireReport {
            size: o.size as u64,
            iters: self.iters,
            bw_peak: 0.0,
            bw_avg: o.size as f64 * self.iters as f64 / self.secs / unit_bytes(o),
            msg_rate: self.iters as f64 / self.secs / 1e6,
        }
    }
}

/// `run_iter_bw` with `-D`: posts without a count until the end, every QP keeping up to
/// `tx_depth` outstanding; counts completions during the sample. Then it waits for the last
/// signaled request of every QP (RC completes in order, so the peer has the earlier ones too).
pub(super) fn bw_client_timed<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cycle: u32,
    rems: &[KeyMsg],
    secs: u32,
    hook: Hook<'_, V>,
) -> Result<Sampled, PerfError> {
    let q = r.qps.len();
    let cq_mod = o.cq_mod.unwrap_or(1) as u64;
    let local: Vec<Cycler> = (0..q)
        .map(|i| Cycler::new(r.local(i), o.size, cycle))
        .collect();
    let remote: Vec<Cycler> = rems
        .iter()
        .map(|k| Cycler::new(k.vaddr, o.size, cycle))
        .collect();
    let (mut scnt, mut ccnt) = (vec![0u64; q], vec![0u64; q]);
    let mut counted = 0u64;
    let mut wcs = Vec::with_capacity(16);
    let timer = Timer::start(secs);
    let mut last_progress = Instant::now();
    while !timer.ended() {
        for i in 0..q {
            while scnt[i] - ccnt[i] < o.tx_depth as u64 {
                let k = scnt[i];
                let op = request(o, remote[i].addr(k), MemKey(rems[i].rkey));
                let signaled = (k + 1) % cq_mod == 0;
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
                node.post_send(r.qps[i].0, &wr)?;
                scnt[i] += 1;
            }
        }
        let got = take_completions(node, r, &mut ccnt, &mut wcs)?;
        if got > 0 {
            last_progress = Instant::now();
            if timer.in_sample() {
                counted += got;
            }
            let p = Progress {
                done: Some(ccnt.iter().sum()),
                total: 0,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        } else if last_progress.elapsed() > o.timeout {
            return Err(PerfError::Stalled(
                o.timeout,
                "waiting for send completions",
            ));
        }
    }
    // The end: drain every QP's last signaled request.
    let want: Vec<u64> = scnt.iter().map(|s| s / cq_mod * cq_mod).collect();
    while ccnt.iter().zip(&want).any(|(c, w)| c < w) {
        wait_cq(
            node,
            r.send_cq,
            16,
            &mut wcs,
            o.timeout,
            "waiting for the last completions",
        )?;
        record(&wcs, &mut ccnt);
    }
    Ok(Sampled {
        iters: counted,
        secs: timer.sample_secs(),
    })
}

/// Polls the send CQ once; returns how many requests the completions completed.
fn take_completions<V: Endpoint>(
    node: &mut V,
    r: &Res,
    ccnt: &mut [u64],
    wcs: &mut Vec<WorkCompletion>,
) -> Result<u64, PerfError> {
    wcs.clear();
    node.poll_cq(r.send_cq, 16, wcs)?;
    if let Some(bad) = wcs.iter().find(|wc| wc.status != WcStatus::Success) {
        return Err(PerfError::Completion(*bad));
    }
    let before: u64 = ccnt.iter().sum();
    record(wcs, ccnt);
    Ok(ccnt.iter().sum::<u64>() - before)
}

/// A QP's completions come in order; a signaled one completes its earlier requests.
fn record(wcs: &[WorkCompletion], ccnt: &mut [u64]) {
    for wc in wcs {
        let i = (wc.wr_id >> 32) as usize;
        let k = wc.wr_id & 0xffff_ffff;
        if let Some(c) = ccnt.get_mut(i) {
            *c = (*c).max(k + 1);
        }
    }
}

/// `run_iter_bw_server` with `-D`: the clock starts at the first receive; counts the receives
/// of the sample, re-posting every one until the end.
pub(super) fn send_bw_server_timed<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    areas: &[Cycler],
    mut posted: Vec<u64>,
    secs: u32,
    hook: Hook<'_, V>,
) -> Result<(Sampled, u64), PerfError> {
    let mut wcs = Vec::with_capacity(16);
    wait_cq(
        node,
        r.recv_cq,
        16,
        &mut wcs,
        o.timeout,
        "waiting for SENDs",
    )?;
    let timer = Timer::start(secs);
    let (mut counted, mut bytes, mut total) = (0u64, 0u64, 0u64);
    loop {
        for wc in &wcs {
            if wc.status != WcStatus::Success {
                return Err(PerfError::Completion(*wc));
            }
            total += 1;
            if timer.in_sample() {
                counted += 1;
                bytes += wc.byte_len as u64;
            }
            let i = wc.wr_id as usize;
            if let (Some(p), Some(area)) = (posted.get_mut(i), areas.get(i)) {
                post_recv(node, r, i, o, area, *p)?;
                *p += 1;
            }
        }
        if !wcs.is_empty() {
            let p = Progress {
                done: Some(total),
                total: 0,
            };
            hook(node, p).map_err(PerfError::Hook)?;
        }
        if timer.ended() {
            break;
        }
        wcs.clear();
        node.poll_cq(r.recv_cq, 16, &mut wcs)?;
    }
    Ok((
        Sampled {
            iters: counted,
            secs: timer.sample_secs(),
        },
        bytes,
    ))
}
