//! A VF as a vhost-user device: rust-vmm's [`VhostUserBackend`] over one [`VfPort`] of the
//! process's shared state.
//!
//! Queue 0 (controlq) carries commands, queue 1 (doorbellq) doorbell records, queue 2
//! (eventq) takes buffers for events (docs/device-protocol.md §2). One extra epoll source, the
//! slot's wake eventfd, tells this VF's worker thread that another thread left events for it.

use crate::memory::{GuestMem, VhostMemory};
use crate::device_state::{self, DeviceStateV1, StateError};
use crate::pf::{PfState, Shared};
use crate::port::VfPort;
use crate::protocol::command::{opcode, Response, Status, HEADER_SIZE};
use crate::protocol::doorbell::{Doorbell, DOORBELL_SIZE, EVENT_SIZE};
use crate::protocol::{self, CTRL_QUEUE, DOORBELL_QUEUE, EVENT_QUEUE, MAX_QUEUE_SIZE, NUM_QUEUES};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// The epoll id of the wake eventfd (ids up to NUM_QUEUES belong to the library).
pub const WAKE_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// Largest command the device reads (the largest real one is about 110 bytes).
pub const MAX_REQUEST: usize = 4096;
/// Most doorbell records one buffer may carry.
pub const MAX_DOORBELLS: usize = 1024;
/// Longest stretch a VF thread busy-polls its doorbellq while doorbells keep coming, before
/// it returns to its event loop (where commands and events wait).
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

pub type Vring = VringRwLock<GuestMem>;

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
    this: std::sync::Mutex<std::sync::Weak<VfBackend>>,
    /// The device-state transfer under way (`SET_DEVICE_STATE_FD` until `CHECK_DEVICE_STATE`).
    transfer: Mutex<Option<Transfer>>,
}

/// A device-state transfer running on its own thread.
enum Transfer {
    Save(JoinHandle<Result<usize, StateError>>),
    /// Decodes, validates and builds the port off the lock; CHECK only swaps it in.
    Load(JoinHandle<Result<VfPort, StateError>>),
}

/// The vhost-user feature bit a frontend sets while it logs dirty pages (VHOST_F_LOG_ALL).
pub const LOG_ALL: u64 = 1 << 26;

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

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

impl VfBackend {
    /// `mem` is the memory map the daemon was created with: the library swaps its content on
    /// every memory table message, so this handle always sees the current map.
    pub fn new(index: usize, shared: Arc<Shared>, mem: GuestMem) -> io::Result<VfBackend> {
        Ok(VfBackend {
            index,
            shared,
            mem,
            event_idx: AtomicBool::new(false),
            acked_features: AtomicU64::new(0),
            logging: Arc::new(AtomicBool::new(false)),
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            this: std::sync::Mutex::new(std::sync::Weak::new()),
            transfer: Mutex::new(None),
        })
    }

    fn me(&self) -> Option<Arc<VfBackend>> {
        self.this
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }

    /// Lets the backend hand itself to other threads (see [`Shared::sweep_doorbells`]).
    pub fn set_self(self: &Arc<Self>) {
        *self.this.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(self);
    }

    pub fn acked_features_bits(&self) -> u64 {
        self.acked_features.load(Ordering::Relaxed)
    }

    fn event_idx(&self) -> bool {
        self.event_idx.load(Ordering::Relaxed)
    }

    /// Processes a queue, re-checking for buffers that arrived while notifications were off
    /// (VIRTIO_RING_F_EVENT_IDX).
    fn drain_queue(
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

    /// After a doorbell, keeps watching the doorbellq for up to `Shared::busy_poll` of
    /// quiet before going back to sleep, as vhost-net's `busyloop_timeout` and QEMU's
    /// adaptive polling (`poll-max-ns`) do: a driver that posts again within microseconds is
    /// served without the device thread sleeping and being woken (a context switch each way),
    /// and, under EVENT_IDX, without the driver kicking at all — the avail event is left where
    /// it was while polling and only re-armed at the end.
    fn busy_poll_doorbells(&self, vrings: &[Vring]) -> io::Result<()> {
        let window = self.shared.busy_poll;
        let vring = &vrings[DOORBELL_QUEUE];
        if window.is_zero() || !Self::ready(vring) {
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

    fn ready(vring: &Vring) -> bool {
        let s = vring.get_ref();
        s.is_enabled() && s.get_queue().ready()
    }

    fn signal(vring: &Vring) -> io::Result<()> {
        if vring.needs_notification().map_err(other)? {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// Builds the port a state describes (checking everything), off the process lock. Its
    /// clock reads `now` at load time; the VF stays suspended until its rings are kicked, and
    /// resuming restarts its timers.
    fn build(
        shared: &Shared,
        mem: &GuestMem,
        logging: &Arc<AtomicBool>,
        s: DeviceStateV1,
    ) -> Result<VfPort, StateError> {
        Ok(VfPort::load_state(
            s.port,
            VhostMemory::shared_with_logging(mem.clone(), logging.clone()),
            shared.now(),
        )?)
    }

    /// Installs a loaded port: the VF takes the source's identity and objects, stays
    /// suspended until its rings are kicked, then resumes.
    fn install(&self, port: VfPort) {
        let t = std::time::Instant::now();
        let mut st = self.shared.lock_urgent();
        let (gid, mac) = (port.identity().gid, port.identity().mac);
        let old = std::mem::replace(&mut st.ports[self.index], port);
        st.suspended[self.index] = true;
        // On a UDP fabric this binds the slot's socket to the VF's own address; a TAP takes
        // the VF's MAC and address and sends a gratuitous ARP, so the bridge learns the MAC's
        // new port.
        st.fabric.attach(gid, self.index);
        st.fabric.adopt(self.index, mac, gid);
        self.shared.fabric_changed();
        drop(st);
        drop(old); // a port that had objects is freed outside the lock
        tracing::info!(
            vf = self.index,
            ?gid,
            install_us = t.elapsed().as_micros() as u64,
            "device state loaded; VF waits for its rings"
        );
    }

    /// A suspended VF whose rings run again (a kick after SET_VRING_*): resume it.
    fn maybe_resume(&self, vrings: &[Vring]) -> bool {
        let mut st = self.shared.lock();
        if !st.suspended[self.index] {
            return true;
        }
        if !vrings.iter().all(Self::ready) {
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

    // ---- controlq ---------------------------------------------------------------------------

    fn process_control(&self, vring: &Vring) -> io::Result<()> {
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
        Self::signal(vring)
    }

    /// One command chain; returns the number of bytes written (0: returned unused).
    fn control_one<M>(
        &self,
        mem: &crate::memory::GuestMemoryMmapB,
        chain: virtio_queue::DescriptorChain<M>,
    ) -> u32
    where
        M: std::ops::Deref<Target = crate::memory::GuestMemoryMmapB> + Clone,
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

    fn process_doorbells(&self, vring: &Vring) -> io::Result<()> {
        let mut st = self.shared.lock();
        self.drain_doorbells(&mut st, vring)?;
        self.shared.run_batch(&mut st, Some(self.index));
        Ok(())
    }

    /// Takes every doorbell buffer the driver has published and applies its records, under
    /// the process lock. Any thread may call it for any VF: before packets move, every VF's
    /// published doorbells are applied, so a receive a driver posted before its peer's send
    /// is on the queue when the datagram arrives (as with a hardware HCA, whose doorbell
    /// record is in memory it reads when a packet arrives).
    /// Returns whether it took any buffer.
    pub fn drain_doorbells(&self, st: &mut PfState, vring: &Vring) -> io::Result<bool> {
        if !Self::ready(vring) {
            return Ok(false);
        }
        let mem = self.mem.memory();
        let chains: Vec<_> = vring
            .get_mut()
            .get_queue_mut()
            .iter(mem.clone())
            .map_err(other)?
            .collect();
        if chains.is_empty() {
            return Ok(false);
        }
        let port = &mut st.ports[self.index];
        for chain in chains {
            let head = chain.head_index();
            let records = if !chain_is_whole(&chain) {
                None
            } else {
                match chain.reader(&mem) {
                    Ok(mut r) if r.available_bytes() <= MAX_DOORBELLS * DOORBELL_SIZE => {
                        let mut b = vec![0u8; r.available_bytes()];
                        r.read_exact(&mut b)
                            .ok()
                            .and_then(|_| Doorbell::decode_all(&b).ok())
                    }
                    _ => None,
                }
            };
            match records {
                Some(dbs) => {
                    for db in dbs {
                        port.doorbell(db);
                    }
                }
                None => port.counters.bad_buffers += 1,
            }
            vring.add_used(head, 0).map_err(other)?;
        }
        Self::signal(vring)?;
        Ok(true)
    }

    // ---- eventq -----------------------------------------------------------------------------

    /// Hands waiting events to the driver's eventq buffers.
    fn deliver_events(&self, vring: &Vring) -> io::Result<()> {
        if !Self::ready(vring) {
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
                Self::signal(vring)?;
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
    }

    fn reset_device(&self) {
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
        if phase != VhostTransferStatePhase::STOPPED {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only the STOPPED phase is supported",
            ));
        }
        let mut transfer = self.transfer.lock().unwrap_or_else(|e| e.into_inner());
        if transfer.is_some() {
            return Err(io::Error::other(
                "a device-state transfer is already under way",
            ));
        }
        match direction {
            VhostTransferStateDirection::SAVE => {
                let t = std::time::Instant::now();
                let state = {
                    let mut st = self.shared.lock_urgent();
                    tracing::info!(
                        vf = self.index,
                        lock_us = t.elapsed().as_micros() as u64,
                        "capturing the device state"
                    );
                    if !st.suspended[self.index] {
                        return Err(io::Error::other(
                            "device state requested while the VF runs (GET_VRING_BASE first)",
                        ));
                    }
                    let now = st.now();
                    let state = DeviceStateV1 {
                        acked_features: self.acked_features_bits(),
                        saved_at_ns: now.0,
                        port: st.ports[self.index].save_state(now),
                    };
                    // The VF is leaving: its address goes with it, and a destination on
                    // this host can bind it only once this process let go of it
                    // (docs/migration.md). A failed migration takes it back at resume.
                    st.fabric.release(self.index);
                    self.shared.fabric_changed();
                    state
                };
                let vf = self.index;
                let captured = t.elapsed();
                let h = std::thread::Builder::new()
                    .name(format!("vhca-vf{vf}-save"))
                    .spawn(move || {
                        let t = std::time::Instant::now();
                        let blob = device_state::encode(&state);
                        let encoded = t.elapsed();
                        let mut f = file;
                        f.write_all(&blob)?;
                        tracing::info!(
                            vf,
                            bytes = blob.len(),
                            capture_us = captured.as_micros() as u64,
                            encode_us = encoded.as_micros() as u64,
                            write_us = (t.elapsed() - encoded).as_micros() as u64,
                            "device state saved"
                        );
                        Ok(blob.len())
                    })?;
                *transfer = Some(Transfer::Save(h));
            }
            VhostTransferStateDirection::LOAD => {
                let (shared, mem, vf) = (self.shared.clone(), self.mem.clone(), self.index);
                let logging = self.logging.clone();
                let h = std::thread::Builder::new()
                    .name(format!("vhca-vf{vf}-load"))
                    .spawn(move || {
                        let t = std::time::Instant::now();
                        let blob = device_state::read_all(file)?;
                        let read = t.elapsed();
                        let port = Self::build(&shared, &mem, &logging, device_state::decode(&blob)?);
                        tracing::info!(
                            vf,
                            read_us = read.as_micros() as u64,
                            build_us = (t.elapsed() - read).as_micros() as u64,
                            "device state read"
                        );
                        port
                    })?;
                *transfer = Some(Transfer::Load(h));
            }
        }
        Ok(None)
    }

    fn check_device_state(&self) -> io::Result<()> {
        let t = self
            .transfer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let r = match t {
            None => Err(StateError::Protocol(
                "CHECK_DEVICE_STATE without a transfer".into(),
            )),
            Some(Transfer::Save(h)) => h
                .join()
                .unwrap_or_else(|_| Err(StateError::Protocol("save thread panicked".into())))
                .map(|_| ()),
            Some(Transfer::Load(h)) => h
                .join()
                .unwrap_or_else(|_| Err(StateError::Protocol("load thread panicked".into())))
                .map(|port| self.install(port)),
        };
        r.map_err(|e| {
            tracing::error!(vf = self.index, error = %e, "device state transfer failed");
            io::Error::other(e.to_string())
        })
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
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        self.shared.slots[self.index].activate(&self.me(), vrings);
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
