//! `vhca opcodes`.

use super::mid_run::{print_run, MigrateArgs};
use super::CmdResult;
use std::net::Ipv4Addr;
use std::time::Duration;
use vhca::interop::opcodes;
use vhca_device::Mtu;
use vhca_guest::{GuestContext, VfTarget};

#[derive(clap::Args)]
pub struct Args {
    /// The server to connect to; without it, act as the server.
    server: Option<Ipv4Addr>,
    /// This side's IPv4 address: an in-process VF whose GID is ::ffff:IP, RoCEv2 from IP:4791.
    #[arg(long, required_unless_present = "vf")]
    ip: Option<Ipv4Addr>,
    /// Run on this VF through the guest driver: the vhost-user socket of a `vhca serve` VF,
    /// or (inside a guest) the PCI address of a VF's virtio-pci function, `pci:0000:00:03.0`.
    /// The VF's GID is the one its device reports.
    #[arg(long, value_name = "SOCKET|pci:ADDR", conflicts_with = "ip")]
    vf: Option<VfTarget>,
    /// TCP port of the side channel.
    #[arg(short = 'p', long, default_value_t = opcodes::DEFAULT_PORT)]
    port: u16,
    /// Iterations (the client's; the server takes the client's).
    #[arg(short = 'n', long, default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=opcodes::MAX_ITERS))]
    iters: u64,
    /// Bytes of every RC message, up to 1 MiB (a server accepts clients up to its own size).
    #[arg(short = 's', long, default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=opcodes::MAX_SIZE as i64))]
    size: u32,
    /// This side's path MTU in bytes: 256, 512, 1024, 2048 or 4096 (the smaller side's wins).
    #[arg(short = 'm', long, default_value = "1024", value_parser = super::args::mtu)]
    mtu: Mtu,
    /// Iterations in flight (a server accepts clients up to its own window).
    #[arg(short = 'w', long, default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=opcodes::MAX_WINDOW as i64))]
    window: u32,
    /// Seconds without progress (a completion, a side-channel byte) before a side fails.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// RC local ACK timeout exponent: 4.096 µs × 2^T (16: 268 ms, eight of them before the
    /// QP gives up, enough for a peer's migration blackout).
    #[arg(short = 'u', long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=31))]
    qp_timeout: u8,
    /// Print the result as one JSON object (with the migration's under "migration").
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    migrate: MigrateArgs,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let mut mig = self.migrate.migrator()?;
        let o = opcodes::Options {
            port: self.port,
            size: self.size,
            iters: self.iters,
            mtu: self.mtu,
            window: self.window,
            timeout: Duration::from_secs(self.timeout),
            qp_timeout: self.qp_timeout,
            fault: None,
        };
        // Without --migrate-to the hook does nothing.
        let mut hook = |c: &mut GuestContext, p| match mig.as_mut() {
            Some(m) => Ok(m.hook(c, p)?),
            None => Ok(()),
        };
        // clap makes one of --ip and --vf present.
        let rep = match (self.vf, self.ip, self.server) {
            (Some(vf), _, Some(srv)) => opcodes::vf_client_with(&vf, srv, &o, &mut hook),
            (Some(vf), _, None) => opcodes::vf_server_with(&vf, &o, &mut hook),
            (None, Some(ip), Some(srv)) => opcodes::client(ip, srv, &o),
            (None, Some(ip), None) => opcodes::server(ip, &o),
            (None, None, _) => unreachable!("clap requires --ip without --vf"),
        }?;
        print_run(&rep, rep.table(), self.json, mig.as_ref())
    }
}
