//! vhca-vhost: a VF as a vhost-user device.
//!
//! For now the guest-visible protocol (docs/device-protocol.md) that both the VF backend and
//! the guest driver speak; the rust-vmm backend comes next.

pub mod protocol;
