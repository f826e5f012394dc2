//! The vhost-level state of one VF port for migration: what [`VfPort`] adds around the VF's
//! checkpoint — ring geometry and producer/consumer indices of every QP, SRQ and CQ, the
//! event backlog. A child module of `port` so it can read the port's private tables.

use super::{CqRing, QpRings, SrqRing, VfPort, MAX_PENDING_EVENTS};
use crate::protocol::doorbell::{Event, EVENT_SIZE};
use crate::protocol::ring::Ring;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use vhca_device::checkpoint::{self, codec, CheckpointError};
use vhca_device::{Nanos, QpCap, QpType, SharedMemory, VfIdentity, VfLimits, WorkCompletion};

/// A ring's geometry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    pub gpa: u64,
    pub depth: u32,
    pub stride: u32,
}

impl From<Ring> for RingState {
    fn from(r: Ring) -> Self {
        RingState {
            gpa: r.gpa,
            depth: r.depth,
            stride: r.stride,
        }
    }
}

impl RingState {
    fn ring(self) -> Result<Ring, CheckpointError> {
        Ring::new(self.gpa, self.depth, self.stride)
            .map_err(|e| CheckpointError::Invalid(format!("ring {self:?}: {e}")))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QpRingState {
    pub qpn: u32,
    pub qp_type: QpType,
    pub cap: QpCap,
    pub sq: RingState,
    pub sq_pi: u32,
    pub rq: Option<RingState>,
    pub rq_pi: u32,
    pub send_cq: u32,
    pub recv_cq: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrqRingState {
    pub srqn: u32,
    pub ring: RingState,
    pub pi: u32,
    pub max_sge: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CqRingState {
    pub cqn: u32,
    pub ring: RingState,
    pub pi: u32,
    pub ci: u32,
    pub failed: bool,
    pub injected: Vec<WorkCompletion>,
}

/// Version 1 of a port's state: the VF checkpoint blob (docs/checkpoint-format.md) plus the
/// rings around it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortStateV1 {
    /// `checkpoint::save(vf, now, codec::BINARY)`. As serde bytes: postcard writes them as a
    /// sequence of `u8`s would be (a varint length, then the bytes) but in one call, not one
    /// per byte (2 ms each way for the 2 MB checkpoint of 16,384 QPs).
    #[serde(with = "serde_bytes")]
    pub checkpoint: Vec<u8>,
    pub qps: Vec<QpRingState>,
    pub srqs: Vec<SrqRingState>,
    pub cqs: Vec<CqRingState>,
    /// Events not yet handed to the eventq, each in its wire encoding.
    pub events: Vec<Vec<u8>>,
    /// Completions taken from the VF but not yet written to a CQ ring.
    pub pending_wcs: Vec<WorkCompletion>,
}

fn invalid(what: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid(what.into())
}

impl VfPort {
    /// The port's state at `now` (the VF must be suspended: nothing may move meanwhile).
    pub fn save_state(&self, now: Nanos) -> PortStateV1 {
        PortStateV1 {
            checkpoint: checkpoint::save(&self.vf, now, codec::BINARY),
            qps: self
                .qps
                .iter()
                .map(|(&qpn, q)| QpRingState {
                    qpn,
                    qp_type: q.qp_type,
                    cap: q.cap,
                    sq: q.sq.into(),
                    sq_pi: q.sq_pi,
                    rq: q.rq.map(Into::into),
                    rq_pi: q.rq_pi,
                    send_cq: q.send_cq,
                    recv_cq: q.recv_cq,
                })
                .collect(),
            srqs: self
                .srqs
                .iter()
                .map(|(&srqn, s)| SrqRingState {
                    srqn,
                    ring: s.ring.into(),
                    pi: s.pi,
                    max_sge: s.max_sge,
                })
                .collect(),
            cqs: self
                .cqs
                .iter()
                .map(|(&cqn, c)| CqRingState {
                    cqn,
                    ring: c.ring.into(),
                    pi: c.pi,
                    ci: c.ci,
                    failed: c.failed,
                    injected: c.injected.iter().copied().collect(),
                })
                .collect(),
            events: self.events.iter().map(|e| e.encode().to_vec()).collect(),
            pending_wcs: self.wcs.clone(),
        }
    }

    /// Builds a port from a state, checking everything first; its clock now at `now`. The VF
    /// takes the identity (GID, MAC, GUIDs) and limits recorded in the checkpoint once
    /// `admit` accepted them (the PF's identity policy), before anything is built; `admit`
    /// returns the limits the slot allows.
    pub fn load_state(
        s: PortStateV1,
        mem: SharedMemory,
        now: Nanos,
        admit: impl FnOnce(&VfIdentity) -> Result<VfLimits, CheckpointError>,
    ) -> Result<VfPort, CheckpointError> {
        let (_, vs) = checkpoint::decode(&s.checkpoint)?;
        // The limits the slot allows: every number in the checkpoint is checked against
        // them before the restore allocates anything.
        let allowed = admit(&VfIdentity::from(vs.identity))?;
        let vf = checkpoint::restore(vs, mem, now, &allowed)?;
        let qp_types: BTreeMap<u32, QpType> = vf.qps().map(|q| (q.qpn.0, q.init.qp_type)).collect();
        let mut cqs = BTreeMap::new();
        for c in s.cqs {
            if c.pi.wrapping_sub(c.ci) > c.ring.depth {
                return Err(invalid(format!(
                    "CQ {} ring indices {}/{}",
                    c.cqn, c.pi, c.ci
                )));
            }
            let ring = c.ring.ring()?;
            let prev = cqs.insert(
                c.cqn,
                CqRing {
                    ring,
                    pi: c.pi,
                    ci: c.ci,
                    failed: c.failed,
                    injected: c.injected.into_iter().collect(),
                },
            );
            if prev.is_some() {
                return Err(invalid(format!("CQ {} twice", c.cqn)));
            }
        }
        let mut srqs = BTreeMap::new();
        for r in s.srqs {
            if r.max_sge > allowed.max_sge {
                return Err(invalid(format!(
                    "SRQ {} ring of {} SGEs, above the slot's {}",
                    r.srqn, r.max_sge, allowed.max_sge
                )));
            }
            let ring = r.ring.ring()?;
            let prev = srqs.insert(
                r.srqn,
                SrqRing {
                    ring,
                    pi: r.pi,
                    max_sge: r.max_sge,
                },
            );
            if prev.is_some() {
                return Err(invalid(format!("SRQ {} twice", r.srqn)));
            }
        }
        let mut qps = BTreeMap::new();
        for q in s.qps {
            match qp_types.get(&q.qpn) {
                None => {
                    return Err(invalid(format!(
                        "rings for QP {} the VF does not have",
                        q.qpn
                    )))
                }
                Some(t) if *t != q.qp_type => {
                    return Err(invalid(format!(
                        "rings of QP {} say {:?}, the QP is {t:?}",
                        q.qpn, q.qp_type
                    )))
                }
                Some(_) => {}
            }
            for cq in [q.send_cq, q.recv_cq] {
                if !cqs.contains_key(&cq) {
                    return Err(invalid(format!("QP {} names unknown CQ ring {cq}", q.qpn)));
                }
            }
            let rq = match q.rq {
                Some(r) => Some(r.ring()?),
                None => None,
            };
            let prev = qps.insert(
                q.qpn,
                QpRings {
                    qp_type: q.qp_type,
                    cap: q.cap,
                    sq: q.sq.ring()?,
                    sq_pi: q.sq_pi,
                    rq,
                    rq_pi: q.rq_pi,
                    send_cq: q.send_cq,
                    recv_cq: q.recv_cq,
                },
            );
            if prev.is_some() {
                return Err(invalid(format!("rings of QP {} twice", q.qpn)));
            }
        }
        // The backlog a running port keeps (older events beyond it are counted as lost).
        if s.events.len() > MAX_PENDING_EVENTS {
            return Err(invalid(format!(
                "{} events waiting, more than the {MAX_PENDING_EVENTS} a port keeps",
                s.events.len()
            )));
        }
        let mut events = VecDeque::new();
        for e in &s.events {
            if e.len() != EVENT_SIZE {
                return Err(invalid("event of the wrong size"));
            }
            events.push_back(Event::decode(e).map_err(|e| invalid(format!("event: {e}")))?);
        }
        Ok(VfPort {
            vf,
            qps,
            srqs,
            cqs,
            events,
            counters: Default::default(),
            wcs: s.pending_wcs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_encodes_as_a_sequence_of_bytes_did() {
        #[derive(Serialize)]
        struct Old {
            checkpoint: Vec<u8>,
        }
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let s = PortStateV1 {
            checkpoint: bytes.clone(),
            qps: vec![],
            srqs: vec![],
            cqs: vec![],
            events: vec![],
            pending_wcs: vec![],
        };
        let new = postcard::to_stdvec(&s).unwrap();
        let old = postcard::to_stdvec(&Old { checkpoint: bytes }).unwrap();
        assert_eq!(new[..old.len()], old[..], "the wire format did not change");
        assert_eq!(postcard::from_bytes::<PortStateV1>(&new).unwrap(), s);
    }

    /// A port's state with one UD QP, and a loader that admits it with default limits.
    fn saved() -> (PortStateV1, SharedMemory) {
        let mut a = super::super::testing::Side::new(0);
        super::super::testing::ud_qp(&mut a, 7);
        let mem = a.mem();
        (a.port.save_state(Nanos(0)), mem)
    }

    fn load(s: PortStateV1, mem: SharedMemory) -> Result<VfPort, CheckpointError> {
        VfPort::load_state(s, mem, Nanos(0), |_| Ok(VfLimits::default()))
    }

    #[test]
    fn ring_state_that_a_port_never_has_is_refused() {
        let (good, mem) = saved();
        assert!(load(good.clone(), mem.clone()).is_ok());

        let mut twice = good.clone();
        twice.qps.push(twice.qps[0].clone());
        let e = load(twice, mem.clone()).err().unwrap();
        assert!(e.to_string().contains("twice"), "{e}");

        let mut retyped = good.clone();
        retyped.qps[0].qp_type = QpType::Rc;
        let e = load(retyped, mem.clone()).err().unwrap();
        assert!(e.to_string().contains("the QP is"), "{e}");

        let mut flood = good.clone();
        flood.events = vec![vec![0u8; EVENT_SIZE]; MAX_PENDING_EVENTS + 1];
        let e = load(flood, mem.clone()).err().unwrap();
        assert!(e.to_string().contains("events waiting"), "{e}");

        let mut wide = good.clone();
        wide.srqs.push(SrqRingState {
            srqn: 1,
            ring: wide.qps[0].sq,
            pi: 0,
            max_sge: u32::MAX,
        });
        let e = load(wide, mem).err().unwrap();
        assert!(e.to_string().contains("SGEs"), "{e}");
    }

    /// The migration load path refuses hostile v2 checkpoints inside a device state as the
    /// device's own checks do: a delta (no base on a destination), a bad section checksum, a
    /// truncated section, a dangling reference.
    #[test]
    fn hostile_checkpoints_in_a_device_state_are_refused() {
        use vhca_device::checkpoint::container::{assemble, sections, SectionKind};
        let (good, mem) = saved();
        let (_, state) = checkpoint::decode(&good.checkpoint).unwrap();
        let with = |blob: Vec<u8>| PortStateV1 {
            checkpoint: blob,
            ..good.clone()
        };

        let mut later = state.clone();
        later.counters.tx_packets += 1;
        let delta = checkpoint::save_delta(&state, &later, codec::BINARY).unwrap();
        assert_eq!(
            load(with(delta), mem.clone()).err(),
            Some(CheckpointError::DeltaNeedsBase)
        );

        let mut flipped = good.checkpoint.clone();
        let n = flipped.len();
        flipped[n - 1] ^= 1;
        assert_eq!(
            load(with(flipped), mem.clone()).err(),
            Some(CheckpointError::Checksum)
        );

        let (_, mut parts) = sections(&good.checkpoint).unwrap();
        let q = parts.iter_mut().find(|p| p.0 == SectionKind::Qps).unwrap();
        q.2.truncate(q.2.len() - 1);
        let refs: Vec<(SectionKind, u32, &[u8])> = parts
            .iter()
            .map(|(k, i, b)| (*k, *i, b.as_slice()))
            .collect();
        let cut = assemble(codec::BINARY, false, &refs);
        assert!(matches!(
            load(with(cut), mem.clone()).err(),
            Some(CheckpointError::Decode(_))
        ));

        let mut dangling = state.clone();
        dangling.qps[0].init.send_cq = vhca_device::CqHandle(999);
        let e = load(
            with(checkpoint::encode(&dangling, codec::BINARY)),
            mem.clone(),
        )
        .err();
        assert!(matches!(e, Some(CheckpointError::Invalid(_))), "{e:?}");

        assert!(load(good, mem).is_ok());
    }
}
