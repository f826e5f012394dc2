//! Benchmark hooks: RDMA WRITE bandwidth and small-SEND latency between two verbs contexts.
//!
//! The measurements are generic over [`Verbs`]; [`vhost_user`] runs them through the
//! vhost-user path (guest driver → VF → VF → guest driver) against the sockets of a running
//! `vhca serve`, so `vhca bench` can report that path beside the in-process one.

use crate::context::GuestContext;
use crate::driver::DriverConfig;
use crate::programs::{rc_pair, wait, Endpoint};
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{Mtu, Psn, RecvWr, SendFlags, SendOp, SendWr, Sge, Verbs, VerbsError, WcStatus};

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("connecting to a VF: {0}")]
    Connect(#[from] crate::error::DriverError),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("{0}")]
    Check(&'static str),
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Bytes per RDMA WRITE.
    pub write_size: u32,
    /// RDMA WRITEs in the bandwidth run.
    pub writes: u32,
    /// WRITEs kept outstanding.
    pub depth: u32,
    /// Bytes per SEND in the latency run.
    pub send_size: u32,
    /// Round trips in the latency run.
    pub round_trips: u32,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            write_size: 64 << 10,
            writes: 2000,
            depth: 16,
            send_size: 64,
            round_trips: 1000,
        }
    }
}

/// Results.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// Bytes written / seconds.
    pub write_bytes_per_sec: f64,
    pub write_bytes: u64,
    pub write_elapsed: Duration,
    /// Half a round trip of a `send_size` SEND and its reply: median and 99th percentile.
    pub send_latency_median: Duration,
    pub send_latency_p99: Duration,
}

/// `writes` RDMA WRITEs of `size` bytes from `a` into `b`'s buffer, `depth` outstanding.
/// Returns (bytes, elapsed). The last WRITE's payload is checked at the destination.
pub fn write_bandwidth<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
    size: u32,
    writes: u32,
    depth: u32,
) -> Result<(u64, Duration), BenchError> {
    if size as u64 > ea.len.min(eb.len) {
        return Err(BenchError::Check("WRITE size larger than the buffers"));
    }
    let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    a.write_buf(ea.buf, &pattern)?;
    let wr = |i: u32| {
        SendWr::new(
            i as u64,
            SendOp::Write {
                remote_addr: eb.buf,
                rkey: eb.key,
            },
        )
        .flags(SendFlags::SIGNALED)
        .sge(Sge {
            addr: ea.buf,
            len: size,
            lkey: ea.key,
        })
    };
    let start = Instant::now();
    let (mut posted, mut done) = (0u32, 0u32);
    let mut wcs = Vec::new();
    while done < writes {
        while posted < writes && posted - done < depth {
            a.post_send(ea.qpn, &wr(posted))?;
            posted += 1;
        }
        wcs.clear();
        if a.poll_cq(ea.cq, depth as usize, &mut wcs)? == 0 {
            continue;
        }
        if wcs.iter().any(|w| w.status != WcStatus::Success) {
            return Err(BenchError::Check("an RDMA WRITE failed"));
        }
        done += wcs.len() as u32;
    }
    let elapsed = start.elapsed();
    if b.read_buf(eb.buf, size as usize)? != pattern {
        return Err(BenchError::Check("RDMA WRITE data arrived wrong"));
    }
    Ok((size as u64 * writes as u64, elapsed))
}

/// `round_trips` SEND ping-pongs of `size` bytes; returns each half round trip, sorted.
pub fn send_latency<A: Verbs, B: Verbs>(
    a: &mut A,
    ea: &Endpoint,
    b: &mut B,
    eb: &Endpoint,
    size: u32,
    round_trips: u32,
) -> Result<Vec<Duration>, BenchError> {
    let half = ea.len.min(eb.len) / 2;
    if size as u64 > half {
        return Err(BenchError::Check("SEND size larger than half the buffers"));
    }
    let recv = |e: &Endpoint| RecvWr {
        wr_id: 1,
        sgl: vec![Sge {
            addr: e.buf + half,
            len: size.max(1),
            lkey: e.key,
        }],
    };
    let send = |e: &Endpoint| {
        SendWr::new(2, SendOp::Send)
            .flags(SendFlags::SIGNALED)
            .sge(Sge {
                addr: e.buf,
                len: size,
                lkey: e.key,
            })
    };
    let mut samples = Vec::with_capacity(round_trips as usize);
    // One receive ahead on each side, so the SEND never waits for a post.
    a.post_recv(ea.qpn, recv(ea))?;
    b.post_recv(eb.qpn, recv(eb))?;
    let ok = |w: &[vhca_device::WorkCompletion]| w.iter().all(|w| w.status == WcStatus::Success);
    for _ in 0..round_trips {
        let t = Instant::now();
        a.post_send(ea.qpn, &send(ea))?;
        let wb = wait(b, eb.cq, 1, 1_000_000)?;
        b.post_recv(eb.qpn, recv(eb))?;
        b.post_send(eb.qpn, &send(eb))?;
        // a: its send completion and the reply; b: its send completion.
        let wa = wait(a, ea.cq, 2, 1_000_000)?;
        samples.push(t.elapsed() / 2);
        a.post_recv(ea.qpn, recv(ea))?;
        let wb2 = wait(b, eb.cq, 1, 1_000_000)?;
        if !ok(&wb) || !ok(&wa) || !ok(&wb2) {
            return Err(BenchError::Check("a SEND failed"));
        }
    }
    samples.sort();
    Ok(samples)
}

/// Both measurements between two connected contexts.
pub fn run<A: Verbs, B: Verbs>(
    a: &mut A,
    b: &mut B,
    cfg: &BenchConfig,
) -> Result<BenchReport, BenchError> {
    let len = (cfg.write_size as u64)
        .max(2 * cfg.send_size as u64)
        .max(4096)
        * 2;
    let depth = cfg.depth.max(2);
    let (ea, eb) = rc_pair(a, b, len, depth, (Psn(0x100), Psn(0x200)), Mtu::Mtu4096)?;
    let (bytes, elapsed) = write_bandwidth(a, &ea, b, &eb, cfg.write_size, cfg.writes, depth)?;
    let lat = send_latency(a, &ea, b, &eb, cfg.send_size, cfg.round_trips.max(1))?;
    let pick = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok(BenchReport {
        write_bytes_per_sec: bytes as f64 / elapsed.as_secs_f64().max(1e-9),
        write_bytes: bytes,
        write_elapsed: elapsed,
        send_latency_median: pick(0.5),
        send_latency_p99: pick(0.99),
    })
}

/// The vhost-user path: connects a guest driver to each of two VF sockets of a running
/// `vhca serve` and measures between them.
///
/// The drivers negotiate EVENT_IDX, as a Linux virtio driver does (a device busy with the
/// doorbell ring is not kicked for every buffer), and busy-poll their CQs, as perftest's
/// `ib_write_bw` and `ib_send_lat` do unless given `-e`.
pub fn vhost_user(vf_a: &Path, vf_b: &Path, cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    let dcfg = DriverConfig {
        event_idx: true,
        ..DriverConfig::default()
    };
    let mut a = GuestContext::connect(vf_a, &dcfg)?;
    let mut b = GuestContext::connect(vf_b, &dcfg)?;
    a.set_poll_mode(crate::context::PollMode::Spin);
    b.set_poll_mode(crate::context::PollMode::Spin);
    run(&mut a, &mut b, cfg)
}
