//! vhca-fabric: how packets leave a VF. The bytes they become are `vhca-wire`'s job; this
//! crate moves them, in virtual time between VFs of one process or in real time over the
//! host's network.
//!
//! In-process, virtual time:
//! * [`switch`]: the switch that forwards packets between VF ports by destination GID, with
//!   seeded faults ([`faults`]) and counters;
//! * [`world`]: PFs with VFs, the switch and one virtual clock, pumped until nothing moves;
//! * [`context`]: one VF of a shared world behind the `Verbs` trait, as a program sees it;
//! * [`conn`]: QP setup between VFs of a world (RESET → INIT → RTR → RTS), as verbs programs
//!   do it.
//!
//! Real network, wall clock:
//! * [`link`]: what a node needs from the network, a port that sends and receives batches
//!   of device packets;
//! * [`udp`]: that port as a kernel UDP socket on port 4791 (`sendmmsg`/`recvmmsg`);
//! * [`tap`]: that port as a TAP device, the VF a host of its own with MAC, IPv4 address and
//!   ARP;
//! * [`node`]: one VF on a link, driven by a monotonic clock;
//! * [`announce`]: a gratuitous ARP on a real interface after a migration.
//!
//! Both: [`capture`] writes `--pcap` files of what crosses any of these fabrics.

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
pub mod world;

pub use context::{Context, SharedWorld};
pub use faults::{FaultConfig, FaultLevel};
pub use link::{Link, LinkCounters};
pub use switch::Switch;
pub use world::{VfAddr, World, WorldConfig};
