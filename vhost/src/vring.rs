//! What every queue of the backend does with rust-vmm's vrings: the vring type, whether a
//! queue runs, whether a descriptor chain is whole, and the used-buffer notification.
//!
//! The vring type wraps rust-vmm's [`VringRwLock`] to keep the two eventfds the frontend
//! gave for the queue out of its lock: the call fd lives here and only [`Vring::flush_signal`]
//! writes it, and kicks are read from our own duplicate of the kick fd. A signal is first
//! recorded ([`signal`], from any thread, under any lock), then written by the VF's own thread
//! once it holds no lock ([`Vring::flush_signal`]), without waiting ([`crate::guest_fd`]): a
//! frontend that clears `O_NONBLOCK` on its eventfd and fills its counter stalls nobody but,
//! at worst, its own VF's thread (docs/serve.md).

use crate::guest_fd;
use crate::memory::GuestMem;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vhost_user_backend::{VringRwLock, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::QueueT;

/// A queue: rust-vmm's vring, and the frontend's call and kick fds outside its lock.
#[derive(Clone)]
pub struct Vring {
    inner: VringRwLock<GuestMem>,
    fds: Arc<GuestFds>,
}

/// The frontend's eventfds of one queue.
#[derive(Default)]
struct GuestFds {
    /// Written to tell the driver about used buffers. Cloned out of the mutex to be written.
    call: Mutex<Option<Arc<File>>>,
    /// Our duplicate of the kick fd (the library keeps the original in its epoll).
    kick: Mutex<Option<Arc<File>>>,
    /// A used-buffer notification is owed to the driver.
    pending: AtomicBool,
}

/// What [`Vring::flush_signal`] did.
#[derive(Debug)]
pub enum Flush {
    /// Nothing was owed (or there is no call fd).
    Nothing,
    Sent,
    /// The eventfd's counter is full: the frontend does not read it. Its problem; not retried.
    Full,
    Failed(io::Error),
}

impl Vring {
    /// Writes the call fd if a notification is owed. Call it from the VF's own thread with no
    /// lock held: the write is non-blocking, but the frontend may race to make it blocking.
    pub fn flush_signal(&self) -> Flush {
        if !self.fds.pending.swap(false, Ordering::AcqRel) {
            return Flush::Nothing;
        }
        let call = lock(&self.fds.call).clone();
        let Some(call) = call else {
            return Flush::Nothing;
        };
        match guest_fd::write_nowait(&call, &1u64.to_ne_bytes()) {
            Ok(_) => Flush::Sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Flush::Full,
            Err(e) => Flush::Failed(e),
        }
    }

    /// A notification is owed and not written yet.
    pub fn signal_pending(&self) -> bool {
        self.fds.pending.load(Ordering::Acquire)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shared_dup(file: &Option<File>) -> Option<Arc<File>> {
    let dup = file.as_ref()?.try_clone();
    match dup {
        Ok(f) => Some(Arc::new(f)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot duplicate a frontend's eventfd");
            None
        }
    }
}

impl<'a> VringStateGuard<'a, GuestMem> for Vring {
    type G = <VringRwLock<GuestMem> as VringStateGuard<'a, GuestMem>>::G;
}

impl<'a> VringStateMutGuard<'a, GuestMem> for Vring {
    type G = <VringRwLock<GuestMem> as VringStateMutGuard<'a, GuestMem>>::G;
}

impl VringT<GuestMem> for Vring {
    fn new(mem: GuestMem, max_queue_size: u16) -> Result<Self, virtio_queue::Error> {
        Ok(Vring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            fds: Arc::default(),
        })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMem>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMem>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), virtio_queue::Error> {
        self.inner.add_used(desc_index, len)
    }

    /// Records the notification; [`Vring::flush_signal`] writes it.
    fn signal_used_queue(&self) -> io::Result<()> {
        self.fds.pending.store(true, Ordering::Release);
        Ok(())
    }

    fn enable_notification(&self) -> Result<bool, virtio_queue::Error> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), virtio_queue::Error> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, virtio_queue::Error> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled)
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), virtio_queue::Error> {
        self.inner.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, virtio_queue::Error> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready)
    }

    /// The library registers the original in its epoll; we read kicks from a duplicate.
    fn set_kick(&self, file: Option<File>) {
        *lock(&self.fds.kick) = shared_dup(&file);
        self.inner.set_kick(file)
    }

    /// Consumes the kick without waiting and without the vring's lock held: the frontend may
    /// have made the fd blocking and consumed the counter itself.
    fn read_kick(&self) -> io::Result<bool> {
        let kick = lock(&self.fds.kick).clone();
        if let Some(kick) = kick {
            let mut b = [0u8; 8];
            match guest_fd::read_nowait(&kick, &mut b) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.inner.get_ref().is_enabled())
    }

    /// Kept here, not in the library's vring: it is written outside the vring's lock.
    fn set_call(&self, file: Option<File>) {
        *lock(&self.fds.call) = file.map(Arc::new);
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}

/// The library's errors as `io::Error` (what the backend trait returns).
pub(crate) fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

/// Whether a chain ends properly. virtio-queue stops walking a chain after queue-size
/// descriptors or at a `next` beyond the table without saying so; such a chain (a loop, an
/// over-long or broken one) ends on a descriptor that still has NEXT set.
pub fn chain_is_whole<M>(chain: &virtio_queue::DescriptorChain<M>) -> bool
where
    M: std::ops::Deref + Clone,
    M::Target: vm_memory::GuestMemory,
{
    let mut last = None;
    for d in chain.clone() {
        last = Some(d.has_next());
    }
    last == Some(false)
}

/// The driver enabled the queue and it is set up.
pub fn ready(vring: &Vring) -> bool {
    let s = vring.get_ref();
    s.is_enabled() && s.get_queue().ready()
}

/// Records that the driver is owed a used-buffer notification, if it wants to hear
/// (EVENT_IDX). Writes nothing: the VF's own thread does, with [`Vring::flush_signal`].
pub fn signal(vring: &Vring) -> io::Result<()> {
    if vring.needs_notification().map_err(other)? {
        vring.signal_used_queue()?;
    }
    Ok(())
}
