//! What can go wrong between the guest driver and a VF, below the verbs.

use thiserror::Error;
use vhca_vhost::protocol::command::Status;

/// A guest-driver failure: the vhost-user session, guest memory or a virtqueue.
#[derive(Debug, Error)]
pub enum DriverError {
    #[error("invalid driver configuration: {0}")]
    Config(&'static str),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("guest memory exhausted: no free range of {0} bytes")]
    OutOfMemory(u64),
    #[error("{len} bytes at guest address {addr:#x} are outside guest memory")]
    OutsideMemory { addr: u64, len: u64 },
    #[error("vhost-user {step}: {source}")]
    VhostUser {
        step: &'static str,
        #[source]
        source: vhost::Error,
    },
    #[error("PCI: {0}")]
    Pci(String),
    #[error("{0} needs a vhost-user transport (this driver runs the VF over virtio-pci)")]
    NotVhostUser(&'static str),
    #[error("the device does not offer {0}")]
    MissingFeature(&'static str),
    #[error("eventfd or poll: {0}")]
    Io(#[from] std::io::Error),
    #[error("virtqueue {queue} is full")]
    QueueFull { queue: usize },
    #[error("virtqueue {queue}: the device did not return a buffer within {ms} ms")]
    Timeout { queue: usize, ms: u128 },
    #[error("virtqueue {queue}: the device returned descriptor {head}, which was not in flight")]
    BadUsed { queue: usize, head: u32 },
    #[error("the response of command {opcode} is too short ({len} bytes)")]
    ShortResponse { opcode: u16, len: u32 },
    #[error("command {opcode} failed with status {status:?}")]
    Status { opcode: u16, status: Status },
    #[error("undecodable {what} from the device: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: vhca_vhost::protocol::DecodeError,
    },
}

pub type DriverResult<T> = Result<T, DriverError>;
