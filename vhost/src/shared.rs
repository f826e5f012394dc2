//! The state one `vhca serve` process shares between its threads: the PF's state
//! ([`PfState`]) behind one mutex, what each VF socket needs outside it ([`VfSlot`]), and the
//! threads that are not a VF's own: the timer thread and the network thread.
//!
//! One mutex is the simple, correct first step: a batch on one VF may hand packets to any other
//! VF, and the device is sans-I/O, so whoever holds the lock moves everything until the fabric
//! is quiet. Per-VF locks with a lock-free fabric are the later, faster shape.

use crate::doorbellq;
use crate::memory::GuestMem;
use crate::pf::PfState;
use crate::protocol::DOORBELL_QUEUE;
use crate::vring::{Flush, Vring};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vhca_device::Nanos;
use vhost_user_backend::{ShutdownHandle, VringT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What the process knows of one VF socket outside the lock.
pub struct VfSlot {
    pub socket: PathBuf,
    /// Written when another thread left work for this VF's eventq (events to deliver).
    pub wake: EventFd,
    /// The live frontend connection, to cut it at shutdown.
    pub conn: Mutex<Option<ShutdownHandle>>,
    pub connected: AtomicBool,
    pub connections: AtomicU64,
    /// Used-buffer notifications not delivered because the frontend's call eventfd was full
    /// (it does not read it): the guest's problem, counted, not retried.
    pub calls_full: AtomicU64,
    /// Used-buffer notifications whose write failed otherwise (e.g. not an eventfd).
    pub calls_failed: AtomicU64,
    /// The live connection's guest memory and vrings, once its first event arrived: lets any
    /// thread apply this VF's published doorbells before packets move.
    active: Mutex<Option<Active>>,
}

/// Shared, so that a sweep takes it without copying the vring list.
type Active = Arc<(GuestMem, Vec<Vring>)>;

impl VfSlot {
    /// Records the connection's guest memory and vrings (first event of a connection).
    pub fn activate(&self, mem: &GuestMem, vrings: &[Vring]) {
        let mut a = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if a.is_none() {
            *a = Some(Arc::new((mem.clone(), vrings.to_vec())));
        }
    }

    /// Writes the notifications owed on `vrings` (the VF's own thread, no lock held) and
    /// counts the ones the frontend's eventfds did not take.
    pub fn flush_signals(&self, index: usize, vrings: &[Vring]) {
        for v in vrings {
            match v.flush_signal() {
                Flush::Nothing | Flush::Sent => {}
                Flush::Full => {
                    self.calls_full.fetch_add(1, Ordering::Relaxed);
                }
                Flush::Failed(e) => {
                    if self.calls_failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(vf = index, error = %e, "cannot signal the driver");
                    }
                }
            }
        }
    }

    /// Forgets the connection (it ended).
    pub fn deactivate(&self) {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The process: state, per-VF slots, the timer thread's condition variable, the stop signal.
pub struct Shared {
    pub state: Mutex<PfState>,
    /// `PfState::preempt`, reachable without the lock.
    preempt: Arc<AtomicUsize>,
    /// `PfState`'s clock origin, to read the clock without the lock.
    epoch: Instant,
    pub slots: Vec<VfSlot>,
    pub timer: Condvar,
    /// Readable once the process is stopping (never consumed, so every epoll sees it).
    pub stop_fd: EventFd,
    stopping: AtomicBool,
    /// How long a VF thread keeps looking at its doorbellq after the last doorbell before it
    /// sleeps (0: never polls). See the backend's `busy_poll_doorbells`.
    pub busy_poll: Duration,
    /// How long a device-state transfer may take before it fails (docs/migration.md).
    pub transfer_timeout: Duration,
    /// Written when the fabric's descriptors changed
    /// ([`crate::fabric::Fabric::generation`]): the network thread waits on the new set.
    net_changed: EventFd,
}

impl Shared {
    pub fn new(state: PfState, sockets: Vec<PathBuf>) -> std::io::Result<Shared> {
        let slots = sockets
            .into_iter()
            .map(|socket| {
                Ok(VfSlot {
                    socket,
                    wake: EventFd::new(EFD_NONBLOCK)?,
                    conn: Mutex::new(None),
                    connected: AtomicBool::new(false),
                    connections: AtomicU64::new(0),
                    calls_full: AtomicU64::new(0),
                    calls_failed: AtomicU64::new(0),
                    active: Mutex::new(None),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Shared {
            preempt: state.preempt.clone(),
            epoch: state.epoch(),
            state: Mutex::new(state),
            slots,
            timer: Condvar::new(),
            stop_fd: EventFd::new(EFD_NONBLOCK)?,
            stopping: AtomicBool::new(false),
            busy_poll: Duration::ZERO,
            transfer_timeout: crate::guest_fd::DEFAULT_TRANSFER_TIMEOUT,
            net_changed: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The process lock. A thread that panicked while holding it left the state as it was
    /// between two whole operations at worst; keep serving.
    pub fn lock(&self) -> MutexGuard<'_, PfState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`PfState::now`] without the lock.
    pub fn now(&self) -> Nanos {
        Nanos(self.epoch.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }

    /// The process lock for a migration step (stop, save, install) that the guest's blackout
    /// waits on: a pump running meanwhile ends early so the step gets the lock within a
    /// packet or so; the timer thread picks up the rest.
    pub fn lock_urgent(&self) -> MutexGuard<'_, PfState> {
        // A count: two VFs of the process may stop at once.
        self.preempt.fetch_add(1, Ordering::Relaxed);
        let g = self.lock();
        self.preempt.fetch_sub(1, Ordering::Relaxed);
        g
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Asks every thread to finish: VF threads leave their accept wait or lose their
    /// connection, the timer and ctl threads return.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop_fd.write(1);
        for s in &self.slots {
            if let Some(h) = s.conn.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                h.shutdown();
            }
        }
        let _g = self.lock();
        self.timer.notify_all();
    }

    pub fn stop_raw_fd(&self) -> i32 {
        self.stop_fd.as_raw_fd()
    }

    /// The end of every batch, whoever ran it: completions of every touched VF go into its
    /// CQ rings; VFs other than `me` with events waiting are woken to deliver them on their
    /// own eventq; the timer thread is woken if the batch left work due before it wakes.
    pub fn finish_batch(&self, st: &mut PfState, touched: &[bool], me: Option<usize>) {
        for (i, t) in touched.iter().enumerate() {
            if (!*t && Some(i) != me) || st.suspended.get(i).copied().unwrap_or(true) {
                continue;
            }
            let Some(p) = st.ports.get_mut(i) else {
                continue;
            };
            p.drain_completions();
            if Some(i) != me && p.has_events() {
                if let Some(s) = self.slots.get(i) {
                    let _ = s.wake.write(1);
                }
            }
        }
        if let Some(until) = st.timer_sleeps_until {
            let now = st.now();
            if st.next_deadline(now).is_some_and(|t| t < until) {
                st.timer_sleeps_until = None;
                self.timer.notify_all();
            }
        }
    }

    /// Applies the published doorbells of every connected VF but `skip` (see
    /// [`doorbellq::drain`]).
    pub fn sweep_doorbells(&self, st: &mut PfState, skip: Option<usize>) {
        for (i, slot) in self.slots.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let active = slot
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(active) = active {
                let (mem, vrings) = &*active;
                if let Some(v) = vrings.get(DOORBELL_QUEUE) {
                    match doorbellq::drain(mem, i, st, v) {
                        // Keep the driver kicking under EVENT_IDX: the avail event moves on.
                        // The notification is the VF's own thread's to write: wake it.
                        Ok(true) => {
                            let _ = v.enable_notification();
                            if v.signal_pending() {
                                let _ = slot.wake.write(1);
                            }
                        }
                        Ok(false) => {}
                        Err(e) => tracing::debug!(vf = i, error = %e, "doorbell sweep failed"),
                    }
                }
            }
        }
    }

    /// A batch: every VF's published doorbells, the fabric until quiet, completions into the
    /// rings, wake-ups. `me` is the VF whose thread runs it (its own doorbells are applied
    /// by the caller).
    pub fn run_batch(&self, st: &mut PfState, me: Option<usize>) {
        self.sweep_doorbells(st, me);
        let now = st.now();
        let mut touched = vec![false; st.ports.len()];
        st.pump(now, &mut touched);
        self.finish_batch(st, &touched, me);
    }

    /// The timer thread: runs VF timers and finishes pumps that ran out of budget.
    pub fn timer_loop(&self) {
        let mut st = self.lock();
        let n = st.ports.len();
        loop {
            if self.stopping() {
                return;
            }
            let now = st.now();
            let mut touched = vec![false; n];
            st.run_timers(now, &mut touched);
            self.finish_batch(&mut st, &touched, None);
            self.run_batch(&mut st, None);
            let now = st.now();
            match st.next_deadline(now) {
                Some(t) if t <= now => {
                    // More work right away: let the VF threads in first.
                    drop(st);
                    std::thread::yield_now();
                    st = self.lock();
                }
                next => {
                    let wait = next.map_or(Duration::from_secs(1), |t| {
                        Duration::from_nanos(t.0 - now.0).min(Duration::from_secs(1))
                    });
                    st.timer_sleeps_until =
                        Some(Nanos(now.0.saturating_add(wait.as_nanos() as u64)));
                    st = self
                        .timer
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    st.timer_sleeps_until = None;
                }
            }
        }
    }

    /// Tells the network thread that the fabric's descriptors changed (a link was released
    /// or bound again); call after [`crate::fabric::Fabric::release`] or a
    /// [`crate::fabric::Fabric::attach`] that may bind.
    pub fn fabric_changed(&self) {
        let _ = self.net_changed.write(1);
    }

    /// The network thread of a fabric that receives from outside the process: waits until one
    /// of the fabric's descriptors is readable (or the process stops), then runs a batch, which
    /// reads the packets, hands them to their VFs and posts the completions. When the fabric's
    /// descriptors change (a VF migrated in or out) it waits on the new set.
    pub fn network_loop(&self) {
        let mut generation = None;
        let mut epoll = None;
        let mut events = Vec::new();
        while !self.stopping() {
            let (g, fds) = {
                let st = self.lock();
                (st.fabric.generation(), st.fabric.wake_fds())
            };
            if generation != Some(g) {
                // A new epoll rather than DEL/ADD: a closed socket's descriptor number may
                // already belong to its replacement.
                match Self::network_epoll(&fds, self.stop_raw_fd(), self.net_changed.as_raw_fd()) {
                    Ok(e) => epoll = Some(e),
                    Err(e) => {
                        tracing::error!(error = %e, "network thread cannot wait on the fabric");
                        return;
                    }
                }
                events = vec![EpollEvent::default(); fds.len() + 2];
                generation = Some(g);
            }
            let Some(ep) = epoll.as_ref() else { return };
            match ep.wait(1000, &mut events) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "network thread wait failed");
                    return;
                }
            }
            let _ = self.net_changed.read();
            if self.stopping() {
                return;
            }
            // The batch ends in `finish_batch`, which also wakes the timer thread for packets
            // read but not yet delivered (budget spent).
            let mut st = self.lock();
            self.run_batch(&mut st, None);
        }
    }

    fn network_epoll(fds: &[RawFd], stop: RawFd, changed: RawFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (i, fd) in fds.iter().chain([&stop, &changed]).enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                *fd,
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        Ok(epoll)
    }
}
