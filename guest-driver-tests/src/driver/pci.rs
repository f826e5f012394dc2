//! The start of a driver inside a guest: the VF's virtio-pci function driven from user space
//! (crate::pci has the pieces; docs/qemu.md §9).

use super::{DriverConfig, GuestDriver, Transport};
use crate::error::{DriverError, DriverResult};
use crate::pci::virtio::{status, VirtioPci};
use crate::pci::{
    PciAddress, PciFunction, PciTransport, CARRIER_VIRTIO_ID, RESET_TIMEOUT, VF_VIRTIO_IDS,
    VIRTIO_PCI_MODERN_BASE, VIRTIO_VENDOR,
};
use crate::virtq::Virtqueue;
use vhca_vhost::protocol::{features, CTRL_QUEUE, DOORBELL_QUEUE, EVENT_QUEUE, NUM_QUEUES};

impl GuestDriver {
    /// Opens the VF at PCI address `address` inside a guest and starts it as a virtio 1.x
    /// driver does (§3.1.1): reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, the three
    /// queues, DRIVER_OK. `cfg.mem_size` bytes of hugepage memory hold the rings, the command
    /// areas and the application's buffers. A function that presents the carrier's ID is
    /// driven in carrier mode whatever `cfg.carrier` says.
    pub fn open_pci(address: PciAddress, cfg: &DriverConfig) -> DriverResult<GuestDriver> {
        let function = PciFunction::open(address)?;
        let (vendor, device) = function.ids()?;
        let virtio_id = device.wrapping_sub(VIRTIO_PCI_MODERN_BASE);
        if vendor != VIRTIO_VENDOR || !VF_VIRTIO_IDS.contains(&virtio_id) {
            return Err(DriverError::Pci(format!(
                "{address} is {vendor:04x}:{device:04x}, not a vhca VF (1af4 with virtio ID 42, 38 or 26)"
            )));
        }
        let carrier = cfg.carrier || virtio_id == CARRIER_VIRTIO_ID;
        function.claim()?;
        function.enable()?;
        let regs = VirtioPci::map(&function)?;
        let mut ram = crate::pci::dma::hugepage_ram(cfg.mem_size)?;

        regs.reset(RESET_TIMEOUT)?;
        regs.set_status(status::ACKNOWLEDGE)?;
        regs.set_status(status::ACKNOWLEDGE | status::DRIVER)?;
        let offered = regs.device_features()?;
        if offered & features::VERSION_1 == 0 {
            return Err(DriverError::MissingFeature("VIRTIO_F_VERSION_1"));
        }
        // No EVENT_IDX: the driver polls and asks for no interrupts at all.
        let mut ack = features::VERSION_1;
        if !carrier {
            ack |= offered & (features::RC | features::UD | features::SRQ);
        }
        regs.set_driver_features(ack)?;
        let st = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        regs.set_status(st)?;
        if regs.status()? & status::FEATURES_OK == 0 {
            return Err(DriverError::Pci(
                "the device refused the features (FEATURES_OK cleared)".into(),
            ));
        }
        let nq = regs.num_queues()?;
        if (nq as usize) < NUM_QUEUES {
            return Err(DriverError::MissingFeature("three virtqueues"));
        }
        let mut queues = Vec::with_capacity(NUM_QUEUES);
        for (index, want) in [
            (CTRL_QUEUE, cfg.ctrl_queue_size),
            (DOORBELL_QUEUE, cfg.doorbell_queue_size),
            (EVENT_QUEUE, cfg.event_queue_size),
        ] {
            let max = regs.select_queue(index as u16)?;
            if max == 0 {
                return Err(DriverError::Pci(format!("queue {index} does not exist")));
            }
            // The largest power of two within both the wish and the device's maximum.
            let size = 1u16 << (want.min(max).max(1).ilog2());
            let mut q = Virtqueue::new(&mut ram, index, size)?;
            let n = regs.set_up_queue(index as u16, size, q.addresses())?;
            q.use_pci(&ram, n)?;
            regs.enable_queue(index as u16)?;
            queues.push(q);
        }
        regs.set_status(st | status::DRIVER_OK)?;
        let s = regs.status()?;
        if s & (status::NEEDS_RESET | status::FAILED) != 0 || s & status::DRIVER_OK == 0 {
            return Err(DriverError::Pci(format!(
                "the device did not start (status {s:#04x})"
            )));
        }
        let queues: [Virtqueue; 3] = queues
            .try_into()
            .map_err(|_| DriverError::Config("three queues"))?;
        tracing::info!(pci = %address, virtio_id, carrier, features = format_args!("{ack:#x}"), "VF started over virtio-pci");
        let transport = Transport::Pci(PciTransport {
            function,
            regs,
            virtio_id,
        });
        let mut d = GuestDriver::assemble(transport, ram, queues, cfg.command_timeout)?;
        d.acked_features = ack;
        d.post_event_buffers_and_configure(None)?;
        Ok(d)
    }
}
