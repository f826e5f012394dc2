//! `vhca rping`: librdmacm's `rping` (rdma-core examples/rping.c), either role, connected by
//! the IB CM on QP1 with rdma_cm's IP header (no TCP side channel: the CM is the only
//! exchange), so the other side can be the real `rping`.
//!
//! The protocol, per ping (the client counts them, `-C`):
//! 1. The client fills its start buffer (`"rdma-ping-%d: "` then letters cycling from a
//!    per-ping start in `A..=z`, a NUL last) and SENDs `{addr, rkey, len}` of it (16 bytes,
//!    big-endian: `struct rping_rdma_info`).
//! 2. The server RDMA READs that buffer into its own, then SENDs 16 bytes ("go ahead").
//! 3. The client SENDs `{addr, rkey, len}` of its RDMA buffer.
//! 4. The server RDMA WRITEs what it read (up to and including the first NUL) there, then SENDs
//!    "go ahead" again; with `-V` the client checks its RDMA buffer equals its start buffer.
//!
//! The client disconnects (DREQ) after the last ping; the server runs until that.

use crate::interop::cm::cma::{self, CmaHdr};
use crate::interop::cm::conn::{AcceptParams, CmConfig, ConnId, ConnectParams, Event};
use crate::interop::cm::port::{ca_guid, fresh_comm_id, CmPort, CmPortError};
use crate::interop::endpoint::{random_psn, Endpoint};
use serde::Serialize;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::*;
use vhca_guest::programs::{rc_rtr_rts, PeerInfo, RcPath};

/// rping's default port.
pub const DEFAULT_PORT: u16 = 7174;
/// `struct rping_rdma_info`: be64 buf, be32 rkey, be32 size.
const INFO_LEN: u32 = 16;
const RECV_WRID: u64 = 1;
const SEND_WRID: u64 = 2;
const RDMA_WRID: u64 = 3;

#[derive(Debug, Error)]
pub enum RpingError {
    #[error("verbs: {0}")]
    Verbs(#[from] VerbsError),
    #[error("connection manager: {0}")]
    Port(#[from] CmPortError),
    #[error("connection manager: {0}")]
    Cm(#[from] crate::interop::cm::conn::CmError),
    #[error("device: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer rejected the connection (reason {0})")]
    Rejected(u16),
    #[error("the peer did not answer the connection manager")]
    CmTimeout,
    #[error("the peer disconnected in the middle of ping {0}")]
    Disconnected(u64),
    #[error("work completion failed: {0:?}")]
    Completion(WorkCompletion),
    /// Server: the last "go ahead" of ping `pings` exhausted its retries and no DREQ came:
    /// the client most likely finished and destroyed its QP while the ACK (and its DREQ) was
    /// lost. Nothing the server saw proves the client got it; the client's exit status does.
    #[error("rping server: {pings} pings; the last go-ahead was never acknowledged and no DREQ came (the client's exit status says whether it arrived)")]
    LastGoAheadUnacknowledged { pings: u64 },
    #[error("no completion for {0:?}")]
    Stalled(Duration),
    #[error(
        "ping {ping}: data mismatch (first difference at byte {first}): got {got:?}, sent {sent:?}"
    )]
    Mismatch {
        ping: u64,
        first: usize,
        got: String,
        sent: String,
    },
    #[error("bad peer message: {0}")]
    Peer(String),
    #[error("bad options: {0}")]
    Options(&'static str),
    #[error("VF: {0}")]
    Vf(#[from] vhca_guest::DriverError),
}

impl RpingError {
    pub fn from_driver(e: vhca_guest::DriverError) -> RpingError {
        RpingError::Vf(e)
    }
}

/// Options of both roles (rping's flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// `-p`: the port (service ID `0x0106_0000 + port`).
    pub port: u16,
    /// `-S`: buffer size.
    pub size: u32,
    /// `-C`: pings (client; 0 = until stopped, which this tool does not allow).
    pub count: u64,
    /// `-v`: print the ping data.
    pub verbose: bool,
    /// `-V`: check the echoed data.
    pub validate: bool,
    pub mtu: Mtu,
    /// RC ACK timeout exponent of this side's QP.
    pub qp_timeout: u8,
    /// How long any one wait (for the peer's CM message or a completion) may last.
    pub stall: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: DEFAULT_PORT,
            size: 64,
            count: 10,
            verbose: false,
            validate: false,
            mtu: Mtu::Mtu1024,
            qp_timeout: 14,
            stall: Duration::from_secs(30),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub role: &'static str,
    pub pings: u64,
    pub size: u32,
    pub validated: bool,
    pub cm_sent: u64,
    pub cm_received: u64,
    pub cm_resent: u64,
    pub cm_duplicates: u64,
    /// Server: the last ping's final "go ahead" was never ACKed, because the client's DREQ
    /// overtook a lost ACK (see `server_on`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub last_ack_overtaken: bool,
}

impl Report {
    pub fn lines(&self) -> Vec<String> {
        vec![format!(
            "rping {}: {} pings of {} bytes{}; CM MADs sent {} (resent {}), received {} ({} duplicates)",
            self.role,
            self.pings,
            self.size,
            if self.validated { ", data verified" } else { "" },
            self.cm_sent,
            self.cm_resent,
            self.cm_received,
            self.cm_duplicates
        ) + if self.last_ack_overtaken {
            "; the last go-ahead's ACK was overtaken by the client's DREQ"
        } else {
            ""
        }]
    }
}

/// rping's minimum size: room for the longest `"rdma-ping-%d: "` and the NUL.
const MIN_SIZE: u32 = 26;
const MAX_SIZE: u32 = 64 * 1024 - 1;

/// One side's objects: the RC QP, its CQ, one registered region holding the receive and send
/// info messages, the start buffer and the RDMA buffer, and QP1 with the CM.
struct Side {
    cm: CmPort,
    cq: CqHandle,
    qpn: Qpn,
    psn: Psn,
    key: MemKey,
    recv_buf: u64,
    send_buf: u64,
    start_buf: u64,
    rdma_buf: u64,
    pending: VecDeque<WorkCompletion>,
    conn: Option<ConnId>,
    gid: Gid,
}

fn ipv4_of(gid: Gid) -> Result<Ipv4Addr, RpingError> {
    gid.to_ipv4().map(Ipv4Addr::from).ok_or(RpingError::Options(
        "the device's GID is not an IPv4-mapped address",
    ))
}

impl Side {
    fn open<E: Endpoint>(dev: &mut E, o: &Options) -> Result<Side, RpingError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&o.size) {
            return Err(RpingError::Options("size must be between 26 and 65535"));
        }
        let gid = dev.local_gid()?;
        let pd = dev.alloc_pd()?;
        let cm = CmPort::open(dev, pd, CmConfig::new(ca_guid(gid), fresh_comm_id(gid)))?;
        let cq = dev.create_cq(64)?;
        let qpn = dev.create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: QpCap {
                max_send_wr: 16,
                max_recv_wr: 2,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: true,
        })?;
        let init = QpAttr {
            qp_state: QpState::Init,
            qp_access_flags: Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE,
            port_num: 1,
            ..QpAttr::default()
        };
        dev.modify_qp(
            qpn,
            &init,
            QpAttrMask::STATE
                | QpAttrMask::PKEY_INDEX
                | QpAttrMask::PORT
                | QpAttrMask::ACCESS_FLAGS,
        )?;
        let size = u64::from(o.size).next_multiple_of(64);
        let len = 64 + 64 + 2 * size;
        let base = dev.alloc_buf(len)?;
        let key = dev.reg_mr(
            pd,
            base,
            len,
            Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE,
        )?;
        Ok(Side {
            cm,
            cq,
            qpn,
            psn: random_psn(gid),
            key,
            recv_buf: base,
            send_buf: base + 64,
            start_buf: base + 128,
            rdma_buf: base + 128 + size,
            pending: VecDeque::new(),
            conn: None,
            gid,
        })
    }

    fn path(&self, o: &Options, peer_mtu: Option<u8>) -> RcPath {
        // The narrower of the two MTUs (the REQ's is the path the peer computed).
        let mtu = peer_mtu
            .and_then(|m| Mtu::ALL.iter().copied().find(|x| *x as u8 == m))
            .map_or(o.mtu, |m| m.min(o.mtu));
        RcPath {
            mtu,
            timeout: o.qp_timeout,
            hop_limit: 64,
            dest_rd_atomic: 1,
            rd_atomic: 1,
        }
    }

    fn post_recv<E: Endpoint>(&self, dev: &mut E) -> Result<(), RpingError> {
        dev.post_recv(
            self.qpn,
            RecvWr {
                wr_id: RECV_WRID,
                sgl: vec![Sge {
                    addr: self.recv_buf,
                    len: INFO_LEN,
                    lkey: self.key,
                }],
            },
        )?;
        Ok(())
    }

    /// SENDs `{addr, rkey, len}` (rping_format_send), or 16 zero bytes for "go ahead".
    fn send_info<E: Endpoint>(
        &self,
        dev: &mut E,
        info: Option<(u64, u32)>,
    ) -> Result<(), RpingError> {
        let mut b = [0u8; INFO_LEN as usize];
        if let Some((addr, len)) = info {
            b[..8].copy_from_slice(&addr.to_be_bytes());
            b[8..12].copy_from_slice(&self.key.0.to_be_bytes());
            b[12..].copy_from_slice(&len.to_be_bytes());
        }
        dev.write_buf(self.send_buf, &b)?;
        let wr = SendWr::new(SEND_WRID, SendOp::Send).sge(Sge {
            addr: self.send_buf,
            len: INFO_LEN,
            lkey: self.key,
        });
        dev.post_send(self.qpn, &wr)?;
        Ok(())
    }

    /// The next completion with `wr_id`, driving the CM meanwhile. `None` when the peer
    /// disconnected first.
    fn wait<E: Endpoint>(
        &mut self,
        dev: &mut E,
        wr_id: u64,
        o: &Options,
    ) -> Result<Option<WorkCompletion>, RpingError> {
        let start = Instant::now();
        loop {
            if let Some(i) = self.pending.iter().position(|w| w.wr_id == wr_id) {
                let wc = self.pending.remove(i).expect("found");
                if wc.status != WcStatus::Success {
                    return Err(RpingError::Completion(wc));
                }
                return Ok(Some(wc));
            }
            let mut wcs = Vec::new();
            dev.poll_cq(self.cq, 16, &mut wcs)?;
            if !wcs.is_empty() {
                // Traffic on the QP: the connection is up even if the RTU was lost.
                if let Some(id) = self.conn {
                    self.cm.cm.notify_established(id);
                }
                self.pending.extend(wcs);
                continue;
            }
            self.cm.drive(dev)?;
            while let Some(e) = self.cm.cm.poll_event() {
                match e {
                    Event::Disconnected { id } if Some(id) == self.conn => return Ok(None),
                    Event::TimedOut { id } if Some(id) == self.conn => {
                        return Err(RpingError::CmTimeout)
                    }
                    Event::Rejected { id, reason } if Some(id) == self.conn => {
                        return Err(RpingError::Rejected(reason))
                    }
                    other => tracing::debug!("rping: CM event {other:?}"),
                }
            }
            if start.elapsed() > o.stall {
                return Err(RpingError::Stalled(o.stall));
            }
            dev.idle(Duration::from_micros(200))?;
        }
    }

    /// The peer's `{addr, rkey, len}` from the receive buffer.
    fn peer_info<E: Endpoint>(&self, dev: &mut E) -> Result<(u64, MemKey, u32), RpingError> {
        let b = dev.read_buf(self.recv_buf, INFO_LEN as usize)?;
        let addr = u64::from_be_bytes(b[..8].try_into().expect("8"));
        let rkey = u32::from_be_bytes(b[8..12].try_into().expect("4"));
        let len = u32::from_be_bytes(b[12..].try_into().expect("4"));
        Ok((addr, MemKey(rkey), len))
    }

    fn report(&self, role: &'static str, pings: u64, o: &Options) -> Report {
        let c = self.cm.cm.counters;
        Report {
            role,
            pings,
            size: o.size,
            validated: o.validate,
            cm_sent: c.sent,
            cm_received: c.received,
            cm_resent: c.resent,
            cm_duplicates: c.duplicates,
            last_ack_overtaken: false,
        }
    }
}

/// The client's start buffer for ping `ping` (rping_test_client's pattern).
pub fn ping_pattern(ping: u64, start: u8, size: u32) -> Vec<u8> {
    let mut b = format!("rdma-ping-{ping}: ").into_bytes();
    b.truncate(size as usize);
    let mut c = start;
    while b.len() < size as usize {
        b.push(c);
        c += 1;
        if c > b'z' {
            c = b'A';
        }
    }
    if let Some(last) = b.last_mut() {
        *last = 0;
    }
    b
}

/// The client: connects to `server` on `o.port`, pings `o.count` times, disconnects.
pub fn client_on<E: Endpoint>(
    dev: &mut E,
    server: Ipv4Addr,
    o: &Options,
) -> Result<Report, RpingError> {
    if o.count == 0 {
        return Err(RpingError::Options("give a ping count (-C)"));
    }
    let mut s = Side::open(dev, o)?;
    let me = ipv4_of(s.gid)?;
    s.post_recv(dev)?;
    let hdr = CmaHdr {
        // An ephemeral source port, as the kernel binds one for rdma_connect.
        src_port: 0x8000 | (s.psn.0 as u16 & 0x7fff),
        src: IpAddr::V4(me),
        dst: IpAddr::V4(server),
    };
    let peer = Gid::from_ipv4(server.octets());
    let now = s.cm.now();
    let id = s.cm.cm.connect(
        now,
        &ConnectParams {
            peer,
            local_gid: s.gid,
            service_id: cma::service_id(o.port),
            qpn: s.qpn.0,
            starting_psn: s.psn.0,
            responder_resources: 1,
            initiator_depth: 1,
            path_mtu: o.mtu as u8,
            retry_count: 7,
            rnr_retry_count: 7,
            local_ack_timeout: o.qp_timeout,
            private_data: hdr
                .emit()
                .map_err(|e| RpingError::Peer(e.to_string()))?
                .to_vec(),
        },
    )?;
    s.conn = Some(id);
    let rep = loop {
        match s.cm.wait_event(dev, o.stall)? {
            Event::Reply { id: r, rep } if r == id => break rep,
            Event::Rejected { id: r, reason } if r == id => {
                return Err(RpingError::Rejected(reason))
            }
            Event::TimedOut { id: r } if r == id => return Err(RpingError::CmTimeout),
            other => tracing::debug!("rping client: CM event {other:?}"),
        }
    };
    let path = s.path(o, None);
    // A CM message's starting PSN is the one its sender expects to receive first (the kernel
    // sets the passive QP's rq_psn from the REP): this side sends from the REP's and receives
    // from the REQ's.
    rc_rtr_rts(
        dev,
        s.qpn,
        Psn(rep.starting_psn),
        PeerInfo {
            qpn: Qpn(rep.local_qpn),
            psn: s.psn,
            gid: peer,
        },
        path,
    )?;
    s.cm.cm.rtu(id)?;
    s.cm.drive(dev)?;

    let mut start = b'A';
    for ping in 0..o.count {
        let pattern = ping_pattern(ping, start, o.size);
        start = if start >= b'z' { b'A' } else { start + 1 };
        dev.write_buf(s.start_buf, &pattern)?;
        dev.write_buf(s.rdma_buf, &vec![0u8; o.size as usize])?;
        // Step 1: advertise the start buffer; the server READs it and says go ahead.
        s.send_info(dev, Some((s.start_buf, o.size)))?;
        s.wait(dev, SEND_WRID, o)?
            .ok_or(RpingError::Disconnected(ping))?;
        s.wait(dev, RECV_WRID, o)?
            .ok_or(RpingError::Disconnected(ping))?;
        s.post_recv(dev)?;
        // Step 3: advertise the RDMA buffer; the server WRITEs into it and says go ahead.
        s.send_info(dev, Some((s.rdma_buf, o.size)))?;
        s.wait(dev, SEND_WRID, o)?
            .ok_or(RpingError::Disconnected(ping))?;
        s.wait(dev, RECV_WRID, o)?
            .ok_or(RpingError::Disconnected(ping))?;
        s.post_recv(dev)?;
        let got = dev.read_buf(s.rdma_buf, o.size as usize)?;
        if o.validate && got != pattern {
            let first = got
                .iter()
                .zip(&pattern)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(RpingError::Mismatch {
                ping,
                first,
                got: printable(&got),
                sent: printable(&pattern),
            });
        }
        if o.verbose {
            println!("ping data: {}", printable(&got));
        }
    }
    let now = s.cm.now();
    s.cm.cm.disconnect(now, id)?;
    // Wait for the DREP (or give up quietly: the connection is down either way).
    let deadline = Instant::now() + o.stall.min(Duration::from_secs(10));
    loop {
        match s
            .cm
            .wait_event(dev, deadline.saturating_duration_since(Instant::now()))
        {
            Ok(Event::Disconnected { id: r }) if r == id => break,
            Ok(_) => continue,
            Err(CmPortError::Timeout(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(s.report("client", o.count, o))
}

/// The server: accepts one connection on `o.port` and answers pings until the client
/// disconnects.
pub fn server_on<E: Endpoint>(dev: &mut E, o: &Options) -> Result<Report, RpingError> {
    let mut s = Side::open(dev, o)?;
    let me = ipv4_of(s.gid)?;
    s.cm.cm.listen(cma::service_id(o.port));
    let (id, peer, req) = loop {
        // A server waits for its client as long as it takes.
        match s.cm.wait_event(dev, Duration::from_secs(24 * 3600))? {
            Event::Request { id, peer, req } => {
                match CmaHdr::parse(&req.private_data) {
                    Ok(h) if h.dst == IpAddr::V4(me) => break (id, peer, req),
                    Ok(h) => tracing::warn!("rping server: REQ for {} refused", h.dst),
                    Err(e) => tracing::warn!("rping server: REQ without an rdma_cm header: {e}"),
                }
                s.cm.cm
                    .reject(id, crate::interop::cm::conn::reason::CONSUMER_DEFINED)?;
            }
            other => tracing::debug!("rping server: CM event {other:?}"),
        }
    };
    s.conn = Some(id);
    s.post_recv(dev)?;
    let path = s.path(o, Some(req.path_mtu));
    // Sends from the REQ's starting PSN, receives from the REP's (see the client).
    rc_rtr_rts(
        dev,
        s.qpn,
        Psn(req.starting_psn),
        PeerInfo {
            qpn: Qpn(req.local_qpn),
            psn: s.psn,
            gid: peer,
        },
        path,
    )?;
    let now = s.cm.now();
    s.cm.cm.accept(
        now,
        id,
        &AcceptParams {
            qpn: s.qpn.0,
            starting_psn: s.psn.0,
            responder_resources: 1,
            initiator_depth: 1,
            rnr_retry_count: 7,
            private_data: Vec::new(),
        },
    )?;
    s.cm.drive(dev)?;
    let mut pings = 0u64;
    let mut overtaken = false;
    // Each ping starts with the client's start buffer; a disconnect ends the loop.
    while s.wait(dev, RECV_WRID, o)?.is_some() {
        s.post_recv(dev)?;
        let (addr, rkey, len) = s.peer_info(dev)?;
        if len > o.size {
            return Err(RpingError::Peer(format!(
                "the client's buffer ({len} bytes) is larger than this server's -S {}",
                o.size
            )));
        }
        let read = SendWr::new(
            RDMA_WRID,
            SendOp::Read {
                remote_addr: addr,
                rkey,
            },
        )
        .sge(Sge {
            addr: s.rdma_buf,
            len,
            lkey: s.key,
        });
        dev.post_send(s.qpn, &read)?;
        s.wait(dev, RDMA_WRID, o)?
            .ok_or(RpingError::Disconnected(pings))?;
        let data = dev.read_buf(s.rdma_buf, len as usize)?;
        if o.verbose {
            println!("server ping data: {}", printable(&data));
        }
        s.send_info(dev, None)?;
        s.wait(dev, SEND_WRID, o)?
            .ok_or(RpingError::Disconnected(pings))?;
        // The client's RDMA buffer.
        s.wait(dev, RECV_WRID, o)?
            .ok_or(RpingError::Disconnected(pings))?;
        s.post_recv(dev)?;
        let (addr, rkey, _) = s.peer_info(dev)?;
        // rping writes strlen(data) + 1 bytes.
        let n = data
            .iter()
            .position(|b| *b == 0)
            .map_or(len, |p| p as u32 + 1);
        let write = SendWr::new(
            RDMA_WRID,
            SendOp::Write {
                remote_addr: addr,
                rkey,
            },
        )
        .sge(Sge {
            addr: s.rdma_buf,
            len: n,
            lkey: s.key,
        });
        dev.post_send(s.qpn, &write)?;
        s.wait(dev, RDMA_WRID, o)?
            .ok_or(RpingError::Disconnected(pings))?;
        s.send_info(dev, None)?;
        pings += 1;
        // The client disconnects once it has this "go ahead" (the ping's last message). If the
        // ACK was lost, its DREQ can come before the SEND completes: the ping is done, and the
        // client's own status says whether it arrived (rping -C counts its pings).
        match s.wait(dev, SEND_WRID, o) {
            Ok(Some(_)) => {}
            Ok(None) => {
                overtaken = true;
                break;
            }
            Err(RpingError::Completion(wc)) if wc.status == WcStatus::RetryExcErr => {
                return Err(RpingError::LastGoAheadUnacknowledged { pings })
            }
            Err(e) => return Err(e),
        }
    }
    // The DREP went out with the drive that saw the DREQ; a lost one is answered again for a
    // while, as the client resends its DREQ.
    let linger = Instant::now() + Duration::from_millis(500);
    while Instant::now() < linger {
        s.cm.drive(dev)?;
        dev.idle(Duration::from_millis(1))?;
    }
    let mut r = s.report("server", pings, o);
    r.last_ack_overtaken = overtaken;
    Ok(r)
}

impl RpingError {
    /// The process's exit status: 3 for [`RpingError::LastGoAheadUnacknowledged`] (a script
    /// that knows the client succeeded may accept it), 1 for every other.
    pub fn exit_status(&self) -> u8 {
        match self {
            RpingError::LastGoAheadUnacknowledged { .. } => 3,
            _ => 1,
        }
    }
}

/// The text of a ping buffer up to its NUL.
fn printable(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_rpings() {
        let p = ping_pattern(3, b'x', 20);
        assert_eq!(&p[..], b"rdma-ping-3: xyzABC\0");
        assert_eq!(ping_pattern(0, b'A', 26).len(), 26);
    }
}
