//! Programs that interoperate with real RDMA tools over RoCEv2: [`pingpong`]
//! (`ibv_rc_pingpong`/`ibv_ud_pingpong`) and [`perf`] (perftest), and vhca's own two-process
//! check of every RC opcode and UD, [`opcodes`]; all run on any [`endpoint::Endpoint`] (an
//! in-process VF with its own socket, or a VF of a `vhca serve`) and talk over a TCP
//! [`side_channel`].

pub mod cm;
pub mod endpoint;
pub mod opcodes;
pub mod perf;
pub mod pingpong;
pub mod placement;
pub mod rping;
pub mod side_channel;
pub mod windows;
