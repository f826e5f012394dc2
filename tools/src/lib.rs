//! The `vhca` command line's library: the simulator, the demo and the benchmarks, so tests can
//! drive them directly.

pub mod bench;
pub mod demo;
pub mod endpoint;
pub mod guest_pair;
pub mod migrate;
pub mod migrate_attached;
pub mod perf;
pub mod pingpong;
pub mod sim;
pub mod state;
pub mod udp_bench;
pub mod vf_migrate;
pub mod vhost_bench;
