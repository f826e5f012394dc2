//! Completions and events: after a batch the VF's completions (and the port's own error
//! completions) go into the guest CQ rings, completion and async events into the backlog the
//! eventq takes them from.

use super::{VfPort, MAX_PENDING_EVENTS};
use crate::protocol::doorbell::{async_code, Event};
use crate::protocol::ring::{self, Ring};
use vhca_device::{CqHandle, SharedMemory, WorkCompletion};

impl VfPort {
    pub(super) fn push_event(&mut self, ev: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.counters.events_lost += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    /// Moves one CQ's completions (the VF's, then the backend's own) into its guest ring.
    pub(super) fn drain_cq(&mut self, cqn: u32) {
        let mut wcs = std::mem::take(&mut self.wcs);
        wcs.clear();
        let _ = self.vf.poll_cq(CqHandle(cqn), usize::MAX, &mut wcs);
        let mem = self.vf.memory().clone();
        let mut overrun = false;
        if let Some(cq) = self.cqs.get_mut(&cqn) {
            wcs.extend(cq.injected.drain(..));
            for wc in &wcs {
                if cq.failed {
                    continue;
                }
                if cq.pi.wrapping_sub(cq.ci) >= cq.ring.depth
                    || write_cqe(&mem, &cq.ring, cq.pi, wc).is_err()
                {
                    cq.failed = true;
                    overrun = true;
                    continue;
                }
                cq.pi = cq.pi.wrapping_add(1);
                self.counters.cqes_written += 1;
            }
        }
        self.wcs = wcs;
        if overrun {
            self.counters.cq_overruns += 1;
            self.push_event(Event::Async {
                code: async_code::CQ_ERR,
                handle: cqn,
            });
        }
    }

    /// After a batch: completions into the CQ rings, then completion and async events into the
    /// backlog (a completion event always follows the CQE it announces).
    pub fn drain_completions(&mut self) {
        let cqns: Vec<u32> = self.cqs.keys().copied().collect();
        for cqn in cqns {
            self.drain_cq(cqn);
        }
        while let Some(cq) = self.vf.poll_cq_event() {
            self.push_event(Event::Completion { cqn: cq.0 });
        }
        while let Some(ev) = self.vf.poll_async_event() {
            self.push_event(Event::from_device(&ev));
        }
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Puts back an event that found no buffer after all.
    pub fn unpop_event(&mut self, ev: Event) {
        self.events.push_front(ev);
    }
}

/// Offset of the owner byte in a CQE.
const OWNER: usize = 11;

/// Writes CQE `i` into `ring`, its owner byte last so the driver never sees half a CQE.
pub(super) fn write_cqe(
    mem: &SharedMemory,
    ring: &Ring,
    i: u32,
    wc: &WorkCompletion,
) -> Result<(), vhca_device::memory::MemoryError> {
    let b = ring::encode_cqe(wc, i, ring.depth);
    let at = ring.slot(i);
    mem.write(at, &b[..OWNER])?;
    mem.write(at + OWNER as u64 + 1, &b[OWNER + 1..])?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    mem.write(at + OWNER as u64, &b[OWNER..OWNER + 1])
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::protocol::doorbell::{async_code, Doorbell, Event};
    use crate::protocol::ring::encode_send;

    #[test]
    fn a_full_cq_ring_overruns_unless_the_driver_consumes() {
        let (mut a, mut b) = (Side::new(0), Side::new(1));
        let mut f = fabric(&a, &b);
        let (pda, cqa, qa, cq_ring, sq, _) = ud_qp_cq(&mut a, 7, 2);
        let (_, _, qb, _, _, _) = ud_qp(&mut b, 7);
        let (buf, key) = a.mr(pda, 4096);
        let ah = ah_to(&mut a, pda, &b);
        let post = |a: &mut Side, i: u32| {
            let w = encode_send(&ud_send(i as u64, ah, qb, buf, key), sq.stride);
            a.mem().write(sq.slot(i), &w).unwrap();
            a.port.doorbell(Doorbell::Sq { qpn: qa, pi: i + 1 });
        };
        for i in 0..4 {
            post(&mut a, i);
            pump(&mut a, &mut b, &mut f);
            // The driver consumes what it polled.
            let n = a.cqes(cq_ring, 2, i).len() as u32;
            assert_eq!(n, 1, "send {i}");
            a.port.doorbell(Doorbell::CqConsumed {
                cqn: cqa,
                ci: i + 1,
            });
        }
        assert!(!a.port.has_events());
        // Now without consuming: two fit, the third overruns.
        for i in 4..7 {
            post(&mut a, i);
            pump(&mut a, &mut b, &mut f);
        }
        assert_eq!(a.port.counters.cq_overruns, 1);
        assert_eq!(
            a.port.pop_event(),
            Some(Event::Async {
                code: async_code::CQ_ERR,
                handle: cqa
            })
        );
    }
}
