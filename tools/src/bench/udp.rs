//! `vhca bench udp`: RoCEv2 over the UDP bridge beside plain UDP, measured in one run.
//!
//! * RoCEv2: two [`Node`]s on kernel UDP sockets; A keeps `depth` 64 KiB RDMA WRITEs in
//!   flight to B (path MTU 4096: 16 datagrams of 4 KiB payload each), B is pumped by a thread
//!   of its own. Counted: completed WRITEs on A, so every byte was acknowledged.
//! * Plain UDP: the same pair of addresses, sockets made by the same code (same buffer sizes,
//!   DF), one thread sending datagrams of the WRITE packets' size with the same `sendmmsg`
//!   batches, one receiving with `recvmmsg`. Counted: datagrams received.
//!
//! The figure of merit is the packet rate of RoCEv2 relative to the plain blast: what the
//! software HCA costs on top of the kernel's UDP path. With `--netns`, each side's sockets are
//! made inside a network namespace (two namespaces joined by a veth pair, as
//! `tools/netns-test.sh` sets up); otherwise both sides use loopback addresses.

use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{MemKey, Mtu, Psn, SendFlags, SendOp, SendWr, Sge, Verbs, WcStatus};
use vhca_fabric::node::{BackgroundNode, Node};
use vhca_fabric::udp::UdpBridge;
use vhca_guest::programs::rc_pair;

/// Bytes per RDMA WRITE.
pub const MESSAGE: u32 = 64 * 1024;
/// Port of the plain-UDP sockets (the RoCEv2 ones use 4791).
const BLAST_PORT: u16 = 4792;

#[derive(Debug, Error)]
pub enum UdpBenchError {
    #[error("network namespace {ns}: {err}")]
    Netns {
        ns: String,
        #[source]
        err: io::Error,
    },
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("verbs: {0}")]
    Verbs(#[from] vhca_device::VerbsError),
    #[error("an RDMA WRITE failed: {0:?}")]
    Completion(WcStatus),
    #[error("no WRITE completed for {0:?}")]
    Stalled(Duration),
}

#[derive(Clone, Debug)]
pub struct UdpBenchConfig {
    pub a: Ipv4Addr,
    pub b: Ipv4Addr,
    /// Namespaces to make A's and B's sockets in.
    pub netns: Option<(String, String)>,
    /// How long each measurement runs.
    pub duration: Duration,
    /// WRITEs in flight.
    pub depth: usize,
}

/// One side of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Rate {
    pub seconds: f64,
    /// Datagrams delivered (RoCEv2: data packets of completed WRITEs; plain: received).
    pub packets: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    pub kpps: f64,
    pub gbit_per_sec: f64,
}

impl Rate {
    fn new(seconds: f64, packets: u64, bytes: u64) -> Rate {
        Rate {
            seconds,
            packets,
            bytes,
            kpps: packets as f64 / seconds / 1e3,
            gbit_per_sec: bytes as f64 * 8.0 / seconds / 1e9,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct UdpBenchReport {
    /// "loopback" or "netns A,B".
    pub path: String,
    pub message_bytes: u32,
    pub mtu: u32,
    /// UDP payload size of a full WRITE packet (BTH + 4096 + ICRC).
    pub datagram_bytes: usize,
    pub roce: Rate,
    pub roce_writes: u64,
    /// Packets the RoCEv2 sender put on the wire (retransmissions included).
    pub roce_tx_packets: u64,
    pub plain: Rate,
    /// Datagrams the plain sender handed to the kernel (some may be lost).
    pub plain_sent: u64,
    /// roce.kpps / plain.kpps.
    pub packet_rate_ratio: f64,
}

impl UdpBenchReport {
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "RoCEv2 over UDP ({}): {} B RDMA WRITEs, MTU {}, {}-byte datagrams",
            self.path, self.message_bytes, self.mtu, self.datagram_bytes
        );
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>12} {:>10}",
            "", "kpkt/s", "Gbit/s", "seconds"
        );
        let _ = writeln!(
            s,
            "{:<28} {:>10.1} {:>12.2} {:>10.2}",
            "RoCEv2 RC WRITE (vhca)", self.roce.kpps, self.roce.gbit_per_sec, self.roce.seconds
        );
        let _ = writeln!(
            s,
            "{:<28} {:>10.1} {:>12.2} {:>10.2}",
            "plain UDP blast (sendmmsg)",
            self.plain.kpps,
            self.plain.gbit_per_sec,
            self.plain.seconds
        );
        let _ = writeln!(
            s,
            "packet rate ratio: {:.0}% ({} WRITEs, {} packets sent incl. retransmissions; plain: {} sent, {} received)",
            self.packet_rate_ratio * 100.0,
            self.roce_writes,
            self.roce_tx_packets,
            self.plain_sent,
            self.plain.packets
        );
        s
    }
}

/// Runs `f` on a thread inside the network namespace `ns` (`/var/run/netns/NAME`), or on a
/// plain thread. Sockets made there stay in that namespace wherever they are used later.
fn in_netns<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, UdpBenchError> {
    let ns = ns.map(str::to_string);
    let name = ns.clone().unwrap_or_default();
    let h = std::thread::spawn(move || -> io::Result<T> {
        if let Some(ns) = ns {
            let f = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        }
        f()
    });
    match h.join() {
        Ok(r) => r.map_err(|err| UdpBenchError::Netns { ns: name, err }),
        Err(_) => Err(UdpBenchError::Io(io::Error::other(
            "socket thread panicked",
        ))),
    }
}

fn bind(cfg: &UdpBenchConfig, side_b: bool, port: u16) -> Result<UdpBridge, UdpBenchError> {
    let (ip, ns) = if side_b {
        (cfg.b, cfg.netns.as_ref().map(|n| n.1.clone()))
    } else {
        (cfg.a, cfg.netns.as_ref().map(|n| n.0.clone()))
    };
    in_netns(ns.as_deref(), move || {
        UdpBridge::bind_port(IpAddr::V4(ip), port)
    })
}

/// The datagram size of a full WRITE_MIDDLE packet at MTU 4096: BTH, payload, ICRC.
pub fn datagram_bytes() -> usize {
    12 + 4096 + 4
}

fn roce(cfg: &UdpBenchConfig) -> Result<(Rate, u64, u64), UdpBenchError> {
    let la = bind(cfg, false, vhca_wire::ROCE_V2_PORT)?;
    let lb = bind(cfg, true, vhca_wire::ROCE_V2_PORT)?;
    let buf = 4 << 20;
    let mut a = Node::with_link(cfg.a, la, 32 << 20)?;
    let mut b = BackgroundNode::spawn(Node::with_link(cfg.b, lb, 32 << 20)?);
    let depth = cfg.depth as u32;
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        buf,
        depth * 2,
        (Psn(0x10_0000), Psn(0x20_0000)),
        Mtu::Mtu4096,
    )?;
    let slots = (buf / u64::from(MESSAGE)) as usize;
    let post = |a: &mut Node, i: u64, rkey: MemKey| -> Result<(), UdpBenchError> {
        let off = (i as usize % slots) as u64 * u64::from(MESSAGE);
        let wr = SendWr::new(
            i,
            SendOp::Write {
                remote_addr: eb.buf + off,
                rkey,
            },
        )
        .flags(SendFlags::SIGNALED)
        .sge(Sge {
            addr: ea.buf + off,
            len: MESSAGE,
            lkey: ea.key,
        });
        a.post_send(ea.qpn, &wr)?;
        Ok(())
    };
    let mut posted = 0u64;
    let mut done = 0u64;
    let mut wcs = Vec::with_capacity(cfg.depth);
    // One warm-up round so that the measurement starts with the window open.
    let start = Instant::now();
    let mut last = Instant::now();
    let tx0 = a.link.counters.tx_packets;
    while start.elapsed() < cfg.duration {
        while posted - done < cfg.depth as u64 {
            post(&mut a, posted, eb.key)?;
            posted += 1;
        }
        wcs.clear();
        a.poll_cq(ea.cq, cfg.depth, &mut wcs)?;
        for wc in &wcs {
            if wc.status != WcStatus::Success {
                return Err(UdpBenchError::Completion(wc.status));
            }
            done += 1;
            last = Instant::now();
        }
        if last.elapsed() > Duration::from_secs(5) {
            return Err(UdpBenchError::Stalled(Duration::from_secs(5)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let tx = a.link.counters.tx_packets - tx0;
    let per_msg = u64::from(MESSAGE.div_ceil(4096));
    drop(b);
    Ok((
        Rate::new(secs, done * per_msg, done * u64::from(MESSAGE)),
        done,
        tx,
    ))
}

fn plain(cfg: &UdpBenchConfig) -> Result<(Rate, u64), UdpBenchError> {
    let mut tx = bind(cfg, false, BLAST_PORT)?;
    let mut rx = bind(cfg, true, BLAST_PORT)?;
    let dst = SocketAddr::new(IpAddr::V4(cfg.b), BLAST_PORT);
    let payload = vec![0x5au8; datagram_bytes()];
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let receiver = std::thread::spawn(move || -> io::Result<(u64, Duration)> {
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        while !s2.load(Ordering::Relaxed) {
            let k = rx.drain(Duration::from_millis(5))? as u64;
            if k > 0 {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                n += k;
            }
        }
        // Whatever is still queued arrived during the run.
        loop {
            let k = rx.drain(Duration::ZERO)? as u64;
            if k == 0 {
                break;
            }
            n += k;
            last = Instant::now();
        }
        Ok((n, first.map(|f| last - f).unwrap_or_default()))
    });
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < cfg.duration {
        sent += tx.blast(dst, &payload, 256)? as u64;
    }
    let send_secs = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (got, _) = receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))??;
    let secs = send_secs.as_secs_f64();
    Ok((
        Rate::new(secs, got, got * (datagram_bytes() as u64 - 16)),
        sent,
    ))
}

/// Runs both measurements, RoCEv2 first.
pub fn run(cfg: &UdpBenchConfig) -> Result<UdpBenchReport, UdpBenchError> {
    let (roce_rate, writes, roce_tx) = roce(cfg)?;
    let (plain_rate, plain_sent) = plain(cfg)?;
    Ok(UdpBenchReport {
        path: match &cfg.netns {
            Some((a, b)) => format!("netns {a},{b} ({} -> {})", cfg.a, cfg.b),
            None => format!("{} -> {}", cfg.a, cfg.b),
        },
        message_bytes: MESSAGE,
        mtu: 4096,
        datagram_bytes: datagram_bytes(),
        packet_rate_ratio: roce_rate.kpps / plain_rate.kpps.max(1e-9),
        roce: roce_rate,
        roce_writes: writes,
        roce_tx_packets: roce_tx,
        plain: plain_rate,
        plain_sent,
    })
}
