//! vhca-vhost: a VF as a vhost-user device, and `vhca serve`, the process that serves a PF's
//! VFs (docs/serve.md).
//!
//! Modules, each using only those listed before it:
//! - [`protocol`]: the guest-visible device protocol (docs/device-protocol.md), spoken by the
//!   backend here and by the guest driver.
//! - [`memory`]: the frontend's guest memory through vm-memory, as the device's `GuestMemory`.
//! - [`guest_fd`]: reads and writes on descriptors the frontend gave us, never waiting.
//! - [`fabric`]: the [`fabric::Fabric`] trait between a process's VFs, the in-process switch
//!   and the UDP/TAP link fabrics.
//! - [`port`]: one VF with its rings, doorbells, CQ rings and event backlog (no I/O):
//!   `port::commands`, `port::doorbells`, `port::completions`, and [`port::state`], the port's
//!   part of a migration.
//! - [`device_state`]: the vhost-user device-state blob a migration carries (header, version,
//!   checksum around the port's state).
//! - [`pf`]: the PF's plain state, every VF's port, the fabric and the clock, with the sans-I/O
//!   steps over them (timers, moving packets, deadlines); no threads.
//! - [`vring`]: rust-vmm's vring type and what every queue does with it.
//! - [`doorbellq`]: doorbell buffers into port doorbells, for whichever thread drains them.
//! - [`shared`]: the process's shared state: the lock over [`pf::PfState`], the per-VF slots,
//!   the batch, the timer and network threads.
//! - [`backend`]: rust-vmm's `VhostUserBackend` for one VF: the frontend's messages here,
//!   `backend::queues` (controlq, doorbellq busy polling, eventq) and `backend::transfer`
//!   (the device-state transfer).
//! - [`ctl`]: the control socket (`vhca ctl`), server and client.
//! - [`serve`]: `vhca serve` itself: sockets, threads, signals.

pub mod backend;
pub mod ctl;
pub mod device_state;
pub mod doorbellq;
pub mod fabric;
pub mod guest_fd;
pub mod memory;
pub mod pf;
pub mod port;
pub mod protocol;
pub mod serve;
pub mod shared;
pub mod vring;
