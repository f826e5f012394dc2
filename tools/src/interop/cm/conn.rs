//! The connection manager's state machine, sans-I/O (the shape of quinn-proto): MADs come in
//! through [`Cm::handle_mad`], time through [`Cm::handle_timeout`]; MADs to send come out of
//! [`Cm::poll_transmit`] and what the application must act on out of [`Cm::poll_event`].
//!
//! Active side: `connect` sends a REQ (resent on timeout) → REP arrives ([`Event::Reply`]: the
//! application brings its QP to RTR/RTS) → `rtu` sends the RTU. A REP seen again after that
//! means the RTU was lost: it is sent again.
//! Passive side: a REQ for a listened service ([`Event::Request`]) → the application brings its
//! QP to RTR and calls `accept`, which sends the REP (resent on timeout and when the REQ comes
//! again) → the RTU arrives ([`Event::Established`]).
//! Either side: `disconnect` sends a DREQ (resent on timeout) until the DREP; a DREQ is answered
//! with a DREP every time it comes ([`Event::Disconnected`] once). A REJ ends a connection in
//! any state before it is established.
//!
//! Everything here comes from the network and is checked: unknown communication IDs, messages
//! in the wrong state and duplicates change nothing, and the number of connections is bounded.

use super::mad::{self, CmMsg, Drep, Dreq, Mad, Path, Rej, Rep, Req, Rtu};
use std::collections::VecDeque;
use vhca_device::Gid;

pub use super::params::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ReqSent,
    RepRcvd,
    ReqRcvd,
    RepSent,
    Established,
    DreqSent,
    TimeWait,
}

#[derive(Debug, Clone)]
struct Conn {
    local_id: u32,
    remote_id: u32,
    remote_guid: u64,
    peer: Gid,
    state: State,
    remote_qpn: u32,
    /// The MAD sent last, resent on timeout or on a duplicate of what it answers.
    last: Option<[u8; mad::MAD_LEN]>,
    deadline: Option<u64>,
    interval: u64,
    retries_left: u8,
    /// Resends the peer asked for by a duplicate (RTU, DREP) are bounded too.
    dup_answers: u32,
}

/// Counters for a run's report and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CmCounters {
    pub sent: u64,
    pub received: u64,
    pub resent: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub unmatched: u64,
}

/// The connection manager of one port.
#[derive(Debug)]
pub struct Cm {
    cfg: CmConfig,
    next_id: u32,
    next_tid: u32,
    listening: Vec<u64>,
    conns: Vec<Conn>,
    out: VecDeque<Outgoing>,
    events: VecDeque<Event>,
    pub counters: CmCounters,
}

/// Errors of the application-facing calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmError {
    #[error("no connection {0}")]
    NoConn(ConnId),
    #[error("connection {0} is not in a state that allows this")]
    State(ConnId),
    #[error(transparent)]
    Mad(#[from] mad::MadError),
    #[error("too many connections")]
    Full,
}

impl Cm {
    pub fn new(cfg: CmConfig) -> Cm {
        Cm {
            cfg,
            next_id: cfg.first_comm_id,
            next_tid: 1,
            listening: Vec::new(),
            conns: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: CmCounters::default(),
        }
    }

    /// Accepts REQs for `service_id`.
    pub fn listen(&mut self, service_id: u64) {
        if !self.listening.contains(&service_id) {
            self.listening.push(service_id);
        }
    }

    fn tid(&mut self) -> u64 {
        self.next_tid = self.next_tid.wrapping_add(1);
        (u64::from(self.cfg.tid_high) << 32) | u64::from(self.next_tid)
    }

    fn new_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != 0 && !self.conns.iter().any(|c| c.local_id == id) {
                return id;
            }
        }
    }

    fn conn(&mut self, id: ConnId) -> Result<&mut Conn, CmError> {
        self.conns
            .iter_mut()
            .find(|c| c.local_id == id)
            .ok_or(CmError::NoConn(id))
    }

    fn send(&mut self, dest: Gid, mad: [u8; mad::MAD_LEN]) {
        self.counters.sent += 1;
        self.out.push_back(Outgoing { dest, mad });
    }

    /// Sends `mad` on `id` and arms its resend timer.
    fn send_armed(&mut self, now: u64, id: ConnId, mad: [u8; mad::MAD_LEN], peer_timeout: u8) {
        let interval = cm_timeout_ns(peer_timeout)
            .saturating_mul(2)
            .min(self.cfg.max_resend_interval_ns);
        let retries = self.cfg.max_retries;
        if let Ok(c) = self.conn(id) {
            c.last = Some(mad);
            c.interval = interval;
            c.deadline = Some(now.saturating_add(interval));
            c.retries_left = retries;
            let peer = c.peer;
            self.send(peer, mad);
        }
    }

    /// Starts a connection: sends the REQ.
    pub fn connect(&mut self, now: u64, p: &ConnectParams) -> Result<ConnId, CmError> {
        if self.conns.len() >= self.cfg.max_conns {
            return Err(CmError::Full);
        }
        let id = self.new_id();
        let req = Req {
            local_comm_id: id,
            service_id: p.service_id,
            local_ca_guid: self.cfg.ca_guid,
            local_qkey: 0,
            local_qpn: p.qpn & 0xff_ffff,
            responder_resources: p.responder_resources,
            local_eecn: 0,
            initiator_depth: p.initiator_depth,
            remote_eecn: 0,
            remote_cm_response_timeout: self.cfg.response_timeout,
            transport_service_type: 0,
            end_to_end_flow_control: true,
            starting_psn: p.starting_psn & 0xff_ffff,
            local_cm_response_timeout: self.cfg.response_timeout,
            retry_count: p.retry_count.min(7),
            pkey: 0xffff,
            path_mtu: p.path_mtu,
            rdc_exists: false,
            rnr_retry_count: p.rnr_retry_count.min(7),
            max_cm_retries: self.cfg.max_retries.min(15),
            srq: false,
            extended_transport_type: 0,
            // RoCE: permissive LIDs, the IPv4-mapped GIDs, a routed hop limit (the kernel's
            // cm_format_req for a path with hop_limit > 1).
            primary: Path {
                local_lid: 0xffff,
                remote_lid: 0xffff,
                local_gid: p.local_gid,
                remote_gid: p.peer,
                flow_label: 0,
                packet_rate: 3,
                traffic_class: 0,
                hop_limit: 64,
                sl: 0,
                subnet_local: false,
                local_ack_timeout: p.local_ack_timeout.min(31),
            },
            alternate: Path::default(),
            private_data: mad::private_data(&p.private_data)?,
        };
        let bytes = Mad {
            tid: self.tid(),
            msg: CmMsg::Req(Box::new(req)),
        }
        .emit();
        self.conns.push(Conn {
            local_id: id,
            remote_id: 0,
            remote_guid: 0,
            peer: p.peer,
            state: State::ReqSent,
            remote_qpn: 0,
            last: None,
            deadline: None,
            interval: 0,
            retries_left: 0,
            dup_answers: 0,
        });
        let t = self.cfg.response_timeout;
        self.send_armed(now, id, bytes, t);
        Ok(id)
    }

    /// Answers a REQ (after `Event::Request`): sends the REP.
    pub fn accept(&mut self, now: u64, id: ConnId, p: &AcceptParams) -> Result<(), CmError> {
        let guid = self.cfg.ca_guid;
        let c = self.conn(id)?;
        if c.state != State::ReqRcvd {
            return Err(CmError::State(id));
        }
        let rep = Rep {
            local_comm_id: id,
            remote_comm_id: c.remote_id,
            local_qkey: 0,
            local_qpn: p.qpn & 0xff_ffff,
            local_eecn: 0,
            starting_psn: p.starting_psn & 0xff_ffff,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            target_ack_delay: 0,
            failover_accepted: 0,
            end_to_end_flow_control: true,
            rnr_retry_count: p.rnr_retry_count.min(7),
            srq: false,
            local_ca_guid: guid,
            private_data: mad::private_data(&p.private_data)?,
        };
        c.state = State::RepSent;
        let bytes = Mad {
            tid: self.tid(),
            msg: CmMsg::Rep(Box::new(rep)),
        }
        .emit();
        let t = self.cfg.response_timeout;
        self.send_armed(now, id, bytes, t);
        Ok(())
    }

    /// Refuses a REQ (after `Event::Request`).
    pub fn reject(&mut self, id: ConnId, why: u16) -> Result<(), CmError> {
        let c = self.conn(id)?;
        if c.state != State::ReqRcvd {
            return Err(CmError::State(id));
        }
        let (peer, remote) = (c.peer, c.remote_id);
        self.conns.retain(|c| c.local_id != id);
        let rej = self.rej(id, remote, 0, why);
        self.send(peer, rej);
        Ok(())
    }

    fn rej(&mut self, local: u32, remote: u32, rejected: u8, why: u16) -> [u8; mad::MAD_LEN] {
        Mad {
            tid: self.tid(),
            msg: CmMsg::Rej(Box::new(Rej {
                local_comm_id: local,
                remote_comm_id: remote,
                message_rejected: rejected,
                ari_length: 0,
                reason: why,
                ari: [0; mad::ARI_LEN],
                private_data: [0; mad::pdata::REJ],
            })),
        }
        .emit()
    }

    /// Completes the active side (after `Event::Reply`): sends the RTU.
    pub fn rtu(&mut self, id: ConnId) -> Result<(), CmError> {
        let c = self.conn(id)?;
        if c.state != State::RepRcvd {
            return Err(CmError::State(id));
        }
        c.state = State::Established;
        let (local, remote, peer) = (c.local_id, c.remote_id, c.peer);
        let bytes = Mad {
            tid: self.tid(),
            msg: CmMsg::Rtu(Box::new(Rtu {
                local_comm_id: local,
                remote_comm_id: remote,
                private_data: [0; mad::pdata::RTU],
            })),
        }
        .emit();
        // Kept, not armed: an RTU is resent only when the REP comes again.
        self.conn(id)?.last = Some(bytes);
        self.send(peer, bytes);
        Ok(())
    }

    /// Takes the connection down: sends the DREQ.
    pub fn disconnect(&mut self, now: u64, id: ConnId) -> Result<(), CmError> {
        let c = self.conn(id)?;
        if !matches!(c.state, State::Established | State::RepSent) {
            return Err(CmError::State(id));
        }
        c.state = State::DreqSent;
        let (local, remote, qpn) = (c.local_id, c.remote_id, c.remote_qpn);
        let bytes = Mad {
            tid: self.tid(),
            msg: CmMsg::Dreq(Box::new(Dreq {
                local_comm_id: local,
                remote_comm_id: remote,
                remote_qpn: qpn,
                private_data: [0; mad::pdata::DREQ],
            })),
        }
        .emit();
        let t = self.cfg.response_timeout;
        self.send_armed(now, id, bytes, t);
        Ok(())
    }

    /// The passive side saw traffic on the connection's QP before the RTU (the RTU was lost
    /// and the peer already sends: IBA's communication-established event). The connection is
    /// up; the REP is not resent any more.
    pub fn notify_established(&mut self, id: ConnId) {
        if let Ok(c) = self.conn(id) {
            if c.state == State::RepSent {
                c.state = State::Established;
                c.deadline = None;
                c.last = None;
                self.events.push_back(Event::Established { id });
            }
        }
    }

    /// Whether `id` is established (RTU sent or received).
    pub fn is_established(&self, id: ConnId) -> bool {
        self.conns
            .iter()
            .any(|c| c.local_id == id && c.state == State::Established)
    }

    /// A received MAD from `from` (the source GID of the datagram).
    pub fn handle_mad(&mut self, now: u64, from: Gid, bytes: &[u8]) {
        let m = match Mad::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("CM: MAD refused: {e}");
                self.counters.malformed += 1;
                return;
            }
        };
        self.counters.received += 1;
        tracing::debug!("CM: {} from {from:?}", m.msg.name());
        match m.msg {
            CmMsg::Req(r) => self.on_req(from, r),
            CmMsg::Rep(r) => self.on_rep(from, r),
            CmMsg::Rtu(r) => self.on_rtu(r.remote_comm_id, r.local_comm_id),
            CmMsg::Rej(r) => self.on_rej(&r),
            CmMsg::Mra(r) => self.on_mra(now, r.remote_comm_id, r.service_timeout),
            CmMsg::Dreq(r) => self.on_dreq(from, m.tid, &r),
            CmMsg::Drep(r) => self.on_drep(r.remote_comm_id, r.local_comm_id),
        }
    }

    fn on_req(&mut self, from: Gid, r: Box<Req>) {
        if let Some(c) = self
            .conns
            .iter_mut()
            .find(|c| c.remote_id == r.local_comm_id && c.remote_guid == r.local_ca_guid)
        {
            // A REQ again: our REP was lost (or is late); resend it, bounded.
            self.counters.duplicates += 1;
            if c.state == State::RepSent && c.dup_answers < 64 {
                c.dup_answers += 1;
                if let Some(b) = c.last {
                    let peer = c.peer;
                    self.counters.resent += 1;
                    self.send(peer, b);
                }
            }
            return;
        }
        if !self.listening.contains(&r.service_id) {
            let rej = self.rej(0, r.local_comm_id, 0, reason::INVALID_SERVICE_ID);
            self.send(from, rej);
            return;
        }
        if r.transport_service_type != 0 {
            let rej = self.rej(0, r.local_comm_id, 0, reason::INVALID_TRANSPORT_TYPE);
            self.send(from, rej);
            return;
        }
        if self.conns.len() >= self.cfg.max_conns {
            let rej = self.rej(0, r.local_comm_id, 0, reason::NO_RESOURCES);
            self.send(from, rej);
            return;
        }
        let id = self.new_id();
        self.conns.push(Conn {
            local_id: id,
            remote_id: r.local_comm_id,
            remote_guid: r.local_ca_guid,
            peer: from,
            state: State::ReqRcvd,
            remote_qpn: r.local_qpn,
            last: None,
            deadline: None,
            interval: 0,
            retries_left: 0,
            dup_answers: 0,
        });
        self.events.push_back(Event::Request {
            id,
            peer: from,
            req: r,
        });
    }

    fn on_rep(&mut self, from: Gid, r: Box<Rep>) {
        let Some(c) = self
            .conns
            .iter_mut()
            .find(|c| c.local_id == r.remote_comm_id && c.peer == from)
        else {
            self.counters.unmatched += 1;
            return;
        };
        match c.state {
            State::ReqSent => {
                c.state = State::RepRcvd;
                c.remote_id = r.local_comm_id;
                c.remote_guid = r.local_ca_guid;
                c.remote_qpn = r.local_qpn;
                c.deadline = None;
                c.last = None;
                let id = c.local_id;
                self.events.push_back(Event::Reply { id, rep: r });
            }
            State::Established if c.remote_id == r.local_comm_id => {
                // The REP again: our RTU was lost.
                self.counters.duplicates += 1;
                if c.dup_answers < 64 {
                    c.dup_answers += 1;
                    if let Some(b) = c.last {
                        let peer = c.peer;
                        self.counters.resent += 1;
                        self.send(peer, b);
                    }
                }
            }
            _ => self.counters.duplicates += 1,
        }
    }

    fn on_rtu(&mut self, local: u32, remote: u32) {
        let Some(c) = self
            .conns
            .iter_mut()
            .find(|c| c.local_id == local && c.remote_id == remote)
        else {
            self.counters.unmatched += 1;
            return;
        };
        if c.state == State::RepSent {
            c.state = State::Established;
            c.deadline = None;
            c.last = None;
            let id = c.local_id;
            self.events.push_back(Event::Established { id });
        } else {
            self.counters.duplicates += 1;
        }
    }

    fn on_rej(&mut self, r: &Rej) {
        // A REJ of our REQ names our ID only; later ones name both.
        let Some(c) = self.conns.iter_mut().find(|c| {
            c.local_id == r.remote_comm_id && (c.remote_id == 0 || c.remote_id == r.local_comm_id)
        }) else {
            self.counters.unmatched += 1;
            return;
        };
        if matches!(
            c.state,
            State::ReqSent | State::RepRcvd | State::RepSent | State::ReqRcvd
        ) {
            let id = c.local_id;
            self.conns.retain(|c| c.local_id != id);
            self.events.push_back(Event::Rejected {
                id,
                reason: r.reason,
            });
        } else {
            self.counters.duplicates += 1;
        }
    }

    fn on_mra(&mut self, now: u64, local: u32, service_timeout: u8) {
        let max = self.cfg.max_resend_interval_ns;
        if let Some(c) = self.conns.iter_mut().find(|c| c.local_id == local) {
            if matches!(c.state, State::ReqSent | State::RepSent) {
                // The peer needs longer: wait what it asked for before resending.
                let wait = cm_timeout_ns(service_timeout).min(max.saturating_mul(8));
                c.deadline = Some(now.saturating_add(wait));
            }
        }
    }

    fn on_dreq(&mut self, from: Gid, tid: u64, r: &Dreq) {
        let found = self
            .conns
            .iter_mut()
            .find(|c| c.local_id == r.remote_comm_id && c.remote_id == r.local_comm_id);
        let mut event = None;
        if let Some(c) = found {
            match c.state {
                State::Established | State::RepSent | State::RepRcvd | State::DreqSent => {
                    c.state = State::TimeWait;
                    c.deadline = None;
                    c.last = None;
                    event = Some(Event::Disconnected { id: c.local_id });
                }
                State::TimeWait => self.counters.duplicates += 1,
                _ => {}
            }
        } else {
            self.counters.unmatched += 1;
        }
        // Answered every time, known or not (the kernel's cm_issue_drep): the peer resends its
        // DREQ until a DREP arrives.
        let drep = Mad {
            tid,
            msg: CmMsg::Drep(Box::new(Drep {
                local_comm_id: r.remote_comm_id,
                remote_comm_id: r.local_comm_id,
                private_data: [0; mad::pdata::DREP],
            })),
        }
        .emit();
        self.send(from, drep);
        if let Some(e) = event {
            self.events.push_back(e);
        }
    }

    fn on_drep(&mut self, local: u32, remote: u32) {
        let Some(c) = self
            .conns
            .iter_mut()
            .find(|c| c.local_id == local && c.remote_id == remote)
        else {
            self.counters.unmatched += 1;
            return;
        };
        if c.state == State::DreqSent {
            c.state = State::TimeWait;
            c.deadline = None;
            c.last = None;
            let id = c.local_id;
            self.events.push_back(Event::Disconnected { id });
        } else {
            self.counters.duplicates += 1;
        }
    }

    /// The earliest resend deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.conns.iter().filter_map(|c| c.deadline).min()
    }

    /// Resends what is due at `now`; gives up on what has no retries left.
    pub fn handle_timeout(&mut self, now: u64) {
        let mut resend = Vec::new();
        let mut gave_up = Vec::new();
        for c in &mut self.conns {
            let Some(d) = c.deadline else { continue };
            if d > now {
                continue;
            }
            if c.retries_left == 0 {
                c.deadline = None;
                gave_up.push(c.local_id);
                continue;
            }
            c.retries_left -= 1;
            c.deadline = Some(now.saturating_add(c.interval));
            if let Some(b) = c.last {
                resend.push((c.peer, b));
            }
        }
        for (peer, b) in resend {
            self.counters.resent += 1;
            self.send(peer, b);
        }
        for id in gave_up {
            let Some(c) = self.conns.iter().find(|c| c.local_id == id).cloned() else {
                continue;
            };
            if c.state == State::DreqSent {
                // No DREP: the connection is down anyway.
                self.conn(id).expect("found").state = State::TimeWait;
                self.events.push_back(Event::Disconnected { id });
                continue;
            }
            self.conns.retain(|x| x.local_id != id);
            let rej = self.rej(id, c.remote_id, 0, reason::TIMEOUT);
            self.send(c.peer, rej);
            self.events.push_back(Event::TimedOut { id });
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Gid = Gid([1; 16]);
    const B: Gid = Gid([2; 16]);

    fn params(service: u64) -> ConnectParams {
        ConnectParams {
            peer: B,
            local_gid: A,
            service_id: service,
            qpn: 17,
            starting_psn: 100,
            responder_resources: 1,
            initiator_depth: 1,
            path_mtu: 3,
            retry_count: 7,
            rnr_retry_count: 7,
            local_ack_timeout: 14,
            private_data: b"abc".to_vec(),
        }
    }

    fn accept() -> AcceptParams {
        AcceptParams {
            qpn: 18,
            starting_psn: 200,
            responder_resources: 1,
            initiator_depth: 1,
            rnr_retry_count: 7,
            private_data: vec![],
        }
    }

    /// Moves every pending MAD from `from` to `to`, dropping those `drop` says.
    fn pump(now: u64, from: &mut Cm, src: Gid, to: &mut Cm, mut drop: impl FnMut(&str) -> bool) {
        while let Some(o) = from.poll_transmit() {
            let name = Mad::parse(&o.mad).unwrap().msg.name();
            if !drop(name) {
                to.handle_mad(now, src, &o.mad);
            }
        }
    }

    fn pair() -> (Cm, Cm) {
        let mut b = Cm::new(CmConfig::new(0xbb, 500));
        b.listen(0x1060000 + 7174);
        (Cm::new(CmConfig::new(0xaa, 100)), b)
    }

    #[test]
    fn req_rep_rtu_then_dreq_drep() {
        let (mut a, mut b) = pair();
        let id = a.connect(0, &params(0x1060000 + 7174)).unwrap();
        pump(0, &mut a, A, &mut b, |_| false);
        let Some(Event::Request { id: bid, peer, req }) = b.poll_event() else {
            panic!("no request")
        };
        assert_eq!((peer, req.local_qpn, req.starting_psn), (A, 17, 100));
        assert_eq!(&req.private_data[..3], b"abc");
        b.accept(0, bid, &accept()).unwrap();
        pump(0, &mut b, B, &mut a, |_| false);
        let Some(Event::Reply { id: rid, rep }) = a.poll_event() else {
            panic!("no reply")
        };
        assert_eq!((rid, rep.local_qpn, rep.starting_psn), (id, 18, 200));
        a.rtu(id).unwrap();
        pump(0, &mut a, A, &mut b, |_| false);
        assert_eq!(b.poll_event(), Some(Event::Established { id: bid }));
        assert!(a.is_established(id) && b.is_established(bid));
        assert_eq!((a.poll_timeout(), b.poll_timeout()), (None, None));
        a.disconnect(10, id).unwrap();
        pump(10, &mut a, A, &mut b, |_| false);
        assert_eq!(b.poll_event(), Some(Event::Disconnected { id: bid }));
        pump(10, &mut b, B, &mut a, |_| false);
        assert_eq!(a.poll_event(), Some(Event::Disconnected { id }));
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn lost_messages_are_resent_and_duplicates_answered() {
        let (mut a, mut b) = pair();
        let id = a.connect(0, &params(0x1060000 + 7174)).unwrap();
        // The REQ is lost; the timer resends it.
        pump(0, &mut a, A, &mut b, |_| true);
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        pump(t, &mut a, A, &mut b, |_| false);
        let Some(Event::Request { id: bid, .. }) = b.poll_event() else {
            panic!()
        };
        // The REP is lost; the REQ comes again and the REP is resent once per duplicate.
        b.accept(t, bid, &accept()).unwrap();
        pump(t, &mut b, B, &mut a, |_| true);
        let t2 = a.poll_timeout().unwrap();
        a.handle_timeout(t2);
        pump(t2, &mut a, A, &mut b, |_| false);
        assert_eq!(b.poll_event(), None, "a duplicate REQ is not a new request");
        pump(t2, &mut b, B, &mut a, |_| false);
        assert!(matches!(a.poll_event(), Some(Event::Reply { .. })));
        // The RTU is lost; b resends the REP and a answers it with the RTU again.
        a.rtu(id).unwrap();
        pump(t2, &mut a, A, &mut b, |_| true);
        let t3 = b.poll_timeout().unwrap();
        b.handle_timeout(t3);
        pump(t3, &mut b, B, &mut a, |_| false);
        assert_eq!(a.poll_event(), None);
        pump(t3, &mut a, A, &mut b, |_| false);
        assert_eq!(b.poll_event(), Some(Event::Established { id: bid }));
        assert!(a.counters.resent >= 2 && b.counters.resent >= 1);
    }

    #[test]
    fn unknown_services_are_rejected_and_silence_times_out() {
        let (mut a, mut b) = pair();
        let id = a.connect(0, &params(0x1060000 + 1)).unwrap();
        pump(0, &mut a, A, &mut b, |_| false);
        pump(0, &mut b, B, &mut a, |_| false);
        assert_eq!(
            a.poll_event(),
            Some(Event::Rejected {
                id,
                reason: reason::INVALID_SERVICE_ID
            })
        );
        let mut cfg = CmConfig::new(0xaa, 1);
        cfg.max_retries = 2;
        let mut lonely = Cm::new(cfg);
        let id = lonely.connect(0, &params(7)).unwrap();
        let mut sent = 0;
        while let Some(t) = lonely.poll_timeout() {
            lonely.handle_timeout(t);
            while lonely.poll_transmit().is_some() {
                sent += 1;
            }
        }
        assert_eq!(lonely.poll_event(), Some(Event::TimedOut { id }));
        assert_eq!(sent, 1 + 2 + 1, "REQ, two resends, REJ(timeout)");
    }

    #[test]
    fn garbage_and_unmatched_messages_change_nothing() {
        let (_, mut b) = pair();
        b.handle_mad(0, A, &[0u8; 10]);
        b.handle_mad(0, A, &[0xffu8; 256]);
        let rtu = Mad {
            tid: 1,
            msg: CmMsg::Rtu(Box::new(Rtu {
                local_comm_id: 5,
                remote_comm_id: 6,
                private_data: [0; mad::pdata::RTU],
            })),
        }
        .emit();
        b.handle_mad(0, A, &rtu);
        assert_eq!(b.poll_event(), None);
        assert_eq!((b.counters.malformed, b.counters.unmatched), (2, 1));
    }
}
