//! What every queue of the backend does with rust-vmm's vrings: the vring type, whether a
//! queue runs, whether a descriptor chain is whole, and the used-buffer notification.

use crate::memory::GuestMem;
use std::io;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;

pub type Vring = VringRwLock<GuestMem>;

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

/// Tells the driver about used buffers, if it wants to hear (EVENT_IDX).
pub fn signal(vring: &Vring) -> io::Result<()> {
    if vring.needs_notification().map_err(other)? {
        vring.signal_used_queue()?;
    }
    Ok(())
}
