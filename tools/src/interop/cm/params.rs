//! What the connection manager's callers hand it and get back: its settings, the parameters
//! of `connect` and `accept`, its events and outgoing MADs, the REJ reasons it uses and the
//! CM's timeout encoding. Separate from `conn.rs`, which is the state machine.

use super::mad::{self, Rep, Req};
use vhca_device::Gid;

/// REJ reasons (IBTA table 109) this CM sends or names.
pub mod reason {
    pub const NO_RESOURCES: u16 = 3;
    pub const INVALID_SERVICE_ID: u16 = 8;
    pub const INVALID_TRANSPORT_TYPE: u16 = 16;
    pub const TIMEOUT: u16 = 1;
    pub const CONSUMER_DEFINED: u16 = 28;
}

/// 4.096 µs × 2^t (the CM's timeout encoding), in nanoseconds.
pub fn cm_timeout_ns(t: u8) -> u64 {
    4096u64 << t.min(31)
}

/// This CM's own settings.
#[derive(Debug, Clone, Copy)]
pub struct CmConfig {
    /// The CA GUID put in REQ and REP (the VF's node GUID).
    pub ca_guid: u64,
    /// The first local communication ID; the next ones count up. A fresh value per process
    /// keeps a peer that remembers an old connection from taking a new one for it.
    pub first_comm_id: u32,
    /// The high 32 bits of the transaction IDs this CM makes.
    pub tid_high: u32,
    /// The response-timeout exponent this CM advertises (REQ's both, and what it waits).
    pub response_timeout: u8,
    /// How often a REQ, REP or DREQ is sent again before giving up.
    pub max_retries: u8,
    /// Resends happen at least this often, whatever the peer advertised (ns).
    pub max_resend_interval_ns: u64,
    /// At most this many connections are remembered.
    pub max_conns: usize,
}

impl CmConfig {
    pub fn new(ca_guid: u64, first_comm_id: u32) -> CmConfig {
        CmConfig {
            ca_guid,
            first_comm_id,
            tid_high: first_comm_id.rotate_left(16),
            response_timeout: 16,
            max_retries: 15,
            max_resend_interval_ns: 500_000_000,
            max_conns: 256,
        }
    }
}

/// What `connect` needs: the local QP and the path.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub peer: Gid,
    pub local_gid: Gid,
    pub service_id: u64,
    pub qpn: u32,
    /// The PSN this side expects to receive first (the peer sends from it).
    pub starting_psn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    /// IB MTU enum (3 = 1024).
    pub path_mtu: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    /// ACK timeout exponent of the path (the peer's QP timeout).
    pub local_ack_timeout: u8,
    /// Private data (for rdma_cm: the 36-byte header, then the application's).
    pub private_data: Vec<u8>,
}

/// What `accept` needs: the local QP.
#[derive(Debug, Clone)]
pub struct AcceptParams {
    pub qpn: u32,
    /// The PSN this side expects to receive first (the peer sends from it).
    pub starting_psn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub rnr_retry_count: u8,
    pub private_data: Vec<u8>,
}

/// A connection's handle: its local communication ID.
pub type ConnId = u32;

/// What the application must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A REQ for a listened service: bring a QP to RTR, then `accept` (or `reject`).
    Request {
        id: ConnId,
        peer: Gid,
        req: Box<Req>,
    },
    /// The REP to our REQ: bring the QP to RTR and RTS, then `rtu`.
    Reply { id: ConnId, rep: Box<Rep> },
    /// The RTU to our REP: the connection is up.
    Established { id: ConnId },
    /// The peer refused (or gave up on) the connection.
    Rejected { id: ConnId, reason: u16 },
    /// The connection is down (DREQ received, or DREP to ours).
    Disconnected { id: ConnId },
    /// A REQ, REP or DREQ went unanswered through every retry.
    TimedOut { id: ConnId },
}

/// A MAD to send to the peer's QP1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub dest: Gid,
    pub mad: [u8; mad::MAD_LEN],
}
