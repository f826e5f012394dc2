//! One VF as its driver sees it: the [`Vf`] plus what the guest-visible protocol adds around
//! it — ring geometry and indices of every QP, SRQ and CQ, the event backlog, error counters.
//!
//! Nothing here knows about virtqueues or threads: [`VfPort::execute`] takes a command's bytes
//! and returns the response, [`VfPort::doorbell`] takes one doorbell record,
//! [`VfPort::drain_completions`] moves completions into the guest CQ rings and events into the
//! backlog that [`VfPort::pop_event`] hands to the eventq. The vhost-user backend drives it.

use crate::protocol::config::RdmaConfig;
use crate::protocol::doorbell::Event;
use crate::protocol::ring::Ring;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use vhca_device::{QpCap, QpState, QpType, SharedMemory, Vf, VfIdentity, WorkCompletion};

mod commands;
mod completions;
mod doorbells;
pub mod state;
#[cfg(test)]
mod testing;

/// Events kept while the driver has no eventq buffer posted (docs/device-protocol.md §9).
pub const MAX_PENDING_EVENTS: usize = 1024;
/// Largest page list REG_MR reads (8 MiB of addresses: 4 GiB in 4 KiB pages, 1 PiB in 1 GiB).
pub const MAX_MR_PAGES: u32 = 1 << 20;

/// Counters of what the driver got wrong and what the device dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    pub commands: u64,
    pub command_errors: u64,
    pub doorbells: u64,
    /// Doorbells naming no object, moving backwards or too far ahead.
    pub bad_doorbells: u64,
    /// WQEs that could not be read or decoded, or that the VF refused.
    pub bad_wqes: u64,
    /// Virtqueue buffers returned unused: outside guest memory, too short, too long.
    pub bad_buffers: u64,
    pub cqes_written: u64,
    pub cq_overruns: u64,
    pub events_delivered: u64,
    pub events_lost: u64,
}

/// A QP's work queue rings and the producer indices the device has consumed up to.
#[derive(Clone, Debug)]
struct QpRings {
    qp_type: QpType,
    cap: QpCap,
    sq: Ring,
    sq_pi: u32,
    rq: Option<Ring>,
    rq_pi: u32,
    send_cq: u32,
    recv_cq: u32,
}

#[derive(Clone, Debug)]
struct SrqRing {
    ring: Ring,
    pi: u32,
    max_sge: u32,
}

/// A CQ ring: the device produces, the driver consumes and says how far (CQ_CONSUMED).
#[derive(Clone, Debug)]
struct CqRing {
    ring: Ring,
    pi: u32,
    ci: u32,
    /// Overran (or its ring left guest memory): IBTA makes the CQ unusable.
    failed: bool,
    /// Completions the backend itself generates (malformed WQEs), after the VF's own.
    injected: VecDeque<WorkCompletion>,
}

/// A QP as the control socket shows it.
#[derive(Clone, Debug, Serialize)]
pub struct QpInfo {
    pub qpn: u32,
    #[serde(rename = "type")]
    pub qp_type: String,
    pub state: String,
    pub sq_psn: u32,
    pub expected_psn: u32,
    pub una: u32,
    pub sq_depth: u32,
    pub sq_pi: u32,
    pub rq_depth: u32,
    pub rq_pi: u32,
}

/// One VF with its protocol state.
pub struct VfPort {
    pub vf: Vf,
    qps: BTreeMap<u32, QpRings>,
    srqs: BTreeMap<u32, SrqRing>,
    cqs: BTreeMap<u32, CqRing>,
    events: VecDeque<Event>,
    pub counters: PortCounters,
    wcs: Vec<WorkCompletion>,
}

fn qp_type_name(t: QpType) -> &'static str {
    match t {
        QpType::Rc => "RC",
        QpType::Ud => "UD",
        QpType::Uc => "UC",
        QpType::Gsi => "GSI",
    }
}

fn state_name(s: QpState) -> &'static str {
    match s {
        QpState::Reset => "RESET",
        QpState::Init => "INIT",
        QpState::Rtr => "RTR",
        QpState::Rts => "RTS",
        QpState::Sqd => "SQD",
        QpState::Sqe => "SQE",
        QpState::Err => "ERR",
    }
}

impl VfPort {
    pub fn new(identity: VfIdentity, mem: SharedMemory) -> VfPort {
        VfPort {
            vf: Vf::new(identity, mem),
            qps: BTreeMap::new(),
            srqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            events: VecDeque::new(),
            counters: PortCounters::default(),
            wcs: Vec::new(),
        }
    }

    /// Back to a fresh VF with the same identity (a new frontend, or RESET_DEVICE): every
    /// object, ring and pending event is gone; the counters stay.
    pub fn reset(&mut self, mem: SharedMemory) {
        drop(self.reset_keeping_old(mem));
    }

    /// [`VfPort::reset`], handing back the old port so the caller can drop it after releasing
    /// the process lock: freeing a VF of 16,384 QPs takes tens of milliseconds, which another
    /// VF's migration stop would otherwise wait out.
    pub fn reset_keeping_old(&mut self, mem: SharedMemory) -> VfPort {
        let counters = std::mem::take(&mut self.counters);
        let mut old = std::mem::replace(self, VfPort::new(*self.vf.identity(), mem));
        self.counters = counters;
        old.counters = PortCounters::default();
        old
    }

    pub fn identity(&self) -> &VfIdentity {
        self.vf.identity()
    }

    /// The config space (docs/device-protocol.md §4).
    pub fn config(&self) -> Vec<u8> {
        RdmaConfig::from_identity(self.vf.identity()).encode()
    }

    fn mem(&self) -> &SharedMemory {
        self.vf.memory()
    }

    /// Whether `ring` lies wholly in guest memory now.
    fn ring_in_memory(&self, ring: &Ring) -> bool {
        let mut b = [0u8; 1];
        let last = ring.gpa + ring.bytes() - 1;
        self.mem().read(ring.gpa, &mut b).is_ok() && self.mem().read(last, &mut b).is_ok()
    }

    /// QPs for the control socket.
    pub fn qp_infos(&self) -> Vec<QpInfo> {
        self.vf
            .qps()
            .map(|q| {
                let r = self.qps.get(&q.qpn.0);
                QpInfo {
                    qpn: q.qpn.0,
                    qp_type: qp_type_name(q.qp_type()).into(),
                    state: state_name(q.state()).into(),
                    sq_psn: q.req.psn.0,
                    expected_psn: q.resp.epsn.0,
                    una: q.req.una.0,
                    sq_depth: r.map_or(0, |r| r.sq.depth),
                    sq_pi: r.map_or(0, |r| r.sq_pi),
                    rq_depth: r.and_then(|r| r.rq).map_or(0, |x| x.depth),
                    rq_pi: r.map_or(0, |r| r.rq_pi),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use crate::protocol::command::Command;
    use crate::protocol::doorbell::Doorbell;
    use crate::protocol::ring::{encode_recv, encode_send};
    use vhca_device::{
        AhAttr, AhHandle, Gid, MemKey, Qpn, RecvWr, SendOp, SendWr, Sge, UdDest, WcStatus,
    };

    #[test]
    fn ud_send_through_rings_completes_on_both_sides() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, _cqa, qa, cqa_ring, sqa, _) = ud_qp(&mut a, 7);
        let (pdb, _cqb, qb, cqb_ring, _, rqb) = ud_qp(&mut b, 7);
        let (abuf, akey) = a.mr(pda, 4096);
        let (bbuf, bkey) = b.mr(pdb, 4096);
        a.mem().write(abuf, b"hello ud").unwrap();
        let ah = a.u32(Command::CreateAh {
            pd: pda,
            attr: AhAttr {
                dgid: b.port.identity().gid,
                hop_limit: 64,
                ..Default::default()
            },
        });
        let rwr = RecvWr {
            wr_id: 40,
            sgl: vec![Sge {
                addr: bbuf,
                len: 200,
                lkey: MemKey(bkey),
            }],
        };
        b.mem()
            .write(rqb.slot(0), &encode_recv(&rwr, rqb.stride))
            .unwrap();
        b.port.doorbell(Doorbell::Rq { qpn: qb, pi: 1 });
        let swr = SendWr::new(41, SendOp::Send)
            .sge(Sge {
                addr: abuf,
                len: 8,
                lkey: MemKey(akey),
            })
            .ud(UdDest {
                ah: AhHandle(ah),
                remote_qpn: Qpn(qb),
                remote_qkey: 7,
            });
        a.mem()
            .write(sqa.slot(0), &encode_send(&swr, sqa.stride))
            .unwrap();
        a.port.doorbell(Doorbell::Sq { qpn: qa, pi: 1 });
        pump(&mut a, &mut b, &mut f);
        let wa = a.cqes(cqa_ring, 16, 0);
        assert_eq!(
            wa.len(),
            1,
            "{:?} {:?}",
            a.port.counters,
            a.port.vf.counters()
        );
        assert_eq!(wa[0].status, WcStatus::Success);
        let wb = b.cqes(cqb_ring, 16, 0);
        assert_eq!(wb.len(), 1, "{:?}", b.port.vf.counters());
        assert_eq!(
            (wb[0].wr_id, wb[0].byte_len, wb[0].src_qp),
            (40, 48, Qpn(qa))
        );
        let _ = Gid::default();
    }
}
