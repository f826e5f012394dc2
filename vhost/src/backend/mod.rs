//! A VF as a vhost-user device: rust-vmm's [`VhostUserBackend`] over one
//! [`crate::port::VfPort`] of the process's shared state.
//!
//! Queue 0 (controlq) carries commands, queue 1 (doorbellq) doorbell records, queue 2
//! (eventq) takes buffers for events (docs/device-protocol.md §2). One extra epoll source, the
//! slot's wake eventfd, tells this VF's worker thread that another thread left events for it.
//!
//! This module answers the frontend's messages (features, config, memory, vring stop, reset);
//! `queues` does the work on the three queues, `transfer` the device-state transfer of a
//! migration, and [`crate::doorbellq`] the doorbell buffers (which other threads drain too).

mod queues;
mod transfer;

use crate::memory::{GuestMem, VhostMemory};
use crate::protocol::{self, CTRL_QUEUE, DOORBELL_QUEUE, EVENT_QUEUE, MAX_QUEUE_SIZE, NUM_QUEUES};
use crate::shared::Shared;
use crate::vring::{self, Vring};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use transfer::StateTransfer;
use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::VhostUserBackend;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// The epoll id of the wake eventfd (ids up to NUM_QUEUES belong to the library).
pub const WAKE_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// The vhost-user backend of one VF for one frontend connection.
pub struct VfBackend {
    index: usize,
    shared: Arc<Shared>,
    mem: GuestMem,
    event_idx: AtomicBool,
    acked_features: AtomicU64,
    /// `LOG_ALL` is acked: the port's memory marks payload copies in the dirty log.
    logging: Arc<AtomicBool>,
    exit: (EventConsumer, EventNotifier),
    /// The exit-event consumers handed to the library, which registers each in its epoll by
    /// `into_raw_fd` and never closes it (vhost-user-backend 0.24, `VringEpollHandler::new`):
    /// closed when the backend goes, after every epoll handler holding it (the handlers own a
    /// clone of the backend's `Arc`, so this runs only once they and their threads are gone).
    handed_out: std::sync::Mutex<Vec<std::os::fd::RawFd>>,
    /// `SET_DEVICE_STATE_FD` until `CHECK_DEVICE_STATE`.
    transfer: StateTransfer,
    /// The library's vrings of this connection, once the VF's worker saw its first event (a
    /// kick on a started ring, or the wake eventfd): how a SAVE that no `GET_VRING_BASE`
    /// preceded tells a never-started VF from one whose rings run ([`VfBackend::running_rings`]).
    seen: std::sync::Mutex<Option<Vec<Vring>>>,
}

/// The vhost-user feature bit a frontend sets while it logs dirty pages (VHOST_F_LOG_ALL).
pub const LOG_ALL: u64 = 1 << 26;

/// The bytes `[offset, offset + size)` of the config space. Bytes past the 128-byte layout
/// read as zero (a frontend may be configured with a larger config size; vhost-user already
/// caps requests at 4 KiB).
pub fn config_window(cfg: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    let start = offset as usize;
    if start < cfg.len() {
        let n = (cfg.len() - start).min(out.len());
        out[..n].copy_from_slice(&cfg[start..start + n]);
    }
    out
}

impl VfBackend {
    /// `mem` is the memory map the daemon was created with: the library swaps its content on
    /// every memory table message, so this handle always sees the current map.
    pub fn new(index: usize, shared: Arc<Shared>, mem: GuestMem) -> io::Result<VfBackend> {
        let logging = Arc::new(AtomicBool::new(false));
        Ok(VfBackend {
            transfer: StateTransfer::new(index, shared.clone(), mem.clone(), logging.clone()),
            index,
            shared,
            mem,
            event_idx: AtomicBool::new(false),
            acked_features: AtomicU64::new(0),
            logging,
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)?,
            handed_out: std::sync::Mutex::new(Vec::new()),
            seen: std::sync::Mutex::new(None),
        })
    }

    pub fn acked_features_bits(&self) -> u64 {
        self.acked_features.load(Ordering::Relaxed)
    }

    /// The rings of this VF that run now (enabled and set up, so the library takes their
    /// kicks), among those its worker has seen. None if the worker has seen no event on this
    /// connection: then no ring ever ran, no command was answered, and the VF has nothing but
    /// its identity to save. (A ring the frontend started but whose first kick the worker has
    /// not taken yet counts as not running: nothing ran on it, and the save that finds it so
    /// suspends the VF first, under the process lock, like `GET_VRING_BASE`.)
    fn running_rings(&self) -> Vec<usize> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.as_deref()
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .filter(|(_, v)| vring::ready(v))
            .map(|(i, _)| i)
            .collect()
    }

    fn event_idx(&self) -> bool {
        self.event_idx.load(Ordering::Relaxed)
    }

    /// A suspended VF whose rings run again (a kick after SET_VRING_*): resume it.
    fn maybe_resume(&self, vrings: &[Vring]) -> bool {
        let mut st = self.shared.lock();
        if !st.suspended[self.index] {
            return true;
        }
        if !vrings.iter().all(vring::ready) {
            return false;
        }
        st.suspended[self.index] = false;
        // A VF whose save released its address (the migration failed, it resumes here) takes
        // it back; a no-op for one that kept or just loaded it.
        let gid = st.ports[self.index].identity().gid;
        st.fabric.attach(gid, self.index);
        self.shared.fabric_changed();
        let now = st.now();
        st.ports[self.index].vf.resume(now);
        let mut touched = vec![false; st.ports.len()];
        touched[self.index] = true;
        st.pump(now, &mut touched);
        self.shared
            .finish_batch(&mut st, &touched, Some(self.index));
        tracing::info!(vf = self.index, "VF resumed");
        true
    }
}

impl VhostUserBackend for VfBackend {
    type Bitmap = BitmapMmapRegion;
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE as usize
    }

    fn features(&self) -> u64 {
        protocol::features::DEVICE | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() | LOG_ALL
    }

    fn acked_features(&self, features: u64) {
        self.acked_features.store(features, Ordering::Relaxed);
        // Under the process lock: a payload copy runs entirely before or after the switch.
        let _st = self.shared.lock();
        self.logging
            .store(features & LOG_ALL != 0, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::LOG_SHMFD
            | VhostUserProtocolFeatures::DEVICE_STATE
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            // QEMU sends RESET_DEVICE when the guest resets the virtio device (virtio_reset ->
            // vhost_reset_device): the next driver then finds a fresh VF, not the objects of
            // the last one, whose rings point into memory the guest may have reused.
            | VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn reset_device(&self) {
        tracing::info!(vf = self.index, "VF reset by the frontend (RESET_DEVICE)");
        let old = {
            let mut st = self.shared.lock();
            st.suspended[self.index] = false;
            st.ports[self.index].reset_keeping_old(VhostMemory::shared_with_logging(
                self.mem.clone(),
                self.logging.clone(),
            ))
        };
        drop(old); // outside the lock
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // The first GET_VRING_BASE suspends the whole VF: from now on nothing is written to
        // guest memory and nothing is sent, until a ring is kicked again (resume) or the
        // state is saved and the frontend goes away. Ahead of any pump: a migration's stop
        // must not wait for traffic to pause.
        let mut st = self.shared.lock_urgent();
        if !st.suspended[self.index] {
            tracing::info!(
                vf = self.index,
                queue_index,
                "VF suspended (GET_VRING_BASE)"
            );
            st.suspended[self.index] = true;
        }
        Ok(())
    }

    fn set_device_state_fd(
        &self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: std::fs::File,
    ) -> io::Result<Option<std::fs::File>> {
        // Read here, on the frontend's thread: only its own messages (handled one at a time,
        // this one now) start, stop or disable rings.
        let running = self.running_rings();
        self.transfer
            .start(direction, phase, file, self.acked_features_bits(), &running)
    }

    fn check_device_state(&self) -> io::Result<()> {
        self.transfer.check()
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.shared.lock().ports[self.index].config();
        config_window(&cfg, offset, size)
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the RDMA device configuration is read-only",
        ))
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        let mut st = self.shared.lock();
        st.ports[self.index]
            .vf
            .set_memory(VhostMemory::shared_with_logging(mem, self.logging.clone()));
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        self.handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        let r = self.handle_event_locked(device_event, evset, vrings);
        // Every path ends here, holding no lock: the notifications owed to the driver
        // (whoever recorded them) are written by this VF's own thread.
        self.shared.slots[self.index].flush_signals(self.index, vrings);
        r
    }
}

impl VfBackend {
    /// The work of one event; the notifications it owes are recorded, not written.
    fn handle_event_locked(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
    ) -> io::Result<()> {
        self.shared.slots[self.index].activate(&self.mem, vrings);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.is_none() {
                *seen = Some(vrings.to_vec());
            }
        }
        if evset != EventSet::IN {
            tracing::warn!(vf = self.index, ?evset, "unexpected event set");
            return Ok(());
        }
        if !self.maybe_resume(vrings) {
            if device_event == WAKE_EVENT {
                let _ = self.shared.slots[self.index].wake.read();
            }
            return Ok(());
        }
        match device_event as usize {
            CTRL_QUEUE => self.drain_queue(&vrings[CTRL_QUEUE], |v| self.process_control(v))?,
            DOORBELL_QUEUE => {
                self.drain_queue(&vrings[DOORBELL_QUEUE], |v| self.process_doorbells(v))?;
                self.busy_poll_doorbells(vrings)?;
            }
            EVENT_QUEUE => {}
            _ if device_event == WAKE_EVENT => {
                let _ = self.shared.slots[self.index].wake.read();
            }
            _ => {
                tracing::warn!(vf = self.index, device_event, "unknown device event");
                return Ok(());
            }
        }
        // Every path ends with the events this VF has waiting.
        self.deliver_events(&vrings[EVENT_QUEUE])
    }
}

impl Drop for VfBackend {
    fn drop(&mut self) {
        let fds = std::mem::take(self.handed_out.get_mut().unwrap_or_else(|e| e.into_inner()));
        for fd in fds {
            // SAFETY: `fd` is a duplicate this backend made in `exit_event` and handed to the
            // library, which turned it into a raw fd for its epoll and never closes it. The
            // epoll handlers that used it each hold an `Arc` of this backend, so they (and
            // their epoll) are gone when this runs: nobody else owns or uses `fd`.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_past_the_layout_are_zero() {
        let cfg: Vec<u8> = (1..=128).collect();
        assert_eq!(config_window(&cfg, 0, 4), vec![1, 2, 3, 4]);
        assert_eq!(config_window(&cfg, 126, 4), vec![127, 128, 0, 0]);
        assert_eq!(config_window(&cfg, 200, 3), vec![0, 0, 0]);
        assert_eq!(config_window(&cfg, u32::MAX, 1), vec![0]);
    }
}
