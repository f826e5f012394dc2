//! vhca-fabric: how packets leave a VF.
//!
//! For now the in-process [`switch::Switch`] (routing by GID, seeded faults) and the
//! [`world::World`] that pumps VFs through it in virtual time. RoCEv2 over UDP and TAP come
//! with their issue.

pub mod conn;
pub mod context;
pub mod faults;
pub mod switch;
pub mod world;

pub use context::{Context, SharedWorld};
pub use faults::{FaultConfig, FaultLevel};
pub use switch::Switch;
pub use world::{VfAddr, World, WorldConfig};
