//! `vhca migrate`: the frontend side of a live migration, as QEMU drives a vhost-user device
//! (docs/migration.md).
//!
//! [`Migration::begin`] connects the destination VF, installs a dirty log on the source
//! (`SET_LOG_BASE` + `LOG_ALL`) and copies all guest RAM once; [`Migration::round`] copies
//! what was dirtied since (call it while traffic runs); [`Migration::finish`] stops the source
//! (`GET_VRING_BASE`), moves the device state (`SET_DEVICE_STATE_FD` + `CHECK_DEVICE_STATE`),
//! copies the last dirty pages, loads the destination and starts its rings with the source's
//! bases; the driver then runs on the destination. If anything fails after the stop, the
//! source's rings are restarted and the source VF resumes.
//!
//! Guest RAM is a memfd; the destination's RAM is a second memfd ([`GuestRam::twin`]).
//! Device writes are found through the vhost-user dirty log; the guest CPU's own writes
//! through [`GuestRam`]'s dirty log (what KVM's dirty log is to QEMU). Only pages one of the
//! two logs marked are copied. [`Migration::verify_pages`] compares all RAM after the last
//! copy, to prove that no write escaped both logs.

use crate::driver::{GuestDriver, Transport};
use crate::error::DriverError;
use crate::memory::{GuestRam, PAGE_SIZE};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_vhost::backend::LOG_ALL;
use vhca_vhost::protocol::NUM_QUEUES;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserHeaderFlag,
    VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserDirtyLogRegion, VhostUserMemoryRegionInfo};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _, VolatileMemory as _};

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("{0}")]
    Driver(#[from] DriverError),
    #[error("vhost-user {step} on the {side}: {source}")]
    VhostUser {
        side: &'static str,
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("the {0} does not support migration (LOG_SHMFD and DEVICE_STATE)")]
    Unsupported(&'static str),
    #[error("cannot reach the destination {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device state transfer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the hook between save and load failed: {0}")]
    Hook(String),
    #[error("migration failed ({cause}); the source VF resumed")]
    SourceResumed { cause: Box<MigrateError> },
}

fn src(step: &'static str) -> impl FnOnce(vhost::Error) -> MigrateError {
    move |source| MigrateError::VhostUser {
        side: "source",
        step,
        source,
    }
}

fn dst(step: &'static str) -> impl FnOnce(vhost::Error) -> MigrateError {
    move |source| MigrateError::VhostUser {
        side: "destination",
        step,
        source,
    }
}

/// One pre-copy round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Round {
    /// Pages the device marked in the vhost-user dirty log.
    pub device_pages: u64,
    /// Pages the guest CPU wrote (the CPU dirty log).
    pub guest_pages: u64,
    /// Pages copied: those either log marked (round 0: all).
    pub copied_pages: u64,
    pub took: Duration,
}

/// Where the blackout went, step by step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Steps {
    /// GET_VRING_BASE on every ring (the first one suspends the source VF).
    pub stop: Duration,
    /// SET_DEVICE_STATE_FD(SAVE), reading the state, CHECK_DEVICE_STATE on the source.
    pub save: Duration,
    /// The last dirty pages (the stop-and-copy round), while the destination loads: part of
    /// `load`.
    pub copy: Duration,
    /// SET_DEVICE_STATE_FD(LOAD), writing the state, CHECK_DEVICE_STATE on the destination
    /// (which decodes, validates, builds and installs the VF), with the last copy meanwhile.
    pub load: Duration,
    /// The destination's rings set up and kicked.
    pub start: Duration,
}

/// What a migration did, for the timeline `vhca migrate` prints.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub ram_bytes: u64,
    pub rounds: Vec<Round>,
    /// The final copy, after the source stopped.
    pub last: Round,
    pub state_bytes: usize,
    pub vring_bases: Vec<u32>,
    /// From the first GET_VRING_BASE to the destination's rings kicked (without the page
    /// verification, which a real migration does not do).
    pub blackout: Duration,
    pub steps: Steps,
    /// With [`Migration::verify_pages`]: pages that differed after the last copy (0 unless a
    /// write escaped both dirty logs).
    pub missed_pages: Option<u64>,
    pub total: Duration,
}

impl std::fmt::Display for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "guest RAM: {} pages", self.ram_bytes / PAGE_SIZE)?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "round {i}: {} pages in the device dirty log, {} written by the guest, {} copied, {:?}",
                r.device_pages, r.guest_pages, r.copied_pages, r.took
            )?;
        }
        writeln!(
            f,
            "stop-and-copy: {} pages in the device dirty log, {} written by the guest, {} copied",
            self.last.device_pages, self.last.guest_pages, self.last.copied_pages
        )?;
        if let Some(m) = self.missed_pages {
            writeln!(f, "pages missed by both dirty logs: {m}")?;
        }
        writeln!(f, "device state: {} bytes", self.state_bytes)?;
        writeln!(f, "vring bases: {:?}", self.vring_bases)?;
        let s = &self.steps;
        writeln!(
            f,
            "blackout (stop -> resume): {:?} (stop {:?}, save {:?}, load {:?} with copy {:?}, start {:?})",
            self.blackout, s.stop, s.save, s.load, s.copy, s.start
        )?;
        write!(f, "total: {:?}", self.total)
    }
}

/// A change to the state blob in flight.
pub type Tamper = Box<dyn FnMut(&mut Vec<u8>) + Send>;

/// Runs after the source saved its state (it is stopped and has let go of its network
/// address) and before the destination loads it: where an orchestrator moves the VF's
/// address and MAC to the destination's host (docs/migration.md, UDP fabrics).
pub type Hook = Box<dyn FnMut() -> Result<(), String> + Send>;

/// A migration under way from a driver's VF to a destination VF socket.
pub struct Migration {
    dest: Frontend,
    dest_ram: GuestRam,
    log: GuestRam,
    timeline: Timeline,
    started: Instant,
    /// Applied to the state blob between source and destination (fault tests; `vhca
    /// migrate-attached` only reads it, to report what was in flight at the stop).
    pub tamper: Option<Tamper>,
    /// Run between the source's save and the destination's load; an error aborts the
    /// migration (the source resumes).
    pub between: Option<Hook>,
    /// After the last copy, compare all RAM with the destination's and count the pages that
    /// differ ([`Timeline::missed_pages`]); its time is left out of the blackout.
    pub verify_pages: bool,
}

fn needed() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::LOG_SHMFD | VhostUserProtocolFeatures::DEVICE_STATE
}

/// Bytes of dirty log for `ram_bytes` of RAM (one bit per page), in whole pages, above the
/// minimum size a `GuestRam` takes.
fn log_bytes(ram_bytes: u64) -> u64 {
    let bits = ram_bytes.div_ceil(PAGE_SIZE);
    (bits.div_ceil(8).div_ceil(PAGE_SIZE) * PAGE_SIZE).max(128 * 1024)
}

impl Migration {
    /// Connects the destination, starts dirty logging on the source and copies all RAM.
    pub fn begin(drv: &mut GuestDriver, dest: impl AsRef<Path>) -> Result<Migration, MigrateError> {
        let started = Instant::now();
        if !drv.protocol_features.contains(needed()) {
            return Err(MigrateError::Unsupported("source"));
        }
        let path = dest.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| MigrateError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let dest_ram = drv.ram.twin()?;
        let log = GuestRam::new(log_bytes(drv.ram.size()))?;
        let dest = Frontend::from_stream(stream, NUM_QUEUES as u64);
        let mut m = Migration {
            dest,
            dest_ram,
            log,
            timeline: Timeline {
                ram_bytes: drv.ram.size(),
                ..Timeline::default()
            },
            started,
            tamper: None,
            between: None,
            verify_pages: false,
        };
        m.negotiate_dest(drv)?;
        let f = drv.frontend()?;
        f.set_log_base(
            0,
            Some(VhostUserDirtyLogRegion {
                mmap_size: m.log.size(),
                mmap_offset: 0,
                mmap_handle: m.log.raw_fd(),
            }),
        )
        .map_err(src("SET_LOG_BASE"))?;
        f.set_features(drv.acked_features | LOG_ALL)
            .map_err(src("SET_FEATURES(LOG_ALL)"))?;
        // SET_FEATURES has no reply: wait until the backend took it before copying anything,
        // as QEMU does when it turns logging on (`enforce_reply`: a GET_FEATURES round trip).
        f.get_features()
            .map_err(src("GET_FEATURES after LOG_ALL"))?;
        // Round 0: everything; both logs count from here.
        let t = Instant::now();
        drv.ram.take_dirty(|_| {});
        let pages = drv.ram.size() / PAGE_SIZE;
        m.copy_run(drv, 0, pages)?;
        m.timeline.rounds.push(Round {
            copied_pages: pages,
            took: t.elapsed(),
            ..Round::default()
        });
        Ok(m)
    }

    /// The destination's handshake up to its memory table (QEMU does it when the incoming
    /// VM is created).
    fn negotiate_dest(&mut self, drv: &GuestDriver) -> Result<(), MigrateError> {
        let f = &mut self.dest;
        f.get_features().map_err(dst("GET_FEATURES"))?;
        let proto = f
            .get_protocol_features()
            .map_err(dst("GET_PROTOCOL_FEATURES"))?;
        if !proto.contains(needed()) {
            return Err(MigrateError::Unsupported("destination"));
        }
        let proto = proto & drv.protocol_features;
        f.set_protocol_features(proto)
            .map_err(dst("SET_PROTOCOL_FEATURES"))?;
        if proto.contains(VhostUserProtocolFeatures::MQ) {
            f.get_queue_num().map_err(dst("GET_QUEUE_NUM"))?;
        }
        if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            f.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        f.set_owner().map_err(dst("SET_OWNER"))?;
        f.set_features(drv.acked_features)
            .map_err(dst("SET_FEATURES"))?;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: self.dest_ram.size(),
            userspace_addr: self.dest_ram.host_base(),
            mmap_offset: 0,
            mmap_handle: self.dest_ram.raw_fd(),
        };
        if proto.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS) {
            f.get_max_mem_slots().map_err(dst("GET_MAX_MEM_SLOTS"))?;
            f.add_mem_region(&region).map_err(dst("ADD_MEM_REG"))?;
        } else {
            f.set_mem_table(&[region]).map_err(dst("SET_MEM_TABLE"))?;
        }
        Ok(())
    }

    /// Copies `count` pages from `first` on, in one volatile copy (no bounce buffer).
    fn copy_run(&self, drv: &GuestDriver, first: u64, count: u64) -> Result<(), MigrateError> {
        let gpa = GuestAddress(first * PAGE_SIZE);
        let len = (count * PAGE_SIZE) as usize;
        let err = |e: vm_memory::GuestMemoryError| DriverError::Memory(e.to_string());
        let from = drv.ram.mem().get_slice(gpa, len).map_err(err)?;
        let to = self.dest_ram.mem().get_slice(gpa, len).map_err(err)?;
        from.copy_to_volatile_slice(to);
        Ok(())
    }

    /// Takes and clears both dirty logs and copies every page either marked.
    fn copy_dirty(&mut self, drv: &GuestDriver) -> Result<Round, MigrateError> {
        let t = Instant::now();
        let pages = drv.ram.size() / PAGE_SIZE;
        let mut dirty = vec![0u64; pages.div_ceil(64) as usize];
        let device_pages = self.take_log(&mut dirty)?;
        let mut guest_pages = 0;
        drv.ram.take_dirty(|p| {
            guest_pages += 1;
            dirty[(p / 64) as usize] |= 1 << (p % 64);
        });
        // Runs of consecutive dirty pages go in one copy each.
        let mut copied_pages = 0;
        let mut run: Option<(u64, u64)> = None;
        for p in 0..pages {
            if dirty[(p / 64) as usize] & (1 << (p % 64)) == 0 {
                continue;
            }
            copied_pages += 1;
            run = match run {
                Some((first, n)) if first + n == p => Some((first, n + 1)),
                Some((first, n)) => {
                    self.copy_run(drv, first, n)?;
                    Some((p, 1))
                }
                None => Some((p, 1)),
            };
        }
        if let Some((first, n)) = run {
            self.copy_run(drv, first, n)?;
        }
        Ok(Round {
            device_pages,
            guest_pages,
            copied_pages,
            took: t.elapsed(),
        })
    }

    /// Reads and clears the device's dirty log into `dirty` (one bit per page of RAM);
    /// returns the pages it marked.
    fn take_log(&self, dirty: &mut [u64]) -> Result<u64, MigrateError> {
        let mem = self.log.mem();
        let mut marked = 0u64;
        let words = self.log.size() / 8;
        for w in 0..words {
            let slice = mem
                .get_slice(GuestAddress(w * 8), 8)
                .map_err(|e| DriverError::Memory(e.to_string()))?;
            let word = slice
                .get_atomic_ref::<AtomicU64>(0)
                .map_err(|e| DriverError::Memory(e.to_string()))?;
            let bits = word.swap(0, Ordering::AcqRel);
            if bits == 0 {
                continue;
            }
            marked += u64::from(bits.count_ones());
            match dirty.get_mut(w as usize) {
                Some(d) => *d |= bits,
                None => {
                    return Err(DriverError::Memory(format!(
                        "the device marked pages beyond guest RAM (log word {w})"
                    ))
                    .into())
                }
            }
        }
        Ok(marked)
    }

    /// Pages whose content differs between the source and the destination.
    fn differing_pages(&self, drv: &GuestDriver) -> Result<u64, MigrateError> {
        let mut a = vec![0u8; PAGE_SIZE as usize];
        let mut b = vec![0u8; PAGE_SIZE as usize];
        let mut differ = 0;
        for p in 0..drv.ram.size() / PAGE_SIZE {
            let gpa = GuestAddress(p * PAGE_SIZE);
            drv.ram
                .mem()
                .read_slice(&mut a, gpa)
                .map_err(|e| DriverError::Memory(e.to_string()))?;
            self.dest_ram
                .mem()
                .read_slice(&mut b, gpa)
                .map_err(|e| DriverError::Memory(e.to_string()))?;
            differ += u64::from(a != b);
        }
        Ok(differ)
    }

    /// One pre-copy round: the pages dirtied since the last one.
    pub fn round(&mut self, drv: &GuestDriver) -> Result<Round, MigrateError> {
        let r = self.copy_dirty(drv)?;
        self.timeline.rounds.push(r);
        Ok(r)
    }

    /// Stops the source, moves the device state and the last pages, starts the destination.
    /// On success the driver runs on the destination; on failure after the stop the source
    /// resumes and [`MigrateError::SourceResumed`] says why.
    pub fn finish(mut self, drv: &mut GuestDriver) -> Result<Timeline, MigrateError> {
        let stop = Instant::now();
        let mut bases = Vec::new();
        for i in 0..NUM_QUEUES {
            match drv.frontend()?.get_vring_base(i) {
                Ok(b) => bases.push(b),
                Err(e) => {
                    let cause = src("GET_VRING_BASE")(e);
                    return Err(self.abort(drv, &bases, cause));
                }
            }
        }
        self.timeline.vring_bases = bases.clone();
        self.timeline.steps.stop = stop.elapsed();
        match self.switch_over(drv, &bases) {
            Ok(verify) => {
                self.timeline.blackout = stop.elapsed().saturating_sub(verify);
                self.timeline.total = self.started.elapsed();
                let Migration {
                    dest,
                    dest_ram,
                    timeline,
                    ..
                } = self;
                let _old = std::mem::replace(&mut drv.transport, Transport::VhostUser(dest));
                let _old_ram = std::mem::replace(&mut drv.ram, dest_ram);
                Ok(timeline)
            }
            Err(cause) => Err(self.abort(drv, &bases, cause)),
        }
    }

    /// Save, last copy, load, start; returns the time the page verification took.
    fn switch_over(&mut self, drv: &GuestDriver, bases: &[u32]) -> Result<Duration, MigrateError> {
        let t = Instant::now();
        let mut blob = save_state(drv.frontend()?, "source")?;
        self.timeline.state_bytes = blob.len();
        self.timeline.steps.save = t.elapsed();
        if let Some(t) = self.tamper.as_mut() {
            t(&mut blob);
        }
        if let Some(h) = self.between.as_mut() {
            h().map_err(MigrateError::Hook)?;
        }
        // LOAD on the destination, written from a thread while the backend reads; the last
        // dirty pages go over meanwhile (the device wrote nothing since the stop, and the
        // destination decodes and builds its VF without reading guest RAM, which it first
        // touches when its rings start).
        let t = Instant::now();
        let (rx, tx, cap) = pipe()?;
        let mut tx = std::fs::File::from(tx);
        self.dest
            .set_device_state_fd(
                VhostTransferStateDirection::LOAD,
                VhostTransferStatePhase::STOPPED,
                rx,
            )
            .map_err(dst("SET_DEVICE_STATE_FD(LOAD)"))?;
        // A state that fits the pipe is written at once, so the destination reads and
        // builds while the pages are copied; a larger one is written from a thread.
        let (written, writer) = if blob.len() <= cap {
            let r = tx.write_all(&blob);
            drop(tx);
            (Some(r), None)
        } else {
            (None, Some(std::thread::spawn(move || tx.write_all(&blob))))
        };
        let copied = self.copy_dirty(drv);
        let mut verify = Duration::ZERO;
        if self.verify_pages && copied.is_ok() {
            let v = Instant::now();
            self.timeline.missed_pages = Some(self.differing_pages(drv)?);
            verify = v.elapsed();
        }
        let wrote = match (written, writer) {
            (Some(r), _) => r,
            (None, Some(w)) => w
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("state writer panicked"))),
            (None, None) => Ok(()),
        };
        self.timeline.last = copied?;
        self.timeline.steps.copy = self.timeline.last.took;
        self.dest
            .check_device_state()
            .map_err(dst("CHECK_DEVICE_STATE"))?;
        wrote?;
        self.timeline.steps.load = t.elapsed().saturating_sub(verify);
        let t = Instant::now();
        // The destination's rings, with the source's bases, then a kick on each.
        let base = self.dest_ram.host_base();
        start_rings(&mut self.dest, drv, base, bases).map_err(|(step, e)| dst(step)(e))?;
        self.timeline.steps.start = t.elapsed();
        Ok(verify)
    }

    /// After a failure: logging off, the source's rings restarted where they stopped.
    fn abort(self, drv: &mut GuestDriver, bases: &[u32], cause: MigrateError) -> MigrateError {
        drop(self.dest);
        let Ok(f) = drv.frontend() else {
            return MigrateError::SourceResumed {
                cause: Box::new(cause),
            };
        };
        let _ = f.set_features(drv.acked_features);
        let mut full = bases.to_vec();
        while full.len() < NUM_QUEUES {
            full.push(0);
        }
        let base = drv.ram.host_base();
        let mut f = f.clone();
        if let Err((step, e)) = start_rings(&mut f, drv, base, &full) {
            tracing::error!(step, error = %e, "restarting the source failed");
        }
        MigrateError::SourceResumed {
            cause: Box::new(cause),
        }
    }
}

/// The opening of every vhost-user connection QEMU makes (`vhost_user_backend_init`,
/// `vhost_dev_init`): features, protocol features (DEVICE_STATE among them), queue number and,
/// with `claim`, SET_OWNER. A VM whose guest never starts the device sends nothing more before
/// its migration: no SET_FEATURES, no memory table, no ring (docs/migration.md, "A VF whose
/// guest never started it"). A caller that hands the connection to a [`GuestDriver`] later
/// leaves `claim` out: the driver's own handshake sends the session's one SET_OWNER.
pub fn open_session(
    stream: UnixStream,
    side: &'static str,
    claim: bool,
) -> Result<Frontend, MigrateError> {
    let mut f = Frontend::from_stream(stream, NUM_QUEUES as u64);
    let e = |step| move |source| MigrateError::VhostUser { side, step, source };
    f.get_features().map_err(e("GET_FEATURES"))?;
    let proto = f
        .get_protocol_features()
        .map_err(e("GET_PROTOCOL_FEATURES"))?;
    if !proto.contains(VhostUserProtocolFeatures::DEVICE_STATE) {
        return Err(MigrateError::Unsupported(side));
    }
    let proto = proto
        & (VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::DEVICE_STATE
            | VhostUserProtocolFeatures::REPLY_ACK);
    f.set_protocol_features(proto)
        .map_err(e("SET_PROTOCOL_FEATURES"))?;
    f.get_queue_num().map_err(e("GET_QUEUE_NUM"))?;
    if proto.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        f.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    if claim {
        f.set_owner().map_err(e("SET_OWNER"))?;
    }
    f.get_features().map_err(e("GET_FEATURES"))?;
    Ok(f)
}

/// SET_DEVICE_STATE_FD(SAVE), the state read to its end, CHECK_DEVICE_STATE: the VF's state
/// as the `side` gives it (the backend writes it from a thread of its own).
pub fn save_state(f: &Frontend, side: &'static str) -> Result<Vec<u8>, MigrateError> {
    let e = |step| move |source| MigrateError::VhostUser { side, step, source };
    let (rx, tx, _) = pipe()?;
    let mut rx = std::fs::File::from(rx);
    f.set_device_state_fd(
        VhostTransferStateDirection::SAVE,
        VhostTransferStatePhase::STOPPED,
        tx,
    )
    .map_err(e("SET_DEVICE_STATE_FD(SAVE)"))?;
    let mut blob = Vec::new();
    rx.read_to_end(&mut blob)?;
    f.check_device_state().map_err(e("CHECK_DEVICE_STATE"))?;
    Ok(blob)
}

/// SET_DEVICE_STATE_FD(LOAD), `blob` written, CHECK_DEVICE_STATE: the destination's VF takes
/// the state (at any point of its session: QEMU loads before the guest starts the device).
pub fn load_state(f: &Frontend, blob: &[u8]) -> Result<(), MigrateError> {
    let (rx, tx, _) = pipe()?;
    f.set_device_state_fd(
        VhostTransferStateDirection::LOAD,
        VhostTransferStatePhase::STOPPED,
        rx,
    )
    .map_err(dst("SET_DEVICE_STATE_FD(LOAD)"))?;
    let mut tx = std::fs::File::from(tx);
    let wrote = tx.write_all(blob);
    drop(tx);
    f.check_device_state().map_err(dst("CHECK_DEVICE_STATE"))?;
    Ok(wrote?)
}

/// What a frontend that forgot to stop the rings sends: SAVE on `drv`'s VF while it runs.
pub fn save_unstopped(drv: &GuestDriver) -> Result<Vec<u8>, MigrateError> {
    save_state(drv.frontend()?, "source")
}

/// Bytes a state pipe is asked to hold (Linux's default limit for unprivileged processes,
/// `/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: usize = 1 << 20;

/// A pipe for the device state, as large as the system allows up to [`PIPE_BYTES`]: a state
/// that fits goes through in one write, without the writer and the reader taking turns every
/// 64 KiB (1.5–2.3 ms for 140 kB on a busy machine). Returns the pipe's capacity.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd, usize)> {
    let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let cap = rustix::pipe::fcntl_setpipe_size(&tx, PIPE_BYTES)
        .or_else(|_| rustix::pipe::fcntl_getpipe_size(&tx))
        .unwrap_or(0);
    Ok((rx, tx, cap))
}

/// SET_VRING_NUM/BASE/ADDR/KICK/CALL and ENABLE on every ring, then a kick on each.
///
/// Only the enables wait for the backend's reply (when REPLY_ACK is in use): the 18 messages
/// before them go out back to back, as QEMU sends them, and the backend handles messages in
/// order, so the first enable's reply also says the rings are set up (a backend that failed
/// one of them closes the connection, which fails the enable). One acknowledged round trip
/// per message cost up to 4 ms of blackout on a busy machine.
fn start_rings(
    f: &mut Frontend,
    drv: &GuestDriver,
    host_base: u64,
    bases: &[u32],
) -> Result<(), (&'static str, vhost::Error)> {
    let reply_ack = drv
        .protocol_features
        .contains(VhostUserProtocolFeatures::REPLY_ACK);
    f.set_hdr_flags(VhostUserHeaderFlag::empty());
    let set_up = (|| {
        for (q, &b) in [&drv.ctrl, &drv.db, &drv.ev].into_iter().zip(bases) {
            let i = q.index();
            f.set_vring_num(i, q.size())
                .map_err(|e| ("SET_VRING_NUM", e))?;
            f.set_vring_base(i, b as u16)
                .map_err(|e| ("SET_VRING_BASE", e))?;
            f.set_vring_addr(i, &q.config_data(host_base))
                .map_err(|e| ("SET_VRING_ADDR", e))?;
            f.set_vring_kick(i, q.kick_fd())
                .map_err(|e| ("SET_VRING_KICK", e))?;
            f.set_vring_call(i, q.call_fd())
                .map_err(|e| ("SET_VRING_CALL", e))?;
            f.set_vring_err(i, q.err_fd())
                .map_err(|e| ("SET_VRING_ERR", e))?;
        }
        Ok(())
    })();
    if reply_ack {
        f.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    set_up?;
    for i in 0..NUM_QUEUES {
        f.set_vring_enable(i, true)
            .map_err(|e| ("SET_VRING_ENABLE", e))?;
    }
    for q in [&drv.ctrl, &drv.db, &drv.ev] {
        let _ = q.kick();
    }
    Ok(())
}
