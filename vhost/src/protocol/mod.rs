//! The guest-visible device protocol (docs/device-protocol.md), as Rust types with explicit
//! little-endian encodings. Both sides use it: the VF backend decodes commands and WQEs and
//! encodes CQEs and events; the guest driver does the reverse.

pub mod codec;
pub mod command;
pub mod config;
pub mod doorbell;
pub mod ring;

pub use codec::DecodeError;

/// virtio device ID of an RDMA device (reserved in the virtio spec, no chapter yet).
pub const VIRTIO_ID_RDMA: u32 = 42;

/// Version of this protocol; reported in the config space.
pub const PROTOCOL_VERSION: u32 = 1;

/// Virtqueue indices.
pub const CTRL_QUEUE: usize = 0;
pub const DOORBELL_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
pub const NUM_QUEUES: usize = 3;
/// Largest virtqueue the device accepts.
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// Device feature bits (virtio feature bits 0–23 are device specific).
///
/// The device-specific bits only advertise: the device gates no behaviour on them, and a
/// driver that acks none of them (a frontend that filters them, e.g. stock QEMU's
/// `vhost-user-fs-pci` carrying a VF) gets the same device as one that acks all of them.
/// QUERY_DEVICE reports them too (`RdmaConfig::device_features`), so such a driver still
/// learns what the device offers (docs/device-protocol.md §3).
pub mod features {
    /// Reliable connected QPs. Not acked: RC QPs work all the same.
    pub const RC: u64 = 1 << 0;
    /// Unreliable datagram QPs. Not acked: UD QPs work all the same.
    pub const UD: u64 = 1 << 1;
    /// Shared receive queues. Not acked: SRQs work all the same.
    pub const SRQ: u64 = 1 << 2;
    /// The device keeps a dirty log of its writes and saves/loads its state (migration).
    /// Not acked: the same; dirty logging follows VHOST_F_LOG_ALL, the state transfer follows
    /// the DEVICE_STATE protocol feature, neither looks at this bit.
    pub const MIGRATION: u64 = 1 << 3;
    /// The device-specific bits the device offers (bits 0–23).
    pub const DEVICE_SPECIFIC: u64 = RC | UD | SRQ | MIGRATION;
    /// VIRTIO_RING_F_EVENT_IDX.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO_F_VERSION_1.
    pub const VERSION_1: u64 = 1 << 32;
    /// Everything the device offers.
    pub const DEVICE: u64 = DEVICE_SPECIFIC | EVENT_IDX | VERSION_1;
}
