//! vhca-vhost: a VF as a vhost-user device.
//!
//! - [`protocol`]: the guest-visible device protocol (docs/device-protocol.md), spoken by the
//!   backend here and by the guest driver.
//! - [`memory`]: the frontend's guest memory through vm-memory, as the device's `GuestMemory`.
//! - [`port`]: one VF with its rings, doorbells, CQ rings and event backlog (no I/O).
//! - [`backend`]: rust-vmm's `VhostUserBackend` over a port: controlq, doorbellq, eventq.
//! - [`pf`], [`fabric`], [`serve`], [`ctl`]: `vhca serve`, one process for a PF's VFs, and its
//!   control socket (docs/serve.md).

pub mod backend;
pub mod ctl;
pub mod device_state;
pub mod doorbellq;
pub mod fabric;
pub mod memory;
pub mod pf;
pub mod port;
pub mod protocol;
pub mod serve;
pub mod shared;
pub mod vring;
