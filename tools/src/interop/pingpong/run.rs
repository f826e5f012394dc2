//! Running a ping-pong side on a device: an in-process [`Node`] on a UDP socket or a TAP
//! device (`--ip`, [`server`], [`client`]), or a VF of a running `vhca serve` through the guest
//! driver (`--vf`, [`vf_server`], [`vf_client`]). Separate from the exchange and the data
//! phase, which run on any [`Endpoint`](crate::interop::endpoint::Endpoint).

use super::{client_on, server_on, Options, PingError, Report};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use vhca_fabric::capture::Capture;
use vhca_fabric::node::Node;
use vhca_fabric::Link;
use vhca_guest::{GuestContext, VfTarget};

use crate::interop::endpoint::Hook;

const MEM_BYTES: usize = 64 << 20;

/// The node `o` asks for: on a TAP device or a UDP socket, capturing when asked.
fn with_node<T>(ip: Ipv4Addr, o: &Options, f: impl RunOn<T>) -> Result<T, PingError> {
    let cap = match &o.pcap {
        Some(p) => Some(Capture::create(p)?),
        None => None,
    };
    match &o.tap {
        Some(name) => {
            let mut node = Node::tap(ip, name, MEM_BYTES)?;
            if let Some(c) = cap {
                node.link.set_capture(c);
            }
            f.run(node)
        }
        None => {
            let mut node = Node::new(ip, MEM_BYTES)?;
            if let Some(c) = cap {
                node.link.set_capture(c);
            }
            f.run(node)
        }
    }
}

/// A side's run, for any link (a generic closure, which Rust lacks).
trait RunOn<T> {
    fn run<L: Link>(self, node: Node<L>) -> Result<T, PingError>;
}

struct Server<'a> {
    o: &'a Options,
}

struct Client<'a> {
    server: Ipv4Addr,
    o: &'a Options,
}

impl RunOn<Report> for Server<'_> {
    fn run<L: Link>(self, mut node: Node<L>) -> Result<Report, PingError> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, self.o.port))?;
        server_on(
            &mut node,
            listener,
            self.o,
            &mut crate::interop::endpoint::no_hook,
        )
    }
}

impl RunOn<Report> for Client<'_> {
    fn run<L: Link>(self, mut node: Node<L>) -> Result<Report, PingError> {
        let server = SocketAddr::from((self.server, self.o.port));
        client_on(
            &mut node,
            server,
            self.o,
            &mut crate::interop::endpoint::no_hook,
        )
    }
}

/// Server side: waits for one client on TCP `o.port`.
pub fn server(ip: Ipv4Addr, o: &Options) -> Result<Report, PingError> {
    with_node(ip, o, Server { o })
}

/// Client side: connects to `server_addr:o.port` (TCP; the RoCEv2 peer is the GID the server
/// sends, which on a TAP device need not be an address of the kernel's).
pub fn client(ip: Ipv4Addr, server_addr: Ipv4Addr, o: &Options) -> Result<Report, PingError> {
    with_node(
        ip,
        o,
        Client {
            server: server_addr,
            o,
        },
    )
}

/// Guest RAM a VF run needs: the buffer and the rings, with room to spare (more for `--srq`'s
/// QPs).
fn vf_mem(o: &Options) -> u64 {
    let qps = if o.srq { o.num_qp as u64 } else { 1 };
    (16 << 20) + (qps << 16) + 2 * o.size as u64
}

/// Opens the VF for a run with `o`; `o.tap` and `o.pcap` do not apply (the serve process owns
/// the link), and are refused rather than ignored.
fn open_vf(vf: &VfTarget, o: &Options) -> Result<GuestContext, PingError> {
    if o.tap.is_some() || o.pcap.is_some() {
        return Err(PingError::Options(
            "a TAP device or a capture is the serve process's, not a VF user's",
        ));
    }
    Ok(crate::interop::endpoint::open_vf(vf, vf_mem(o))?)
}

/// [`server`] on the VF `vf` (a `vhca serve` VF's socket, or a VF's PCI function in a guest):
/// its GID is the one the device reports.
pub fn vf_server(vf: &VfTarget, o: &Options) -> Result<Report, PingError> {
    vf_server_with(vf, o, &mut crate::interop::endpoint::no_hook)
}

/// [`vf_server`] with a hook between iterations (`--migrate-to`: `vhca::migration::vf_mid_run`).
pub fn vf_server_with(
    vf: &VfTarget,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, PingError> {
    let mut ctx = open_vf(vf, o)?;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, o.port))?;
    server_on(&mut ctx, listener, o, hook)
}

/// [`client`] on the VF `vf`.
pub fn vf_client(vf: &VfTarget, server_addr: Ipv4Addr, o: &Options) -> Result<Report, PingError> {
    vf_client_with(vf, server_addr, o, &mut crate::interop::endpoint::no_hook)
}

/// [`vf_client`] with a hook between iterations (`--migrate-to`: `vhca::migration::vf_mid_run`).
pub fn vf_client_with(
    vf: &VfTarget,
    server_addr: Ipv4Addr,
    o: &Options,
    hook: Hook<'_, GuestContext>,
) -> Result<Report, PingError> {
    let mut ctx = open_vf(vf, o)?;
    client_on(&mut ctx, SocketAddr::from((server_addr, o.port)), o, hook)
}
