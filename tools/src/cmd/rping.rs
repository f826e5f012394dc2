//! `vhca rping`.

use super::CmdResult;
use std::net::Ipv4Addr;
use std::time::Duration;
use vhca::interop::endpoint::open_vf;
use vhca::interop::rping::{self, Options, RpingError};
use vhca_device::Mtu;
use vhca_fabric::node::Node;
use vhca_guest::VfTarget;

#[derive(clap::Args)]
pub struct Args {
    /// Server role: accept one connection and answer pings until the client disconnects.
    #[arg(
        short = 's',
        long,
        conflicts_with = "client",
        required_unless_present = "client"
    )]
    server: bool,
    /// Client role: connect to -a and ping -C times.
    #[arg(short = 'c', long, requires = "addr")]
    client: bool,
    /// The server's address (client).
    #[arg(short = 'a', long)]
    addr: Option<Ipv4Addr>,
    /// Port (the rdma_cm service ID is 0x01060000 + port).
    #[arg(short = 'p', long, default_value_t = rping::DEFAULT_PORT)]
    port: u16,
    /// Pings (client).
    #[arg(short = 'C', long, default_value_t = 10)]
    count: u64,
    /// Buffer size in bytes (26–65535; both sides the same, as with rping).
    #[arg(short = 'S', long, default_value_t = 64)]
    size: u32,
    /// Print the ping data.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Check the echoed data (client).
    #[arg(short = 'V', long)]
    validate: bool,
    /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
    #[arg(long, required_unless_present = "vf")]
    ip: Option<Ipv4Addr>,
    /// Run on this VF through the guest driver (a `vhca serve` VF's socket, or pci:ADDR).
    #[arg(long, value_name = "SOCKET|pci:ADDR", conflicts_with = "ip")]
    vf: Option<VfTarget>,
    /// Path MTU in bytes (the server takes the smaller of this and the client's).
    #[arg(short = 'm', long, default_value = "1024", value_parser = super::args::mtu)]
    mtu: Mtu,
    /// RC ACK timeout exponent: 4.096 µs × 2^T.
    #[arg(short = 'u', long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(1..=31))]
    qp_timeout: u8,
    /// Give up when one wait (a CM answer, a completion) takes longer than this many seconds.
    #[arg(long, default_value_t = 30)]
    stall_secs: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

const MEM_BYTES: usize = 16 << 20;

impl Args {
    pub fn run(self) -> CmdResult {
        let o = Options {
            port: self.port,
            size: self.size,
            count: self.count,
            verbose: self.verbose,
            validate: self.validate,
            mtu: self.mtu,
            qp_timeout: self.qp_timeout,
            stall: Duration::from_secs(self.stall_secs),
        };
        if self.server {
            // The line scripts wait for before starting the client.
            eprintln!("rping server: listening on port {} (rdma_cm)", o.port);
        }
        let server = if self.client { self.addr } else { None };
        let rep = match (self.vf, self.ip) {
            (Some(vf), _) => {
                let mut ctx = open_vf(&vf, MEM_BYTES as u64).map_err(RpingError::from_driver)?;
                run(&mut ctx, server, &o)
            }
            (None, Some(ip)) => {
                let mut node = Node::new(ip, MEM_BYTES).map_err(RpingError::Io)?;
                run(&mut node, server, &o)
            }
            (None, None) => unreachable!("clap requires --ip without --vf"),
        }?;
        if self.json {
            super::print_json_pretty(&rep)
        } else {
            for l in rep.lines() {
                println!("{l}");
            }
            Ok(())
        }
    }
}

fn run<E: vhca::interop::endpoint::Endpoint>(
    dev: &mut E,
    server: Option<Ipv4Addr>,
    o: &Options,
) -> Result<rping::Report, RpingError> {
    match server {
        Some(a) => rping::client_on(dev, a, o),
        None => rping::server_on(dev, o),
    }
}
