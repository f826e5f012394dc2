//! `vhca perf`: clients and servers that interoperate with perftest's `ib_send_bw`,
//! `ib_write_bw`, `ib_read_bw` and `ib_send_lat` (perftest v4.5-0.17, protocol version "6.06"),
//! RC over RoCEv2 with the GID-based ("Ethernet") side channel on TCP port 18515.
//!
//! The side channel (facts file A.2) has no framing: every step is a fixed-size blob; the
//! client writes then reads, the server reads then writes. The steps, in order:
//!
//! | step | size | content |
//! | --- | --- | --- |
//! | V  | 16  | version string `"6.06"`, NUL padded |
//! | S1 | 4   | cycle buffer (page size), big-endian; both take the larger |
//! | S2 | 4   | cache line size, big-endian; both take the larger |
//! | M  | 2   | `"%d"` of the port's `ibv_mtu` enum (3 = 1024); both take the smaller |
//! | K  | 108 | key message: `lid:out_reads:qpn:psn:rkey:vaddr:gid[16]:srqn:` in hex |
//! | R  | 5×8 | bandwidth report: size, iterations (u64 BE), peak, average, message rate (f64 BE) |
//! | D  | 108 + 5 | one more K, then `"done\0"` from each side |
//!
//! and the sequences of the four binaries:
//!
//! * `ib_send_bw`, `ib_send_lat`: V S1 S2 M K K K K (data) K(D) done. The first K carries the
//!   QP's address, then both connect (RTR/RTS), the second is the handshake "after RTR", the
//!   third re-sends the addresses, the fourth is the barrier after the receivers posted their
//!   receives (the client sends only after it).
//! * `ib_write_bw`, `ib_read_bw`: V S1 S2 M K K K (data) K R R R R R K(D) done. The client starts
//!   its RDMA right after the third K; the server does nothing but wait in the fourth K for the
//!   client to finish, then receives the client's report (and sends an unused one back), prints
//!   the client's numbers and closes.
//!
//! Data phases follow perftest's defaults: bandwidth clients keep up to `tx_depth` (128) work
//! requests outstanding and ask for a completion every `cq_mod` (100) of them (every one for
//! messages above 8 KiB) and on the last; the send_bw server pre-posts `rx_depth` (512, at most
//! the iteration count) receives and re-posts as they complete; send_lat is a ping-pong in which
//! each side posts its next SEND once a message arrived (the client starts) and waits for that
//! SEND's completion. Remote addresses cycle through the peer's buffer in cache-line-aligned
//! steps within the cycle buffer, as perftest's do, so either side can be the real tool.
//!
//! While it waits on the side channel a side keeps pumping its node, so a write_bw or read_bw
//! server answers RDMA while it waits for the client's "finished" key message.
//!
//! The program runs on any [`Endpoint`]: an in-process [`Node`] with its own UDP socket
//! (`--ip`) or a VF of a running `vhca serve` through the guest driver (`--vf SOCKET`,
//! [`vf_client`], [`vf_server`]); [`client_on`] and [`serve_on`] take a [`Hook`] called between
//! iterations. A VF's device runs in the serve process, so on a VF "progress" while waiting on
//! the side channel is only a side-channel byte (its packets are not visible here): a write_bw
//! or read_bw server on a VF needs a `--timeout` longer than the client's whole data phase.

use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::*;
use vhca_fabric::node::{Node, MAX_WAIT};
use vhca_guest::{DriverError, GuestContext};

use crate::interop::endpoint::{
    connect_vf, no_hook, Endpoint, Hook, HookError, Progress, IDLE_TICK,
};
use vhca_guest::programs::{rc_rtr_rts, PeerInfo, RcPath};

pub const DEFAULT_PORT: u16 = 18515;
/// The protocol version perftest v4.5-0.17 announces (its configure version).
pub const VERSION: &str = "6.06";
const VERSION_LEN: usize = 16;
/// perftest refuses peers older than this.
const MIN_PEER_VERSION: f64 = 5.70;
/// `KEY_MSG_SIZE_GID`: 107 characters and a NUL.
pub const KEY_MSG_LEN: usize = 108;
const PAGE_SIZE: u32 = 4096;
const CACHE_LINE: u32 = 64;
/// Above this message size perftest asks for a completion on every work request.
const CQ_MOD_SIZE_LIMIT: u32 = 8192;
/// Above this many iterations perftest skips the peak computation (`noPeak`).
const PEAK_ITERS_LIMIT: u32 = 20000;
/// perftest's latency report drops this many of the largest samples.
const LAT_MEASURE_TAIL: usize = 2;
const RECV_WRID: u64 = u64::MAX;

#[derive(Debug, Error)]
pub enum PerfError {
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("peer's perftest version {0:?} is not supported (need 5.70 or newer)")]
    Version(String),
    #[error("bad {what} from the peer: {text:?}")]
    Exchange { what: &'static str, text: String },
    #[error("the peer's GID {0:02x?} is not IPv4-mapped (vhca's is): GID types differ")]
    GidType([u8; 16]),
    #[error("work completion failed: {0:?}")]
    Completion(WorkCompletion),
    #[error("no progress for {0:?} while {1}")]
    Stalled(Duration, &'static str),
    #[error("the peer closed the side channel during {0}")]
    Closed(&'static str),
    #[error("the peer reported {peer_size} B x {peer_iters} iterations, this side ran {size} B x {iters}")]
    Mismatch {
        peer_size: u64,
        peer_iters: u64,
        size: u64,
        iters: u64,
    },
    #[error("bad options: {0}")]
    Options(String),
    #[error("VF: {0}")]
    Vf(#[from] DriverError),
    #[error("hook: {0}")]
    Hook(#[source] HookError),
}

/// The perftest binary a run is compatible with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// ib_send_bw
    #[value(name = "send_bw", alias = "ib_send_bw")]
    SendBw,
    /// ib_write_bw
    #[value(name = "write_bw", alias = "ib_write_bw")]
    WriteBw,
    /// ib_read_bw
    #[value(name = "read_bw", alias = "ib_read_bw")]
    ReadBw,
    /// ib_send_lat
    #[value(name = "send_lat", alias = "ib_send_lat")]
    SendLat,
}

impl Test {
    pub fn binary(self) -> &'static str {
        match self {
            Test::SendBw => "ib_send_bw",
            Test::WriteBw => "ib_write_bw",
            Test::ReadBw => "ib_read_bw",
            Test::SendLat => "ib_send_lat",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Test::SendBw => "Send BW Test",
            Test::WriteBw => "RDMA_Write BW Test",
            Test::ReadBw => "RDMA_Read BW Test",
            Test::SendLat => "Send Latency Test",
        }
    }

    pub fn is_bw(self) -> bool {
        self != Test::SendLat
    }

    fn is_send(self) -> bool {
        matches!(self, Test::SendBw | Test::SendLat)
    }

    /// perftest's default message size (`DEF_SIZE_BW`, `DEF_SIZE_LAT`).
    pub fn default_size(self) -> u32 {
        if self.is_bw() {
            65536
        } else {
            2
        }
    }

    /// perftest's default iteration count (`DEF_ITERS_WB` for write_bw, else `DEF_ITERS`).
    pub fn default_iters(self) -> u32 {
        if self == Test::WriteBw {
            5000
        } else {
            1000
        }
    }

    /// Remote access the QP grants (`ctx_modify_qp_to_init`).
    fn qp_access(self) -> Access {
        match self {
            Test::SendBw | Test::SendLat => Access::REMOTE_WRITE | Access::LOCAL_WRITE,
            Test::WriteBw => Access::REMOTE_WRITE,
            Test::ReadBw => Access::REMOTE_READ,
        }
    }

    /// Access of the buffer's memory region (`create_single_mr`).
    fn mr_access(self) -> Access {
        match self {
            Test::SendBw | Test::SendLat => Access::LOCAL_WRITE,
            Test::WriteBw => Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            Test::ReadBw => Access::LOCAL_WRITE | Access::REMOTE_READ,
        }
    }
}

/// Options; both sides must use the same size and iteration count (perftest does not exchange
/// them).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub test: Test,
    pub port: u16,
    pub size: u32,
    pub iters: u32,
    /// This port's MTU (the peer's may lower it).
    pub mtu: Mtu,
    /// Outstanding work requests of a bandwidth client (`-t`).
    pub tx_depth: u32,
    /// Receives a SEND receiver keeps posted (`-r`).
    pub rx_depth: u32,
    /// Completion moderation (`-Q`); `None` = perftest's default.
    pub cq_mod: Option<u32>,
    /// Outstanding RDMA READs this side accepts/issues (ib_read_bw; `-o`).
    pub out_reads: u8,
    /// Give up after this long without progress (no completion, no packet, no side-channel
    /// byte).
    pub timeout: Duration,
    /// The RC local ACK timeout exponent (4.096 µs × 2^t; perftest's `-u`, default 14).
    pub qp_timeout: u8,
}

impl Options {
    pub fn new(test: Test) -> Options {
        Options {
            test,
            port: DEFAULT_PORT,
            size: test.default_size(),
            iters: test.default_iters(),
            mtu: Mtu::Mtu1024,
            tx_depth: if test.is_bw() { 128 } else { 1 },
            rx_depth: 512,
            cq_mod: None,
            out_reads: 128,
            timeout: Duration::from_secs(120),
            qp_timeout: 14,
        }
    }

    /// perftest's `force_dependecies` for what this implementation uses.
    fn effective(&self) -> Result<Options, PerfError> {
        let mut o = *self;
        if o.iters < 5 {
            return Err(PerfError::Options("at least 5 iterations".into()));
        }
        if o.size == 0 || o.size > 0x80_0000 {
            return Err(PerfError::Options("size must be 1 B .. 8 MiB".into()));
        }
        if !o.test.is_bw() {
            o.tx_depth = 1;
        }
        o.tx_depth = o.tx_depth.clamp(1, o.iters);
        o.rx_depth = o.rx_depth.clamp(1, o.iters);
        if o.test.is_send() && o.rx_depth % 2 == 1 {
            o.rx_depth += 1;
        }
        let mut cq_mod = o.cq_mod.unwrap_or(100).max(1);
        if o.size > CQ_MOD_SIZE_LIMIT && o.cq_mod.is_none() {
            cq_mod = 1;
        }
        if !o.test.is_bw() {
            cq_mod = 1;
        }
        o.cq_mod = Some(cq_mod.min(o.tx_depth));
        if o.test != Test::ReadBw {
            o.out_reads = 1;
        }
        o.out_reads = o.out_reads.max(1);
        Ok(o)
    }
}

/// A QP's address as the key message carries it (`struct pingpong_dest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMsg {
    pub lid: u16,
    pub out_reads: u16,
    pub qpn: u32,
    pub psn: u32,
    pub rkey: u32,
    pub vaddr: u64,
    pub gid: Gid,
    pub srqn: u32,
}

impl KeyMsg {
    /// `KEY_PRINT_FMT_GID` with its NUL: always 108 bytes.
    pub fn encode(&self) -> [u8; KEY_MSG_LEN] {
        let mut s = format!(
            "{:04x}:{:04x}:{:06x}:{:06x}:{:08x}:{:016x}:",
            self.lid,
            self.out_reads,
            self.qpn & 0xff_ffff,
            self.psn & 0xff_ffff,
            self.rkey,
            self.vaddr
        );
        for b in self.gid.0 {
            s.push_str(&format!("{b:02x}:"));
        }
        s.push_str(&format!("{:08x}:", self.srqn));
        let mut out = [0u8; KEY_MSG_LEN];
        let n = s.len().min(KEY_MSG_LEN - 1);
        out[..n].copy_from_slice(&s.as_bytes()[..n]);
        out
    }

    pub fn decode(b: &[u8]) -> Result<KeyMsg, PerfError> {
        let text = String::from_utf8_lossy(b);
        let text = text.trim_end_matches('\0');
        let bad = || PerfError::Exchange {
            what: "key message",
            text: text.to_string(),
        };
        let f: Vec<&str> = text.split(':').collect();
        // 6 fields, 16 GID bytes, the SRQ number, and what follows the last ':'.
        if f.len() < 23 {
            return Err(bad());
        }
        let hex = |s: &str| u64::from_str_radix(s.trim(), 16).map_err(|_| bad());
        let mut gid = [0u8; 16];
        for (i, g) in gid.iter_mut().enumerate() {
            *g = u8::try_from(hex(f[6 + i])?).map_err(|_| bad())?;
        }
        let qpn = hex(f[2])?;
        let psn = hex(f[3])?;
        if qpn > 0xff_ffff || psn > 0xff_ffff {
            return Err(bad());
        }
        Ok(KeyMsg {
            lid: u16::try_from(hex(f[0])?).map_err(|_| bad())?,
            out_reads: u16::try_from(hex(f[1])?).map_err(|_| bad())?,
            qpn: qpn as u32,
            psn: psn as u32,
            rkey: u32::try_from(hex(f[4])?).map_err(|_| bad())?,
            vaddr: hex(f[5])?,
            gid: Gid(gid),
            srqn: u32::try_from(hex(f[22])?).map_err(|_| bad())?,
        })
    }
}

/// The bandwidth report exchanged after a write/read test (`struct bw_report_data`, the
/// fields that cross the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WireReport {
    pub size: u64,
    pub iters: u64,
    pub bw_peak: f64,
    pub bw_avg: f64,
    pub msg_rate: f64,
}

/// One side's result, perftest's table row plus what vhca checked.
#[derive(Clone, Debug, Serialize)]
pub struct BwReport {
    pub test: Test,
    pub role: &'static str,
    /// Message size (`#bytes`).
    pub bytes: u64,
    pub iterations: u64,
    pub bw_peak_mb_per_sec: f64,
    pub bw_average_mb_per_sec: f64,
    pub msg_rate_mpps: f64,
    /// Bytes this side moved or received, counted from its completions (0 where it cannot see
    /// them: a write/read server).
    pub bytes_transferred: u64,
    pub seconds: f64,
    /// "local": measured here; "peer": the client's report, printed by the server as perftest
    /// does.
    pub source: &'static str,
    pub mtu: u32,
    pub peer_version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatReport {
    pub test: Test,
    pub role: &'static str,
    pub bytes: u64,
    pub iterations: u64,
    pub t_min_usec: f64,
    pub t_max_usec: f64,
    pub t_typical_usec: f64,
    pub t_avg_usec: f64,
    pub t_stdev_usec: f64,
    pub p99_usec: f64,
    pub p99_9_usec: f64,
    pub bytes_transferred: u64,
    pub mtu: u32,
    pub peer_version: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Bw(BwReport),
    Lat(LatReport),
}

const RESULT_LINE: &str =
    "---------------------------------------------------------------------------------------";

impl Report {
    /// perftest's result table.
    pub fn table(&self) -> String {
        match self {
            Report::Bw(r) => format!(
                "{RESULT_LINE}\n                    {}\n{RESULT_LINE}\n #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n {:<7}    {:<10}       {:<7.2}            {:<7.2}\t\t   {:<7.6}\n{RESULT_LINE}\n",
                r.test.title(),
                r.bytes,
                r.iterations,
                r.bw_peak_mb_per_sec,
                r.bw_average_mb_per_sec,
                r.msg_rate_mpps
            ),
            Report::Lat(r) => format!(
                "{RESULT_LINE}\n                    {}\n{RESULT_LINE}\n #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] \n {:<7} {}          {:<7.2}        {:<7.2}      {:<7.2}  \t       {:<7.2}     \t{:<7.2}\t\t{:<7.2} \t\t{:<7.2}\n{RESULT_LINE}\n",
                r.test.title(),
                r.bytes,
                r.iterations,
                r.t_min_usec,
                r.t_max_usec,
                r.t_typical_usec,
                r.t_avg_usec,
                r.t_stdev_usec,
                r.p99_usec,
                r.p99_9_usec
            ),
        }
    }
}

/// The TCP side channel. Non-blocking: while a side waits for the peer it keeps its node
/// pumping.
struct Chan {
    sock: TcpStream,
    client: bool,
    timeout: Duration,
}

impl Chan {
    fn new(sock: TcpStream, client: bool, timeout: Duration) -> io::Result<Chan> {
        // Every blob goes out in one segment: perftest reads each with a single read().
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        Ok(Chan {
            sock,
            client,
            timeout,
        })
    }

    /// Runs `step` (which returns `Ok(true)` when done) pumping the node in between; fails after
    /// `timeout` without a packet or a side-channel byte. With `tick`, calls its hook about
    /// every [`IDLE_TICK`] (a side that waits out its peer's data phase).
    fn pumping<V: Endpoint>(
        &mut self,
        node: &mut V,
        what: &'static str,
        mut tick: Option<(Hook<'_, V>, u64)>,
        mut step: impl FnMut(&mut TcpStream) -> Result<(bool, bool), PerfError>,
    ) -> Result<(), PerfError> {
        let mut last = Instant::now();
        let mut last_tick = Instant::now();
        let mut rx = node.rx_packets();
        loop {
            let (done, progress) = step(&mut self.sock)?;
            if done {
                return Ok(());
            }
            node.idle(MAX_WAIT)?;
            if let Some((hook, total)) = tick.as_mut() {
                if last_tick.elapsed() >= IDLE_TICK {
                    let p = Progress {
                        done: None,
                        total: *total,
                    };
                    let t = Instant::now();
                    hook(node, p).map_err(PerfError::Hook)?;
                    last_tick = Instant::now();
                    // Time the hook took (a migration's blackout) is not the peer stalling;
                    // the hook being called is no progress either.
                    last += t.elapsed();
                }
            }
            if progress || node.rx_packets() != rx {
                rx = node.rx_packets();
                last = Instant::now();
            } else if last.elapsed() > self.timeout {
                return Err(PerfError::Stalled(self.timeout, what));
            }
        }
    }

    fn write_blob<V: Endpoint>(
        &mut self,
        node: &mut V,
        b: &[u8],
        what: &'static str,
    ) -> Result<(), PerfError> {
        let mut off = 0;
        self.pumping(node, what, None, |s| {
            while off < b.len() {
                match s.write(&b[off..]) {
                    Ok(0) => return Err(PerfError::Closed(what)),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, false)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((true, true))
        })
    }

    fn read_blob<V: Endpoint>(
        &mut self,
        node: &mut V,
        n: usize,
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        self.pumping(node, what, tick, |s| {
            let before = got;
            while got < n {
                match s.read(&mut buf[got..]) {
                    Ok(0) => return Err(PerfError::Closed(what)),
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((false, got > before))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok((true, true))
        })?;
        Ok(buf)
    }

    /// One step: the client writes then reads, the server reads then writes.
    fn xchg<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
    ) -> Result<Vec<u8>, PerfError> {
        self.xchg_ticking(node, mine, what, None)
    }

    /// [`Chan::xchg`], calling `tick`'s hook while it waits for the peer's blob.
    fn xchg_ticking<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &[u8],
        what: &'static str,
        tick: Option<(Hook<'_, V>, u64)>,
    ) -> Result<Vec<u8>, PerfError> {
        if self.client {
            self.write_blob(node, mine, what)?;
            self.read_blob(node, mine.len(), what, tick)
        } else {
            let theirs = self.read_blob(node, mine.len(), what, tick)?;
            self.write_blob(node, mine, what)?;
            Ok(theirs)
        }
    }

    fn keys<V: Endpoint>(
        &mut self,
        node: &mut V,
        mine: &KeyMsg,
        what: &'static str,
    ) -> Result<KeyMsg, PerfError> {
        KeyMsg::decode(&self.xchg(node, &mine.encode(), what)?)
    }
}

/// `INC`: the step between messages in a cycled buffer.
fn inc(size: u32) -> u64 {
    if size > CACHE_LINE {
        (size as u64).next_multiple_of(CACHE_LINE as u64)
    } else {
        CACHE_LINE as u64
    }
}

/// Message addresses cycle through `cycle` bytes from `base` when a message fits twice.
struct Cycler {
    base: u64,
    step: u64,
    slots: u64,
}

impl Cycler {
    fn new(base: u64, size: u32, cycle: u32) -> Cycler {
        let step = inc(size);
        let slots = if size <= cycle / 2 {
            (cycle as u64 / step).max(1)
        } else {
            1
        };
        Cycler { base, step, slots }
    }

    fn addr(&self, n: u64) -> u64 {
        self.base + (n % self.slots) * self.step
    }
}

struct Res {
    send_cq: CqHandle,
    recv_cq: CqHandle,
    qpn: Qpn,
    buf: u64,
    /// `BUFF_SIZE` rounded to the cache line: the local half, then the half the peer targets.
    half: u64,
    key: MemKey,
    psn: Psn,
}

fn random_psn(ip: Ipv4Addr) -> Psn {
    // perftest draws lrand48(); any 24-bit value that differs run to run will do.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Psn::new((t ^ (t >> 24) ^ (t >> 48) ^ u32::from(ip) as u64) as u32)
}

fn node_mem(size: u32) -> usize {
    (64usize << 20).max(4 * size as usize + (16 << 20))
}

fn create_resources<V: Endpoint>(
    node: &mut V,
    o: &Options,
    cycle: u32,
    gid: Gid,
) -> Result<Res, PerfError> {
    let pd = node.alloc_pd()?;
    let send_cq = node.create_cq(o.tx_depth + 16)?;
    let recv_cq = node.create_cq(o.rx_depth + 16)?;
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
            max_inline_data: 0,
        },
        sq_sig_all: false,
    })?;
    let half = (o.size.max(cycle) as u64).next_multiple_of(CACHE_LINE as u64);
    let buf = node.alloc_buf(2 * half)?;
    let key = node.reg_mr(pd, buf, 2 * half, o.test.mr_access())?;
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
        QpAttrMask::STATE | QpAttrMask::PKEY_INDEX | QpAttrMask::PORT | QpAttrMask::ACCESS_FLAGS,
    )?;
    Ok(Res {
        send_cq,
        recv_cq,
        qpn,
        buf,
        half,
        key,
        // Any address that differs between the two sides will do to vary the PSN.
        psn: random_psn(
            gid.to_ipv4()
                .map(Ipv4Addr::from)
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
        ),
    })
}

fn my_key(gid: Gid, r: &Res, o: &Options) -> KeyMsg {
    KeyMsg {
        lid: 0,
        out_reads: o.out_reads as u16,
        qpn: r.qpn.0,
        psn: r.psn.0,
        // rxe gives an MR without remote access R_Key 0; send tests advertise that.
        rkey: if o.test.is_send() { 0 } else { r.key.0 },
        vaddr: r.buf + r.half,
        gid,
        srqn: 0,
    }
}

/// `ctx_connect`: RTR with the peer's address, then RTS (perftest's bw server stops at RTR;
/// RTS changes nothing on the wire for a side that never sends a request).
fn connect<V: Endpoint>(
    node: &mut V,
    r: &Res,
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
    rc_rtr_rts(node, r.qpn, r.psn, peer, path)?;
    Ok(())
}

fn post_recv<V: Endpoint>(
    node: &mut V,
    r: &Res,
    o: &Options,
    cyc: &Cycler,
    n: u64,
) -> Result<(), PerfError> {
    node.post_recv(
        r.qpn,
        RecvWr {
            wr_id: RECV_WRID,
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
fn wait_cq<V: Endpoint>(
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

/// Post and completion times of a bandwidth client, seconds since the start.
struct BwTimes {
    posted: Vec<f64>,
    completed: Vec<Option<f64>>,
    bytes: u64,
}

fn bw_client<V: Endpoint>(
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
            let op = match o.test {
                Test::WriteBw => SendOp::Write {
                    remote_addr: remote.addr(scnt),
                    rkey: MemKey(rem.rkey),
                },
                Test::ReadBw => SendOp::Read {
                    remote_addr: remote.addr(scnt),
                    rkey: MemKey(rem.rkey),
                },
                Test::SendBw | Test::SendLat => SendOp::Send,
            };
            let signaled = (scnt + 1) % cq_mod == 0 || scnt == n - 1;
            let wr = SendWr::new(scnt, op)
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

const MB: f64 = 1048576.0;

/// `print_report_bw`: average over the whole run, peak over the best stretch from a post to a
/// later completion.
fn bw_numbers(t: &BwTimes, o: &Options) -> WireReport {
    let n = t.posted.len();
    let size = o.size as f64;
    let total = t.completed[n - 1].unwrap_or(0.0) - t.posted[0];
    let total = total.max(1e-9);
    let avg = size * n as f64 / total / MB;
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
        size / best.max(1e-12) / MB
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
fn send_bw_server<V: Endpoint>(
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

/// The send_lat ping-pong; returns the post times (seconds) and the bytes received.
fn send_lat<V: Endpoint>(
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
fn lat_numbers(posted: &[f64]) -> (f64, f64, f64, f64, f64, f64, f64) {
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

fn encode_report(r: &WireReport) -> [[u8; 8]; 5] {
    [
        r.size.to_be_bytes(),
        r.iters.to_be_bytes(),
        r.bw_peak.to_bits().to_be_bytes(),
        r.bw_avg.to_bits().to_be_bytes(),
        r.msg_rate.to_bits().to_be_bytes(),
    ]
}

/// `xchg_bw_reports`: five 8-byte steps (iterations are 64-bit for peers ≥ 5.33).
fn xchg_reports<V: Endpoint>(
    chan: &mut Chan,
    node: &mut V,
    mine: &WireReport,
) -> Result<WireReport, PerfError> {
    let mut got = [0u64; 5];
    for (g, blob) in got.iter_mut().zip(encode_report(mine)) {
        let b = chan.xchg(node, &blob, "the report exchange")?;
        *g = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    }
    Ok(WireReport {
        size: got[0],
        iters: got[1],
        bw_peak: f64::from_bits(got[2]),
        bw_avg: f64::from_bits(got[3]),
        msg_rate: f64::from_bits(got[4]),
    })
}

/// Where a run's progress is reported (stderr lines for scripts and humans).
fn note(msg: impl AsRef<str>) {
    eprintln!("vhca perf: {}", msg.as_ref());
}

fn print_dest(side: &str, k: &KeyMsg) {
    let g = &k.gid.0;
    note(format!(
        "{side} address: LID {:#06x} QPN {:#08x} PSN {:#08x} RKey {:#010x} VAddr {:#018x} GID {}",
        k.lid,
        k.qpn,
        k.psn,
        k.rkey,
        k.vaddr,
        g.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    ));
}

/// One whole run over an established side channel, on a new node at `ip`.
fn session(ip: Ipv4Addr, sock: TcpStream, client: bool, o: &Options) -> Result<Report, PerfError> {
    // Bad options fail before the node (sized from them) is made.
    o.effective()?;
    let mut node = Node::new(ip, node_mem(o.size))?;
    session_on(&mut node, sock, client, o, &mut no_hook)
}

/// One whole run over an established side channel, on any device.
fn session_on<V: Endpoint>(
    node: &mut V,
    sock: TcpStream,
    client: bool,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let o = o.effective()?;
    let mut chan = Chan::new(sock, client, o.timeout)?;
    let role = if client { "client" } else { "server" };

    // V: versions.
    let mut v = [0u8; VERSION_LEN];
    v[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
    let rv = chan.xchg(node, &v, "the version exchange")?;
    let peer_version = String::from_utf8_lossy(&rv)
        .trim_end_matches('\0')
        .to_string();
    let pv: f64 = peer_version
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .parse()
        .unwrap_or(0.0);
    if pv < MIN_PEER_VERSION {
        return Err(PerfError::Version(peer_version));
    }
    // S1, S2: cycle buffer and cache line, the larger wins.
    let rc = chan.xchg(node, &PAGE_SIZE.to_be_bytes(), "the system data exchange")?;
    let cycle = u32::from_be_bytes(rc.try_into().unwrap_or([0; 4])).max(PAGE_SIZE);
    let rl = chan.xchg(node, &CACHE_LINE.to_be_bytes(), "the system data exchange")?;
    let line = u32::from_be_bytes(rl.try_into().unwrap_or([0; 4]));
    if cycle > 1 << 20 || line > cycle {
        return Err(PerfError::Exchange {
            what: "system data",
            text: format!("cycle buffer {cycle}, cache line {line}"),
        });
    }
    // M: MTU enums as "%d", two bytes; the smaller valid one wins.
    let m = [b'0' + o.mtu as u8, 0];
    let rm = chan.xchg(node, &m, "the MTU exchange")?;
    let rem_mtu = std::str::from_utf8(&rm[..1])
        .ok()
        .and_then(|s| s.parse::<u8>().ok())
        .and_then(Mtu::from_enum);
    let mtu = match rem_mtu {
        Some(r) if (r as u8) < (o.mtu as u8) => r,
        _ => o.mtu,
    };

    let gid = node.local_gid()?;
    let r = create_resources(node, &o, cycle, gid)?;
    let mine = my_key(gid, &r, &o);
    // K1: addresses.
    let rem = chan.keys(node, &mine, "the address exchange")?;
    if rem.gid.to_ipv4().is_none() {
        return Err(PerfError::GidType(rem.gid.0));
    }
    print_dest("local", &mine);
    print_dest("remote", &rem);
    connect(node, &r, &o, mtu, &rem)?;
    // K2: after RTR; K3: the addresses once more.
    chan.keys(node, &mine, "the handshake after RTR")?;
    chan.keys(node, &mine, "the second address exchange")?;

    let peer_version2 = peer_version.clone();
    let bw = |source, w: &WireReport, bytes, seconds| {
        Report::Bw(BwReport {
            test: o.test,
            role,
            bytes: w.size,
            iterations: w.iters,
            bw_peak_mb_per_sec: w.bw_peak,
            bw_average_mb_per_sec: w.bw_avg,
            msg_rate_mpps: w.msg_rate,
            bytes_transferred: bytes,
            seconds,
            source,
            mtu: mtu.bytes(),
            peer_version: peer_version2.clone(),
        })
    };
    let report = match o.test {
        Test::SendBw | Test::SendLat => {
            // Receivers post their receives, then K4 tells the sender to go.
            let recv_area = Cycler::new(r.buf + r.half, o.size, cycle);
            let want_recvs = !client || o.test == Test::SendLat;
            let mut posted = 0u64;
            if want_recvs {
                while posted < o.rx_depth as u64 {
                    post_recv(node, &r, &o, &recv_area, posted)?;
                    posted += 1;
                }
            }
            chan.keys(node, &mine, "the barrier before the data phase")?;
            if o.test == Test::SendLat {
                let (times, bytes) = send_lat(node, &r, &o, client, &recv_area, posted, hook)?;
                let (min, max, typ, avg, stdev, p99, p999) = lat_numbers(&times);
                Report::Lat(LatReport {
                    test: o.test,
                    role,
                    bytes: o.size as u64,
                    iterations: o.iters as u64,
                    t_min_usec: min,
                    t_max_usec: max,
                    t_typical_usec: typ,
                    t_avg_usec: avg,
                    t_stdev_usec: stdev,
                    p99_usec: p99,
                    p99_9_usec: p999,
                    bytes_transferred: bytes,
                    mtu: mtu.bytes(),
                    peer_version: peer_version.clone(),
                })
            } else if client {
                let t = bw_client(node, &r, &o, cycle, &rem, hook)?;
                let w = bw_numbers(&t, &o);
                let secs = t.completed[t.completed.len() - 1].unwrap_or(0.0) - t.posted[0];
                bw("local", &w, t.bytes, secs)
            } else {
                let (secs, bytes) = send_bw_server(node, &r, &o, &recv_area, posted, hook)?;
                let s = secs.max(1e-9);
                let avg = bytes as f64 / s / MB;
                let w = WireReport {
                    size: o.size as u64,
                    iters: o.iters as u64,
                    bw_peak: avg,
                    bw_avg: avg,
                    msg_rate: o.iters as f64 / s / 1e6,
                };
                bw("local", &w, bytes, secs)
            }
        }
        Test::WriteBw | Test::ReadBw => {
            if client {
                let t = bw_client(node, &r, &o, cycle, &rem, hook)?;
                let w = bw_numbers(&t, &o);
                // K4: "finished", then the reports.
                chan.keys(node, &mine, "the end-of-test handshake")?;
                xchg_reports(&mut chan, node, &w)?;
                let secs = t.completed[t.completed.len() - 1].unwrap_or(0.0) - t.posted[0];
                bw("local", &w, t.bytes, secs)
            } else {
                // The server only waits (pumping) for the client's "finished" key message.
                let start = Instant::now();
                // A hook gets its calls here: this side has no iterations of its own.
                let total = o.iters as u64;
                let b = chan.xchg_ticking(
                    node,
                    &mine.encode(),
                    "waiting for the client to finish",
                    Some((hook, total)),
                )?;
                KeyMsg::decode(&b)?;
                let secs = start.elapsed().as_secs_f64();
                let theirs = xchg_reports(&mut chan, node, &WireReport::default())?;
                if theirs.size != o.size as u64 || theirs.iters != o.iters as u64 {
                    return Err(PerfError::Mismatch {
                        peer_size: theirs.size,
                        peer_iters: theirs.iters,
                        size: o.size as u64,
                        iters: o.iters as u64,
                    });
                }
                bw("peer", &theirs, 0, secs)
            }
        }
    };

    // D: one more key message, then "done" from each side.
    chan.keys(node, &mine, "closing")?;
    chan.write_blob(node, b"done\0", "closing")?;
    // Take the peer's "done" too when it comes, so the socket closes cleanly (no RST); a peer
    // that already closed is fine.
    chan.timeout = Duration::from_secs(2);
    let _ = chan.read_blob(node, 5, "closing", None);
    Ok(report)
}

/// Client: connects to `server:o.port`.
pub fn client(ip: Ipv4Addr, server: Ipv4Addr, o: &Options) -> Result<Report, PerfError> {
    let sock = TcpStream::connect_timeout(&(server, o.port).into(), o.timeout)?;
    session(ip, sock, true, o)
}

/// Server: accepts one client on TCP `o.port` (all addresses), runs one test.
pub fn server(ip: Ipv4Addr, o: &Options) -> Result<Report, PerfError> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    serve(ip, listener, o)
}

/// Server on a listener the caller bound.
pub fn serve(ip: Ipv4Addr, listener: TcpListener, o: &Options) -> Result<Report, PerfError> {
    let (sock, _) = accept(listener, o)?;
    session(ip, sock, false, o)
}

fn accept(listener: TcpListener, o: &Options) -> Result<(TcpStream, SocketAddr), PerfError> {
    // A line scripts wait for before they start the client.
    note(format!(
        "{} server listening on TCP port {}",
        o.test.binary(),
        listener.local_addr()?.port()
    ));
    Ok(listener.accept()?)
}

/// [`client`] on the VF behind the vhost-user socket `vf` (a `vhca serve` VF): its GID is the
/// one the device reports.
pub fn vf_client(vf: &Path, server: Ipv4Addr, o: &Options) -> Result<Report, PerfError> {
    vf_client_with(vf, server, o, &mut no_hook)
}

/// [`vf_client`] with a hook between iterations (`--migrate-to`: [`crate::migration::vf_mid_run`]).
pub fn vf_client_with(
    vf: &Path,
    server: Ipv4Addr,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, PerfError> {
    o.effective()?;
    let mut ctx = connect_vf(vf, node_mem(o.size) as u64)?;
    client_on(&mut ctx, (server, o.port).into(), o, hook)
}

/// [`server`] on the VF behind the vhost-user socket `vf`.
pub fn vf_server(vf: &Path, o: &Options) -> Result<Report, PerfError> {
    vf_server_with(vf, o, &mut no_hook)
}

/// [`vf_server`] with a hook between iterations (on a write_bw or read_bw server, about every
/// 10 ms while the client works).
pub fn vf_server_with(
    vf: &Path,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, PerfError> {
    o.effective()?;
    let mut ctx = connect_vf(vf, node_mem(o.size) as u64)?;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    serve_on(&mut ctx, listener, o, hook)
}

/// The client's run on any device against the server's side channel at `server` (`o.port`
/// is not used); `hook` runs between iterations.
pub fn client_on<V: Endpoint>(
    node: &mut V,
    server: SocketAddr,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let sock = TcpStream::connect_timeout(&server, o.timeout)?;
    session_on(node, sock, true, o, hook)
}

/// The server's run on any device for one client of `listener`; `hook` runs between
/// iterations (on a write_bw or read_bw server, about every 10 ms while the client works).
pub fn serve_on<V: Endpoint>(
    node: &mut V,
    listener: TcpListener,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    let (sock, _) = accept(listener, o)?;
    session_on(node, sock, false, o, hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_message_matches_the_seen_bytes() {
        // Facts A.2: an ib_send_bw key message from rxe.
        let seen = b"0000:0001:000013:f4baa6:00000442:00007f10985c3000:00:00:00:00:00:00:00:00:00:00:ff:ff:0a:4d:00:03:00000000:";
        let k = KeyMsg {
            lid: 0,
            out_reads: 1,
            qpn: 0x13,
            psn: 0xf4baa6,
            rkey: 0x442,
            vaddr: 0x7f10985c3000,
            gid: Gid::from_ipv4([10, 77, 0, 3]),
            srqn: 0,
        };
        let b = k.encode();
        assert_eq!(seen.len(), KEY_MSG_LEN - 1);
        assert_eq!(&b[..KEY_MSG_LEN - 1], &seen[..]);
        assert_eq!(b[KEY_MSG_LEN - 1], 0);
        assert_eq!(KeyMsg::decode(&b).unwrap(), k);
        // Upper case parses as well (perftest uses strtol).
        let upper = String::from_utf8_lossy(seen).to_uppercase();
        assert_eq!(KeyMsg::decode(upper.as_bytes()).unwrap(), k);
        assert!(KeyMsg::decode(b"0000:0001:zz").is_err());
    }

    #[test]
    fn reports_are_big_endian() {
        let w = WireReport {
            size: 4096,
            iters: 200,
            bw_peak: 1.5,
            bw_avg: 1.0,
            msg_rate: 0.25,
        };
        let b = encode_report(&w);
        assert_eq!(b[0], [0, 0, 0, 0, 0, 0, 0x10, 0]);
        assert_eq!(b[1], [0, 0, 0, 0, 0, 0, 0, 200]);
        assert_eq!(b[2], 1.5f64.to_bits().to_be_bytes());
    }

    #[test]
    fn addresses_cycle_like_perftest() {
        let c = Cycler::new(0x1000, 100, 4096);
        assert_eq!(c.addr(0), 0x1000);
        assert_eq!(c.addr(1), 0x1000 + 128);
        assert_eq!(c.addr(32), 0x1000);
        let big = Cycler::new(0x1000, 4096, 4096);
        assert_eq!(big.addr(5), 0x1000);
    }

    #[test]
    fn latency_numbers() {
        let posted: Vec<f64> = (0..10).map(|i| i as f64 * 2e-6).collect();
        let (min, max, typ, avg, stdev, _, _) = lat_numbers(&posted);
        for x in [min, max, typ, avg] {
            assert!((x - 1.0).abs() < 1e-9, "{x}");
        }
        assert!(stdev < 1e-9);
    }
}
