//! The backend's queue work: commands from the controlq, doorbells from the doorbellq (with
//! its busy polling), events into the eventq.

use super::VfBackend;
use crate::doorbellq;
use crate::memory::GuestMemoryMmapB;
use crate::port::VfPort;
use crate::protocol::command::{opcode, Response, Status, HEADER_SIZE};
use crate::protocol::doorbell::EVENT_SIZE;
use crate::protocol::{self, DOORBELL_QUEUE, EVENT_QUEUE};
use crate::vring::{self, chain_is_whole, other, Vring};
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vhost_user_backend::VringT;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestAddressSpace;

/// Largest command the device reads (the largest real one is about 110 bytes).
pub const MAX_REQUEST: usize = 4096;
/// Longest stretch a VF thread busy-polls its doorbellq while doorbells keep coming, before
/// it returns to its event loop (where commands and events wait).
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Size of the response body each opcode produces, known before the command runs so a
/// too-small response buffer is refused without side effects.
fn response_body_len(op: u16) -> usize {
    match op {
        opcode::QUERY_DEVICE => protocol::config::CONFIG_SIZE,
        opcode::QUERY_PORT => 12,
        opcode::QUERY_GID => 16,
        opcode::QUERY_PKEY => 2,
        opcode::CREATE_PD | opcode::REG_MR | opcode::CREATE_CQ | opcode::CREATE_AH => 4,
        opcode::CREATE_QP => 20,
        opcode::QUERY_QP => 88,
        opcode::CREATE_SRQ => 12,
        _ => 0,
    }
}

impl VfBackend {
    /// Processes a queue, re-checking for buffers that arrived while notifications were off
    /// (VIRTIO_RING_F_EVENT_IDX).
    pub(super) fn drain_queue(
        &self,
        vring: &Vring,
        mut f: impl FnMut(&Vring) -> io::Result<()>,
    ) -> io::Result<()> {
        if !self.event_idx() {
            return f(vring);
        }
        loop {
            vring.disable_notification().map_err(other)?;
            f(vring)?;
            if !vring.enable_notification().map_err(other)? {
                return Ok(());
            }
        }
    }

    // ---- controlq ---------------------------------------------------------------------------

    pub(super) fn process_control(&self, vring: &Vring) -> io::Result<()> {
        let mem = self.mem.memory();
        let chains: Vec<_> = vring
            .get_mut()
            .get_queue_mut()
            .iter(mem.clone())
            .map_err(other)?
            .collect();
        if chains.is_empty() {
            return Ok(());
        }
        for chain in chains {
            let head = chain.head_index();
            let used = self.control_one(&mem, chain);
            vring.add_used(head, used).map_err(other)?;
        }
        vring::signal(vring)
    }

    /// One command chain; returns the number of bytes written (0: returned unused).
    fn control_one<M>(&self, mem: &GuestMemoryMmapB, chain: virtio_queue::DescriptorChain<M>) -> u32
    where
        M: std::ops::Deref<Target = GuestMemoryMmapB> + Clone,
    {
        let bad = |why: &str| {
            tracing::debug!(vf = self.index, why, "controlq buffer returned unused");
            self.shared.lock().ports[self.index].counters.bad_buffers += 1;
            0
        };
        if !chain_is_whole(&chain) {
            return bad("looping, over-long or broken chain");
        }
        let Ok(mut reader) = chain.clone().reader(mem) else {
            return bad("readable part outside guest memory");
        };
        let Ok(mut writer) = chain.writer(mem) else {
            return bad("writable part outside guest memory");
        };
        let n = reader.available_bytes();
        if n > MAX_REQUEST {
            return bad("request too long");
        }
        let mut req = vec![0u8; n];
        if reader.read_exact(&mut req).is_err() {
            return bad("request unreadable");
        }
        let room = writer.available_bytes();
        if room < HEADER_SIZE {
            return bad("no room for the response header");
        }
        let op = req.get(..2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let resp = if room < HEADER_SIZE + response_body_len(op) {
            Response::err(Status::ResponseTooSmall)
        } else {
            let mut st = self.shared.lock();
            let r = st.ports[self.index].execute(&req);
            // A command may complete work (MODIFY_QP to ERR flushes WQEs).
            self.shared.run_batch(&mut st, Some(self.index));
            r
        };
        let bytes = resp.encode();
        if writer.write_all(&bytes).is_err() {
            return bad("response unwritable");
        }
        bytes.len() as u32
    }

    // ---- doorbellq --------------------------------------------------------------------------

    pub(super) fn process_doorbells(&self, vring: &Vring) -> io::Result<()> {
        let mut st = self.shared.lock();
        doorbellq::drain(&self.mem, self.index, &mut st, vring)?;
        self.shared.run_batch(&mut st, Some(self.index));
        Ok(())
    }

    /// After a doorbell, keeps watching the doorbellq for up to `Shared::busy_poll` of
    /// quiet before going back to sleep, as vhost-net's `busyloop_timeout` and QEMU's
    /// adaptive polling (`poll-max-ns`) do: a driver that posts again within microseconds is
    /// served without the device thread sleeping and being woken (a context switch each way),
    /// and, under EVENT_IDX, without the driver kicking at all — the avail event is left where
    /// it was while polling and only re-armed at the end.
    pub(super) fn busy_poll_doorbells(&self, vrings: &[Vring]) -> io::Result<()> {
        let window = self.shared.busy_poll;
        let vring = &vrings[DOORBELL_QUEUE];
        if window.is_zero() || !vring::ready(vring) {
            return Ok(());
        }
        let started = Instant::now();
        let mut last_work = started;
        loop {
            if self.shared.stopping() || last_work.duration_since(started) > MAX_BUSY_POLL {
                break;
            }
            if self.has_available(vring) {
                self.process_doorbells(vring)?;
                self.deliver_events(&vrings[EVENT_QUEUE])?;
                // No lock held here: the driver hears of its completions while we poll.
                self.shared.slots[self.index].flush_signals(self.index, vrings);
                last_work = Instant::now();
            } else if last_work.elapsed() >= window {
                break;
            } else {
                std::hint::spin_loop();
            }
        }
        // Ask for kicks again; whatever was published meanwhile is taken first.
        self.drain_queue(vring, |v| self.process_doorbells(v))
    }

    /// The driver published chains the device has not taken yet.
    fn has_available(&self, vring: &Vring) -> bool {
        let mem = self.mem.memory();
        let st = vring.get_ref();
        let q = st.get_queue();
        q.avail_idx(&*mem, Ordering::Acquire)
            .is_ok_and(|idx| idx.0 != q.next_avail())
    }

    // ---- eventq -----------------------------------------------------------------------------

    /// Hands waiting events to the driver's eventq buffers.
    pub(super) fn deliver_events(&self, vring: &Vring) -> io::Result<()> {
        if !vring::ready(vring) {
            return Ok(());
        }
        let mem = self.mem.memory();
        loop {
            let mut used = false;
            {
                let mut st = self.shared.lock();
                let port: &mut VfPort = &mut st.ports[self.index];
                port.drain_completions();
                while port.has_events() {
                    let Some(chain) = vring
                        .get_mut()
                        .get_queue_mut()
                        .pop_descriptor_chain(mem.clone())
                    else {
                        break;
                    };
                    let head = chain.head_index();
                    let whole = chain_is_whole(&chain);
                    let written = match chain.writer(&mem) {
                        _ if !whole => {
                            port.counters.bad_buffers += 1;
                            0
                        }
                        Ok(mut w) if w.available_bytes() >= EVENT_SIZE => match port.pop_event() {
                            Some(ev) => {
                                if w.write_all(&ev.encode()).is_ok() {
                                    port.counters.events_delivered += 1;
                                    EVENT_SIZE as u32
                                } else {
                                    port.unpop_event(ev);
                                    port.counters.bad_buffers += 1;
                                    0
                                }
                            }
                            None => 0,
                        },
                        _ => {
                            port.counters.bad_buffers += 1;
                            0
                        }
                    };
                    vring.add_used(head, written).map_err(other)?;
                    used = true;
                }
            }
            if used {
                vring::signal(vring)?;
            }
            // Ask for a kick when the driver posts buffers; if some arrived meanwhile and
            // events still wait, go round again.
            let more_buffers = vring.enable_notification().map_err(other)?;
            let more_events = self.shared.lock().ports[self.index].has_events();
            if !(more_buffers && more_events) {
                return Ok(());
            }
        }
    }
}
