//! The driver side of a split virtqueue (virtio 1.x §2.7), laid out in guest memory by us.
//!
//! ```text
//! descriptor table  16 × size   { le64 addr; le32 len; le16 flags; le16 next }   align 16
//! available ring    4 + 2 × size + 2   { flags; idx; ring[size]; used_event }     align 2
//! used ring         4 + 8 × size + 2   { flags; idx; ring[size] {id, len}; avail_event } align 4
//! ```
//!
//! Publishing follows the virtio memory-ordering rules: descriptors and the ring slot are
//! written first, then the available index is stored with release ordering, and only then is
//! the kick eventfd written. The used index is loaded with acquire ordering before the used
//! elements it covers are read. Waiting is on the call eventfd (through epoll) with a
//! deadline, never a sleep: a call that arrives between the check and the wait stays counted
//! in the eventfd, so it is never missed.
//!
//! A queue of a virtio-pci device driven from guest user space ([`Virtqueue::use_pci`]) kicks
//! by writing its index to its notification address in a BAR, and has no interrupt to wait
//! for (none reaches user space): it asks the device not to interrupt (VIRTQ_AVAIL_F_NO_
//! INTERRUPT) and waits by polling the used index, backing off from spinning to short sleeps
//! so a guest vCPU is not held busy through a long wait.

use crate::error::{DriverError, DriverResult};
use crate::memory::GuestRam;
use crate::pci::virtio::QueueNotifier;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};
use vhost::vhost_user::message::VhostUserVringAddrFlags;
use vhost::VringConfigData;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Descriptor flags.
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;

/// One buffer of a chain, as the driver means it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (the device writes into it) rather than device-readable.
    pub writable: bool,
}

impl Buf {
    pub fn readable(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            writable: false,
        }
    }

    pub fn writable(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            writable: true,
        }
    }
}

/// A descriptor exactly as written into the table; hostile tests use it to build chains no
/// honest driver would (loops, addresses outside guest memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A chain the device gave back: its head and the number of bytes it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub head: u16,
    pub len: u32,
}

/// A split virtqueue in guest memory, with its kick, call and error eventfds.
pub struct Virtqueue {
    index: usize,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    kick: EventFd,
    call: EventFd,
    err: EventFd,
    epoll: Epoll,
    free: Vec<u16>,
    /// For each head in flight, the descriptors it owns (returned to `free` when used).
    in_flight: Vec<Option<Vec<u16>>>,
    next_avail: u16,
    /// The available index at the last [`Virtqueue::notify`]: what the device may already
    /// have been told about.
    notified_avail: u16,
    last_used: u16,
    /// VIRTIO_RING_F_EVENT_IDX was negotiated: the device calls only when the used index
    /// passes the `used_event` the driver publishes, and wants a kick only when the available
    /// index passes the `avail_event` it publishes.
    event_idx: bool,
    /// A virtio-pci queue: kicks go to this notification address, waits poll.
    pci: Option<QueueNotifier>,
}

/// Available-ring flag: the driver does not want interrupts for this queue.
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Polls of the used index before a polling wait starts sleeping.
const POLL_SPINS: u32 = 2000;
/// The longest sleep between two polls.
const POLL_MAX_SLEEP: Duration = Duration::from_micros(500);

fn eventfd() -> io::Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
}

impl Virtqueue {
    /// Lays out a queue of `size` entries (a power of two) in `ram`.
    pub fn new(ram: &mut GuestRam, index: usize, size: u16) -> DriverResult<Virtqueue> {
        if size == 0 || !size.is_power_of_two() {
            return Err(DriverError::Config("queue size must be a power of two"));
        }
        let n = size as u64;
        let desc = ram.alloc(16 * n, 4096)?;
        let avail = ram.alloc(6 + 2 * n, 4096)?;
        let used = ram.alloc(6 + 8 * n, 4096)?;
        let call = eventfd()?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            call.as_raw_fd(),
            EpollEvent::new(EventSet::IN, index as u64),
        )?;
        Ok(Virtqueue {
            index,
            size,
            desc,
            avail,
            used,
            kick: eventfd()?,
            call,
            err: eventfd()?,
            epoll,
            free: (0..size).rev().collect(),
            in_flight: vec![None; size as usize],
            next_avail: 0,
            notified_avail: 0,
            last_used: 0,
            event_idx: false,
            pci: None,
        })
    }

    /// Makes this a virtio-pci queue: kicks go to `notifier`, and the device is asked not to
    /// interrupt (the driver polls).
    pub fn use_pci(&mut self, ram: &GuestRam, notifier: QueueNotifier) -> DriverResult<()> {
        ram.store_u16(self.avail, AVAIL_F_NO_INTERRUPT, Ordering::Release)?;
        self.pci = Some(notifier);
        Ok(())
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    pub fn err_fd(&self) -> &EventFd {
        &self.err
    }

    /// Guest-physical addresses of the descriptor table, available ring and used ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    /// SET_VRING_ADDR's payload: addresses in the frontend's address space (`host_base` is
    /// where guest-physical 0 is mapped), as QEMU sends them.
    pub fn config_data(&self, host_base: u64) -> VringConfigData {
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: VhostUserVringAddrFlags::empty().bits(),
            desc_table_addr: host_base + self.desc,
            used_ring_addr: host_base + self.used,
            avail_ring_addr: host_base + self.avail,
            log_addr: None,
        }
    }

    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    /// Before waiting for a call: with EVENT_IDX, asks the device to call for the next used
    /// element (`used_event` = the next index the driver reads). A full barrier follows, so a
    /// used element published before the device saw it is found by the caller's re-check.
    pub fn prepare_wait(&self, ram: &GuestRam) -> DriverResult<()> {
        if self.event_idx {
            let used_event = self.avail + 4 + 2 * self.size as u64;
            ram.store_u16(used_event, self.last_used, Ordering::SeqCst)?;
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    /// Free descriptors.
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Chains the device has not returned yet.
    pub fn num_in_flight(&self) -> usize {
        self.in_flight.iter().filter(|c| c.is_some()).count()
    }

    /// Adds a chain of `bufs` (device-readable ones first, as virtio requires) and publishes
    /// it. Returns the head descriptor's index. Does not kick.
    pub fn add(&mut self, ram: &GuestRam, bufs: &[Buf]) -> DriverResult<u16> {
        if bufs.is_empty() {
            return Err(DriverError::Config("a chain needs at least one buffer"));
        }
        let idx = self.take_descs(bufs.len())?;
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let raw = RawDesc {
                addr: b.addr,
                len: b.len,
                flags: if b.writable { DESC_F_WRITE } else { 0 }
                    | if last { 0 } else { DESC_F_NEXT },
                next: if last { 0 } else { idx[i + 1] },
            };
            self.write_desc(ram, idx[i], raw)?;
        }
        let head = idx[0];
        self.publish(ram, head, idx)?;
        Ok(head)
    }

    /// Takes `n` descriptors off the free list (for [`Virtqueue::write_desc`] and
    /// [`Virtqueue::publish`]).
    pub fn take_descs(&mut self, n: usize) -> DriverResult<Vec<u16>> {
        if n > self.free.len() {
            return Err(DriverError::QueueFull { queue: self.index });
        }
        let at = self.free.len() - n;
        let mut v = self.free.split_off(at);
        v.reverse();
        Ok(v)
    }

    /// Writes descriptor `i` of the table verbatim.
    pub fn write_desc(&self, ram: &GuestRam, i: u16, d: RawDesc) -> DriverResult<()> {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..16].copy_from_slice(&d.next.to_le_bytes());
        ram.write(self.desc + 16 * (i % self.size) as u64, &b)
    }

    /// Puts `head` into the next available slot and publishes the new available index.
    /// `owned` are the descriptors the chain holds until the device returns it (they go back
    /// to the free list then); a hostile chain may own fewer than it reaches.
    pub fn publish(&mut self, ram: &GuestRam, head: u16, owned: Vec<u16>) -> DriverResult<()> {
        let slot = self.avail + 4 + 2 * (self.next_avail % self.size) as u64;
        ram.write(slot, &head.to_le_bytes())?;
        if let Some(c) = self.in_flight.get_mut(head as usize) {
            match c {
                Some(prev) => prev.extend(owned),
                None => *c = Some(owned),
            }
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        // The descriptors and the ring slot before the index (virtio §2.7.13: write barrier).
        fence(Ordering::Release);
        ram.store_u16(self.avail + 2, self.next_avail, Ordering::Release)?;
        Ok(())
    }

    /// Stores `idx` as the available index without adding anything (hostile tests: an index
    /// that jumps ahead of the chains really published).
    pub fn force_avail_idx(&mut self, ram: &GuestRam, idx: u16) -> DriverResult<()> {
        fence(Ordering::Release);
        ram.store_u16(self.avail + 2, idx, Ordering::Release)?;
        self.next_avail = idx;
        self.notified_avail = idx;
        Ok(())
    }

    /// Tells the device there are new buffers.
    pub fn kick(&self) -> DriverResult<()> {
        // Index stores before the notification (virtio §2.7.13: full barrier before kick).
        fence(Ordering::SeqCst);
        match &self.pci {
            Some(n) => n.notify(),
            None => Ok(self.kick.write(1)?),
        }
    }

    /// Kicks the device if it asked for a kick: always without EVENT_IDX; with it, only when
    /// the chains published since the last `notify` pass the device's `avail_event` (virtio
    /// §2.7.10, `vring_need_event`), so a device that is still working through the ring is not
    /// woken for every buffer. This is what a Linux virtio driver does.
    pub fn notify(&mut self, ram: &GuestRam) -> DriverResult<()> {
        let (old, new) = (self.notified_avail, self.next_avail);
        self.notified_avail = new;
        if self.event_idx {
            // The index store before reading the device's wish (virtio §2.7.13.3.1).
            fence(Ordering::SeqCst);
            let avail_event =
                ram.load_u16(self.used + 4 + 8 * self.size as u64, Ordering::Acquire)?;
            if new.wrapping_sub(avail_event).wrapping_sub(1) >= new.wrapping_sub(old) {
                return Ok(());
            }
        }
        self.kick()
    }

    /// The next chain the device returned, if any.
    pub fn pop_used(&mut self, ram: &GuestRam) -> DriverResult<Option<Used>> {
        let used_idx = ram.load_u16(self.used + 2, Ordering::Acquire)?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        let elem = ram.read(self.used + 4 + 8 * (self.last_used % self.size) as u64, 8)?;
        self.last_used = self.last_used.wrapping_add(1);
        let id = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
        let len = u32::from_le_bytes([elem[4], elem[5], elem[6], elem[7]]);
        let owned = self
            .in_flight
            .get_mut(id as usize)
            .and_then(|c| c.take())
            .ok_or(DriverError::BadUsed {
                queue: self.index,
                head: id,
            })?;
        self.free.extend(owned);
        Ok(Some(Used {
            head: id as u16,
            len,
        }))
    }

    /// Waits up to `timeout` for the device's call; true when it came. Clears the eventfd.
    /// A virtio-pci queue polls instead: true once the used index moved.
    pub fn wait_call(&self, ram: &GuestRam, timeout: Duration) -> DriverResult<bool> {
        if self.pci.is_some() {
            return self.poll_used(ram, timeout);
        }
        let mut events = [EpollEvent::default()];
        // Round up: a wait of 0 ms would turn a short deadline into a busy loop.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let n = loop {
            match self.epoll.wait(ms, &mut events) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(false);
        }
        match self.call.read() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Polls the used index until it differs from the last one taken, up to `timeout`.
    fn poll_used(&self, ram: &GuestRam, timeout: Duration) -> DriverResult<bool> {
        let deadline = Instant::now() + timeout;
        let mut sleep = Duration::from_micros(10);
        let mut spins = 0u32;
        loop {
            if ram.load_u16(self.used + 2, Ordering::Acquire)? != self.last_used {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            if spins < POLL_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::sleep(sleep.min(deadline - now));
                sleep = (sleep * 2).min(POLL_MAX_SLEEP);
            }
        }
    }

    /// Waits until the device returns a chain, up to `timeout`.
    pub fn wait_used(&mut self, ram: &GuestRam, timeout: Duration) -> DriverResult<Used> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(u) = self.pop_used(ram)? {
                return Ok(u);
            }
            self.prepare_wait(ram)?;
            if let Some(u) = self.pop_used(ram)? {
                return Ok(u);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DriverError::Timeout {
                    queue: self.index,
                    ms: timeout.as_millis(),
                });
            }
            self.wait_call(ram, deadline - now)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::Bytes;

    /// The device side of the same queue, as rust-vmm's virtio-queue (the crate the backend
    /// uses) sees it.
    fn device_queue(q: &Virtqueue, ram: &GuestRam) -> Queue {
        let mut d = Queue::new(q.size()).unwrap();
        let (desc, avail, used) = q.addresses();
        d.set_size(q.size());
        d.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        d.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        d.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        d.set_ready(true);
        assert!(d.is_valid(ram.mem()));
        d
    }

    #[test]
    fn chains_round_trip_through_rust_vmm_virtio_queue() {
        let mut ram = GuestRam::new(4 << 20).unwrap();
        let mut q = Virtqueue::new(&mut ram, 0, 8).unwrap();
        let mut dev = device_queue(&q, &ram);
        let req = ram.alloc(64, 16).unwrap();
        let resp = ram.alloc(64, 16).unwrap();
        ram.write(req, b"hello device").unwrap();
        // Wrap the 16-bit indices a few times.
        for round in 0..40u32 {
            let head = q
                .add(&ram, &[Buf::readable(req, 12), Buf::writable(resp, 64)])
                .unwrap();
            q.kick().unwrap();
            assert_eq!(
                dev.avail_idx(ram.mem(), Ordering::Acquire).unwrap().0,
                q.next_avail
            );
            let mut chain = dev.pop_descriptor_chain(ram.mem()).unwrap();
            assert_eq!(chain.head_index(), head);
            let r = chain.next().unwrap();
            assert!(!r.is_write_only());
            let mut got = [0u8; 12];
            ram.mem().read_slice(&mut got, r.addr()).unwrap();
            assert_eq!(&got, b"hello device");
            let w = chain.next().unwrap();
            assert!(w.is_write_only() && w.len() == 64);
            ram.mem()
                .write_slice(&round.to_le_bytes(), w.addr())
                .unwrap();
            assert!(chain.next().is_none());
            dev.add_used(ram.mem(), head, 4).unwrap();
            let used = q.wait_used(&ram, Duration::from_millis(10)).unwrap();
            assert_eq!(used, Used { head, len: 4 });
            assert_eq!(ram.read(resp, 4).unwrap(), round.to_le_bytes());
            assert_eq!(q.num_free(), 8);
        }
    }

    #[test]
    fn a_full_queue_and_a_silent_device_are_errors() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let mut q = Virtqueue::new(&mut ram, 1, 4).unwrap();
        let b = ram.alloc(16, 16).unwrap();
        for _ in 0..4 {
            q.add(&ram, &[Buf::readable(b, 16)]).unwrap();
        }
        assert!(matches!(
            q.add(&ram, &[Buf::readable(b, 16)]),
            Err(DriverError::QueueFull { queue: 1 })
        ));
        assert!(matches!(
            q.wait_used(&ram, Duration::from_millis(5)),
            Err(DriverError::Timeout { queue: 1, .. })
        ));
        // A call that arrived before the wait is not lost.
        q.call_fd().write(1).unwrap();
        assert!(q.wait_call(&ram, Duration::from_secs(5)).unwrap());
        assert!(!q.wait_call(&ram, Duration::from_millis(1)).unwrap());
    }

    #[test]
    fn the_device_returning_an_unknown_head_is_an_error() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let mut q = Virtqueue::new(&mut ram, 0, 4).unwrap();
        let mut dev = device_queue(&q, &ram);
        dev.add_used(ram.mem(), 3, 0).unwrap();
        assert!(matches!(
            q.pop_used(&ram),
            Err(DriverError::BadUsed { head: 3, .. })
        ));
    }
}
