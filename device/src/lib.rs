//! vhca-device: the virtual HCA, sans-I/O.
//!
//! A [`pf::Pf`] holds [`vf::Vf`]s; each VF is a complete software HCA (PD, MR, CQ, SRQ, AH, RC
//! and UD QPs) that never reads a clock, opens a socket, spawns a thread or draws an unseeded
//! random number. Time comes in as [`types::Nanos`], packets go in and out as
//! [`packet::Packet`] values, guest memory is reached through [`memory::GuestMemory`].

pub mod api;
pub mod checkpoint;
pub mod cq;
pub mod error;
pub mod fast_reg;
pub mod memory;
pub mod mr;
pub mod mw;
pub mod packet;
pub mod pf;
pub mod qp;
pub mod resources;
pub mod sgl;
pub mod srq;
pub mod table;
pub mod types;
pub mod verbs;
pub mod vf;

pub use api::Verbs;
pub use error::{VerbsError, VerbsResult};
pub use memory::{GuestMemory, SharedMemory, VecMemory};
pub use packet::Packet;
pub use pf::Pf;
pub use types::*;
pub use verbs::*;
pub use vf::{Vf, VfIdentity};
