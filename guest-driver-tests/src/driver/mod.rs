//! The guest driver's transport: QEMU's half of a vhost-user session and the guest's half of
//! the three virtqueues (docs/device-protocol.md §2), in one process.
//!
//! [`GuestDriver::connect`] creates guest RAM as a shared memfd, connects to a VF socket and
//! replays the message sequence QEMU 11.1 sends when a guest starts a device:
//!
//! ```text
//! GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
//! GET_MAX_MEM_SLOTS, SET_OWNER, GET_FEATURES, SET_VRING_CALL/ERR per queue, GET_CONFIG,
//! SET_FEATURES, ADD_MEM_REG (SET_MEM_TABLE without CONFIGURE_MEM_SLOTS),
//! per queue SET_VRING_NUM/BASE/ADDR/KICK/CALL, SET_VRING_ENABLE per queue
//! ```
//!
//! and then posts the event buffers. After that it speaks the device protocol: commands on the
//! controlq (one at a time, synchronous), doorbell records on the doorbellq (buffers reclaimed
//! as the device returns them), events from the eventq (buffers re-posted at once).
//!
//! In carrier mode ([`DriverConfig::carrier`]) the session is the one stock QEMU runs for a VF
//! attached as `vhost-user-fs-pci`: no CONFIG protocol feature and no GET_CONFIG (QEMU answers
//! the guest's config reads with virtio-fs's own config space), and no device-specific feature
//! bit acked (QEMU passes only the transport bits through). The driver then learns the
//! device's attributes from QUERY_DEVICE alone.

mod pci;

use crate::error::{DriverError, DriverResult};
use crate::memory::GuestRam;
use crate::virtq::{Buf, Used, Virtqueue};
use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use vhca_vhost::protocol::command::{Command, Response, Status, HEADER_SIZE};
use vhca_vhost::protocol::config::{RdmaConfig, CONFIG_SIZE};
use vhca_vhost::protocol::doorbell::{Doorbell, Event, DOORBELL_SIZE, EVENT_SIZE};
use vhca_vhost::protocol::{features, CTRL_QUEUE, DOORBELL_QUEUE, EVENT_QUEUE, NUM_QUEUES};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};

/// Bytes of the command request area and, after it, of the response area.
pub const CMD_AREA: u64 = 4096;
/// Doorbell records one doorbellq buffer holds at most.
pub const DOORBELLS_PER_BUFFER: usize = 8;

/// How the driver sets itself up.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Guest RAM in bytes (whole pages).
    pub mem_size: u64,
    pub ctrl_queue_size: u16,
    pub doorbell_queue_size: u16,
    pub event_queue_size: u16,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX when the device offers it.
    pub event_idx: bool,
    /// Send the memory table with SET_MEM_TABLE even when ADD_MEM_REG is possible.
    pub set_mem_table: bool,
    /// How long a command may take before the driver gives up on the device.
    pub command_timeout: Duration,
    /// Carrier mode: the VF is carried by another device type (stock QEMU's
    /// `vhost-user-fs-pci`). The driver negotiates no CONFIG protocol feature, never reads
    /// the config window, acks no device-specific feature bit (only VERSION_1, and EVENT_IDX
    /// when `event_idx`), and gets the device's attributes through QUERY_DEVICE.
    pub carrier: bool,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            mem_size: 128 << 20,
            ctrl_queue_size: 64,
            doorbell_queue_size: 256,
            event_queue_size: 64,
            event_idx: false,
            set_mem_table: false,
            command_timeout: Duration::from_secs(10),
            carrier: false,
        }
    }
}

impl DriverConfig {
    /// A 16 MiB guest that gives up on a command after 5 s: enough for the two-sided
    /// programs, small enough to start many of them.
    pub fn small() -> DriverConfig {
        DriverConfig {
            mem_size: 16 << 20,
            command_timeout: Duration::from_secs(5),
            ..DriverConfig::default()
        }
    }
}

/// The protocol features the driver uses when offered (QEMU acks more; these are the ones
/// whose messages this frontend sends).
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::LOG_SHMFD
        | VhostUserProtocolFeatures::DEVICE_STATE
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// What carries the driver's virtqueues to the device.
pub(crate) enum Transport {
    /// This process plays QEMU too: a vhost-user session to the VF's socket.
    VhostUser(Frontend),
    /// A real VMM presents the VF as a virtio-pci function of this (guest) kernel.
    Pci(crate::pci::PciTransport),
}

/// One VF as a guest sees it, with QEMU's vhost-user session (or a real VMM's virtio-pci
/// function) underneath.
pub struct GuestDriver {
    pub(crate) transport: Transport,
    pub(crate) ram: GuestRam,
    pub(crate) ctrl: Virtqueue,
    pub(crate) db: Virtqueue,
    pub(crate) ev: Virtqueue,
    /// Request area; the response area follows at `+ CMD_AREA`.
    pub(crate) cmd: u64,
    /// One doorbell buffer per doorbellq descriptor, indexed by the descriptor.
    pub(crate) db_bufs: u64,
    /// One event buffer per eventq descriptor, indexed by the descriptor.
    pub(crate) ev_bufs: u64,
    pub(crate) config: RdmaConfig,
    pub(crate) acked_features: u64,
    pub(crate) protocol_features: VhostUserProtocolFeatures,
    pub(crate) events: VecDeque<Event>,
    pub(crate) timeout: Duration,
    /// The vhost-user requests sent while starting, in order.
    pub(crate) messages: Vec<&'static str>,
    /// GET_CONFIG requests sent (config-window reads): none in carrier mode.
    pub(crate) config_reads: u32,
}

/// Placeholder until the device's configuration is read during the handshake.
fn empty_config() -> RdmaConfig {
    RdmaConfig {
        version: 0,
        phys_port_cnt: 0,
        node_guid: 0,
        port_guid: 0,
        gid: vhca_device::Gid([0; 16]),
        mac: vhca_device::Mac([0; 6]),
        port_state: 0,
        active_mtu: 0,
        max_qp: 0,
        max_qp_wr: 0,
        max_sge: 0,
        max_inline_data: 0,
        max_cq: 0,
        max_cqe: 0,
        max_mr: 0,
        max_pd: 0,
        max_srq: 0,
        max_srq_wr: 0,
        max_ah: 0,
        max_msg_sz: 0,
        max_mr_size: 0,
        max_qp_rd_atom: 0,
        max_qp_init_rd_atom: 0,
        page_size_cap: 0,
        cqe_size: 0,
        device_features: 0,
    }
}

fn vu(step: &'static str) -> impl FnOnce(vhost::Error) -> DriverError {
    move |source| DriverError::VhostUser { step, source }
}

impl GuestDriver {
    /// Connects to the VF socket at `path` and starts the device as QEMU and a guest would.
    pub fn connect(path: impl AsRef<Path>, cfg: &DriverConfig) -> DriverResult<GuestDriver> {
        let stream = UnixStream::connect(path.as_ref())?;
        GuestDriver::start(stream, cfg)
    }

    /// A driver on `transport` whose three queues are laid out in `ram`: the command area and
    /// the doorbell and event buffers are allocated here; nothing is negotiated yet.
    pub(crate) fn assemble(
        transport: Transport,
        mut ram: GuestRam,
        [ctrl, db, ev]: [Virtqueue; 3],
        timeout: Duration,
    ) -> DriverResult<GuestDriver> {
        let cmd = ram.alloc(2 * CMD_AREA, 4096)?;
        let db_bufs = ram.alloc(
            db.size() as u64 * (DOORBELL_SIZE * DOORBELLS_PER_BUFFER) as u64,
            4096,
        )?;
        let ev_bufs = ram.alloc(ev.size() as u64 * EVENT_SIZE as u64, 4096)?;
        Ok(GuestDriver {
            transport,
            ram,
            ctrl,
            db,
            ev,
            cmd,
            db_bufs,
            ev_bufs,
            config: empty_config(),
            acked_features: 0,
            protocol_features: VhostUserProtocolFeatures::empty(),
            events: VecDeque::new(),
            timeout,
            messages: Vec::new(),
            config_reads: 0,
        })
    }

    /// Starts the device over an already connected socket.
    pub fn start(stream: UnixStream, cfg: &DriverConfig) -> DriverResult<GuestDriver> {
        let mut ram = GuestRam::new(cfg.mem_size)?;
        let ctrl = Virtqueue::new(&mut ram, CTRL_QUEUE, cfg.ctrl_queue_size)?;
        let db = Virtqueue::new(&mut ram, DOORBELL_QUEUE, cfg.doorbell_queue_size)?;
        let ev = Virtqueue::new(&mut ram, EVENT_QUEUE, cfg.event_queue_size)?;
        let transport = Transport::VhostUser(Frontend::from_stream(stream, NUM_QUEUES as u64));
        let mut d = GuestDriver::assemble(transport, ram, [ctrl, db, ev], cfg.command_timeout)?;
        d.handshake(cfg)?;
        Ok(d)
    }

    fn handshake(&mut self, cfg: &DriverConfig) -> DriverResult<()> {
        let Transport::VhostUser(f) = &mut self.transport else {
            return Err(DriverError::NotVhostUser("the vhost-user handshake"));
        };
        let m = &mut self.messages;
        m.push("GET_FEATURES");
        let offered = f.get_features().map_err(vu("GET_FEATURES"))?;
        if offered & features::VERSION_1 == 0 {
            return Err(DriverError::MissingFeature("VIRTIO_F_VERSION_1"));
        }
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if offered & proto_bit == 0 {
            return Err(DriverError::MissingFeature(
                "VHOST_USER_F_PROTOCOL_FEATURES",
            ));
        }
        m.push("GET_PROTOCOL_FEATURES");
        let proto = f
            .get_protocol_features()
            .map_err(vu("GET_PROTOCOL_FEATURES"))?;
        let mut wanted = wanted_protocol_features();
        if cfg.carrier {
            // QEMU acks CONFIG only for a device type that forwards config reads to the
            // backend; virtio-fs does not.
            wanted.remove(VhostUserProtocolFeatures::CONFIG);
        }
        let proto = proto & wanted;
        m.push("SET_PROTOCOL_FEATURES");
        f.set_protocol_features(proto)
            .map_err(vu("SET_PROTOCOL_FEATURES"))?;
        self.protocol_features = proto;
        if proto.contains(VhostUserProtocolFeatures::MQ) {
            m.push("GET_QUEUE_NUM");
            let n = f.get_queue_num().map_err(vu("GET_QUEUE_NUM"))?;
            if n < NUM_QUEUES as u64 {
                return Err(DriverError::MissingFeature("three virtqueues"));
            }
        }
        let mem_slots = proto.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS);
        if mem_slots {
            m.push("GET_MAX_MEM_SLOTS");
            f.get_max_mem_slots().map_err(vu("GET_MAX_MEM_SLOTS"))?;
        }
        if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every request that has no reply of its own is acknowledged: errors surface at
            // the message that caused them.
            f.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        m.push("SET_OWNER");
        f.set_owner().map_err(vu("SET_OWNER"))?;
        m.push("GET_FEATURES");
        let offered = f.get_features().map_err(vu("GET_FEATURES"))?;
        for q in [&self.ctrl, &self.db, &self.ev] {
            m.push("SET_VRING_CALL");
            f.set_vring_call(q.index(), q.call_fd())
                .map_err(vu("SET_VRING_CALL"))?;
            m.push("SET_VRING_ERR");
            f.set_vring_err(q.index(), q.err_fd())
                .map_err(vu("SET_VRING_ERR"))?;
        }
        let config = if proto.contains(VhostUserProtocolFeatures::CONFIG) {
            m.push("GET_CONFIG");
            self.config_reads += 1;
            let (_, payload) = f
                .get_config(
                    0,
                    CONFIG_SIZE as u32,
                    VhostUserConfigFlags::empty(),
                    &[0u8; CONFIG_SIZE],
                )
                .map_err(vu("GET_CONFIG"))?;
            Some(
                RdmaConfig::decode(&payload).map_err(|source| DriverError::Decode {
                    what: "config space",
                    source,
                })?,
            )
        } else {
            None
        };
        let mut ack = features::VERSION_1 | proto_bit;
        if !cfg.carrier {
            ack |= offered & (features::RC | features::UD | features::SRQ);
        }
        if cfg.event_idx {
            ack |= offered & features::EVENT_IDX;
        }
        m.push("SET_FEATURES");
        f.set_features(ack).map_err(vu("SET_FEATURES"))?;
        self.acked_features = ack;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: self.ram.size(),
            userspace_addr: self.ram.host_base(),
            mmap_offset: 0,
            mmap_handle: self.ram.raw_fd(),
        };
        if mem_slots && !cfg.set_mem_table {
            m.push("ADD_MEM_REG");
            f.add_mem_region(&region).map_err(vu("ADD_MEM_REG"))?;
        } else {
            m.push("SET_MEM_TABLE");
            f.set_mem_table(&[region]).map_err(vu("SET_MEM_TABLE"))?;
        }
        let event_idx = ack & features::EVENT_IDX != 0;
        let base = self.ram.host_base();
        for q in [&mut self.ctrl, &mut self.db, &mut self.ev] {
            q.set_event_idx(event_idx);
            let i = q.index();
            m.push("SET_VRING_NUM");
            f.set_vring_num(i, q.size()).map_err(vu("SET_VRING_NUM"))?;
            m.push("SET_VRING_BASE");
            f.set_vring_base(i, 0).map_err(vu("SET_VRING_BASE"))?;
            m.push("SET_VRING_ADDR");
            f.set_vring_addr(i, &q.config_data(base))
                .map_err(vu("SET_VRING_ADDR"))?;
            m.push("SET_VRING_KICK");
            f.set_vring_kick(i, q.kick_fd())
                .map_err(vu("SET_VRING_KICK"))?;
            m.push("SET_VRING_CALL");
            f.set_vring_call(i, q.call_fd())
                .map_err(vu("SET_VRING_CALL"))?;
        }
        for i in 0..NUM_QUEUES {
            m.push("SET_VRING_ENABLE");
            f.set_vring_enable(i, true)
                .map_err(vu("SET_VRING_ENABLE"))?;
        }
        self.post_event_buffers_and_configure(config)
    }

    /// The end of every start: the event buffers (§5 step 2), then the configuration (§5
    /// step 3), from the config window when it was read, else from QUERY_DEVICE.
    pub(crate) fn post_event_buffers_and_configure(
        &mut self,
        config: Option<RdmaConfig>,
    ) -> DriverResult<()> {
        for _ in 0..self.ev.size() {
            self.post_event_buffer()?;
        }
        self.ev.kick()?;
        self.config = match config {
            Some(c) => c,
            None => {
                let body = self.execute(&Command::QueryDevice)?;
                RdmaConfig::decode(&body).map_err(|source| DriverError::Decode {
                    what: "QUERY_DEVICE",
                    source,
                })?
            }
        };
        Ok(())
    }

    /// The vhost-user session (an error over virtio-pci, where the VMM holds it).
    pub(crate) fn frontend(&self) -> DriverResult<&Frontend> {
        match &self.transport {
            Transport::VhostUser(f) => Ok(f),
            Transport::Pci(_) => Err(DriverError::NotVhostUser("this step")),
        }
    }

    /// The virtio-pci function the VF is reached through (a driver inside a real guest).
    pub fn pci(&self) -> Option<&crate::pci::PciTransport> {
        match &self.transport {
            Transport::Pci(p) => Some(p),
            Transport::VhostUser(_) => None,
        }
    }

    /// Resets the device as a guest's virtio reset does, and ends this driver: over PCI the
    /// device status goes to 0 (QEMU then stops the rings and sends RESET_DEVICE); over
    /// vhost-user this plays QEMU's part, `vhost_dev_stop` (GET_VRING_BASE on each ring) and
    /// then `vhost_reset_device` (RESET_DEVICE, when negotiated). The VF the next driver finds
    /// has its identity and none of this driver's objects; this driver's rings are gone
    /// with them, so it sends nothing more (drop it).
    pub fn reset_device(&mut self) -> DriverResult<()> {
        match &self.transport {
            Transport::Pci(p) => p.reset(),
            Transport::VhostUser(f) => {
                // Refused before anything is stopped: a back-end without RESET_DEVICE keeps
                // running as it was.
                if !self
                    .protocol_features
                    .contains(VhostUserProtocolFeatures::RESET_DEVICE)
                {
                    return Err(DriverError::MissingFeature(
                        "VHOST_USER_PROTOCOL_F_RESET_DEVICE",
                    ));
                }
                for i in 0..NUM_QUEUES {
                    f.get_vring_base(i).map_err(vu("GET_VRING_BASE"))?;
                }
                let mut f = f.clone();
                f.reset_device().map_err(vu("RESET_DEVICE"))
            }
        }
    }

    /// The vhost-user requests sent while starting, in order.
    pub fn startup_messages(&self) -> &[&'static str] {
        &self.messages
    }

    /// How many times the driver read the config window (GET_CONFIG); 0 in carrier mode.
    pub fn config_reads(&self) -> u32 {
        self.config_reads
    }

    pub fn config(&self) -> &RdmaConfig {
        &self.config
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    pub fn ram_mut(&mut self) -> &mut GuestRam {
        &mut self.ram
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Sends a command and returns its response body; a status other than OK is an error.
    pub fn execute(&mut self, cmd: &Command) -> DriverResult<Vec<u8>> {
        let opcode = cmd.opcode();
        let (used, resp) = self.execute_raw(&cmd.encode(), CMD_AREA as u32)?;
        if (used.len as usize) < HEADER_SIZE {
            return Err(DriverError::ShortResponse {
                opcode,
                len: used.len,
            });
        }
        let r = Response::decode(&resp).map_err(|source| DriverError::Decode {
            what: "response",
            source,
        })?;
        if r.status != Status::Ok {
            return Err(DriverError::Status {
                opcode,
                status: r.status,
            });
        }
        Ok(r.body)
    }

    /// Sends `request` bytes with a writable part of `resp_len` bytes (at most [`CMD_AREA`]);
    /// returns the used element and the `used.len` bytes the device wrote.
    pub fn execute_raw(&mut self, request: &[u8], resp_len: u32) -> DriverResult<(Used, Vec<u8>)> {
        if request.len() as u64 > CMD_AREA || resp_len as u64 > CMD_AREA {
            return Err(DriverError::Config("command larger than the command area"));
        }
        let (req, resp) = (self.cmd, self.cmd + CMD_AREA);
        self.ram.write(req, request)?;
        self.ram.zero(resp, resp_len.max(1) as u64)?;
        let mut bufs = vec![Buf::readable(req, request.len() as u32)];
        if resp_len > 0 {
            bufs.push(Buf::writable(resp, resp_len));
        }
        let used = self.submit_ctrl(&bufs)?;
        let n = used.len.min(resp_len);
        Ok((used, self.ram.read(resp, n as usize)?))
    }

    /// Posts one chain on the controlq, kicks, and waits for the device to return it (and any
    /// chain posted before it).
    pub fn submit_ctrl(&mut self, bufs: &[Buf]) -> DriverResult<Used> {
        let head = self.ctrl.add(&self.ram, bufs)?;
        self.kick_ctrl_and_wait(head)
    }

    /// Kicks the controlq and waits until the chain with `head` comes back.
    pub fn kick_ctrl_and_wait(&mut self, head: u16) -> DriverResult<Used> {
        self.ctrl.kick()?;
        loop {
            let u = self.ctrl.wait_used(&self.ram, self.timeout)?;
            if u.head == head {
                return Ok(u);
            }
        }
    }

    /// The controlq itself, for tests that build chains by hand.
    pub fn ctrl_queue(&mut self) -> (&mut Virtqueue, &GuestRam) {
        (&mut self.ctrl, &self.ram)
    }

    /// The doorbellq itself, for tests that build chains by hand.
    pub fn doorbell_queue(&mut self) -> (&mut Virtqueue, &GuestRam) {
        (&mut self.db, &self.ram)
    }

    /// Rings doorbells: the records go out in as few buffers as possible, and the doorbellq
    /// is kicked once. Buffers the device returned are reclaimed first; when none is free the
    /// driver waits for one.
    pub fn ring(&mut self, records: &[Doorbell]) -> DriverResult<()> {
        for chunk in records.chunks(DOORBELLS_PER_BUFFER) {
            while self.db.pop_used(&self.ram)?.is_some() {}
            if self.db.num_free() == 0 {
                self.db.kick()?;
                self.db.wait_used(&self.ram, self.timeout)?;
            }
            let idx = self.db.take_descs(1)?;
            let slot =
                self.db_bufs + (idx[0] as usize * DOORBELL_SIZE * DOORBELLS_PER_BUFFER) as u64;
            let bytes: Vec<u8> = chunk.iter().flat_map(|d| d.encode()).collect();
            self.ram.write(slot, &bytes)?;
            self.db.write_desc(
                &self.ram,
                idx[0],
                crate::virtq::RawDesc {
                    addr: slot,
                    len: bytes.len() as u32,
                    flags: 0,
                    next: 0,
                },
            )?;
            self.db.publish(&self.ram, idx[0], idx)?;
        }
        self.db.notify(&self.ram)
    }

    /// Waits until the device returned every doorbell buffer (it has read every record).
    pub fn flush_doorbells(&mut self) -> DriverResult<()> {
        while self.db.num_in_flight() > 0 {
            self.db.wait_used(&self.ram, self.timeout)?;
        }
        Ok(())
    }

    fn post_event_buffer(&mut self) -> DriverResult<()> {
        let idx = self.ev.take_descs(1)?;
        let slot = self.ev_bufs + idx[0] as u64 * EVENT_SIZE as u64;
        self.ram.zero(slot, EVENT_SIZE as u64)?;
        self.ev.write_desc(
            &self.ram,
            idx[0],
            crate::virtq::RawDesc {
                addr: slot,
                len: EVENT_SIZE as u32,
                flags: crate::virtq::DESC_F_WRITE,
                next: 0,
            },
        )?;
        self.ev.publish(&self.ram, idx[0], idx)
    }

    /// Moves the events the device delivered into the driver's queue and re-posts their
    /// buffers. Returns how many arrived.
    pub fn collect_events(&mut self) -> DriverResult<usize> {
        let mut n = 0;
        while let Some(u) = self.ev.pop_used(&self.ram)? {
            let slot = self.ev_bufs + u.head as u64 * EVENT_SIZE as u64;
            if u.len as usize >= EVENT_SIZE {
                let b = self.ram.read(slot, EVENT_SIZE)?;
                if let Ok(e) = Event::decode(&b) {
                    self.events.push_back(e);
                    n += 1;
                }
            }
            self.post_event_buffer()?;
        }
        if n > 0 {
            self.ev.kick()?;
        }
        Ok(n)
    }

    /// Waits up to `timeout` for the eventq's call, then collects what arrived.
    pub fn wait_events(&mut self, timeout: Duration) -> DriverResult<usize> {
        let n = self.collect_events()?;
        if n > 0 {
            return Ok(n);
        }
        self.ev.prepare_wait(&self.ram)?;
        let n = self.collect_events()?;
        if n > 0 {
            return Ok(n);
        }
        self.ev.wait_call(&self.ram, timeout)?;
        self.collect_events()
    }

    /// Events delivered so far and not taken.
    pub fn events(&self) -> &VecDeque<Event> {
        &self.events
    }

    /// Takes the events delivered so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Removes the first completion event for `cqn`, if one arrived.
    pub fn take_completion_event(&mut self, cqn: u32) -> bool {
        match self
            .events
            .iter()
            .position(|e| *e == Event::Completion { cqn })
        {
            Some(i) => {
                self.events.remove(i);
                true
            }
            None => false,
        }
    }
}
