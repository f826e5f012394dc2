//! The guest driver inside a real VM: a VF that a VMM (QEMU) presents as a virtio-pci function,
//! driven from guest user space with no kernel driver of vhca's own.
//!
//! - [`function`]: the PCI function through sysfs (identity, config space, binding to
//!   `uio_pci_generic`, memory decoding and bus mastering, BARs mapped from `resourceN`);
//! - [`virtio`]: the virtio 1.x PCI transport (capabilities, common configuration, the
//!   initialization sequence, queue notification addresses);
//! - [`dma`]: memory the device can reach (hugepages, guest-physical addresses from
//!   `/proc/self/pagemap`).
//!
//! `GuestDriver::open_pci` (in the driver module) puts them together: the same three virtqueues and the same
//! device protocol as over vhost-user, so [`crate::GuestContext`] and every program written
//! against `Verbs` run unchanged in the guest. Interrupts do not reach user space (no MSI-X
//! through uio), so the driver polls; it acks no device-specific feature bit in carrier mode
//! and reads the device's attributes with QUERY_DEVICE, never from the config window, which
//! a carrier device (QEMU's `vhost-user-fs-pci`) fills with another device's configuration.

pub mod dma;
pub mod function;
pub mod virtio;

use crate::error::DriverResult;
pub use function::{PciAddress, PciFunction};
use std::time::Duration;
use virtio::VirtioPci;

/// PCI vendor ID of virtio devices.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern virtio-pci device IDs are 0x1040 + the virtio device ID.
pub const VIRTIO_PCI_MODERN_BASE: u16 = 0x1040;
/// The virtio device IDs a VF may appear as: 42 (RDMA, the device's own), 38 (stock QEMU's
/// `vhost-user-test-device-pci` with `virtio-id=38`, while QEMU lacks a name for 42) and 26
/// (the `vhost-user-fs-pci` carrier that QEMU migrates).
pub const VF_VIRTIO_IDS: [u16; 3] = [42, 38, 26];
/// The carrier's virtio ID (virtio-fs).
pub const CARRIER_VIRTIO_ID: u16 = 26;

/// How long the device may take to reset.
pub(crate) const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// The virtio-pci side of a [`GuestDriver`]: the function and its registers. Dropping it
/// resets the device, so the VMM stops the VF's rings and the next driver starts afresh.
pub struct PciTransport {
    pub(crate) function: PciFunction,
    pub(crate) regs: VirtioPci,
    pub(crate) virtio_id: u16,
}

impl PciTransport {
    pub fn function(&self) -> &PciFunction {
        &self.function
    }

    /// Resets the device (status 0).
    pub fn reset(&self) -> DriverResult<()> {
        self.regs.reset(RESET_TIMEOUT)
    }

    /// The virtio device ID the function presents.
    pub fn virtio_id(&self) -> u16 {
        self.virtio_id
    }
}

impl Drop for PciTransport {
    fn drop(&mut self) {
        if let Err(e) = self.regs.reset(RESET_TIMEOUT) {
            tracing::warn!(pci = %self.function.address(), error = %e, "resetting the device failed");
        }
    }
}
