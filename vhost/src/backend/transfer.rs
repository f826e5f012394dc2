//! The device-state transfer of one VF (docs/migration.md): `SET_DEVICE_STATE_FD` starts it,
//! `CHECK_DEVICE_STATE` ends it. The state is captured (SAVE) or installed (LOAD) under the
//! process lock; encoding, writing, reading, decoding and building the port run on a thread of
//! their own, off the lock.

use crate::device_state::{self, DeviceStateV1, StateError};
use crate::guest_fd::{self, NotReady};
use crate::memory::{GuestMem, VhostMemory};
use crate::pf::identity::IdentityError;
use crate::port::VfPort;
use crate::shared::Shared;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use vhost::vhost_user::message::{VhostTransferStateDirection, VhostTransferStatePhase};

/// A device-state transfer running on its own thread.
enum Transfer {
    Save(JoinHandle<Result<usize, StateError>>),
    /// Decodes, validates and builds the port off the lock; CHECK only swaps it in.
    Load(JoinHandle<Result<VfPort, StateError>>),
}

/// One VF's device-state transfers, one at a time.
pub struct StateTransfer {
    index: usize,
    shared: Arc<Shared>,
    mem: GuestMem,
    /// The backend's `LOG_ALL` switch, for the memory of a loaded port.
    logging: Arc<AtomicBool>,
    /// The transfer under way (`SET_DEVICE_STATE_FD` until `CHECK_DEVICE_STATE`).
    running: Mutex<Option<Transfer>>,
}

impl StateTransfer {
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        mem: GuestMem,
        logging: Arc<AtomicBool>,
    ) -> StateTransfer {
        StateTransfer {
            index,
            shared,
            mem,
            logging,
            running: Mutex::new(None),
        }
    }

    /// Builds the port a state describes (checking everything), off the process lock. Its
    /// clock reads `now` at load time; the VF stays suspended until its rings are kicked, and
    /// resuming restarts its timers. The identity and limits the state names are checked
    /// against the PF's policy before anything is built (docs/migration.md, "Identity
    /// policy"); [`StateTransfer::install`] checks them again against the live VFs.
    fn build(
        shared: &Shared,
        vf: usize,
        mem: &GuestMem,
        logging: &Arc<AtomicBool>,
        s: DeviceStateV1,
    ) -> Result<VfPort, StateError> {
        let policy = shared.lock().identity.clone();
        Ok(VfPort::load_state(
            s.port,
            VhostMemory::shared_with_logging(mem.clone(), logging.clone()),
            shared.now(),
            |id| {
                policy.check_static(vf, id).map_err(refused)?;
                policy
                    .assigned(vf)
                    .map(|own| own.limits)
                    .ok_or_else(|| refused(IdentityError::NoSlot(vf)))
            },
        )?)
    }

    /// Installs a loaded port: the VF takes the source's identity and objects, stays
    /// suspended until its rings are kicked, then resumes. Refused, with the slot left as it
    /// was, if another VF of this PF now has the identity the state names.
    fn install(&self, port: VfPort) -> Result<(), StateError> {
        let t = std::time::Instant::now();
        let mut st = self.shared.lock_urgent();
        let live: Vec<_> = st.ports.iter().map(|p| *p.identity()).collect();
        if let Err(e) = st.identity.check(self.index, port.identity(), &live) {
            drop(st);
            drop(port); // outside the lock
            return Err(refused(e).into());
        }
        let (gid, mac) = (port.identity().gid, port.identity().mac);
        let old = std::mem::replace(&mut st.ports[self.index], port);
        st.suspended[self.index] = true;
        st.vf_arrived(self.index);
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
        Ok(())
    }

    /// `SET_DEVICE_STATE_FD`: starts saving the VF's state into `file` or loading it from
    /// there. `acked_features` goes into a saved state; `running` are the VF's rings that run
    /// now (a SAVE is refused while any does and none was stopped). Every refusal is logged:
    /// the frontend sees only a failed reply, and QEMU says no more than that.
    pub fn start(
        &self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: std::fs::File,
        acked_features: u64,
        running: &[usize],
    ) -> io::Result<Option<std::fs::File>> {
        let r = self.start_inner(direction, phase, file, acked_features, running);
        if let Err(e) = &r {
            tracing::error!(
                vf = self.index,
                ?direction,
                error = %e,
                "device state transfer refused"
            );
        }
        r
    }

    fn start_inner(
        &self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        file: std::fs::File,
        acked_features: u64,
        running: &[usize],
    ) -> io::Result<Option<std::fs::File>> {
        if phase != VhostTransferStatePhase::STOPPED {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only the STOPPED phase is supported",
            ));
        }
        let mut transfer = self.running.lock().unwrap_or_else(|e| e.into_inner());
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
                        if !running.is_empty() {
                            return Err(io::Error::other(format!(
                                "SAVE while the VF runs: rings {running:?} are started and no \
                                 GET_VRING_BASE stopped them"
                            )));
                        }
                        // No ring runs: the guest never started the device (QEMU stops
                        // only the rings it started), or stopped them by disabling them.
                        // Quiesced here, under the lock, as GET_VRING_BASE would.
                        st.suspended[self.index] = true;
                        tracing::info!(
                            vf = self.index,
                            acked_features,
                            "VF suspended for SAVE without GET_VRING_BASE: none of its rings runs"
                        );
                    }
                    let now = st.now();
                    let state = DeviceStateV1 {
                        acked_features,
                        saved_at_ns: now.0,
                        port: st.ports[self.index].save_state(now),
                    };
                    // The VF is leaving: its address goes with it, and a destination on
                    // this host can bind it only once this process let go of it
                    // (docs/migration.md). A failed migration takes it back at resume.
                    st.vf_leaves(self.index);
                    self.shared.fabric_changed();
                    state
                };
                let vf = self.index;
                let captured = t.elapsed();
                let shared = self.shared.clone();
                let deadline = Instant::now() + self.shared.transfer_timeout;
                let h = std::thread::Builder::new()
                    .name(format!("vhca-vf{vf}-save"))
                    .spawn(move || {
                        let t = std::time::Instant::now();
                        let blob = device_state::encode(&state);
                        let encoded = t.elapsed();
                        write_bounded(&file, &blob, &shared, deadline)?;
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
                // Never more than a VF within this slot's limits can have.
                let cap = device_state::max_state_len(
                    &self.shared.lock().ports[self.index].identity().limits,
                );
                let deadline = Instant::now() + self.shared.transfer_timeout;
                tracing::info!(
                    vf,
                    cap,
                    timeout_ms = self.shared.transfer_timeout.as_millis() as u64,
                    "loading the device state"
                );
                let h = std::thread::Builder::new()
                    .name(format!("vhca-vf{vf}-load"))
                    .spawn(move || {
                        let t = std::time::Instant::now();
                        let blob = read_bounded(&file, cap, &shared, deadline)?;
                        let read = t.elapsed();
                        let port =
                            Self::build(&shared, vf, &mem, &logging, device_state::decode(&blob)?);
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

    /// `CHECK_DEVICE_STATE`: waits for the transfer's thread; a load installs its port.
    pub fn check(&self) -> io::Result<()> {
        let t = self
            .running
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
                .and_then(|port| self.install(port)),
        };
        r.map_err(|e| {
            tracing::error!(vf = self.index, error = %e, "device state transfer failed");
            io::Error::other(e.to_string())
        })
    }
}

/// A refusal of the identity policy, as the checkpoint error a load reports.
fn refused(e: IdentityError) -> vhca_device::checkpoint::CheckpointError {
    vhca_device::checkpoint::CheckpointError::Invalid(format!("identity policy: {e}"))
}

/// Waits for the frontend's pipe: `Ok` once it is ready, the transfer's error once the deadline
/// passed or the process is stopping.
fn wait_pipe(
    file: &std::fs::File,
    write: bool,
    shared: &Shared,
    deadline: Instant,
) -> Result<(), StateError> {
    match guest_fd::wait_ready(file.as_raw_fd(), write, shared.stop_raw_fd(), deadline)? {
        Ok(()) => Ok(()),
        Err(NotReady::TimedOut) => Err(StateError::TimedOut(shared.transfer_timeout)),
        Err(NotReady::Stopped) => Err(StateError::Stopped),
    }
}

/// Reads one state from the frontend's fd: at most `cap` bytes (see
/// [`device_state::read_framed`]), never waiting past `deadline` or the process's stop.
fn read_bounded(
    file: &std::fs::File,
    cap: usize,
    shared: &Shared,
    deadline: Instant,
) -> Result<Vec<u8>, StateError> {
    device_state::read_framed(
        |buf| loop {
            match guest_fd::read_nowait(file, buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_pipe(file, false, shared, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        },
        cap,
    )
}

/// Writes a saved state to the frontend's fd, never waiting past `deadline` or the process's
/// stop (a frontend that does not read fails the transfer).
fn write_bounded(
    file: &std::fs::File,
    mut blob: &[u8],
    shared: &Shared,
    deadline: Instant,
) -> Result<(), StateError> {
    while !blob.is_empty() {
        match guest_fd::write_nowait(file, blob) {
            Ok(0) => return Err(StateError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => blob = &blob[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_pipe(file, true, shared, deadline)?
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
