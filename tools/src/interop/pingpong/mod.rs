//! `vhca pingpong`: RC, UC and UD ping-pong peers that interoperate with rdma-core's
//! `ibv_rc_pingpong`, `ibv_uc_pingpong` and `ibv_ud_pingpong` (rdma-core v44): the same
//! 52-byte TCP exchange on port 18515 and the same data phase, so either side can be the real
//! tool. `ibv_uc_pingpong` is `ibv_rc_pingpong` on a UC QP, moved to RTR and RTS with the UC
//! attributes only (no timeout, retries, RNR timer or READ/atomic resources).
//!
//! Exchange (facts file A.1): the client connects and writes `"%04x:%06x:%06x:%s\0"` (LID,
//! QPN, PSN, GID as 32 hex digits), the server answers with its own after moving its QP to RTS,
//! the client writes `"done\0"`. Sizes, iterations and MTU are not exchanged: start both sides
//! with the same values.
//!
//! The program runs on any [`Endpoint`]: an in-process [`Node`](vhca_fabric::node::Node) with its own UDP socket or TAP
//! device (`--ip`), or a VF of a running `vhca serve` through the guest driver (`--vf SOCKET`,
//! [`vf_server`], [`vf_client`]). [`server_on`] and [`client_on`] take a [`Hook`] called
//! between iterations.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::*;
use vhca_fabric::tap::TapError;
use vhca_fabric::LinkCounters;
use vhca_guest::DriverError;

use crate::interop::endpoint::{random_psn, Endpoint, Hook, HookError, Progress};
use vhca_guest::programs::{rc_rtr_rts, PeerInfo, RcPath};

mod run;
pub mod srq;

pub use run::{client, server, vf_client, vf_client_with, vf_server, vf_server_with};

pub const DEFAULT_PORT: u16 = 18515;
const MSG_LEN: usize = 52;
const RECV_WRID: u64 = 1;
const SEND_WRID: u64 = 2;
/// ibv_ud_pingpong's Q_Key.
pub const UD_QKEY: u32 = 0x1111_1111;
const GRH: u32 = 40;

#[derive(Debug, Error)]
pub enum PingError {
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("TAP: {0}")]
    Tap(#[from] TapError),
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("bad exchange message {0:?}")]
    Exchange(String),
    #[error("work completion failed: {0:?}")]
    Completion(WorkCompletion),
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    #[error("the reply to message {iteration} differs from what was sent: {differ} of {len} bytes, the first at offset {first}")]
    EchoMismatch {
        iteration: u32,
        differ: usize,
        len: usize,
        first: usize,
    },
    #[error("VF: {0}")]
    Vf(#[from] DriverError),
    #[error("hook: {0}")]
    Hook(#[source] HookError),
    #[error("bad options: {0}")]
    Options(&'static str),
    /// Every message arrived, but the ACK of this side's last SEND never did: the peer has
    /// most likely exited (ibv_*_pingpong have no closing handshake, so a peer whose run is
    /// complete destroys its QP while the ACK it sent may still be lost). Nothing this side
    /// saw proves the peer received that SEND; the peer's own exit status does.
    #[error("every message arrived, but the last SEND was never acknowledged ({0:?}); the peer's exit status says whether it arrived")]
    LastSendUnacknowledged(WcStatus),
}

impl PingError {
    /// The process's exit status for this error: 3 for [`PingError::LastSendUnacknowledged`]
    /// (a script that knows the peer succeeded may accept it), 1 for every other.
    pub fn exit_status(&self) -> u8 {
        match self {
            PingError::LastSendUnacknowledged(_) => 3,
            _ => 1,
        }
    }
}

/// What a failed completion means in the data phase. A SEND that exhausted its retries after
/// the peer had answered it (`answered`: the QP received a message after the SEND was posted,
/// and both tools answer message k only once it arrived) reached the peer; only its ACK was
/// lost, and the peer, done, destroyed its QP. Such a SEND counts as delivered (`Ok`). A last
/// SEND nobody answered, once every message arrived, is
/// [`PingError::LastSendUnacknowledged`]; anything else is a failed run.
fn failed_completion(
    wc: &WorkCompletion,
    answered: bool,
    all_received: bool,
) -> Result<(), PingError> {
    let lost_ack = wc.wr_id == SEND_WRID && wc.status == WcStatus::RetryExcErr;
    match (lost_ack, answered, all_received) {
        (true, true, _) => Ok(()),
        (true, false, true) => Err(PingError::LastSendUnacknowledged(wc.status)),
        _ => Err(PingError::Completion(*wc)),
    }
}

/// What the two sides exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest {
    pub lid: u16,
    pub qpn: Qpn,
    pub psn: Psn,
    pub gid: Gid,
}

impl Dest {
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut hex = String::with_capacity(32);
        for b in self.gid.0 {
            hex.push_str(&format!("{b:02x}"));
        }
        let s = format!(
            "{:04x}:{:06x}:{:06x}:{}",
            self.lid,
            self.qpn.0 & 0xff_ffff,
            self.psn.0,
            hex
        );
        let mut out = [0u8; MSG_LEN];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Dest, PingError> {
        let text = String::from_utf8_lossy(b);
        let text = text.trim_end_matches('\0');
        let bad = || PingError::Exchange(text.to_string());
        let mut it = text.split(':');
        let lid = u16::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let qpn = u32::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let psn = u32::from_str_radix(it.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let g = it.next().ok_or_else(bad)?;
        if g.len() != 32 || !g.is_ascii() || qpn > 0xff_ffff || psn > 0xff_ffff {
            return Err(bad());
        }
        let mut gid = [0u8; 16];
        for (i, b) in gid.iter_mut().enumerate() {
            *b = u8::from_str_radix(&g[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Dest {
            lid,
            qpn: Qpn(qpn),
            psn: Psn(psn),
            gid: Gid(gid),
        })
    }
}

/// Options shared by both sides (the tools' `-p -s -n -m -r`), and vhca's own.
#[derive(Clone, Debug)]
pub struct Options {
    pub port: u16,
    pub size: u32,
    pub iters: u32,
    pub mtu: Mtu,
    pub rx_depth: u32,
    pub ud: bool,
    /// UC instead of RC (ignored with `ud`).
    pub uc: bool,
    /// `ibv_srq_pingpong`: `num_qp` RC QPs sharing one SRQ ([`srq`]).
    pub srq: bool,
    pub num_qp: u32,
    /// Give up when no completion arrives for this long.
    pub stall: Duration,
    /// Carry RoCEv2 through this TAP device (own MAC and IP, ARP) instead of a UDP socket.
    pub tap: Option<String>,
    /// Record the traffic in this pcap file.
    pub pcap: Option<PathBuf>,
    /// The RC local ACK timeout exponent (4.096 µs × 2^t), perftest's `--qp-timeout`;
    /// ibv_rc_pingpong uses 14 (67 ms). With retry_cnt 7, a peer that stalls for more than
    /// 8 timeouts fails the QP with RETRY_EXC_ERR (rxe itself treats 7 as infinite).
    pub qp_timeout: u8,
    /// How long an RC side keeps its QP answering after its last completion. ibv_rc_pingpong
    /// has no closing handshake: if the ACK of a side's last SEND is lost and the other side
    /// has already exited, that side retransmits into nothing (rxe retries forever). Staying
    /// a moment re-ACKs such a retransmission; the report's time does not include it.
    pub linger: Duration,
    /// RC client: check every reply byte for byte. Each message carries a pattern of its
    /// iteration; the server echoes it, because ibv_rc_pingpong (and `vhca pingpong`) send
    /// from the buffer their receives land in and answer message k only after it arrived.
    pub check: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: DEFAULT_PORT,
            size: 4096,
            iters: 1000,
            mtu: Mtu::Mtu1024,
            rx_depth: 500,
            ud: false,
            uc: false,
            srq: false,
            num_qp: 16,
            stall: Duration::from_secs(30),
            tap: None,
            pcap: None,
            qp_timeout: 14,
            linger: Duration::from_secs(1),
            check: false,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub bytes: u64,
    pub seconds: f64,
    pub iters: u32,
    pub mbit_per_sec: f64,
    pub usec_per_iter: f64,
    /// The longest time between two consecutive completed iterations, in milliseconds: the
    /// stall a live migration of either side caused (the first iteration counts from the
    /// start of the data phase).
    pub longest_gap_ms: f64,
    /// SENDs that exhausted their retries although the peer had answered them: the peer
    /// exited before a lost ACK could be resent (see [`PingError::LastSendUnacknowledged`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub answered_unacked: u32,
    /// The link's counters at the end (RoCEv2 packets, not the TCP exchange); absent on a
    /// VF of a serve process, whose link this program cannot see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkCounters>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Report {
    /// The tools' two output lines, and a third when a SEND's ACK was lost at the end.
    pub fn lines(&self) -> String {
        let mut s = format!(
            "{} bytes in {:.2} seconds = {:.2} Mbit/sec\n{} iters in {:.2} seconds = {:.2} usec/iter\n",
            self.bytes, self.seconds, self.mbit_per_sec, self.iters, self.seconds, self.usec_per_iter
        );
        if self.answered_unacked > 0 {
            s.push_str(&format!(
                "{} SEND(s) answered by the peer but never ACKed: it exited before a lost ACK was resent\n",
                self.answered_unacked
            ));
        }
        s
    }
}

struct Side {
    pd: PdHandle,
    cq: CqHandle,
    qpn: Qpn,
    buf: u64,
    key: MemKey,
    psn: Psn,
    ah: Option<AhHandle>,
    remote: Option<Dest>,
    gid: Gid,
}

fn setup<V: Endpoint>(node: &mut V, o: &Options) -> Result<Side, PingError> {
    let gid = node.local_gid()?;
    let pd = node.alloc_pd()?;
    let cq = node.create_cq(o.rx_depth + 1)?;
    let qpn = node.create_qp(QpInitAttr {
        qp_type: if o.ud {
            QpType::Ud
        } else if o.uc {
            QpType::Uc
        } else {
            QpType::Rc
        },
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap {
            max_send_wr: 1,
            max_recv_wr: o.rx_depth,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        sq_sig_all: false,
    })?;
    let len = (o.size + if o.ud { GRH } else { 0 }).max(1) as u64;
    let buf = node.alloc_buf(len)?;
    node.write_buf(buf, &vec![0x7b; len as usize])?;
    let key = node.reg_mr(pd, buf, len, Access::LOCAL_WRITE)?;
    let mut a = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        ..QpAttr::default()
    };
    if o.ud {
        a.qkey = UD_QKEY;
        node.modify_qp(
            qpn,
            &a,
            QpAttrMask::STATE | QpAttrMask::PKEY_INDEX | QpAttrMask::PORT | QpAttrMask::QKEY,
        )?;
    } else {
        a.qp_access_flags = Access::empty();
        node.modify_qp(
            qpn,
            &a,
            QpAttrMask::STATE
                | QpAttrMask::PKEY_INDEX
                | QpAttrMask::PORT
                | QpAttrMask::ACCESS_FLAGS,
        )?;
    }
    Ok(Side {
        pd,
        cq,
        qpn,
        buf,
        key,
        psn: random_psn(gid),
        ah: None,
        remote: None,
        gid,
    })
}

fn connect<V: Endpoint>(
    node: &mut V,
    s: &mut Side,
    o: &Options,
    rem: Dest,
) -> Result<(), PingError> {
    use QpAttrMask as M;
    let mut a = QpAttr::default();
    if o.ud {
        a.qp_state = QpState::Rtr;
        node.modify_qp(s.qpn, &a, M::STATE)?;
        a.qp_state = QpState::Rts;
        a.sq_psn = s.psn;
        node.modify_qp(s.qpn, &a, M::STATE | M::SQ_PSN)?;
        s.ah = Some(node.create_ah(
            s.pd,
            AhAttr {
                dgid: rem.gid,
                hop_limit: 1,
                ..AhAttr::default()
            },
        )?);
    } else if o.uc {
        // ibv_uc_pingpong's attributes: the path, nothing about acknowledgements.
        a.qp_state = QpState::Rtr;
        a.path_mtu = o.mtu;
        a.dest_qp_num = rem.qpn;
        a.rq_psn = rem.psn;
        a.ah_attr = AhAttr {
            dgid: rem.gid,
            hop_limit: 1,
            ..AhAttr::default()
        };
        node.modify_qp(
            s.qpn,
            &a,
            M::STATE | M::AV | M::PATH_MTU | M::DEST_QPN | M::RQ_PSN,
        )?;
        a.qp_state = QpState::Rts;
        a.sq_psn = s.psn;
        node.modify_qp(s.qpn, &a, M::STATE | M::SQ_PSN)?;
    } else {
        // ibv_rc_pingpong's attributes: one READ/atomic each way.
        let peer = PeerInfo {
            qpn: rem.qpn,
            psn: rem.psn,
            gid: rem.gid,
        };
        let path = RcPath {
            mtu: o.mtu,
            timeout: o.qp_timeout,
            hop_limit: 1,
            dest_rd_atomic: 1,
            rd_atomic: 1,
        };
        rc_rtr_rts(node, s.qpn, s.psn, peer, path)?;
    }
    s.remote = Some(rem);
    Ok(())
}

fn post_recvs<V: Endpoint>(node: &mut V, s: &Side, o: &Options, n: u32) -> Result<u32, PingError> {
    let len = o.size + if o.ud { GRH } else { 0 };
    for i in 0..n {
        let wr = RecvWr {
            wr_id: RECV_WRID,
            sgl: vec![Sge {
                addr: s.buf,
                len: len.max(1),
                lkey: s.key,
            }],
        };
        if node.post_recv(s.qpn, wr).is_err() {
            return Ok(i);
        }
    }
    Ok(n)
}

fn post_send<V: Endpoint>(node: &mut V, s: &Side, o: &Options) -> Result<(), PingError> {
    let mut wr = SendWr::new(SEND_WRID, SendOp::Send).flags(SendFlags::SIGNALED);
    if o.ud {
        let rem = s.remote.expect("connected");
        wr.sgl.push(Sge {
            addr: s.buf + GRH as u64,
            len: o.size,
            lkey: s.key,
        });
        wr.ud = Some(UdDest {
            ah: s.ah.expect("ah"),
            remote_qpn: rem.qpn,
            remote_qkey: UD_QKEY,
        });
    } else {
        wr.sgl.push(Sge {
            addr: s.buf,
            len: o.size,
            lkey: s.key,
        });
    }
    node.post_send(s.qpn, &wr)?;
    Ok(())
}

/// What message `iteration` carries with `--chk`: every byte depends on its offset and on the
/// iteration, so a reply from another iteration, or a shifted one, does not pass.
fn echo_pattern(iteration: u32, size: u32) -> Vec<u8> {
    (0..size)
        .map(|j| (j.wrapping_mul(31) ^ iteration.wrapping_mul(7)).wrapping_add(0x5a) as u8)
        .collect()
}

/// Checks that the reply to message `iteration` (now in the buffer) is that message.
fn check_echo<V: Endpoint>(
    node: &mut V,
    s: &Side,
    iteration: u32,
    size: u32,
) -> Result<(), PingError> {
    let got = node.read_buf(s.buf, size as usize)?;
    let want = echo_pattern(iteration, size);
    let differ: Vec<usize> = (0..want.len()).filter(|&j| got[j] != want[j]).collect();
    match differ.first() {
        None => Ok(()),
        Some(&first) => Err(PingError::EchoMismatch {
            iteration,
            differ: differ.len(),
            len: want.len(),
            first,
        }),
    }
}

fn my_dest(s: &Side) -> Dest {
    Dest {
        lid: 0,
        qpn: s.qpn,
        psn: s.psn,
        gid: s.gid,
    }
}

fn read_exact_msg(sock: &mut TcpStream, n: usize) -> Result<Vec<u8>, PingError> {
    let mut b = vec![0u8; n];
    sock.read_exact(&mut b)?;
    Ok(b)
}

/// The data phase of both tools: each side posts its next SEND once its previous SEND has
/// completed and a receive has completed; the client starts. `hook` runs each time an
/// iteration (a SEND and a receive) completed.
fn data_phase<V: Endpoint>(
    node: &mut V,
    s: &Side,
    o: &Options,
    client: bool,
    mut routs: u32,
    hook: Hook<'_, V>,
) -> Result<Report, PingError> {
    let start = Instant::now();
    let mut pending = RECV_WRID;
    if o.check && o.ud {
        return Err(PingError::Options(
            "--chk checks RC and UC replies; UD has no echo to check",
        ));
    }
    let check = o.check && client;
    if check {
        node.write_buf(s.buf, &echo_pattern(0, o.size))?;
    }
    if client {
        post_send(node, s, o)?;
        pending |= SEND_WRID;
    }
    let (mut scnt, mut rcnt) = (0u32, 0u32);
    let mut wcs = Vec::with_capacity(2);
    let mut last_progress = Instant::now();
    let mut iterations = 0u32;
    let (mut last_iteration, mut longest_gap) = (start, Duration::ZERO);
    let mut answered_unacked = 0u32;
    while rcnt < o.iters || scnt < o.iters {
        wcs.clear();
        node.poll_cq(s.cq, 2, &mut wcs)?;
        if wcs.is_empty() {
            if last_progress.elapsed() > o.stall {
                return Err(PingError::Stalled(o.stall));
            }
            continue;
        }
        last_progress = Instant::now();
        for wc in wcs.iter() {
            // A QP failed by a lost last ACK flushes its receives behind it: the run is over.
            if rcnt >= o.iters && scnt >= o.iters {
                break;
            }
            if wc.status != WcStatus::Success {
                failed_completion(wc, pending & RECV_WRID == 0, rcnt >= o.iters)?;
                answered_unacked += 1;
            }
            match wc.wr_id {
                SEND_WRID => scnt += 1,
                RECV_WRID => {
                    if check {
                        check_echo(node, s, rcnt, o.size)?;
                    }
                    routs -= 1;
                    if routs <= 1 {
                        routs += post_recvs(node, s, o, o.rx_depth - routs)?;
                    }
                    rcnt += 1;
                }
                _ => {}
            }
            pending &= !wc.wr_id;
            if scnt < o.iters && pending == 0 {
                if check {
                    node.write_buf(s.buf, &echo_pattern(scnt, o.size))?;
                }
                post_send(node, s, o)?;
                pending = RECV_WRID | SEND_WRID;
            }
        }
        if scnt.min(rcnt) > iterations {
            iterations = scnt.min(rcnt);
            longest_gap = longest_gap.max(last_iteration.elapsed());
            last_iteration = Instant::now();
            hook(
                node,
                Progress {
                    done: Some(iterations as u64),
                    total: o.iters as u64,
                },
            )
            .map_err(PingError::Hook)?;
            // The hook may have taken a while (a migration's blackout): that is not the peer
            // stalling.
            last_progress = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // Only RC owes the peer ACKs after its last completion.
    if !o.ud && !o.uc {
        let until = Instant::now() + o.linger;
        while let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            node.idle(left)?;
        }
    }
    let bytes = o.size as u64 * o.iters as u64 * 2;
    Ok(Report {
        bytes,
        seconds: secs,
        iters: o.iters,
        mbit_per_sec: bytes as f64 * 8.0 / secs / 1e6,
        usec_per_iter: secs * 1e6 / o.iters as f64,
        longest_gap_ms: longest_gap.as_secs_f64() * 1e3,
        answered_unacked,
        link: node.link_counters(),
    })
}

/// The server's run on any device, for one client of `listener` (`o.port` is not used: the
/// listener is bound already). `hook` runs between iterations.
pub fn server_on<V: Endpoint>(
    node: &mut V,
    listener: TcpListener,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PingError> {
    if o.srq {
        return srq::server_on(node, listener, o, hook);
    }
    let mut s = setup(node, o)?;
    let routs = post_recvs(node, &s, o, o.rx_depth)?;
    // A line scripts wait for before they start the client (no sleeping on a guess).
    eprintln!(
        "vhca pingpong: listening on TCP port {}",
        listener.local_addr()?.port()
    );
    let (mut sock, _) = listener.accept()?;
    drop(listener);
    // A client that connects and then says nothing is a stall like any other.
    sock.set_read_timeout(Some(o.stall))?;
    let rem = Dest::decode(&read_exact_msg(&mut sock, MSG_LEN)?)?;
    connect(node, &mut s, o, rem)?;
    sock.write_all(&my_dest(&s).encode())?;
    let done = read_exact_msg(&mut sock, 5)?;
    if &done != b"done\0" {
        return Err(PingError::Exchange(String::from_utf8_lossy(&done).into()));
    }
    drop(sock);
    announce_data_phase(&s, &rem);
    data_phase(node, &s, o, false, routs, hook)
}

/// The line a script waits for to know the data phase begins (a live migration "mid-run"
/// starts after it), with both QPs as ibv_rc_pingpong shows them.
fn announce_data_phase(s: &Side, rem: &Dest) {
    eprintln!(
        "vhca pingpong: data phase: local QPN {:#08x} PSN {:#08x}, remote QPN {:#08x} PSN {:#08x}",
        s.qpn.0, s.psn.0, rem.qpn.0, rem.psn.0
    );
}

/// The client's run on any device, against the server's TCP address `server` (`o.port` is
/// not used). `hook` runs between iterations.
pub fn client_on<V: Endpoint>(
    node: &mut V,
    server: SocketAddr,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PingError> {
    if o.srq {
        return srq::client_on(node, server, o, hook);
    }
    let mut s = setup(node, o)?;
    let routs = post_recvs(node, &s, o, o.rx_depth)?;
    let mut sock = TcpStream::connect_timeout(&server, o.stall)?;
    sock.set_read_timeout(Some(o.stall))?;
    sock.write_all(&my_dest(&s).encode())?;
    let rem = Dest::decode(&read_exact_msg(&mut sock, MSG_LEN)?)?;
    sock.write_all(b"done\0")?;
    drop(sock);
    connect(node, &mut s, o, rem)?;
    announce_data_phase(&s, &rem);
    data_phase(node, &s, o, true, routs, hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(wr_id: u64, status: WcStatus) -> WorkCompletion {
        WorkCompletion {
            wr_id,
            status,
            opcode: if wr_id == SEND_WRID {
                WcOpcode::Send
            } else {
                WcOpcode::Recv
            },
            qpn: Qpn(0x11),
            byte_len: 4096,
            imm: None,
            invalidated_rkey: None,
            src_qp: Qpn(0),
            src_gid: Gid::default(),
            grh: false,
            solicited: false,
        }
    }

    #[test]
    fn a_lost_last_ack_is_delivery_only_when_the_peer_answered() {
        let lost = failed(SEND_WRID, WcStatus::RetryExcErr);
        // The client: the peer's reply to that SEND arrived, so the SEND did.
        assert!(failed_completion(&lost, true, true).is_ok());
        // The server: every message arrived, nothing answers its last SEND.
        let e = failed_completion(&lost, false, true).unwrap_err();
        assert!(matches!(
            e,
            PingError::LastSendUnacknowledged(WcStatus::RetryExcErr)
        ));
        assert_eq!(e.exit_status(), 3);
        // Mid-run, unanswered: a failed run.
        let e = failed_completion(&lost, false, false).unwrap_err();
        assert!(matches!(e, PingError::Completion(_)));
        assert_eq!(e.exit_status(), 1);
        // Any other failure, answered or not, is a failed run.
        for wc in [
            failed(SEND_WRID, WcStatus::RemAccessErr),
            failed(SEND_WRID, WcStatus::RnrRetryExcErr),
            failed(RECV_WRID, WcStatus::RetryExcErr),
            failed(RECV_WRID, WcStatus::WrFlushErr),
        ] {
            for (answered, all) in [(true, true), (false, true), (true, false)] {
                assert!(matches!(
                    failed_completion(&wc, answered, all),
                    Err(PingError::Completion(_))
                ));
            }
        }
    }

    #[test]
    fn echo_patterns_differ_between_iterations_and_offsets() {
        let a = echo_pattern(5, 4096);
        let b = echo_pattern(6, 4096);
        assert_eq!(a.len(), 4096);
        assert_eq!(
            a,
            echo_pattern(5, 4096),
            "a pattern is a function of its iteration"
        );
        // A reply to another message fails the check almost everywhere, not in one byte.
        assert!(a.iter().zip(&b).filter(|(x, y)| x != y).count() > 4000);
        // A reply shifted by a byte fails too.
        assert!(a[1..].iter().zip(&a).filter(|(x, y)| x != y).count() > 4000);
        assert!(echo_pattern(0, 0).is_empty());
    }

    #[test]
    fn exchange_message_matches_the_seen_bytes() {
        // Seen on the wire (facts A.1): LID 0, QPN 0x11, PSN 0xd97ec5, GID ::ffff:10.77.0.3.
        let d = Dest {
            lid: 0,
            qpn: Qpn(0x11),
            psn: Psn(0xd97ec5),
            gid: Gid::from_ipv4([10, 77, 0, 3]),
        };
        let b = d.encode();
        assert_eq!(
            &b[..51],
            b"0000:000011:d97ec5:00000000000000000000ffff0a4d0003"
        );
        assert_eq!(b[51], 0);
        assert_eq!(Dest::decode(&b).unwrap(), d);
        assert!(Dest::decode(b"0000:zz").is_err());
        assert!(Dest::decode(b"0000:1000000:000000:00000000000000000000ffff0a4d0003").is_err());
    }
}
