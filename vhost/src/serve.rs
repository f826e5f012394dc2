//! `vhca serve`: one PF process serving N VFs, one vhost-user socket each.
//!
//! Threads (docs/serve.md):
//! - one per VF socket: waits for a frontend, runs rust-vmm's daemon for it (which adds its
//!   request-handler thread and one vring worker thread), and after a disconnect resets the VF
//!   and waits for the next frontend on the same socket;
//! - the timer thread: VF timers (retransmit, RNR) and pumps that ran out of budget;
//! - the control socket thread: answers `vhca ctl`.
//!
//! All VFs, the fabric and the clock live behind one mutex ([`crate::shared::Shared`]).

use crate::backend::{VfBackend, WAKE_EVENT};
use crate::ctl;
use crate::fabric::{Fabric, LinkFabric, SwitchFabric};
use crate::memory::{empty_memory, VhostMemory};
use crate::pf::PfState;
use crate::port::VfPort;
use crate::shared::Shared;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_device::{Pf, VfIdentity};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// What `vhca serve` runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub vfs: u16,
    pub socket_dir: PathBuf,
    pub pf_index: u8,
    /// The control socket; `socket_dir/ctl.sock` when `None`.
    pub ctl: Option<PathBuf>,
    /// Where the VFs' packets go.
    pub network: Network,
    /// How long a VF thread polls its doorbellq after a doorbell before it sleeps.
    pub busy_poll: std::time::Duration,
    /// A migration destination (`--accept-identity`): a loaded device state may bring an
    /// identity other than its slot's, if no other VF of this PF has it, and the slot keeps
    /// it until that VF leaves again (docs/migration.md, "Identity policy"). Otherwise a
    /// state must name the slot's own identity.
    pub accept_identity: bool,
    /// How long a device-state transfer (the frontend's pipe) may take before it fails.
    pub state_transfer_timeout: std::time::Duration,
}

/// The fabric a `vhca serve` process puts its VFs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The in-process switch: the VFs reach only each other, at the PF's default addresses.
    #[default]
    Switch,
    /// RoCEv2 over kernel UDP sockets: VF `i` at `ip + i` port 4791 (its GID is that address,
    /// which must be on a local interface).
    Udp(Ipv4Addr),
    /// RoCEv2 in Ethernet frames through TAP devices: VF `i` on `taps[i]` with its own MAC and
    /// the address `ip + i` (answering ARP for it; the kernel does not hold it).
    Tap { taps: Vec<String>, ip: Ipv4Addr },
}

impl Network {
    fn base_ip(&self) -> Option<Ipv4Addr> {
        match self {
            Network::Switch => None,
            Network::Udp(ip) | Network::Tap { ip, .. } => Some(*ip),
        }
    }
}

impl ServeConfig {
    pub fn vf_socket(&self, vf: u16) -> PathBuf {
        self.socket_dir.join(format!("vf{vf}.sock"))
    }

    /// VF `vf`'s identity as the PF assigns it: the PF's default MAC, and its address on a
    /// network fabric when there is one. The only identity a slot has unless
    /// [`ServeConfig::accept_identity`] lets a loaded state bring its own.
    pub fn identity(&self, pf: &Pf, vf: u16) -> Result<VfIdentity, ServeError> {
        let id = pf.default_identity(vf);
        match self.network.base_ip() {
            None => Ok(id),
            Some(base) => Ok(VfIdentity::new(id.mac, self.vf_ip(base, vf)?.octets())),
        }
    }

    /// VF `vf`'s address on a network fabric whose first VF is at `base`.
    fn vf_ip(&self, base: Ipv4Addr, vf: u16) -> Result<Ipv4Addr, ServeError> {
        u32::from(base)
            .checked_add(u32::from(vf))
            .map(Ipv4Addr::from)
            .ok_or(ServeError::AddressRange(base, self.vfs))
    }

    pub fn ctl_socket(&self) -> PathBuf {
        self.ctl
            .clone()
            .unwrap_or_else(|| self.socket_dir.join("ctl.sock"))
    }
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("--vfs must be between 1 and 256, not {0}")]
    VfCount(u16),
    #[error("{1} VFs starting at {0} run past 255.255.255.255")]
    AddressRange(Ipv4Addr, u16),
    #[error("cannot bind the UDP fabric: {0}")]
    Udp(std::io::Error),
    #[error("{0} TAP devices named for {1} VFs: give one per VF")]
    TapCount(usize, u16),
    #[error("cannot open the TAP fabric: {0}")]
    Tap(String),
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a server thread panicked")]
    Panicked,
}

/// How long [`Server::wait`] waits for the threads after [`Server::stop`]. Every thread
/// notices the stop within about a second (the network thread's epoll timeout) when nothing
/// blocks it; a VF thread stuck on a frontend's fd (a race the frontend won, see
/// [`crate::guest_fd`]) is left behind, and the process exits without it.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// A running server. [`Server::stop`] then [`Server::wait`] shut it down.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<(String, JoinHandle<()>)>,
    /// Each thread sends its name here as it ends (a panic too).
    ended: mpsc::Receiver<String>,
    ended_tx: mpsc::Sender<String>,
    sockets: Vec<PathBuf>,
}

/// Sends the thread's name when the thread ends, however it ends.
struct EndReport(Option<(String, mpsc::Sender<String>)>);

impl Drop for EndReport {
    fn drop(&mut self) {
        if let Some((name, tx)) = self.0.take() {
            let _ = tx.send(name);
        }
    }
}

/// Starts a named server thread that reports its end on `tx`.
fn spawn(
    threads: &mut Vec<(String, JoinHandle<()>)>,
    tx: &mpsc::Sender<String>,
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let report = EndReport(Some((name.clone(), tx.clone())));
    let h = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _report = report;
            f()
        })?;
    threads.push((name, h));
    Ok(())
}

fn bind_vhost(path: &Path) -> Result<Listener, ServeError> {
    Listener::new(path, true).map_err(|e| ServeError::Bind {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })
}

impl Server {
    /// Binds every socket, then starts the threads. When this returns, frontends and `vhca ctl`
    /// can connect.
    pub fn start(cfg: &ServeConfig) -> Result<Server, ServeError> {
        if cfg.vfs == 0 || cfg.vfs > 256 {
            return Err(ServeError::VfCount(cfg.vfs));
        }
        let fabric: Box<dyn Fabric> = match &cfg.network {
            Network::Switch => Box::new(SwitchFabric::ideal()),
            Network::Udp(base) => {
                let ips = (0..cfg.vfs)
                    .map(|i| cfg.vf_ip(*base, i))
                    .collect::<Result<Vec<_>, _>>()?;
                Box::new(LinkFabric::udp(&ips).map_err(ServeError::Udp)?)
            }
            Network::Tap { taps, ip: base } => {
                if taps.len() != usize::from(cfg.vfs) {
                    return Err(ServeError::TapCount(taps.len(), cfg.vfs));
                }
                let pf = Pf::new(cfg.pf_index, cfg.vfs);
                let ids = (0..cfg.vfs)
                    .map(|i| Ok((cfg.identity(&pf, i)?.mac, cfg.vf_ip(*base, i)?)))
                    .collect::<Result<Vec<_>, ServeError>>()?;
                Box::new(LinkFabric::tap(taps, &ids).map_err(|e| ServeError::Tap(e.to_string()))?)
            }
        };
        Self::start_with_fabric(cfg, fabric)
    }

    pub fn start_with_fabric(
        cfg: &ServeConfig,
        fabric: Box<dyn Fabric>,
    ) -> Result<Server, ServeError> {
        if cfg.vfs == 0 || cfg.vfs > 256 {
            return Err(ServeError::VfCount(cfg.vfs));
        }
        std::fs::create_dir_all(&cfg.socket_dir)?;
        let pf = Pf::new(cfg.pf_index, cfg.vfs);
        let ports = (0..cfg.vfs)
            .map(|i| {
                Ok(VfPort::new(
                    cfg.identity(&pf, i)?,
                    VhostMemory::shared(empty_memory()),
                ))
            })
            .collect::<Result<Vec<_>, ServeError>>()?;
        let wake_fds = fabric.wake_fds();
        let sockets: Vec<PathBuf> = (0..cfg.vfs).map(|i| cfg.vf_socket(i)).collect();
        let state = PfState::new(ports, fabric).accept_identity(cfg.accept_identity);
        let mut shared = Shared::new(state, sockets.clone())?;
        shared.busy_poll = cfg.busy_poll;
        shared.transfer_timeout = cfg.state_transfer_timeout;
        let shared = Arc::new(shared);
        let listeners = sockets
            .iter()
            .map(|p| bind_vhost(p))
            .collect::<Result<Vec<_>, _>>()?;
        let ctl_path = cfg.ctl_socket();
        let _ = std::fs::remove_file(&ctl_path);
        let ctl_listener = UnixListener::bind(&ctl_path).map_err(|e| ServeError::Bind {
            path: ctl_path.clone(),
            source: e,
        })?;
        let mut threads = Vec::new();
        let (ended_tx, ended) = mpsc::channel();
        let tx = &ended_tx;
        for (i, l) in listeners.into_iter().enumerate() {
            let s = shared.clone();
            spawn(&mut threads, tx, format!("vhca-vf{i}"), move || {
                serve_vf(s, i, l)
            })?;
        }
        let s = shared.clone();
        spawn(&mut threads, tx, "vhca-timer".into(), move || {
            s.timer_loop()
        })?;
        if !wake_fds.is_empty() {
            let s = shared.clone();
            spawn(&mut threads, tx, "vhca-net".into(), move || {
                s.network_loop()
            })?;
        }
        let s = shared.clone();
        spawn(&mut threads, tx, "vhca-ctl".into(), move || {
            ctl::serve(&s, ctl_listener, &ctl_path)
        })?;
        tracing::info!(vfs = cfg.vfs, dir = %cfg.socket_dir.display(), "serving");
        Ok(Server {
            shared,
            threads,
            ended,
            ended_tx,
            sockets,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }

    /// Asks every thread to finish; returns at once.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Waits for every thread after [`Server::stop`], at most [`SHUTDOWN_BOUND`]: a thread
    /// still running then is named in the log and left (the process may exit without it).
    pub fn wait(self) -> Result<(), ServeError> {
        self.wait_at_most(SHUTDOWN_BOUND)
    }

    /// [`Server::wait`] with another bound.
    pub fn wait_at_most(self, bound: Duration) -> Result<(), ServeError> {
        let Server {
            mut threads,
            ended,
            ended_tx,
            ..
        } = self;
        drop(ended_tx);
        let deadline = Instant::now() + bound;
        let mut panicked = false;
        while !threads.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match ended.recv_timeout(left) {
                Ok(name) => {
                    if let Some(i) = threads.iter().position(|(n, _)| *n == name) {
                        // It has returned (or unwound): the join is immediate.
                        panicked |= threads.swap_remove(i).1.join().is_err();
                    }
                }
                Err(_) => {
                    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
                    tracing::error!(
                        threads = ?names,
                        bound_ms = bound.as_millis() as u64,
                        "threads did not stop in time; leaving them"
                    );
                    break;
                }
            }
        }
        if panicked {
            Err(ServeError::Panicked)
        } else {
            Ok(())
        }
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down cleanly.
pub fn run(cfg: &ServeConfig) -> Result<(), ServeError> {
    // Catch the signals before any socket exists: whoever sees a socket may signal us.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let server = Server::start(cfg)?;
    // One line on stdout once every socket listens: scripts and tests wait for it.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "vhca serve: ready: {} VFs in {}, control socket {}",
            cfg.vfs,
            cfg.socket_dir.display(),
            cfg.ctl_socket().display()
        );
        let _ = out.flush();
    }
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    server.stop();
    let r = server.wait();
    tracing::info!("stopped");
    r
}

/// Waits until the listener has a connection (true) or the process stops (false).
fn wait_for_frontend(shared: &Shared, listener: &Listener) -> std::io::Result<bool> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        listener.as_raw_fd(),
        EpollEvent::new(EventSet::IN, 0),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        shared.stop_raw_fd(),
        EpollEvent::new(EventSet::IN, 1),
    )?;
    let mut events = [EpollEvent::default(); 2];
    loop {
        if shared.stopping() {
            return Ok(false);
        }
        match epoll.wait(-1, &mut events) {
            Ok(n) => {
                if shared.stopping() {
                    return Ok(false);
                }
                if events[..n].iter().any(|e| e.data() == 0) {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One VF socket: frontends one after another until the process stops.
fn serve_vf(shared: Arc<Shared>, index: usize, mut listener: Listener) {
    let slot = &shared.slots[index];
    loop {
        match wait_for_frontend(&shared, &listener) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                tracing::error!(vf = index, error = %e, "waiting for a frontend failed");
                break;
            }
        }
        if let Err(e) = one_connection(&shared, index, &mut listener) {
            tracing::warn!(vf = index, error = %e, "frontend connection ended with an error");
        }
        // The daemon and its vring worker are gone: nobody may sweep the old rings now.
        slot.deactivate();
        slot.connected.store(false, Ordering::Release);
        *slot.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // The next frontend finds a fresh VF: the PF's limits, no objects, the slot's
        // assigned identity (unless a migration destination's slot still hosts a VF that
        // migrated in: PfState::reset_slot).
        let old = {
            let mut st = shared.lock();
            st.suspended[index] = false;
            let old = st.reset_slot(index, VhostMemory::shared(empty_memory()));
            shared.fabric_changed();
            old
        };
        drop(old); // outside the lock
        tracing::info!(vf = index, "frontend disconnected; VF reset");
    }
    let _ = std::fs::remove_file(&slot.socket);
}

fn one_connection(
    shared: &Arc<Shared>,
    index: usize,
    listener: &mut Listener,
) -> Result<(), String> {
    let slot = &shared.slots[index];
    let mem = empty_memory();
    let old = {
        let mut st = shared.lock();
        st.suspended[index] = false;
        let old = st.reset_slot(index, VhostMemory::shared(mem.clone()));
        // A slot whose VF migrated away gave up its address; a new guest takes it back if it
        // is free (a VF migrating in rebinds to its own address when its state loads).
        let gid = st.ports[index].identity().gid;
        st.fabric.attach(gid, index);
        shared.fabric_changed();
        old
    };
    drop(old); // outside the lock
    let backend =
        Arc::new(VfBackend::new(index, shared.clone(), mem.clone()).map_err(|e| e.to_string())?);
    let mut daemon = VhostUserDaemon::new(format!("vhca-vf{index}-conn"), backend, mem)
        .map_err(|e| e.to_string())?;
    for h in daemon.get_epoll_handlers() {
        h.register_listener(slot.wake.as_raw_fd(), EventSet::IN, u64::from(WAKE_EVENT))
            .map_err(|e| e.to_string())?;
    }
    daemon.start(listener).map_err(|e| e.to_string())?;
    {
        let mut conn = slot.conn.lock().unwrap_or_else(|e| e.into_inner());
        *conn = daemon.shutdown_handle();
    }
    if shared.stopping() {
        daemon.request_shutdown();
    }
    slot.connected.store(true, Ordering::Release);
    slot.connections.fetch_add(1, Ordering::Relaxed);
    tracing::info!(vf = index, "frontend connected");
    let r = daemon.wait().map_err(|e| e.to_string());
    // Dropping the daemon stops its vring worker (through the backend's exit event).
    drop(daemon);
    r
}
