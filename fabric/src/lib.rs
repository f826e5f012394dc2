//! vhca-fabric: how packets leave a VF.
//!
//! For now the in-process [`switch::Switch`] (routing by GID, seeded faults) and the
//! [`world::World`] that pumps VFs through it in virtual time, and [`wire`]: the RoCEv2 byte
//! format (Ethernet, ARP, IPv4/IPv6, UDP, BTH and the IB extended headers, ICRC, pcap).

pub mod announce;
pub mod capture;
pub mod conn;
pub mod context;
pub mod faults;
pub mod link;
pub mod node;
pub mod switch;
pub mod tap;
pub mod udp;
pub mod wire;
pub mod world;

pub use context::{Context, SharedWorld};
pub use faults::{FaultConfig, FaultLevel};
pub use link::{Link, LinkCounters};
pub use switch::Switch;
pub use world::{VfAddr, World, WorldConfig};
