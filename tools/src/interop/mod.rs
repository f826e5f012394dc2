//! Programs that interoperate with real RDMA tools over RoCEv2: [`pingpong`]
//! (`ibv_rc_pingpong`/`ibv_ud_pingpong`) and [`perf`] (perftest), both running on any
//! [`endpoint::Endpoint`] (an in-process VF with its own socket, or a VF of a `vhca serve`).

pub mod endpoint;
pub mod perf;
pub mod pingpong;
