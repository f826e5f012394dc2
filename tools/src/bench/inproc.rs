//! `vhca bench`: in-process bandwidth, message rate and latency, perftest style, each beside
//! the memcpy bandwidth of the same machine measured in the same run.
//!
//! Everything runs on one thread: both VFs, the switch and the "applications". So bandwidth here
//! is what one core can move through the whole software HCA (requester, switch, responder,
//! completions), and memcpy of the same message size is its physical limit.

use serde::Serialize;
use std::time::{Duration, Instant};
use vhca_device::*;
use vhca_fabric::conn::{connect, create_qp, QpEnd, RcParams};
use vhca_fabric::{World, WorldConfig};

/// One result row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub test: String,
    pub bytes: u64,
    pub iterations: u64,
    /// Payload bandwidth, GB/s (10^9 bytes per second).
    pub bw_gbps: f64,
    /// Messages per second, millions.
    pub msg_rate_mpps: f64,
    /// Half round trip, microseconds (latency tests only).
    pub lat_us: Option<f64>,
    /// memcpy of `bytes`-sized buffers on this machine in this run, GB/s.
    pub memcpy_gbps: f64,
    /// bw_gbps / memcpy_gbps.
    pub of_memcpy: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// How long each measurement runs.
    pub duration: Duration,
    pub mtu: Mtu,
    pub tx_depth: usize,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            duration: Duration::from_millis(800),
            mtu: Mtu::Mtu4096,
            tx_depth: 128,
        }
    }
}

/// memcpy bandwidth for `size`-byte copies, in GB/s, over about `dur`.
pub fn memcpy_gbps(size: usize, dur: Duration) -> f64 {
    let src = vec![0x5au8; size.max(1)];
    let mut dst = vec![0u8; size.max(1)];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut iters = 0u64;
    while start.elapsed() < dur {
        for _ in 0..64 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
            bytes += size as u64;
            iters += 1;
        }
    }
    let _ = iters;
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

struct Setup {
    w: World,
    a: QpEnd,
    b: QpEnd,
    abuf: u64,
    bbuf: u64,
    akey: MemKey,
    bkey: MemKey,
}

const BUF: u64 = 4 << 20;

fn setup(cfg: &BenchConfig) -> Result<Setup, VerbsError> {
    let mut w = World::new(WorldConfig {
        vf_mem_bytes: 3 * BUF as usize,
        ..WorldConfig::default()
    });
    let p0 = w.add_pf(1);
    let p1 = w.add_pf(1);
    let va = w.add_vf(p0)?;
    let vb = w.add_vf(p1)?;
    let params = RcParams {
        mtu: cfg.mtu,
        ..RcParams::default()
    };
    let cap = QpCap {
        max_send_wr: 1024,
        max_recv_wr: 1024,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 64,
    };
    let end = |w: &mut World, v| -> Result<(QpEnd, u64, MemKey), VerbsError> {
        let vf = w.vf_mut(v);
        let pd = vf.alloc_pd()?;
        let cq = vf.create_cq(8192)?;
        let q = create_qp(w, v, pd, cq, QpType::Rc, cap, None)?;
        let buf = w.alloc(v, BUF)?;
        let key = w.vf_mut(v).reg_mr(pd, buf, BUF, params.access)?;
        Ok((q, buf, key))
    };
    let (a, abuf, akey) = end(&mut w, va)?;
    let (b, bbuf, bkey) = end(&mut w, vb)?;
    connect(&mut w, a, b, Psn(1), Psn(2), &params)?;
    connect(&mut w, b, a, Psn(2), Psn(1), &params)?;
    Ok(Setup {
        w,
        a,
        b,
        abuf,
        bbuf,
        akey,
        bkey,
    })
}

/// How often a completion is requested (perftest's cq_mod).
const CQ_MOD: u64 = 32;

fn bw_test(cfg: &BenchConfig, kind: &str, size: u32, memcpy: f64) -> Result<Row, VerbsError> {
    let mut s = setup(cfg)?;
    let mut wcs = Vec::with_capacity(256);
    let depth = cfg.tx_depth as u64;
    let mut posted = 0u64;
    let mut completed = 0u64;
    let mut recv_posted = 0u64;
    let is_send = kind == "send";
    let recv_depth = 512u64;
    let post_recv = |s: &mut Setup, n: u64| -> Result<(), VerbsError> {
        for _ in 0..n {
            let wr = RecvWr {
                wr_id: 0,
                sgl: vec![Sge {
                    addr: s.bbuf,
                    len: size.max(1),
                    lkey: s.bkey,
                }],
            };
            s.w.vf_mut(s.b.vf).post_recv(s.b.qpn, wr)?;
        }
        Ok(())
    };
    if is_send {
        post_recv(&mut s, recv_depth)?;
        recv_posted = recv_depth;
    }
    let start = Instant::now();
    let mut deadline_check = 0u32;
    loop {
        while posted - completed < depth {
            let op = match kind {
                "write" => SendOp::Write {
                    remote_addr: s.bbuf,
                    rkey: s.bkey,
                },
                "read" => SendOp::Read {
                    remote_addr: s.bbuf,
                    rkey: s.bkey,
                },
                _ => SendOp::Send,
            };
            posted += 1;
            let flags = if posted % CQ_MOD == 0 {
                SendFlags::SIGNALED
            } else {
                SendFlags::empty()
            };
            let mut wr = SendWr::new(posted, op).flags(flags);
            wr.sgl.push(Sge {
                addr: s.abuf,
                len: size,
                lkey: s.akey,
            });
            s.w.vf_mut(s.a.vf).post_send(s.a.qpn, &wr)?;
        }
        s.w.step();
        wcs.clear();
        s.w.vf_mut(s.a.vf).poll_cq(s.a.cq, 256, &mut wcs)?;
        for wc in &wcs {
            if !wc.is_ok() {
                return Err(VerbsError::Invalid("benchmark completion failed"));
            }
            completed = wc.wr_id;
        }
        if is_send {
            wcs.clear();
            let n = s.w.vf_mut(s.b.vf).poll_cq(s.b.cq, 256, &mut wcs)? as u64;
            if n > 0 {
                post_recv(&mut s, n)?;
                recv_posted += n;
            }
        }
        deadline_check += 1;
        if deadline_check % 64 == 0 && start.elapsed() >= cfg.duration && completed > 0 {
            break;
        }
    }
    let _ = recv_posted;
    let secs = start.elapsed().as_secs_f64();
    let bw = completed as f64 * size as f64 / secs / 1e9;
    Ok(Row {
        test: format!("{kind}_bw"),
        bytes: size as u64,
        iterations: completed,
        bw_gbps: bw,
        msg_rate_mpps: completed as f64 / secs / 1e6,
        lat_us: None,
        memcpy_gbps: memcpy,
        of_memcpy: bw / memcpy,
    })
}

fn send_lat(cfg: &BenchConfig, size: u32, memcpy: f64) -> Result<Row, VerbsError> {
    let mut s = setup(cfg)?;
    let mut wcs = Vec::with_capacity(16);
    for (e, buf, key) in [(s.a, s.abuf, s.akey), (s.b, s.bbuf, s.bkey)] {
        for _ in 0..64 {
            let wr = RecvWr {
                wr_id: 0,
                sgl: vec![Sge {
                    addr: buf + BUF / 2,
                    len: size.max(1),
                    lkey: key,
                }],
            };
            s.w.vf_mut(e.vf).post_recv(e.qpn, wr)?;
        }
    }
    let start = Instant::now();
    let mut iters = 0u64;
    // Ping-pong as ib_send_lat does: each side sends when it has received.
    let ping = |s: &mut Setup, from: QpEnd, buf: u64, key: MemKey| -> Result<(), VerbsError> {
        let mut wr = SendWr::new(1, SendOp::Send).flags(SendFlags::SIGNALED | SendFlags::INLINE);
        if size as usize <= 64 {
            wr.inline_data = vec![0x42; size as usize];
        } else {
            wr.flags = SendFlags::SIGNALED;
            wr.sgl.push(Sge {
                addr: buf,
                len: size,
                lkey: key,
            });
        }
        s.w.vf_mut(from.vf).post_send(from.qpn, &wr)
    };
    while start.elapsed() < cfg.duration {
        for _ in 0..256 {
            let (from, to, buf, key, tobuf, tokey) = if iters % 2 == 0 {
                (s.a, s.b, s.abuf, s.akey, s.bbuf, s.bkey)
            } else {
                (s.b, s.a, s.bbuf, s.bkey, s.abuf, s.akey)
            };
            ping(&mut s, from, buf, key)?;
            // Run until the receiver has the message.
            let mut got = false;
            while !got {
                s.w.step();
                wcs.clear();
                s.w.vf_mut(to.vf).poll_cq(to.cq, 16, &mut wcs)?;
                for wc in &wcs {
                    if wc.opcode == WcOpcode::Recv {
                        got = true;
                        let wr = RecvWr {
                            wr_id: 0,
                            sgl: vec![Sge {
                                addr: tobuf + BUF / 2,
                                len: size.max(1),
                                lkey: tokey,
                            }],
                        };
                        s.w.vf_mut(to.vf).post_recv(to.qpn, wr)?;
                    }
                }
            }
            // Reap the sender's completion (its ACK) without timing it separately.
            wcs.clear();
            s.w.vf_mut(from.vf).poll_cq(from.cq, 16, &mut wcs)?;
            iters += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Row {
        test: "send_lat".into(),
        bytes: size as u64,
        iterations: iters,
        bw_gbps: iters as f64 * size as f64 / secs / 1e9,
        msg_rate_mpps: iters as f64 / secs / 1e6,
        lat_us: Some(secs / iters as f64 * 1e6),
        memcpy_gbps: memcpy,
        of_memcpy: 0.0,
    })
}

/// Runs the standard set: WRITE/READ/SEND bandwidth at 64 B, 4 KiB and 64 KiB, and SEND latency.
/// `only` keeps the rows whose `test:bytes` name contains it (e.g. `write_bw:65536`).
pub fn run(cfg: &BenchConfig, only: Option<&str>) -> Result<Vec<Row>, VerbsError> {
    let wanted = |name: &str, size: u32| only.is_none_or(|o| format!("{name}:{size}").contains(o));
    let mut rows = Vec::new();
    for size in [64u32, 4096, 65536] {
        let mut mc = None;
        for kind in ["write", "read", "send"] {
            if !wanted(&format!("{kind}_bw"), size) {
                continue;
            }
            let m = *mc.get_or_insert_with(|| memcpy_gbps(size as usize, cfg.duration / 4));
            rows.push(bw_test(cfg, kind, size, m)?);
        }
        // memcpy again after the tests: the limit is the best of both, so a noisy neighbour
        // during one measurement cannot make vhca look closer to it than it is.
        if let Some(before) = mc {
            let best = before.max(memcpy_gbps(size as usize, cfg.duration / 4));
            for r in rows.iter_mut().filter(|r| r.bytes == size as u64) {
                r.memcpy_gbps = best;
                r.of_memcpy = r.bw_gbps / best;
            }
        }
    }
    if wanted("send_lat", 64) {
        let mc = memcpy_gbps(64, cfg.duration / 4);
        rows.push(send_lat(cfg, 64, mc)?);
    }
    Ok(rows)
}

/// A perftest-style table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<10} {:>9} {:>11} {:>11} {:>12} {:>10} {:>13} {:>9}\n",
        "test",
        "#bytes",
        "#iterations",
        "BW [GB/s]",
        "MsgRate[Mpps]",
        "lat [us]",
        "memcpy[GB/s]",
        "of memcpy"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<10} {:>9} {:>11} {:>11.3} {:>12.3} {:>10} {:>13.2} {:>8.0}%\n",
            r.test,
            r.bytes,
            r.iterations,
            r.bw_gbps,
            r.msg_rate_mpps,
            r.lat_us
                .map(|l| format!("{l:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.memcpy_gbps,
            r.of_memcpy * 100.0
        ));
    }
    out
}
