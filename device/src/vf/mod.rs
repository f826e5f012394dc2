//! A virtual function: one isolated HCA with its own identity, objects and transport.
//!
//! The sans-I/O surface is four calls (quinn-proto's shape): [`Vf::handle_packet`],
//! [`Vf::poll_transmit`], [`Vf::poll_timeout`] and [`Vf::handle_timeout`]. The verbs surface
//! (PD, MR, CQ, SRQ, AH, QP, post, poll) is a set of commands that either succeed or return a
//! [`VerbsError`](crate::VerbsError); data-path failures become completions, NAKs or async
//! events.
//!
//! This file holds the VF's identity and state and their accessors; its methods are grouped by
//! job in `objects.rs` (PD, MR, CQ, SRQ and AH commands), `queue_pairs.rs` (QP commands and
//! posting work) and `transport.rs` (the four sans-I/O calls, the transmit round-robin, the
//! timer heap and resume after migration).

mod objects;
mod queue_pairs;
mod transport;

use crate::memory::SharedMemory;
use crate::qp::Qp;
use crate::resources::{Counters, Resources};
use crate::table::Table;
use crate::types::{Gid, Guid, Mac, Nanos};
use crate::verbs::{Mtu, VfLimits};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// The first QPN a VF hands out (rxe starts at 17; 0 and 1 are SMI/GSI).
pub const FIRST_QPN: u32 = 17;

/// How many memory windows a VF may hold: as many as MRs (rxe's default limits are equal),
/// within the window key indices.
pub fn mw_limit(l: &VfLimits) -> u32 {
    l.max_mr.min(crate::mw::MAX_MW_NUMBER)
}

/// Who a VF is on the fabric. Survives migration unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfIdentity {
    pub node_guid: Guid,
    pub port_guid: Guid,
    pub gid: Gid,
    pub mac: Mac,
    pub port_mtu: Mtu,
    pub limits: VfLimits,
}

impl VfIdentity {
    /// An identity derived from a MAC and an IPv4 address, the way rxe derives its own.
    pub fn new(mac: Mac, ipv4: [u8; 4]) -> VfIdentity {
        VfIdentity {
            node_guid: mac.to_eui64(),
            port_guid: mac.to_eui64(),
            gid: Gid::from_ipv4(ipv4),
            mac,
            port_mtu: Mtu::Mtu4096,
            limits: VfLimits::default(),
        }
    }
}

/// One virtual HCA.
pub struct Vf {
    pub(crate) identity: VfIdentity,
    pub(crate) res: Resources,
    pub(crate) qps: Table<Qp>,
    ready: VecDeque<u32>,
    timers: BinaryHeap<Reverse<(Nanos, u32)>>,
    pub(crate) key_byte: u8,
}

impl Vf {
    pub fn new(identity: VfIdentity, mem: SharedMemory) -> Vf {
        Vf {
            res: Resources {
                mem,
                gid: identity.gid,
                port_mtu: identity.port_mtu,
                limits: identity.limits,
                pds: Table::new(1, identity.limits.max_pd),
                mrs: Table::new(1, identity.limits.max_mr),
                mws: Table::new(1, mw_limit(&identity.limits)),
                cqs: Table::new(1, identity.limits.max_cq),
                srqs: Table::new(1, identity.limits.max_srq),
                ahs: Table::new(1, identity.limits.max_ah),
                async_events: VecDeque::new(),
                cq_events: VecDeque::new(),
                counters: Counters::default(),
            },
            identity,
            qps: Table::new(FIRST_QPN, identity.limits.max_qp),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            key_byte: 0,
        }
    }

    pub fn identity(&self) -> &VfIdentity {
        &self.identity
    }

    pub fn gid(&self) -> Gid {
        self.identity.gid
    }

    pub fn memory(&self) -> &SharedMemory {
        &self.res.mem
    }

    /// Replaces the VF's guest memory (vhost-user's memory table changed: a frontend connected,
    /// added or removed a region). Objects keep their guest-physical addresses; packets already
    /// built keep the memory they were built with.
    pub fn set_memory(&mut self, mem: SharedMemory) {
        self.res.mem = mem;
    }

    pub fn counters(&self) -> &Counters {
        &self.res.counters
    }
}
