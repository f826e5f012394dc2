//! `vhca pingpong`.

use super::mid_run::{print_run, MigrateArgs};
use super::CmdResult;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use vhca::interop::pingpong;
use vhca_device::Mtu;
use vhca_guest::{GuestContext, VfTarget};

#[derive(clap::Args)]
pub struct Args {
    /// The server to connect to; without it, act as the server.
    server: Option<Ipv4Addr>,
    /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
    #[arg(long, required_unless_present = "vf")]
    ip: Option<Ipv4Addr>,
    /// Run on this VF through the guest driver instead of on a VF of this process: the
    /// vhost-user socket of a `vhca serve --udp-ip` VF, or (inside a guest) the PCI address
    /// of a VF's virtio-pci function, `pci:0000:00:03.0`. The VF's GID is the one its
    /// device reports.
    #[arg(long, value_name = "SOCKET|pci:ADDR", conflicts_with_all = ["ip", "tap", "pcap"])]
    vf: Option<VfTarget>,
    /// TCP port of the exchange.
    #[arg(short = 'p', long, default_value_t = pingpong::DEFAULT_PORT)]
    port: u16,
    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 4096)]
    size: u32,
    /// Iterations.
    #[arg(short = 'n', long, default_value_t = 1000)]
    iters: u32,
    /// Path MTU in bytes: 256, 512, 1024, 2048 or 4096.
    #[arg(short = 'm', long, default_value = "1024", value_parser = super::args::mtu)]
    mtu: Mtu,
    /// Receive queue depth.
    #[arg(short = 'r', long, default_value_t = 500)]
    rx_depth: u32,
    /// Unreliable datagram (ibv_ud_pingpong) instead of RC.
    #[arg(long, conflicts_with = "uc")]
    ud: bool,
    /// Unreliable connected (ibv_uc_pingpong) instead of RC: the same exchange, no ACKs and
    /// no retransmission (a lost message stalls the run, as it does ibv_uc_pingpong).
    #[arg(long, conflicts_with = "srq")]
    uc: bool,
    /// Several RC QPs sharing one SRQ (ibv_srq_pingpong): -q QPs, -n SENDs in all.
    #[arg(long, conflicts_with_all = ["ud", "chk"])]
    srq: bool,
    /// With --srq: how many QPs (1–256).
    #[arg(short = 'q', long, default_value_t = 16, requires = "srq",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    num_qp: u32,
    /// GID index (accepted for command-line compatibility; vhca VFs have one GID).
    #[arg(short = 'g', long)]
    gid_index: Option<u32>,
    /// Carry RoCEv2 through this TAP device instead of a UDP socket: the VF answers ARP
    /// for --ip with its own MAC, and the kernel needs no address for it.
    #[arg(long, value_name = "NAME")]
    tap: Option<String>,
    /// Record the RoCEv2 traffic in this pcap file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// RC local ACK timeout exponent: 4.096 µs × 2^T (ibv_rc_pingpong: 14, 67 ms).
    #[arg(short = 'u', long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(1..=31))]
    qp_timeout: u8,
    /// Check every reply byte for byte (RC client): each message carries a pattern of its
    /// iteration and the server, ibv_rc_pingpong or vhca pingpong, echoes it.
    #[arg(short = 'c', long)]
    chk: bool,
    /// Print the result as one JSON object (with the migration's under "migration").
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    migrate: MigrateArgs,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let mut mig = self.migrate.migrator()?;
        let o = pingpong::Options {
            port: self.port,
            size: self.size,
            iters: self.iters,
            mtu: self.mtu,
            rx_depth: self.rx_depth,
            ud: self.ud,
            uc: self.uc,
            srq: self.srq,
            num_qp: self.num_qp,
            tap: self.tap,
            pcap: self.pcap,
            qp_timeout: self.qp_timeout,
            check: self.chk,
            ..Default::default()
        };
        // Without --migrate-to the hook does nothing.
        let mut hook = |c: &mut GuestContext, p| match mig.as_mut() {
            Some(m) => Ok(m.hook(c, p)?),
            None => Ok(()),
        };
        // clap makes one of --ip and --vf present.
        let rep = match (self.vf, self.ip, self.server) {
            (Some(vf), _, Some(srv)) => pingpong::vf_client_with(&vf, srv, &o, &mut hook),
            (Some(vf), _, None) => pingpong::vf_server_with(&vf, &o, &mut hook),
            (None, Some(ip), Some(srv)) => pingpong::client(ip, srv, &o),
            (None, Some(ip), None) => pingpong::server(ip, &o),
            (None, None, _) => unreachable!("clap requires --ip without --vf"),
        }?;
        print_run(&rep, rep.lines(), self.json, mig.as_ref())
    }
}
