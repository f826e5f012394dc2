//! `vhca pingpong --srq`: rdma-core's `ibv_srq_pingpong` (libibverbs/examples/srq_pingpong.c):
//! `-q N` RC QPs (default 16) whose receives all come from one SRQ of `rx_depth` WQEs, one CQ.
//!
//! Exchange: always `MAX_QP` = 256 messages of 52 bytes each way, in `ibv_rc_pingpong`'s
//! format, the entries past the QPs in use all zeros; the client writes its 256, reads the
//! server's 256 and writes `"done\0"`; the server connects its QPs between reading and
//! answering. QP i connects to the peer's entry i.
//!
//! Data phase: the client starts a SEND on every QP; a QP sends again once its previous SEND
//! and a receive on it have completed, while fewer than `iters` SENDs completed in all
//! (`iters` counts the whole run, not each QP, as the tool does); the SRQ is refilled when at
//! most `num_qp` receives remain. Every message is `size` bytes from the one buffer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use vhca_device::*;
use vhca_guest::programs::{rc_rtr_rts, PeerInfo, RcPath};

use super::{failed_completion, Dest, Options, PingError, Report};
use crate::interop::endpoint::{random_psn, Endpoint, Hook, Progress};

/// srq_pingpong.c's `MAX_QP`: the exchange always carries this many entries.
pub const MAX_QP: usize = 256;
const MSG_LEN: usize = 52;
use super::{RECV_WRID, SEND_WRID};

struct Side {
    cq: CqHandle,
    srq: SrqHandle,
    qps: Vec<Qpn>,
    psns: Vec<Psn>,
    buf: u64,
    key: MemKey,
    gid: Gid,
}

fn check_options(o: &Options) -> Result<(), PingError> {
    if o.num_qp == 0 || o.num_qp as usize > MAX_QP {
        return Err(PingError::Options("--srq takes 1 to 256 QPs (-q)"));
    }
    if o.num_qp > o.rx_depth {
        return Err(PingError::Options(
            "rx_depth is too small for the QPs: at least one receive per QP",
        ));
    }
    if o.ud || o.uc || o.check {
        return Err(PingError::Options(
            "--srq is RC (ibv_srq_pingpong): no --ud, --uc or --chk",
        ));
    }
    Ok(())
}

fn setup<V: Endpoint>(node: &mut V, o: &Options) -> Result<Side, PingError> {
    check_options(o)?;
    let gid = node.local_gid()?;
    let pd = node.alloc_pd()?;
    let cq = node.create_cq(o.rx_depth + o.num_qp)?;
    let srq = node.create_srq(pd, o.rx_depth, 1)?;
    let len = o.size.max(1) as u64;
    let buf = node.alloc_buf(len)?;
    node.write_buf(buf, &vec![0; len as usize])?;
    let key = node.reg_mr(pd, buf, len, Access::LOCAL_WRITE)?;
    let mut qps = Vec::with_capacity(o.num_qp as usize);
    let mut psns = Vec::with_capacity(o.num_qp as usize);
    for _ in 0..o.num_qp {
        let qpn = node.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: Some(srq),
            cap: QpCap {
                max_send_wr: 1,
                max_recv_wr: 0,
                max_send_sge: 1,
                max_recv_sge: 0,
                max_inline_data: 0,
            },
            sq_sig_all: false,
        })?;
        let a = QpAttr {
            qp_state: QpState::Init,
            pkey_index: 0,
            port_num: 1,
            qp_access_flags: Access::empty(),
            ..QpAttr::default()
        };
        node.modify_qp(
            qpn,
            &a,
            QpAttrMask::STATE
                | QpAttrMask::PKEY_INDEX
                | QpAttrMask::PORT
                | QpAttrMask::ACCESS_FLAGS,
        )?;
        qps.push(qpn);
        psns.push(random_psn(gid));
    }
    Ok(Side {
        cq,
        srq,
        qps,
        psns,
        buf,
        key,
        gid,
    })
}

fn post_recvs<V: Endpoint>(node: &mut V, s: &Side, o: &Options, n: u32) -> u32 {
    for i in 0..n {
        let wr = RecvWr {
            wr_id: RECV_WRID,
            sgl: vec![Sge {
                addr: s.buf,
                len: o.size.max(1),
                lkey: s.key,
            }],
        };
        if node.post_srq_recv(s.srq, wr).is_err() {
            return i;
        }
    }
    n
}

fn post_send<V: Endpoint>(node: &mut V, s: &Side, o: &Options, i: usize) -> Result<(), PingError> {
    let mut wr = SendWr::new(SEND_WRID, SendOp::Send).flags(SendFlags::SIGNALED);
    wr.sgl.push(Sge {
        addr: s.buf,
        len: o.size,
        lkey: s.key,
    });
    node.post_send(s.qps[i], &wr)?;
    Ok(())
}

/// The 256 entries this side sends: its QPs, then zeros.
fn my_dests(s: &Side) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_QP * MSG_LEN);
    for i in 0..MAX_QP {
        let d = match s.qps.get(i) {
            Some(&qpn) => Dest {
                lid: 0,
                qpn,
                psn: s.psns[i],
                gid: s.gid,
            },
            None => Dest {
                lid: 0,
                qpn: Qpn(0),
                psn: Psn(0),
                gid: Gid([0; 16]),
            },
        };
        out.extend_from_slice(&d.encode());
    }
    out
}

/// Reads the peer's 256 entries and keeps the first `n`.
fn read_dests(sock: &mut TcpStream, n: usize) -> Result<Vec<Dest>, PingError> {
    let mut all = vec![0u8; MAX_QP * MSG_LEN];
    sock.read_exact(&mut all)?;
    all.chunks(MSG_LEN).take(n).map(Dest::decode).collect()
}

fn connect<V: Endpoint>(
    node: &mut V,
    s: &Side,
    o: &Options,
    rem: &[Dest],
) -> Result<(), PingError> {
    for (i, r) in rem.iter().enumerate() {
        if r.qpn.0 == 0 {
            return Err(PingError::Exchange(format!(
                "the peer has no QP {i}: start both sides with the same -q"
            )));
        }
        let peer = PeerInfo {
            qpn: r.qpn,
            psn: r.psn,
            gid: r.gid,
        };
        // srq_pingpong.c's attributes: those of ibv_rc_pingpong, timeout 14.
        let path = RcPath {
            mtu: o.mtu,
            timeout: 14,
            hop_limit: 1,
            dest_rd_atomic: 1,
            rd_atomic: 1,
        };
        rc_rtr_rts(node, s.qps[i], s.psns[i], peer, path)?;
    }
    Ok(())
}

fn data_phase<V: Endpoint>(
    node: &mut V,
    s: &Side,
    o: &Options,
    client: bool,
    mut routs: u32,
    hook: Hook<'_, V>,
) -> Result<Report, PingError> {
    let n = s.qps.len();
    let start = Instant::now();
    let mut pending = vec![RECV_WRID; n];
    if client {
        for (i, p) in pending.iter_mut().enumerate() {
            post_send(node, s, o, i)?;
            *p = RECV_WRID | SEND_WRID;
        }
    }
    let (mut scnt, mut rcnt) = (0u32, 0u32);
    let mut wcs = Vec::with_capacity(n + o.rx_depth as usize);
    let mut last_progress = Instant::now();
    let (mut last_iteration, mut longest_gap) = (start, Duration::ZERO);
    let mut iterations = 0u32;
    let mut answered_unacked = 0u32;
    while rcnt < o.iters || scnt < o.iters {
        wcs.clear();
        node.poll_cq(s.cq, n + o.rx_depth as usize, &mut wcs)?;
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
            let Some(qi) = s.qps.iter().position(|&q| q == wc.qpn) else {
                return Err(PingError::Exchange(format!(
                    "a completion of unknown QPN {:#08x}",
                    wc.qpn.0
                )));
            };
            if wc.status != WcStatus::Success {
                failed_completion(wc, pending[qi] & RECV_WRID == 0, rcnt >= o.iters)?;
                answered_unacked += 1;
            }
            match wc.wr_id {
                SEND_WRID => scnt += 1,
                RECV_WRID => {
                    routs = routs.saturating_sub(1);
                    if routs <= n as u32 {
                        routs += post_recvs(node, s, o, o.rx_depth - routs);
                        if routs < o.rx_depth {
                            return Err(PingError::Options("could not refill the SRQ"));
                        }
                    }
                    rcnt += 1;
                }
                _ => {}
            }
            pending[qi] &= !wc.wr_id;
            if scnt < o.iters && pending[qi] == 0 {
                post_send(node, s, o, qi)?;
                pending[qi] = RECV_WRID | SEND_WRID;
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
            last_progress = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // RC: stay a moment to re-ACK a last SEND whose ACK was lost (see `Options::linger`).
    let until = Instant::now() + o.linger;
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        node.idle(left)?;
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

fn announce(s: &Side, rem: &[Dest]) {
    eprintln!(
        "vhca pingpong: data phase: {} QPs on one SRQ, local QPN {:#08x}.., remote QPN {:#08x}..",
        s.qps.len(),
        s.qps.first().map_or(0, |q| q.0),
        rem.first().map_or(0, |d| d.qpn.0)
    );
}

/// The server's run (`ibv_srq_pingpong` without a host).
pub fn server_on<V: Endpoint>(
    node: &mut V,
    listener: TcpListener,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PingError> {
    let s = setup(node, o)?;
    let routs = post_recvs(node, &s, o, o.rx_depth);
    eprintln!(
        "vhca pingpong: listening on TCP port {}",
        listener.local_addr()?.port()
    );
    let (mut sock, _) = listener.accept()?;
    drop(listener);
    sock.set_read_timeout(Some(o.stall))?;
    let rem = read_dests(&mut sock, s.qps.len())?;
    connect(node, &s, o, &rem)?;
    sock.write_all(&my_dests(&s))?;
    let mut done = [0u8; 5];
    sock.read_exact(&mut done)?;
    if &done != b"done\0" {
        return Err(PingError::Exchange(String::from_utf8_lossy(&done).into()));
    }
    drop(sock);
    announce(&s, &rem);
    data_phase(node, &s, o, false, routs, hook)
}

/// The client's run (`ibv_srq_pingpong HOST`).
pub fn client_on<V: Endpoint>(
    node: &mut V,
    server: SocketAddr,
    o: &Options,
    hook: Hook<'_, V>,
) -> Result<Report, PingError> {
    let s = setup(node, o)?;
    let routs = post_recvs(node, &s, o, o.rx_depth);
    let mut sock = TcpStream::connect_timeout(&server, o.stall)?;
    sock.set_read_timeout(Some(o.stall))?;
    sock.write_all(&my_dests(&s))?;
    let rem = read_dests(&mut sock, s.qps.len())?;
    sock.write_all(b"done\0")?;
    drop(sock);
    connect(node, &s, o, &rem)?;
    announce(&s, &rem);
    data_phase(node, &s, o, true, routs, hook)
}
