//! `vhca perf`: clients and servers that interoperate with perftest's `ib_send_bw`,
//! `ib_write_bw`, `ib_read_bw`, `ib_atomic_bw`, `ib_send_lat`, `ib_write_lat`, `ib_read_lat` and
//! `ib_atomic_lat` (perftest v4.5-0.17, protocol version "6.06"), RC over RoCEv2 with the
//! GID-based ("Ethernet") side channel on TCP port 18515; with perftest's `-a`, `-q`, `-b`,
//! `-e`, `-D`, `-A`, `-I` and `--report_gbits` ([`Options`]).
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
//! and the sequences of the binaries (one QP; `-q N` makes the address exchanges N key
//! messages each, docs/interop.md):
//!
//! * `ib_send_bw`, `ib_send_lat`: V S1 S2 M K K K K (data) K(D) done. The first K carries the
//!   QP's address, then both connect (RTR/RTS), the second is the handshake "after RTR", the
//!   third re-sends the addresses, the fourth is the barrier after the receivers posted their
//!   receives (the client sends only after it).
//! * `ib_write_bw`, `ib_read_bw`, `ib_atomic_bw`: V S1 S2 M K K K (data) K R R R R R K(D) done.
//!   The client starts its requests right after the third K; the server does nothing but wait
//!   in the fourth K for the client to finish, then receives the client's report (and sends an
//!   unused one back), prints the client's numbers and closes.
//! * `ib_write_lat`: V S1 S2 M K K K K (data), no close: a WRITE ping-pong, the server first,
//!   each side polling the last byte of its buffer for the peer's count.
//! * `ib_read_lat`, `ib_atomic_lat`: V S1 S2 M K K K K, then the client's requests and K(D)
//!   done; the server goes straight into K(D), which waits for the client's data phase.
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
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::*;
use vhca_fabric::node::Node;
use vhca_guest::{DriverError, GuestContext, VfTarget};

use crate::interop::endpoint::{no_hook, open_vf, random_psn, Endpoint, Hook, HookError, Progress};
use crate::interop::side_channel::{Chan, ChanError};
use vhca_guest::programs::{rc_rtr_rts, PeerInfo, RcPath};

mod bw;
mod comm;
mod duration;
mod lat;
mod options;
mod rdma_cm;
mod report;
mod session;
mod setup;
mod side_channel;

use bw::*;
use comm::CommChan;
use duration::*;
use lat::*;
pub use options::{AtomicOp, Options, Test, Verb};
use report::*;
pub use report::{BwReport, LatReport, Report, WireReport};
use session::*;
use setup::*;
pub use side_channel::KeyMsg;
use side_channel::*;

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
/// The atomic tests' only message size (`DEF_SIZE_ATOMIC`).
const ATOMIC_SIZE: u32 = 8;
/// perftest's largest message (`MAX_SIZE`), the last size of `-a`.
const MAX_SIZE: u32 = 0x80_0000;
/// A vhca VF's `max_inline_data` (`VfLimits`); perftest allows up to 912 where a device does.
const MAX_INLINE: u32 = 256;
/// The most QPs `-q` takes here (perftest: 16384): their CQ entries and buffers stay small.
const MAX_QPS: u32 = 1024;

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
    #[error("data check failed: {0}")]
    Data(String),
    #[error("bad options: {0}")]
    Options(String),
    /// write_lat: every WRITE of the peer arrived but this side's last one was never ACKed (the
    /// peer, done, most likely exited first). Nothing this side saw proves it arrived; the
    /// peer's exit status and result row do.
    #[error("the last WRITE was never acknowledged (RETRY_EXC_ERR); the peer's exit status says whether it arrived")]
    LastWriteUnacknowledged,
    #[error("VF: {0}")]
    Vf(#[from] DriverError),
    #[error("hook: {0}")]
    Hook(#[source] HookError),
}

impl PerfError {
    /// The process's exit status: 3 for [`PerfError::LastWriteUnacknowledged`] (a script that
    /// knows the peer succeeded may accept it), 1 for every other.
    pub fn exit_status(&self) -> u8 {
        match self {
            PerfError::LastWriteUnacknowledged => 3,
            _ => 1,
        }
    }
}

impl From<ChanError> for PerfError {
    fn from(e: ChanError) -> PerfError {
        match e {
            ChanError::Io(e) => PerfError::Io(e),
            ChanError::Closed(what) => PerfError::Closed(what),
            ChanError::Stalled(t, what) => PerfError::Stalled(t, what),
            ChanError::Hook(h) => PerfError::Hook(h),
        }
    }
}

/// Client: connects to `server:o.port` (TCP, or with `-R` rdma_cm).
pub fn client(ip: Ipv4Addr, server: Ipv4Addr, o: &Options) -> Result<Report, PerfError> {
    // Bad options fail before anything touches the network.
    o.effective()?;
    session(
        ip,
        client_link(SocketAddr::from((server, o.port)), o)?,
        true,
        o,
    )
}

/// Server: accepts one client on TCP `o.port` (all addresses), or with `-R` on rdma_cm port
/// `o.port` at `ip`, and runs one test.
pub fn server(ip: Ipv4Addr, o: &Options) -> Result<Report, PerfError> {
    o.effective()?;
    if o.rdma_cm {
        return session(ip, SideLink::RdmaCm { server: None }, false, o);
    }
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    serve(ip, listener, o)
}

/// Server on a TCP listener the caller bound (not for `-R`, which listens on rdma_cm).
pub fn serve(ip: Ipv4Addr, listener: TcpListener, o: &Options) -> Result<Report, PerfError> {
    session(ip, server_link(listener, o)?, false, o)
}

/// The client's way to the server at `server`: its TCP side channel, or `-R`'s rdma_cm
/// (perftest's client uses its server name for both).
fn client_link(server: SocketAddr, o: &Options) -> Result<SideLink, PerfError> {
    if o.rdma_cm {
        return match server.ip() {
            std::net::IpAddr::V4(a) => Ok(SideLink::RdmaCm { server: Some(a) }),
            std::net::IpAddr::V6(_) => Err(PerfError::Options("-R needs an IPv4 server".into())),
        };
    }
    Ok(SideLink::Tcp(TcpStream::connect_timeout(
        &server, o.timeout,
    )?))
}

/// The server's side channel: the next client of `listener`, or with `-R` rdma_cm (then the
/// listener is not used).
fn server_link(listener: TcpListener, o: &Options) -> Result<SideLink, PerfError> {
    if o.rdma_cm {
        return Ok(SideLink::RdmaCm { server: None });
    }
    // A line scripts wait for before they start the client.
    note(format!(
        "{} server listening on TCP port {}",
        o.test.binary(),
        listener.local_addr()?.port()
    ));
    Ok(SideLink::Tcp(listener.accept()?.0))
}

/// [`client`] on the VF `vf` (a `vhca serve` VF's socket, or a VF's PCI function in a guest):
/// its GID is the one the device reports.
pub fn vf_client(vf: &VfTarget, server: Ipv4Addr, o: &Options) -> Result<Report, PerfError> {
    vf_client_with(vf, server, o, &mut no_hook)
}

/// [`vf_client`] with a hook between iterations (`--migrate-to`: [`crate::migration::vf_mid_run`]).
pub fn vf_client_with(
    vf: &VfTarget,
    server: Ipv4Addr,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, PerfError> {
    let e = o.effective()?;
    let mut ctx = open_vf(vf, node_mem(&e) as u64)?;
    client_on(&mut ctx, (server, o.port).into(), o, hook)
}

/// [`server`] on the VF `vf`.
pub fn vf_server(vf: &VfTarget, o: &Options) -> Result<Report, PerfError> {
    vf_server_with(vf, o, &mut no_hook)
}

/// [`vf_server`] with a hook between iterations (on a write_bw or read_bw server, about every
/// 10 ms while the client works).
pub fn vf_server_with(
    vf: &VfTarget,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, PerfError> {
    let e = o.effective()?;
    let mut ctx = open_vf(vf, node_mem(&e) as u64)?;
    if o.rdma_cm {
        return session_on(&mut ctx, SideLink::RdmaCm { server: None }, false, o, hook);
    }
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    serve_on(&mut ctx, listener, o, hook)
}

/// The client's run on any device against the server at `server` (its TCP side channel, or
/// with `-R` its rdma_cm port; `o.port` is not used); `hook` runs between iterations.
pub fn client_on<V: Endpoint>(
    node: &mut V,
    server: SocketAddr,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    o.effective()?;
    session_on(node, client_link(server, o)?, true, o, hook)
}

/// The server's run on any device for one client of `listener` (with `-R`, of rdma_cm port
/// `o.port`; the listener is not used); `hook` runs between iterations (on a write_bw or
/// read_bw server, about every 10 ms while the client works).
pub fn serve_on<V: Endpoint>(
    node: &mut V,
    listener: TcpListener,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PerfError> {
    session_on(node, server_link(listener, o)?, false, o, hook)
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
        let (min, max, typ, avg, stdev, _, _) = lat_numbers(&posted, 2.0);
        for x in [min, max, typ, avg] {
            assert!((x - 1.0).abs() < 1e-9, "{x}");
        }
        assert!(stdev < 1e-9);
    }
}
