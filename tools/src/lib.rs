//! The `vhca` command line's library: the simulator, the demo and the benchmarks, so tests can
//! drive them directly.

pub mod bench;
pub mod demo;
pub mod pingpong;
pub mod sim;
pub mod udp_bench;
