//! What `vhca pingpong` and `vhca perf` run on: any [`Verbs`] device plus the little the
//! programs need beyond the verbs, so the same program runs on an in-process [`Node`] (a VF
//! with its own UDP socket or TAP device, pumped by the program's thread) and on a VF of a
//! running `vhca serve` reached through the guest driver ([`GuestContext`], `--vf SOCKET`).
//!
//! The difference that matters: a `Node`'s device only makes progress when the program pumps
//! it, so while a program waits on its TCP side channel it must keep pumping; a VF behind a
//! vhost-user socket runs in the serve process on its own, and the program only has to wait.
//!
//! The programs also take a [`Hook`], called between iterations of their data phase: the
//! place where a migration orchestrator moves a VF to another serve process while the traffic
//! runs (`vhca_guest::migrate::Migration` needs the context's `&mut GuestDriver`, which the
//! hook gets as `&mut GuestContext`).

use std::io;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use vhca_device::{CqHandle, Gid, Verbs, VerbsResult};
use vhca_fabric::node::Node;
use vhca_fabric::{Link, LinkCounters};
use vhca_guest::{DriverConfig, DriverError, GuestContext, VfTarget};

/// A device a program can run on.
pub trait Endpoint: Verbs {
    /// The GID the program advertises to its peer (GID index 0, `ibv_query_gid`).
    fn local_gid(&mut self) -> VerbsResult<Gid>;

    /// Lets the device make progress for up to `wait` while the program waits for something
    /// else (its side channel).
    fn idle(&mut self, wait: Duration) -> io::Result<()>;

    /// RoCEv2 packets received so far, when this side can see them: a wait that sees packets
    /// arrive is making progress. `None` when the link is in another process.
    fn rx_packets(&self) -> Option<u64>;

    /// The link's counters for a run's report; `None` when the link is in another process.
    fn link_counters(&self) -> Option<LinkCounters>;

    /// Completion events (`ibv_get_cq_event`) of `cq`, armed with `req_notify_cq`: with
    /// `seen`, how many arrived since the caller's count `seen`, which it updates; without,
    /// the count to start from. (A VF behind a socket counts its events; a node's device queues
    /// them, and they are taken here: events of other CQs are dropped, so a program waits on
    /// one CQ's events at a time.)
    fn take_cq_events(&mut self, cq: CqHandle, seen: Option<&mut u64>) -> VerbsResult<u64>;
}

impl<L: Link> Endpoint for Node<L> {
    fn local_gid(&mut self) -> VerbsResult<Gid> {
        Ok(self.vf.gid())
    }

    fn idle(&mut self, wait: Duration) -> io::Result<()> {
        self.pump(wait)
    }

    fn rx_packets(&self) -> Option<u64> {
        Some(self.link.counters().rx_packets)
    }

    fn link_counters(&self) -> Option<LinkCounters> {
        Some(self.link.counters())
    }

    fn take_cq_events(&mut self, cq: CqHandle, seen: Option<&mut u64>) -> VerbsResult<u64> {
        if seen.is_none() {
            return Ok(0);
        }
        let mut n = 0;
        while let Some(c) = self.vf.poll_cq_event() {
            n += u64::from(c == cq);
        }
        Ok(n)
    }
}

impl Endpoint for GuestContext {
    fn local_gid(&mut self) -> VerbsResult<Gid> {
        // Asked of the device rather than taken from the start-up configuration: the serve
        // process decides the VF's address (`--udp-ip IP`: VF i is IP+i).
        self.query_gid(0)
    }

    fn idle(&mut self, wait: Duration) -> io::Result<()> {
        // The serve process runs the VF; there is nothing to pump. Sleep rather than spin so
        // the device process gets the CPU (these machines have two cores).
        std::thread::sleep(wait);
        Ok(())
    }

    fn rx_packets(&self) -> Option<u64> {
        None
    }

    fn link_counters(&self) -> Option<LinkCounters> {
        None
    }

    fn take_cq_events(&mut self, cq: CqHandle, seen: Option<&mut u64>) -> VerbsResult<u64> {
        let total = self.completion_events(cq)?;
        Ok(match seen {
            Some(s) => {
                let new = total.saturating_sub(*s);
                *s = total;
                new
            }
            None => total,
        })
    }
}

/// Where a run is when it calls its [`Hook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Iterations this side has completed. The hook is called each time the count advances,
    /// which may be by more than one (a bandwidth client's completions are moderated).
    /// `None` on a side that has no iterations of its own to count (an `ib_write_bw` or
    /// `ib_read_bw` server, whose peer does all the work): such a side calls the hook about
    /// every [`IDLE_TICK`] while it waits for the peer to finish.
    pub done: Option<u64>,
    /// Iterations of the whole run.
    pub total: u64,
}

/// How often a side without iterations of its own calls its hook while it waits.
pub const IDLE_TICK: Duration = Duration::from_millis(10);

/// Called between iterations of a data phase with the device the run is on. An error ends the
/// run with that message. The device is not in the middle of anything the program did: every
/// work request it posted is either complete or still queued on the device, so a hook may
/// stop, move and resume the VF (a live migration) and the run carries on.
///
/// A hook that live-migrates the VF while a ping-pong runs: pre-copy from iteration 100, a
/// round every 100 iterations, the switch-over at 500 (the peer retransmits across the
/// blackout). On the UDP fabric the VF's address must follow it to the destination
/// (docs/migration.md, "UDP fabrics"); `vhca pingpong/perf --vf S --migrate-to D --migrate-at N`
/// is this hook, with a report (`vhca::migration::vf_mid_run`).
///
/// ```no_run
/// use std::net::SocketAddr;
/// use vhca::interop::endpoint::{connect_vf, HookError, Progress};
/// use vhca_guest::migrate::Migration;
/// use vhca_guest::GuestContext;
///
/// let mut ctx = connect_vf("/run/src/vf0.sock".as_ref(), 32 << 20).unwrap();
/// let mut mig: Option<Migration> = None;
/// let mut hook = |c: &mut GuestContext, p: Progress| -> Result<(), HookError> {
///     match p.done {
///         Some(100) => mig = Some(Migration::begin(c.driver_mut(), "/run/dst/vf0.sock")
///             .map_err(|e| e.to_string())?),
///         Some(500) => {
///             let m = mig.take().ok_or("not begun")?;
///             let timeline = m.finish(c.driver_mut()).map_err(|e| e.to_string())?;
///             eprintln!("{timeline}");
///         }
///         Some(n) if n % 100 == 0 => {
///             if let Some(m) = mig.as_mut() {
///                 m.round(c.driver()).map_err(|e| e.to_string())?;
///             }
///         }
///         _ => {}
///     }
///     Ok(())
/// };
/// let server: SocketAddr = "10.77.0.2:18515".parse().unwrap();
/// let o = vhca::interop::pingpong::Options { iters: 1000, ..Default::default() };
/// vhca::interop::pingpong::client_on(&mut ctx, server, &o, &mut hook).unwrap();
/// ```
pub type Hook<'a, V> = &'a mut dyn FnMut(&mut V, Progress) -> Result<(), HookError>;

/// Why a [`Hook`] ended the run.
#[derive(Debug, Error)]
pub enum HookError {
    /// The live migration the hook drives failed (`--migrate-to`; the error is the
    /// migration module's, which builds on this one, hence boxed).
    #[error(transparent)]
    Migration(Box<dyn std::error::Error + Send + Sync>),
    /// Another hook's reason (a test's, a program's).
    #[error("{0}")]
    Other(String),
}

impl From<String> for HookError {
    fn from(s: String) -> HookError {
        HookError::Other(s)
    }
}

impl From<&str> for HookError {
    fn from(s: &str) -> HookError {
        HookError::Other(s.into())
    }
}

/// A hook that does nothing.
pub fn no_hook<V>(_: &mut V, _: Progress) -> Result<(), HookError> {
    Ok(())
}

/// A starting PSN for a QP of this side: the tools draw `lrand48()`; any 24-bit value that
/// differs run to run (and between two sides started at once: hence the GID) will do.
pub fn random_psn(gid: Gid) -> vhca_device::Psn {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let g = u64::from_le_bytes(gid.0[8..].try_into().unwrap_or([0; 8]));
    vhca_device::Psn::new((t ^ (t >> 24) ^ (t >> 48) ^ g ^ (g >> 32)) as u32)
}

/// Opens the VF behind a vhost-user socket (a `vhca serve` VF) with `mem_bytes` of guest RAM
/// (rounded up to whole MiB).
pub fn connect_vf(socket: &Path, mem_bytes: u64) -> Result<GuestContext, DriverError> {
    open_vf(&VfTarget::Socket(socket.to_owned()), mem_bytes)
}

/// Opens a VF, behind a vhost-user socket or as a virtio-pci function of this guest, with
/// `mem_bytes` of memory for its rings and buffers (whole MiB over a socket; whole 2 MiB
/// hugepages over PCI).
pub fn open_vf(vf: &VfTarget, mem_bytes: u64) -> Result<GuestContext, DriverError> {
    let cfg = DriverConfig {
        mem_size: mem_bytes.next_multiple_of(1 << 20),
        ..DriverConfig::default()
    };
    vf.open(&cfg)
}
