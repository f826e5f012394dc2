//! A PF's plain state: every VF's [`VfPort`], the fabric between them and the clock, and the
//! sans-I/O steps over them (timers, moving packets, deadlines). No threads, locks or
//! descriptors: the `shared` module puts this behind the process lock and runs it.

use crate::fabric::Fabric;
use crate::port::VfPort;
use identity::{same_identity, IdentityPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vhca_device::{Nanos, SharedMemory, VfIdentity};

pub mod identity;

/// Packets one pump moves at most before it lets other threads in (the timer thread finishes
/// the rest).
const PUMP_BUDGET: usize = 1 << 16;

/// Everything behind the process lock.
pub struct PfState {
    pub ports: Vec<VfPort>,
    pub fabric: Box<dyn Fabric>,
    /// VFs stopped for migration (`GET_VRING_BASE`): they neither transmit nor run timers,
    /// nothing is written to their guest memory, and packets for them are dropped (peers
    /// retransmit).
    pub suspended: Vec<bool>,
    /// Packets dropped because their VF was suspended.
    pub dropped_suspended: u64,
    /// When the timer thread, asleep on its condition variable, wakes up by itself; `None`
    /// while it is awake (it reads the deadlines again before it sleeps). A batch notifies it
    /// only when the next deadline moved before this: a wake-up per batch would cost a
    /// context switch per doorbell on a loaded machine.
    pub(crate) timer_sleeps_until: Option<Nanos>,
    /// Set while a migration step waits for the lock (`Shared::lock_urgent`): a pump stops
    /// early, as if its budget were spent, and leaves the rest to the timer thread.
    /// Without it a VF's stop waited for a whole batch (thousands of packets).
    pub preempt: Arc<AtomicUsize>,
    /// Who each slot is by the PF's configuration, and what a loaded state may name
    /// (docs/migration.md, "Identity policy"). Shared with the load threads, which check a
    /// state before they build it.
    pub identity: Arc<IdentityPolicy>,
    /// Slots whose VF's state was saved on the current connection: it migrated onward (or
    /// tried to), so the slot does not keep its identity ([`PfState::reset_slot`]).
    left: Vec<bool>,
    epoch: Instant,
}

impl PfState {
    /// The ports' identities as given here are the ones the PF assigns to their slots; no
    /// slot takes another one ([`PfState::accept_identity`] changes that).
    pub fn new(ports: Vec<VfPort>, mut fabric: Box<dyn Fabric>) -> PfState {
        for (i, p) in ports.iter().enumerate() {
            fabric.attach(p.identity().gid, i);
        }
        let assigned = ports.iter().map(|p| *p.identity()).collect();
        PfState {
            identity: Arc::new(IdentityPolicy::new(assigned, false)),
            left: vec![false; ports.len()],
            suspended: vec![false; ports.len()],
            dropped_suspended: 0,
            timer_sleeps_until: None,
            preempt: Arc::new(AtomicUsize::new(0)),
            ports,
            fabric,
            epoch: Instant::now(),
        }
    }

    /// A migration destination (`vhca serve --accept-identity`): a loaded state may bring an
    /// identity of its own, as long as no other slot has it.
    pub fn accept_identity(mut self, accept: bool) -> PfState {
        let assigned = (0..self.ports.len())
            .filter_map(|i| self.identity.assigned(i).copied())
            .collect();
        self.identity = Arc::new(IdentityPolicy::new(assigned, accept));
        self
    }

    /// A loaded VF was installed in slot `index`: it is the slot's VF now.
    pub fn vf_arrived(&mut self, index: usize) {
        if let Some(l) = self.left.get_mut(index) {
            *l = false;
        }
    }

    /// Slot `index`'s VF leaves (its state was saved for a migration): its address goes
    /// with it ([`Fabric::release`]), and the slot takes its own identity back when the
    /// frontend goes ([`PfState::reset_slot`]).
    pub fn vf_leaves(&mut self, index: usize) {
        self.fabric.release(index);
        if let Some(l) = self.left.get_mut(index) {
            *l = true;
        }
    }

    /// Slot `index` back to a fresh VF over `mem` (a frontend came or went), with the PF's
    /// limits whatever a loaded state brought. Its identity is the assigned one, except on a
    /// migration destination (`--accept-identity`) whose slot took a VF in that has not left
    /// again: the slot keeps hosting that VF's identity for its next frontend (the next leg
    /// of an A → B → A journey starts there; docs/migration.md, "Identity policy"). A slot
    /// that goes back to its own identity from another one gives the other's address up at
    /// once and takes its own (UDP: binds it; TAP: takes its own MAC and address and
    /// announces them). Returns the old port, to be dropped outside the lock. The counters
    /// stay with the slot.
    pub fn reset_slot(&mut self, index: usize, mem: SharedMemory) -> Option<VfPort> {
        let own = *self.identity.assigned(index)?;
        let left = std::mem::take(self.left.get_mut(index)?);
        let port = self.ports.get_mut(index)?;
        let current = *port.identity();
        let foreign = !same_identity(&current, &own);
        let keep = foreign && self.identity.accepts_foreign() && !left;
        let identity = if keep {
            VfIdentity {
                limits: own.limits,
                ..current
            }
        } else {
            own
        };
        let counters = std::mem::take(&mut port.counters);
        let mut fresh = VfPort::new(identity, mem);
        fresh.counters = counters;
        let old = std::mem::replace(port, fresh);
        if foreign && !keep {
            tracing::info!(
                vf = index,
                gid = %own.gid,
                was = %current.gid,
                "slot back to its assigned identity"
            );
            self.fabric.attach(own.gid, index);
            self.fabric.adopt(index, own.mac, own.gid);
        }
        Some(old)
    }

    /// When the process's clock started.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Monotonic time since the process started.
    pub fn now(&self) -> Nanos {
        Nanos(self.epoch.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }

    /// Runs every VF timer due at `now`.
    pub fn run_timers(&mut self, now: Nanos, touched: &mut [bool]) {
        for (i, p) in self.ports.iter_mut().enumerate() {
            if self.suspended[i] {
                continue;
            }
            if p.vf.poll_timeout().is_some_and(|t| t <= now) {
                p.vf.handle_timeout(now);
                touched[i] = true;
            }
        }
    }

    /// Moves packets between the VFs and the fabric until nothing moves (or the budget is
    /// spent); marks every VF that sent or received something.
    pub fn pump(&mut self, now: Nanos, touched: &mut [bool]) {
        let mut budget = PUMP_BUDGET;
        loop {
            // Traffic that keeps flowing would keep the lock for a whole budget; someone who
            // must stop a VF now (GET_VRING_BASE) goes first.
            if self.preempt.load(Ordering::Relaxed) > 0 {
                return;
            }
            let mut moved = false;
            for (i, p) in self.ports.iter_mut().enumerate() {
                if self.suspended[i] {
                    continue;
                }
                while budget > 0 && self.preempt.load(Ordering::Relaxed) == 0 {
                    let Some(pkt) = p.vf.poll_transmit(now) else {
                        break;
                    };
                    self.fabric.send(now, pkt);
                    touched[i] = true;
                    moved = true;
                    budget -= 1;
                }
            }
            while budget > 0 && self.preempt.load(Ordering::Relaxed) == 0 {
                let Some((port, pkt)) = self.fabric.poll_deliver(now) else {
                    break;
                };
                if self.suspended.get(port).copied().unwrap_or(false) {
                    self.dropped_suspended += 1;
                } else if let Some(p) = self.ports.get_mut(port) {
                    p.vf.handle_packet(now, &pkt);
                    touched[port] = true;
                }
                moved = true;
                budget -= 1;
            }
            if !moved || budget == 0 {
                return;
            }
        }
    }

    /// When the timer thread must run next.
    pub fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        let mut next = self.fabric.next_event(now);
        for (i, p) in self.ports.iter().enumerate() {
            if self.suspended[i] {
                continue;
            }
            let t = if p.vf.wants_transmit() {
                Some(now)
            } else {
                p.vf.poll_timeout()
            };
            next = match (next, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }
}
