//! `vhca opcodes`: every RC opcode and UD between two processes, every byte checked. A
//! server and a client, each on its own VF (a VF of a `vhca serve` through the guest driver,
//! a VF inside a guest over virtio-pci, or an in-process [`Node`] on kernel UDP), exchange
//! their QPs over a TCP side channel (port 18517, [`proto`]) and run `iters` iterations.
//!
//! In each iteration the client posts, on one RC QP, SEND, SEND_WITH_IMM, RDMA_WRITE,
//! RDMA_WRITE_WITH_IMM, RDMA_READ, ATOMIC_CMP_AND_SWP and ATOMIC_FETCH_AND_ADD, and once
//! they completed sends a UD datagram, which the server answers with one of its own. All data
//! is a function of the operation and the iteration ([`pattern`]), so:
//!
//! * the server checks every SEND and SEND_WITH_IMM payload and immediate, the immediate of
//!   every RDMA_WRITE_WITH_IMM and the bytes both WRITEs put in its buffer, every datagram,
//!   and at the end its two atomic counters;
//! * the client checks every READ (the server refills the READ slot with the pattern of the
//!   iteration that reads it next), the original value every atomic returns (both sides run
//!   the counters' model), and every answer.
//!
//! Up to `window` iterations are in flight; the answer to an iteration's datagram is what
//! lets the client reuse that iteration's slots (see [`client`], [`server`]). UD has no
//! retransmission: the client resends a datagram whose answer is late, which is what carries
//! the UD half across a live migration's blackout; RC recovers by itself.
//!
//! A side fails, naming the iteration and the operation, on an error completion, on any
//! mismatch, or when nothing progresses for `timeout`; it tells the peer why over the side
//! channel, and the peer fails with that reason. At the end the two sides exchange summaries
//! (counts, bytes, checksums of what each saw) and both fail unless they agree.
//!
//! Both roles take a [`Hook`] between iterations (`--migrate-to`: a live migration of the
//! side's VF mid-run, [`crate::migration::vf_mid_run`]).

mod client;
pub mod pattern;
pub mod proto;
mod report;
mod server;
mod session;
mod setup;

use crate::interop::endpoint::{no_hook, open_vf, Hook, HookError};
use crate::interop::side_channel::{Chan, ChanError};
use pattern::Op;
use proto::{Inbox, Msg};
pub use report::{OpCounts, QpInfo, Report, Summary};
pub use setup::mem_bytes;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{Mtu, VerbsError, WcStatus};
use vhca_fabric::node::Node;
use vhca_guest::{DriverError, GuestContext, VfTarget};

/// Beside `vhca pingpong`'s 18515 and `vhca perf`'s.
pub const DEFAULT_PORT: u16 = 18517;
/// The largest message size.
pub const MAX_SIZE: u32 = 1 << 20;
/// The most iterations in flight (an iteration has three READ/atomics; the QPs allow 16).
pub const MAX_WINDOW: u32 = 5;
/// The most iterations of a run (a work request ID holds 52 bits of iteration number).
pub const MAX_ITERS: u64 = 1 << 48;
/// How often a data phase looks at the side channel.
const CHAN_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Error)]
pub enum OpcodesError {
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Chan(#[from] ChanError),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("VF: {0}")]
    Vf(#[from] DriverError),
    #[error("hook: {0}")]
    Hook(#[source] HookError),
    /// Data, an immediate, a length or an order that was not what it must be.
    #[error("iteration {iter}, {op}: {what}")]
    Check { iter: u64, op: Op, what: String },
    #[error("iteration {iter}, {op}: work completion with status {status:?}")]
    Completion { iter: u64, op: Op, status: WcStatus },
    #[error(
        "no progress for {timeout:?} after {done} of {total} iterations: waiting for {waiting}"
    )]
    Stalled {
        timeout: Duration,
        done: u64,
        total: u64,
        waiting: String,
    },
    /// The peer broke the protocol (a message out of place, a value out of range).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer failed and said why.
    #[error("the peer failed: {0}")]
    PeerFailed(String),
    #[error("the two sides' summaries disagree: {0}")]
    Disagree(String),
    #[error("bad options: {0}")]
    Options(String),
}

/// Deliberate misbehaviour, so tests can show that the checks catch corruption (there is no
/// command-line option for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Client: one bit of this iteration's SEND payload is flipped; the server must fail.
    CorruptSend { iteration: u64 },
    /// Server: one bit of what this iteration's RDMA_READ reads is flipped; the client must
    /// fail.
    CorruptRead { iteration: u64 },
    /// Server: the first answer to this iteration's datagram is not sent, as if the network
    /// lost it; the client must send the datagram again, and the run succeed.
    LoseAnswer { iteration: u64 },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    /// Bytes of every RC message. The client's rules; a server accepts clients up to its own
    /// (its memory is sized for it).
    pub size: u32,
    /// The client's iterations; a server learns them from its client.
    pub iters: u64,
    /// This side's path MTU; the smaller of the two sides' is used.
    pub mtu: Mtu,
    /// Iterations in flight. The client's rules; a server accepts clients up to its own.
    pub window: u32,
    /// How long a side waits without progress (a completion, a side-channel byte) before it
    /// fails.
    pub timeout: Duration,
    /// The RC ACK timeout exponent, 4.096 µs × 2^t. With 7 retries the requester survives
    /// 8 timeouts without an answer; 16 (268 ms) rides out a peer's migration blackout of
    /// about 2 s, where ibv_rc_pingpong's 14 gives up after about half a second.
    pub qp_timeout: u8,
    pub fault: Option<Fault>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: DEFAULT_PORT,
            size: 4096,
            iters: 1000,
            mtu: Mtu::Mtu1024,
            window: 4,
            timeout: Duration::from_secs(30),
            qp_timeout: 16,
            fault: None,
        }
    }
}

impl Options {
    fn check(&self) -> Result<(), OpcodesError> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(OpcodesError::Options(format!(
                "size {} (1 B .. {MAX_SIZE} B)",
                self.size
            )));
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Err(OpcodesError::Options(format!(
                "window {} (1 .. {MAX_WINDOW})",
                self.window
            )));
        }
        if !(1..=MAX_ITERS).contains(&self.iters) {
            return Err(OpcodesError::Options(format!("{} iterations", self.iters)));
        }
        Ok(())
    }

    /// Memory a side's device needs for these options.
    pub fn mem_bytes(&self) -> u64 {
        setup::mem_bytes(self.size, self.window)
    }
}

/// The run both sides agreed on.
#[derive(Clone, Debug)]
struct Run {
    size: u32,
    iters: u64,
    window: u32,
    ud_len: u32,
    timeout: Duration,
    fault: Option<Fault>,
}

/// A data phase's watch over its progress and its side channel.
struct Watch {
    timeout: Duration,
    last_progress: Instant,
    last_look: Instant,
}

impl Watch {
    fn new(timeout: Duration) -> Watch {
        Watch {
            timeout,
            last_progress: Instant::now(),
            last_look: Instant::now(),
        }
    }

    fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Looks at the side channel every [`CHAN_POLL`]: a message, if whole (an abort is the
    /// peer's failure).
    fn side_channel(
        &mut self,
        chan: &mut Chan,
        inbox: &mut Inbox,
    ) -> Result<Option<Msg>, OpcodesError> {
        if self.last_look.elapsed() < CHAN_POLL {
            return Ok(None);
        }
        self.last_look = Instant::now();
        let (m, progress) = inbox.poll(chan, "the data phase")?;
        if progress {
            self.progress();
        }
        match m {
            Some(Msg::Abort { reason }) => Err(OpcodesError::PeerFailed(proto::reason(&reason))),
            m => Ok(m),
        }
    }

    /// Fails when nothing progressed for the timeout.
    fn check(
        &self,
        done: u64,
        total: u64,
        waiting: impl FnOnce() -> String,
    ) -> Result<(), OpcodesError> {
        if self.last_progress.elapsed() > self.timeout {
            return Err(OpcodesError::Stalled {
                timeout: self.timeout,
                done,
                total,
                waiting: waiting(),
            });
        }
        Ok(())
    }
}

/// The client's run on any device, against the server's side channel at `server` (`o.port`
/// is not used); `hook` runs each time an iteration completed.
pub fn client_on<V: crate::interop::endpoint::Endpoint>(
    node: &mut V,
    server: SocketAddr,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, OpcodesError> {
    o.check()?;
    session::client(node, server, o, hook)
}

/// The server's run on any device, for one client of `listener` (`o.port` is not used);
/// `hook` runs each time an iteration completed.
pub fn server_on<V: crate::interop::endpoint::Endpoint>(
    node: &mut V,
    listener: TcpListener,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, OpcodesError> {
    o.check()?;
    session::server(node, listener, o, hook)
}

/// Client on an in-process VF at `ip` (kernel UDP, `ip:4791`).
pub fn client(ip: Ipv4Addr, server: Ipv4Addr, o: &Options) -> Result<Report, OpcodesError> {
    o.check()?;
    let mut node = Node::new(ip, o.mem_bytes() as usize)?;
    client_on(&mut node, (server, o.port).into(), o, &mut no_hook)
}

/// Server on an in-process VF at `ip`, for one client on TCP `o.port`.
pub fn server(ip: Ipv4Addr, o: &Options) -> Result<Report, OpcodesError> {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    serve(ip, listener, o)
}

/// [`server`] on a listener the caller bound.
pub fn serve(ip: Ipv4Addr, listener: TcpListener, o: &Options) -> Result<Report, OpcodesError> {
    o.check()?;
    let mut node = Node::new(ip, o.mem_bytes() as usize)?;
    server_on(&mut node, listener, o, &mut no_hook)
}

/// [`client`] on the VF `vf` (a `vhca serve` VF's socket, or a VF's PCI function in a
/// guest), with a hook between iterations.
pub fn vf_client_with(
    vf: &VfTarget,
    server: Ipv4Addr,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, OpcodesError> {
    o.check()?;
    let mut ctx = open_vf(vf, o.mem_bytes())?;
    client_on(&mut ctx, (server, o.port).into(), o, hook)
}

/// [`server`] on the VF `vf`, with a hook between iterations.
pub fn vf_server_with(
    vf: &VfTarget,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, OpcodesError> {
    o.check()?;
    let mut ctx = open_vf(vf, o.mem_bytes())?;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    server_on(&mut ctx, listener, o, hook)
}

/// Connects to the server's side channel, retrying for a moment: in a script the server may
/// be a moment from listening (the client must not need to wait for its line).
fn connect(server: SocketAddr, timeout: Duration) -> Result<TcpStream, OpcodesError> {
    let deadline = Instant::now() + timeout.min(Duration::from_secs(5));
    loop {
        match TcpStream::connect_timeout(&server, timeout) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(source) => {
                return Err(OpcodesError::Connect {
                    addr: server,
                    source,
                })
            }
        }
    }
}
