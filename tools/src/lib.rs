//! The `vhca` command line's library: what every command runs, so tests can drive it directly
//! (the binary, src/main.rs and src/cmd/, is only the command line over it).
//!
//! * [`demo`], [`sim`]: the embedded demo and the deterministic simulator (in-process fabric).
//! * [`interop`]: programs that speak to real RDMA tools (`ibv_*_pingpong`, perftest) over
//!   RoCEv2, on an in-process VF or on a VF of a running `vhca serve`.
//! * [`bench`]: the benchmarks (in-process, through vhost-user, over the UDP bridge).
//! * [`migration`]: the three live migrations the tools drive over vhost-user.
//! * [`guest_pair`]: the end-to-end check of two VF sockets.
//! * [`state`]: checkpoint files.

pub mod bench;
pub mod demo;
pub mod guest_pair;
pub mod interop;
pub mod migration;
pub mod sim;
pub mod state;
