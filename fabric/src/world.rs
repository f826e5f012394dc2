//! An in-process world: PFs with VFs, the switch between them, and one virtual clock.
//!
//! This is the harness the simulator, the demo, the benchmarks and the tests share. It pumps
//! the sans-I/O devices: packets out of `poll_transmit` into the switch, packets due out of
//! the switch into `handle_packet`, and, when nothing moves at this instant, the clock jumps to
//! the next switch delivery or device timer.

use crate::faults::FaultConfig;
use crate::switch::{PortId, Switch};
use serde::Serialize;
use vhca_device::checkpoint;
use vhca_device::memory::MmapMemory;
use vhca_device::{Gid, Nanos, Packet, Pf, VerbsError, VerbsResult, Vf};

/// A VF in flight between two PFs.
pub struct Migration {
    pub from: VfAddr,
    /// Where the VF is while in flight: an address on no PF, unique to it, so that nothing
    /// confuses it with a VF that takes over its old slot meanwhile.
    pub in_flight: VfAddr,
    port: PortId,
    /// The checkpoint sent in the blackout (what crosses the wire in a real migration): the
    /// full state, or with a pre-copy the delta against its base.
    pub blob: Vec<u8>,
    /// The pre-copied base the destination already holds (sent while the VF still ran).
    pub base: Option<Vec<u8>>,
    /// The digest of the source's full state at the stop, when it sent a delta: the
    /// destination checks that base + delta is exactly that state.
    pub expect: Option<[u8; 32]>,
    memory: vhca_device::SharedMemory,
    pub gid: Gid,
    pub started: Nanos,
}

/// A full checkpoint of a VF taken while it keeps running: the base a later migration sends
/// only a delta against (device-state pre-copy).
pub struct Precopy {
    pub of: VfAddr,
    /// The checkpoint as sent (binary codec).
    pub blob: Vec<u8>,
    /// The state it holds, which the source keeps to compute the delta.
    pub state: checkpoint::VfStateV2,
    pub taken: Nanos,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("no such VF")]
    NoSuchVf,
    #[error("no such PF")]
    NoSuchPf,
    #[error("the destination PF has no free VF slot")]
    PfFull,
    #[error("checkpoint: {0}")]
    Checkpoint(vhca_device::checkpoint::CheckpointError),
    #[error("the pre-copy was taken of another VF")]
    PrecopyOfAnotherVf,
    #[error("base + delta is not the state the source stopped with")]
    DeltaMismatch,
}

/// The PF number of the address a VF has while it is in flight.
pub const IN_FLIGHT_PF: usize = usize::MAX;

/// Where a VF lives: PF number and VF index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct VfAddr {
    pub pf: usize,
    pub vf: u16,
}

impl std::fmt::Display for VfAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pf{}/vf{}", self.pf, self.vf)
    }
}

/// An observer of transmitted packets (traces, captures).
pub type Tap = Box<dyn FnMut(Nanos, &Packet)>;

#[derive(Clone, Copy, Debug)]
pub struct WorldConfig {
    /// Seeds the switch's faults.
    pub seed: u64,
    pub faults: FaultConfig,
    /// One-way link latency.
    pub latency_ns: u64,
    /// Guest memory of each VF.
    pub vf_mem_bytes: usize,
}

impl Default for WorldConfig {
    fn default() -> WorldConfig {
        WorldConfig {
            seed: 0,
            faults: FaultConfig::default(),
            latency_ns: 0,
            vf_mem_bytes: 16 << 20,
        }
    }
}

struct Port {
    addr: VfAddr,
    /// The VF's GID and memory stay reachable while it is in flight.
    gid: Gid,
    mem: vhca_device::SharedMemory,
    /// Bump allocator over the VF's guest memory.
    next_free: u64,
    mem_bytes: u64,
}

/// Packets moved per VF per step, so one busy VF cannot starve the others.
const TX_BATCH: usize = 64;

pub struct World {
    pub now: Nanos,
    cfg: WorldConfig,
    pfs: Vec<Pf>,
    ports: Vec<Port>,
    pub switch: Switch,
    /// FNV-1a over every delivery (time, port, opcode, PSN, QPN, length): a run's fingerprint.
    pub trace_hash: u64,
    /// Called for every packet a VF transmits, before the switch sees it.
    pub tap: Option<Tap>,
    delivered: Vec<Packet>,
    batch: Vec<(PortId, Packet)>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `v` into a running 64-bit fingerprint (one multiply per word, FxHash-style: a trace
/// hash on the per-packet path must be cheap; it need not be cryptographic).
pub fn fnv(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95)
}

impl World {
    pub fn new(cfg: WorldConfig) -> World {
        World {
            now: Nanos::ZERO,
            switch: Switch::new(cfg.seed, cfg.faults, cfg.latency_ns),
            cfg,
            pfs: Vec::new(),
            ports: Vec::new(),
            trace_hash: FNV_OFFSET,
            tap: None,
            delivered: Vec::new(),
            batch: Vec::new(),
        }
    }

    /// Adds a PF with room for `totalvfs` VFs; returns its number.
    pub fn add_pf(&mut self, totalvfs: u16) -> usize {
        let n = self.pfs.len();
        self.pfs.push(Pf::new(n as u8, totalvfs));
        n
    }

    /// Creates a VF on `pf` with the PF's default identity and fresh guest memory, and plugs
    /// it into the switch.
    pub fn add_vf(&mut self, pf: usize) -> VerbsResult<VfAddr> {
        let mem = self.cfg.vf_mem_bytes;
        let p = self.pfs.get_mut(pf).ok_or(VerbsError::NotFound("PF"))?;
        let next_index = (0..p.totalvfs())
            .find(|i| p.vf(*i).is_none())
            .ok_or(VerbsError::NoVf)?;
        let id = p.default_identity(next_index);
        let memory = MmapMemory::shared(mem).map_err(|_| VerbsError::Exhausted("guest memory"))?;
        let vf = p.create_vf(id, memory.clone())?;
        let addr = VfAddr { pf, vf };
        self.ports.push(Port {
            addr,
            gid: id.gid,
            mem: memory,
            // Keep guest address 0 unused: a zero address is a classic driver bug to catch.
            next_free: 4096,
            mem_bytes: mem as u64,
        });
        self.switch.attach(id.gid, self.ports.len() - 1);
        Ok(addr)
    }

    pub fn vf(&self, a: VfAddr) -> &Vf {
        self.pfs[a.pf].vf(a.vf).expect("VF address from this world")
    }

    pub fn vf_mut(&mut self, a: VfAddr) -> &mut Vf {
        self.pfs[a.pf]
            .vf_mut(a.vf)
            .expect("VF address from this world")
    }

    pub fn vfs(&self) -> Vec<VfAddr> {
        self.ports.iter().map(|p| p.addr).collect()
    }

    fn port(&self, a: VfAddr) -> Option<&Port> {
        self.ports.iter().find(|p| p.addr == a)
    }

    pub fn gid(&self, a: VfAddr) -> Gid {
        self.port(a).map(|p| p.gid).unwrap_or_default()
    }

    /// Reserves `len` bytes of `a`'s guest memory, 64-byte aligned.
    pub fn alloc(&mut self, a: VfAddr, len: u64) -> VerbsResult<u64> {
        let port = self
            .ports
            .iter_mut()
            .find(|p| p.addr == a)
            .ok_or(VerbsError::NotFound("VF"))?;
        let start = port.next_free.next_multiple_of(64);
        let end = start
            .checked_add(len)
            .ok_or(VerbsError::Exhausted("guest memory"))?;
        if end > port.mem_bytes {
            return Err(VerbsError::Exhausted("guest memory"));
        }
        port.next_free = end;
        Ok(start)
    }

    /// Writes a VF's guest memory (as its application would), also while it is in flight.
    pub fn write(&self, a: VfAddr, gpa: u64, data: &[u8]) -> VerbsResult<()> {
        let p = self.port(a).ok_or(VerbsError::NotFound("VF"))?;
        p.mem.write(gpa, data).map_err(|_| VerbsError::Fault)
    }

    pub fn read(&self, a: VfAddr, gpa: u64, len: usize) -> VerbsResult<Vec<u8>> {
        let p = self.port(a).ok_or(VerbsError::NotFound("VF"))?;
        let mut b = vec![0u8; len];
        p.mem.read(gpa, &mut b).map_err(|_| VerbsError::Fault)?;
        Ok(b)
    }

    /// Whether the VF at `a` exists now (not in a migration's blackout).
    pub fn has_vf(&self, a: VfAddr) -> bool {
        self.pfs.get(a.pf).and_then(|p| p.vf(a.vf)).is_some()
    }

    /// A pre-copy of the VF at `a`: its full state now, while it keeps running.
    pub fn precopy(&self, a: VfAddr) -> Result<Precopy, MigrationError> {
        let vf = self
            .pfs
            .get(a.pf)
            .and_then(|p| p.vf(a.vf))
            .ok_or(MigrationError::NoSuchVf)?;
        let state = checkpoint::state_of(vf, self.now);
        Ok(Precopy {
            of: a,
            blob: checkpoint::encode(&state, checkpoint::codec::BINARY),
            state,
            taken: self.now,
        })
    }

    /// Starts migrating the VF at `a`: its state is checkpointed (binary codec) and the VF
    /// disappears from its PF and from the switch. Packets for it are dropped until
    /// [`World::finish_migration`] — the blackout. With a pre-copy of it, what is sent in the
    /// blackout is only the delta against that base. Its guest memory is carried as it is (in
    /// a VM the VMM migrates RAM; here the pages are simply kept).
    pub fn begin_migration(
        &mut self,
        a: VfAddr,
        pre: Option<Precopy>,
    ) -> Result<Migration, MigrationError> {
        let now = self.now;
        if pre.as_ref().is_some_and(|p| p.of != a) {
            return Err(MigrationError::PrecopyOfAnotherVf);
        }
        let pf = self.pfs.get_mut(a.pf).ok_or(MigrationError::NoSuchVf)?;
        let vf = pf.destroy_vf(a.vf).map_err(|_| MigrationError::NoSuchVf)?;
        let state = checkpoint::state_of(&vf, now);
        let (blob, base, expect) = match pre {
            None => (
                checkpoint::encode(&state, checkpoint::codec::BINARY),
                None,
                None,
            ),
            Some(p) => {
                let delta = checkpoint::save_delta(&p.state, &state, checkpoint::codec::BINARY)
                    .map_err(MigrationError::Checkpoint)?;
                let expect = checkpoint::digest(&state).map_err(MigrationError::Checkpoint)?;
                (delta, Some(p.blob), Some(expect))
            }
        };
        let gid = vf.gid();
        self.switch.detach(&gid);
        let port = self
            .ports
            .iter()
            .position(|p| p.addr == a)
            .ok_or(MigrationError::NoSuchVf)?;
        let in_flight = VfAddr {
            pf: IN_FLIGHT_PF,
            vf: port as u16,
        };
        self.ports[port].addr = in_flight;
        Ok(Migration {
            from: a,
            in_flight,
            port,
            blob,
            base,
            expect,
            memory: vf.memory().clone(),
            gid,
            started: now,
        })
    }

    /// Whether PF `pf` has a free VF slot (a migration to it would find room).
    pub fn has_free_slot(&self, pf: usize) -> bool {
        self.pfs
            .get(pf)
            .is_some_and(|p| (0..p.totalvfs()).any(|i| p.vf(i).is_none()))
    }

    /// Finishes a migration on PF `dest_pf`: the VF is restored from its checkpoint into the
    /// first free slot, the switch learns its new location, and it resumes (resends and
    /// prompts its peers). Returns its new address.
    pub fn finish_migration(
        &mut self,
        m: Migration,
        dest_pf: usize,
    ) -> Result<VfAddr, MigrationError> {
        let now = self.now;
        let pf = self.pfs.get_mut(dest_pf).ok_or(MigrationError::NoSuchPf)?;
        let slot = (0..pf.totalvfs())
            .find(|i| pf.vf(*i).is_none())
            .ok_or(MigrationError::PfFull)?;
        let state = match &m.base {
            None => {
                checkpoint::decode(&m.blob)
                    .map_err(MigrationError::Checkpoint)?
                    .1
            }
            Some(base) => {
                let (_, base) = checkpoint::decode(base).map_err(MigrationError::Checkpoint)?;
                let s =
                    checkpoint::decode_delta(&base, &m.blob).map_err(MigrationError::Checkpoint)?;
                if m.expect != Some(checkpoint::digest(&s).map_err(MigrationError::Checkpoint)?) {
                    return Err(MigrationError::DeltaMismatch);
                }
                s
            }
        };
        let mut vf = checkpoint::restore(state, m.memory, now, &vhca_device::VfLimits::default())
            .map_err(MigrationError::Checkpoint)?;
        vf.resume(now);
        pf.insert_vf(slot, vf).map_err(|_| MigrationError::PfFull)?;
        let addr = VfAddr {
            pf: dest_pf,
            vf: slot,
        };
        self.ports[m.port].addr = addr;
        self.switch.attach(m.gid, m.port);
        Ok(addr)
    }

    fn port_vf(&mut self, port: PortId) -> Option<&mut Vf> {
        let a = self.ports.get(port)?.addr;
        self.pfs.get_mut(a.pf)?.vf_mut(a.vf)
    }

    fn deliver(&mut self, now: Nanos, port: PortId, pkt: &Packet) {
        let mut h = fnv(self.trace_hash, now.0);
        h = fnv(h, port as u64);
        h = fnv(
            h,
            pkt.bth.opcode.0 as u64
                | (pkt.bth.psn.0 as u64) << 8
                | (pkt.bth.dest_qp.0 as u64) << 32,
        );
        self.trace_hash = fnv(h, pkt.payload.len() as u64);
        match self.port_vf(port) {
            Some(vf) => vf.handle_packet(now, pkt),
            // In flight (a migration's blackout): the packet is lost, as on a real link.
            None => self.switch.counters.dropped += 1,
        }
    }

    /// One pass at the current instant: due timers, transmissions, deliveries. Returns whether
    /// anything happened.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for i in 0..self.ports.len() {
            let a = self.ports[i].addr;
            let Some(vf) = self.pfs.get_mut(a.pf).and_then(|p| p.vf_mut(a.vf)) else {
                continue;
            };
            if vf.poll_timeout().is_some_and(|t| t <= now) {
                vf.handle_timeout(now);
            }
            for _ in 0..TX_BATCH {
                let Some(vf) = self.pfs.get_mut(a.pf).and_then(|p| p.vf_mut(a.vf)) else {
                    break;
                };
                let Some(pkt) = vf.poll_transmit(now) else {
                    break;
                };
                if let Some(tap) = &mut self.tap {
                    tap(now, &pkt);
                }
                moved = true;
                if self.switch.is_ideal() {
                    // An ideal link needs no switch queue: collect the batch and hand it over
                    // below. Building every packet first and copying every payload after keeps
                    // the atomic reference counting of payloads away from the copies (an atomic
                    // right after a memcpy waits for all of its stores).
                    if let Some(port) = self.switch.route_now(&pkt) {
                        self.batch.push((port, pkt));
                    }
                } else {
                    self.switch.send(now, pkt);
                }
            }
        }
        let batch = std::mem::take(&mut self.batch);
        for (port, pkt) in &batch {
            self.deliver(now, *port, pkt);
        }
        self.batch = batch;
        self.batch.clear();
        while let Some((port, pkt)) = self.switch.poll_deliver(now) {
            self.deliver(now, port, &pkt);
            // Dropped after the batch: releasing a packet's memory reference is an atomic
            // operation, and one right after a payload memcpy waits for all its stores.
            self.delivered.push(pkt);
            moved = true;
        }
        self.delivered.clear();
        moved
    }

    /// The next instant at which something is scheduled, if anything is.
    pub fn next_event(&self) -> Option<Nanos> {
        let mut t = self.switch.next_event(self.now);
        for p in &self.ports {
            if let Some(vf) = self.pfs.get(p.addr.pf).and_then(|pf| pf.vf(p.addr.vf)) {
                if let Some(d) = vf.poll_timeout() {
                    t = Some(t.map_or(d, |x| x.min(d)));
                }
            }
        }
        t
    }

    /// Runs until `done` holds, nothing is left to do, or virtual time passes `deadline`.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, deadline: Nanos, mut done: impl FnMut(&mut World) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.step() {
                continue;
            }
            match self.next_event() {
                Some(t) if t <= deadline => {
                    if t > self.now {
                        self.now = t;
                    }
                }
                _ => return done(self),
            }
        }
    }

    /// Runs until nothing is in flight and no timer is pending, or `deadline` passes.
    pub fn run_until_idle(&mut self, deadline: Nanos) {
        self.run_until(deadline, |_| false);
    }
}
