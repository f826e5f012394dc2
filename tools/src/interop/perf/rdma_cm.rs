//! `-R`: the QPs connected through the CM on QP1 (rdma_cm's way), as perftest's `-R`
//! (`work_rdma_cm`) does (docs/rdma-cm.md): first the side channel itself, a one-deep RC "comm"
//! QP ([`CommChan`]) connected to the server's address and port (the client retrying while the
//! server does not listen yet); then, after the version, system-data and MTU exchanges on it,
//! every data QP to the same address and port. The address exchange then only carries keys and
//! addresses. At the end each side sends a DREQ per connection and answers the peer's.

use super::comm::{cm_err, CommChan, PerfCm};
use super::*;
use crate::interop::cm::cma::{self, CmaHdr};
use crate::interop::cm::conn::{reason, AcceptParams, CmConfig, ConnId, ConnectParams, Event};
use crate::interop::cm::port::{ca_guid, fresh_comm_id, CmPort};
use std::net::IpAddr;

fn ipv4(gid: Gid) -> Result<Ipv4Addr, PerfError> {
    gid.to_ipv4()
        .map(Ipv4Addr::from)
        .ok_or(PerfError::GidType(gid.0))
}

/// Responder resources and initiator depth perftest asks for: `out_reads` for READ and the
/// atomics, none otherwise.
fn rd_atomic(o: &Options) -> u8 {
    match o.test.verb() {
        Verb::Read | Verb::Atomic => o.out_reads,
        _ => 0,
    }
}

/// perftest's client retries a refused data-QP connection 10 times, 100 ms apart.
const DATA_ATTEMPTS: u32 = 10;
const RETRY_GAP: Duration = Duration::from_millis(100);

/// The comm QP connected: as the client to `server` (retrying while nobody listens, for up to
/// `o.timeout`), or as the server (listening on `o.port`, announced on stderr for scripts).
pub(super) fn connect_comm<V: Endpoint>(
    node: &mut V,
    o: &Options,
    server: Option<Ipv4Addr>,
) -> Result<CommChan, PerfError> {
    let gid = node.local_gid()?;
    let me = ipv4(gid)?;
    let pd = node.alloc_pd()?;
    let port =
        CmPort::open(node, pd, CmConfig::new(ca_guid(gid), fresh_comm_id(gid))).map_err(cm_err)?;
    let cm = PerfCm {
        port,
        conns: Vec::new(),
    };
    let mut comm = CommChan::create(node, cm, pd, server.is_some(), o.timeout)?;
    let psn = random_psn(gid);
    let at = (comm.qpn, psn);
    let cm = &mut comm.cm;
    let id = match server {
        Some(server) => {
            let attempts = (o.timeout.as_millis() / RETRY_GAP.as_millis()).max(1) as u32;
            connect_one(node, cm, o, o.mtu, (me, server), gid, at, 0, 0, attempts)?
        }
        None => {
            cm.port.cm.listen(cma::service_id(o.port));
            note(format!(
                "{} server listening on rdma_cm port {}",
                o.test.binary(),
                o.port
            ));
            let mut up = Vec::new();
            accept_one(node, cm, o, o.mtu, me, at.0, at.1, 0, &mut up)?
        }
    };
    cm.conns.push(id);
    Ok(comm)
}

/// Connects every QP of `r` through the CM: as the client to `server`, or as the server.
pub(super) fn connect_all<V: Endpoint>(
    node: &mut V,
    cm: &mut PerfCm,
    r: &Res,
    o: &Options,
    mtu: Mtu,
    client: Option<Ipv4Addr>,
) -> Result<(), PerfError> {
    let gid = node.local_gid()?;
    let me = ipv4(gid)?;
    let depth = rd_atomic(o);
    let first = cm.conns.len();
    match client {
        Some(server) => {
            for (i, &at) in r.qps.iter().enumerate() {
                let id = connect_one(
                    node,
                    cm,
                    o,
                    mtu,
                    (me, server),
                    gid,
                    at,
                    depth,
                    i + 1,
                    DATA_ATTEMPTS,
                )?;
                cm.conns.push(id);
            }
        }
        None => {
            // RTUs may come while later QPs are still being accepted.
            let mut up = Vec::new();
            for &(qpn, psn) in &r.qps {
                let id = accept_one(node, cm, o, mtu, me, qpn, psn, depth, &mut up)?;
                cm.conns.push(id);
            }
            // Every RTU.
            while up.len() < cm.conns.len() - first {
                match cm.port.wait_event(node, o.timeout).map_err(cm_err)? {
                    Event::Established { id } if cm.conns[first..].contains(&id) => up.push(id),
                    Event::TimedOut { .. } => return Err(cm_err("the client did not answer")),
                    other => tracing::debug!("perf -R server: CM event {other:?}"),
                }
            }
        }
    }
    Ok(())
}

/// Connects QP `at` (its number and the PSN it receives from) to `server`; `i` tells the
/// connections apart in the source port. Retries `attempts` times while nobody listens.
#[allow(clippy::too_many_arguments)]
fn connect_one<V: Endpoint>(
    node: &mut V,
    cm: &mut PerfCm,
    o: &Options,
    mtu: Mtu,
    (me, server): (Ipv4Addr, Ipv4Addr),
    gid: Gid,
    (qpn, psn): (Qpn, Psn),
    depth: u8,
    i: usize,
    attempts: u32,
) -> Result<ConnId, PerfError> {
    let peer = Gid::from_ipv4(server.octets());
    let hdr = CmaHdr {
        src_port: 0x8000 | ((psn.0 as u16 ^ i as u16) & 0x7fff),
        src: IpAddr::V4(me),
        dst: IpAddr::V4(server),
    };
    let p = ConnectParams {
        peer,
        local_gid: gid,
        service_id: cma::service_id(o.port),
        qpn: qpn.0,
        starting_psn: psn.0,
        responder_resources: depth,
        initiator_depth: depth,
        path_mtu: mtu as u8,
        retry_count: 7,
        rnr_retry_count: 7,
        local_ack_timeout: o.qp_timeout,
        private_data: hdr.emit().map_err(cm_err)?.to_vec(),
    };
    // perftest's server listens for its data QPs only after the side channel's steps; its
    // client retries a refused connection 10 times, 100 ms apart. So does this one.
    for _attempt in 0..attempts {
        let now = cm.port.now();
        let id = cm.port.cm.connect(now, &p).map_err(cm_err)?;
        loop {
            match cm.port.wait_event(node, o.timeout).map_err(cm_err)? {
                Event::Reply { id: r, rep } if r == id => {
                    let path = RcPath {
                        mtu,
                        timeout: o.qp_timeout,
                        hop_limit: 0xff,
                        dest_rd_atomic: o.out_reads,
                        rd_atomic: rep.initiator_depth.clamp(1, 128),
                    };
                    // Send from the REP's starting PSN, receive from the REQ's (docs/rdma-cm.md).
                    rc_rtr_rts(
                        node,
                        qpn,
                        Psn::new(rep.starting_psn),
                        PeerInfo {
                            qpn: Qpn(rep.local_qpn),
                            psn,
                            gid: peer,
                        },
                        path,
                    )?;
                    cm.port.cm.rtu(id).map_err(cm_err)?;
                    cm.port.drive(node).map_err(cm_err)?;
                    return Ok(id);
                }
                Event::Rejected { id: r, reason: why } if r == id => {
                    if why != reason::INVALID_SERVICE_ID {
                        return Err(cm_err(format!("the server rejected QP {i} (reason {why})")));
                    }
                    break;
                }
                Event::TimedOut { id: r } if r == id => {
                    return Err(cm_err("the server did not answer"))
                }
                other => tracing::debug!("perf -R client: CM event {other:?}"),
            }
        }
        let until = Instant::now() + RETRY_GAP;
        while Instant::now() < until {
            cm.port.drive(node).map_err(cm_err)?;
            node.idle(Duration::from_millis(1))?;
        }
    }
    Err(cm_err(format!(
        "the server refused {attempts} times (nobody listens on the port)"
    )))
}

#[allow(clippy::too_many_arguments)]
fn accept_one<V: Endpoint>(
    node: &mut V,
    cm: &mut PerfCm,
    o: &Options,
    mtu: Mtu,
    me: Ipv4Addr,
    qpn: Qpn,
    psn: Psn,
    depth: u8,
    up: &mut Vec<ConnId>,
) -> Result<ConnId, PerfError> {
    loop {
        let (id, peer, req) = match cm.port.wait_event(node, o.timeout).map_err(cm_err)? {
            Event::Request { id, peer, req } => (id, peer, req),
            Event::Established { id } => {
                up.push(id);
                continue;
            }
            Event::TimedOut { .. } => return Err(cm_err("the client did not answer")),
            other => {
                tracing::debug!("perf -R server: CM event {other:?}");
                continue;
            }
        };
        match CmaHdr::parse(&req.private_data) {
            Ok(h) if h.dst == IpAddr::V4(me) => {}
            _ => {
                cm.port
                    .cm
                    .reject(id, reason::CONSUMER_DEFINED)
                    .map_err(cm_err)?;
                continue;
            }
        }
        let path = RcPath {
            mtu: Mtu::from_enum(req.path_mtu).map_or(mtu, |m| m.min(mtu)),
            timeout: o.qp_timeout,
            hop_limit: 0xff,
            dest_rd_atomic: o.out_reads,
            rd_atomic: req.responder_resources.min(o.out_reads).clamp(1, 128),
        };
        rc_rtr_rts(
            node,
            qpn,
            Psn::new(req.starting_psn),
            PeerInfo {
                qpn: Qpn(req.local_qpn),
                psn,
                gid: peer,
            },
            path,
        )?;
        let now = cm.port.now();
        cm.port
            .cm
            .accept(
                now,
                id,
                &AcceptParams {
                    qpn: qpn.0,
                    starting_psn: psn.0,
                    responder_resources: req.initiator_depth.min(depth),
                    initiator_depth: req.responder_resources.min(depth),
                    rnr_retry_count: 7,
                    private_data: Vec::new(),
                },
            )
            .map_err(cm_err)?;
        cm.port.drive(node).map_err(cm_err)?;
        return Ok(id);
    }
}

/// Takes every connection down: a DREQ each, and the peer's DREQs answered, until all are
/// down or a few seconds passed (the connections are down for this side either way).
pub(super) fn disconnect_all<V: Endpoint>(node: &mut V, cm: &mut PerfCm) -> Result<(), PerfError> {
    let now = cm.port.now();
    for &id in &cm.conns {
        // A connection the peer already took down refuses: nothing to do for it.
        let _ = cm.port.cm.disconnect(now, id);
    }
    let until = Instant::now() + Duration::from_secs(5);
    let mut down = 0;
    while down < cm.conns.len() && Instant::now() < until {
        match cm.port.wait_event(node, Duration::from_millis(100)) {
            Ok(Event::Disconnected { id }) if cm.conns.contains(&id) => down += 1,
            Ok(_) | Err(crate::interop::cm::port::CmPortError::Timeout(_)) => {}
            Err(e) => return Err(cm_err(e)),
        }
    }
    // Answer late DREQs a little longer.
    let linger = Instant::now() + Duration::from_millis(300);
    while Instant::now() < linger {
        cm.port.drive(node).map_err(cm_err)?;
        node.idle(Duration::from_millis(1))?;
    }
    Ok(())
}
