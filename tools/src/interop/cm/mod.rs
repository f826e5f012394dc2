//! The InfiniBand communication manager as rdma_cm uses it over RoCE: CM MADs on QP1
//! ([`mad`]), the IP addressing rdma_cm adds to a REQ ([`cma`]), the connection state machine
//! with its resends and duplicate handling ([`conn`], sans-I/O), and that machine on a device's
//! GSI QP ([`port`]). docs/rdma-cm.md describes the formats and the states.

pub mod cma;
pub mod conn;
pub mod mad;
pub mod params;
pub mod port;

pub use conn::{AcceptParams, Cm, CmConfig, ConnectParams, Event};
pub use port::CmPort;
