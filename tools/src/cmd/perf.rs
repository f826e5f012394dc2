//! `vhca perf`.

use super::mid_run::{print_run, MigrateArgs};
use super::CmdResult;
use std::net::Ipv4Addr;
use vhca::interop::perf;
use vhca_device::Mtu;
use vhca_guest::{GuestContext, VfTarget};

#[derive(clap::Args)]
pub struct Args {
    /// The test: send_bw, write_bw, read_bw, atomic_bw, send_lat, write_lat, read_lat or
    /// atomic_lat (ib_* names accepted).
    test: perf::Test,
    /// The server to connect to; without it, act as the server.
    server: Option<Ipv4Addr>,
    /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
    #[arg(long, required_unless_present = "vf")]
    ip: Option<Ipv4Addr>,
    /// Run on this VF through the guest driver instead of on a VF of this process: the
    /// vhost-user socket of a `vhca serve --udp-ip` VF, or (inside a guest) the PCI address
    /// of a VF's virtio-pci function, `pci:0000:00:03.0`. The VF's GID is the one its
    /// device reports.
    #[arg(long, value_name = "SOCKET|pci:ADDR", conflicts_with = "ip")]
    vf: Option<VfTarget>,
    /// TCP port of the side channel.
    #[arg(short = 'p', long, default_value_t = perf::DEFAULT_PORT)]
    port: u16,
    /// Message size in bytes (default: perftest's, 65536 for bw tests, 2 for latency tests, 8
    /// and only 8 for atomics).
    #[arg(short = 's', long)]
    size: Option<u32>,
    /// Iterations (default: perftest's, 5000 for write_bw, else 1000).
    #[arg(short = 'n', long)]
    iters: Option<u32>,
    /// This port's MTU in bytes (256, 512, 1024, 2048 or 4096); the peer's may lower it.
    #[arg(short = 'm', long, default_value = "1024", value_parser = super::args::mtu)]
    mtu: Mtu,
    /// Outstanding work requests of a bandwidth client.
    #[arg(short = 't', long, default_value_t = 128)]
    tx_depth: u32,
    /// Receive queue depth of a SEND receiver.
    #[arg(short = 'r', long, default_value_t = 512)]
    rx_depth: u32,
    /// Completion moderation: a signaled work request every N (perftest's default: 100,
    /// 1 above 8 KiB).
    #[arg(short = 'Q', long)]
    cq_mod: Option<u32>,
    /// Outstanding RDMA READs (read_bw).
    #[arg(short = 'o', long, default_value_t = 128)]
    outs: u8,
    /// GID index (accepted for command-line compatibility; a vhca VF has one GID).
    #[arg(short = 'x', long)]
    gid_index: Option<u32>,
    /// Device name (accepted for command-line compatibility).
    #[arg(short = 'd', long)]
    ib_dev: Option<String>,
    /// Do not fail on CPU frequency warnings (accepted for compatibility; vhca measures
    /// with the monotonic clock).
    #[arg(short = 'F', long)]
    cpu_freq: bool,
    /// Run every size from 2 B to 8 MiB (powers of two), a report line each.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// The atomic operation (atomic_bw, atomic_lat).
    #[arg(
        short = 'A',
        long = "atomic_type",
        value_name = "CMP_AND_SWAP|FETCH_AND_ADD"
    )]
    atomic: Option<perf::AtomicOp>,
    /// Send SENDs and WRITEs of at most this many bytes inline (vhca's default: none).
    #[arg(short = 'I', long = "inline_size")]
    inline_size: Option<u32>,
    /// Report bandwidth in Gb/s instead of MB/s.
    #[arg(long = "report_gbits")]
    report_gbits: bool,
    /// Wait for completions through completion events (not in the WRITE tests).
    #[arg(short = 'e', long = "events")]
    events: bool,
    /// Number of QPs of a bandwidth test, each running the iterations.
    #[arg(short = 'q', long = "qp", default_value_t = 1)]
    qps: u32,
    /// Bidirectional: both sides send at once and print the sum (bandwidth tests).
    #[arg(short = 'b', long = "bidirectional")]
    bidirectional: bool,
    /// Run for this many seconds instead of a number of iterations.
    #[arg(short = 'D', long = "duration")]
    duration: Option<u32>,
    /// Seconds without progress before giving up.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// RC local ACK timeout exponent: 4.096 µs × 2^T (perftest's -u, default 14).
    #[arg(short = 'u', long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(1..=31))]
    qp_timeout: u8,
    /// Connect the QPs through the CM on QP1, as perftest's -R (rdma_cm) does.
    #[arg(short = 'R', long = "rdma_cm")]
    rdma_cm: bool,
    /// Print the result as one JSON object (with the migration's under "migration").
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    migrate: MigrateArgs,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let mut mig = self.migrate.migrator()?;
        let mut o = perf::Options::new(self.test);
        o.port = self.port;
        o.size = self.size.unwrap_or(o.size);
        o.iters = self.iters.unwrap_or(o.iters);
        o.mtu = self.mtu;
        o.tx_depth = self.tx_depth;
        o.rx_depth = self.rx_depth;
        o.cq_mod = self.cq_mod;
        o.out_reads = self.outs;
        o.timeout = std::time::Duration::from_secs(self.timeout);
        o.qp_timeout = self.qp_timeout;
        o.all_sizes = self.all;
        o.atomic = self.atomic;
        o.inline_size = self.inline_size.unwrap_or(0);
        o.report_gbits = self.report_gbits;
        o.events = self.events;
        o.qps = self.qps;
        o.duplex = self.bidirectional;
        o.duration = self.duration;
        o.rdma_cm = self.rdma_cm;
        // Without --migrate-to the hook does nothing.
        let mut hook = |c: &mut GuestContext, p| match mig.as_mut() {
            Some(m) => Ok(m.hook(c, p)?),
            None => Ok(()),
        };
        // clap makes one of --ip and --vf present.
        let rep = match (self.vf, self.ip, self.server) {
            (Some(vf), _, Some(srv)) => perf::vf_client_with(&vf, srv, &o, &mut hook),
            (Some(vf), _, None) => perf::vf_server_with(&vf, &o, &mut hook),
            (None, Some(ip), Some(srv)) => perf::client(ip, srv, &o),
            (None, Some(ip), None) => perf::server(ip, &o),
            (None, None, _) => unreachable!("clap requires --ip without --vf"),
        }?;
        print_run(&rep, rep.table(), self.json, mig.as_ref())
    }
}
