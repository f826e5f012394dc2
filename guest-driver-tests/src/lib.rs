//! vhca-guest: the guest side of a vhca VF.
//!
//! - [`programs`]: verbs programs written once against `vhca_device::Verbs`;
//! - [`driver`]: a guest driver that plays QEMU and the guest at once — guest memory in a
//!   memfd, a vhost-user frontend, three split virtqueues — and [`context::GuestContext`], the
//!   `Verbs` implementation on top of it, so the same programs run on a VF socket;
//! - [`pci`]: the same driver inside a real VM, over the virtio-pci function a VMM presents
//!   (guest user space, hugepage DMA memory, polling), so the programs run in a guest too.

pub mod bench;
pub mod context;
pub mod driver;
pub mod error;
pub mod many;
pub mod memory;
pub mod migrate;
pub mod pci;
pub mod programs;
pub mod serve;
pub mod target;
pub mod virtq;
pub mod watchdog;

pub use context::{GuestContext, PollMode};
pub use driver::{DriverConfig, GuestDriver};
pub use error::{DriverError, DriverResult};
pub use target::VfTarget;
