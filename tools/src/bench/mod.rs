//! `vhca bench`: the benchmarks, one module per mode.
//!
//! * [`inproc`]: in-process bandwidth, message rate and latency beside memcpy (`vhca bench`).
//! * [`vhost`]: the same program through vhost-user beside in-process (`vhca bench vhost`).
//! * [`udp`]: RoCEv2 over the UDP bridge beside a plain UDP blast (`vhca bench udp`).

pub mod inproc;
pub mod udp;
pub mod vhost;
