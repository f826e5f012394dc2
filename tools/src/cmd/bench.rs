//! `vhca bench [inproc|vhost|udp]`: one mode per benchmark, each with only its options; no
//! mode is `inproc`.

use super::CmdResult;
use std::net::Ipv4Addr;
use std::time::Duration;
use vhca::bench::{inproc, udp, vhost};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    inproc: InprocArgs,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// In-process bandwidth, message rate and latency beside memcpy (the default mode).
    Inproc(InprocArgs),
    /// The same program through the vhost-user path (a `vhca serve` child) beside in-process.
    Vhost(VhostArgs),
    /// RoCEv2 over the UDP bridge (64 KiB WRITEs at MTU 4096) beside a plain UDP blast.
    Udp(UdpArgs),
}

#[derive(clap::Args)]
struct InprocArgs {
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
    /// Milliseconds each measurement runs.
    #[arg(long, value_name = "MS", default_value_t = 800)]
    millis: u64,
    /// Only the rows whose `test:bytes` contains this, e.g. `write_bw:65536`.
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
}

#[derive(clap::Args)]
struct VhostArgs {
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
    /// 64 KiB RDMA WRITEs in the bandwidth run (20,000 ≈ 1.3 GB: long enough that one
    /// scheduler hiccup does not decide the figure).
    #[arg(long, value_name = "N", default_value_t = 20000, value_parser = clap::value_parser!(u32).range(1..))]
    writes: u32,
    /// WRITEs kept outstanding.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    depth: u32,
    /// SEND ping-pongs in the latency run.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    round_trips: u32,
}

#[derive(clap::Args)]
struct UdpArgs {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Milliseconds each measurement runs (at least 100).
    #[arg(long, value_name = "MS", default_value_t = 800, value_parser = clap::value_parser!(u64).range(100..))]
    millis: u64,
    /// The two nodes' IPv4 addresses.
    #[arg(long, value_name = "A,B", default_value = "127.0.0.31,127.0.0.32", value_parser = super::args::ipv4_pair)]
    ips: (Ipv4Addr, Ipv4Addr),
    /// Network namespaces (`ip netns` names) to bind A and B in.
    #[arg(long, value_name = "NSA,NSB", value_parser = super::args::name_pair)]
    netns: Option<(String, String)>,
}

impl Args {
    pub fn run(self) -> CmdResult {
        match self.mode {
            None => self.inproc.run(),
            Some(Mode::Inproc(a)) => a.run(),
            Some(Mode::Vhost(a)) => a.run(),
            Some(Mode::Udp(a)) => a.run(),
        }
    }
}

impl InprocArgs {
    fn run(self) -> CmdResult {
        let cfg = inproc::BenchConfig {
            duration: Duration::from_millis(self.millis),
            ..Default::default()
        };
        let rows = inproc::run(&cfg, self.only.as_deref())?;
        if self.json {
            super::print_json_pretty(&rows)?;
        } else {
            print!("{}", inproc::table(&rows));
        }
        Ok(())
    }
}

impl VhostArgs {
    fn run(self) -> CmdResult {
        let cfg = vhca_guest::bench::BenchConfig {
            writes: self.writes,
            depth: self.depth,
            round_trips: self.round_trips,
            ..Default::default()
        };
        let rows = vhost::run(&cfg)?;
        if self.json {
            super::print_json_pretty(&rows)?;
        } else {
            print!("{}", vhost::table(&rows));
        }
        Ok(())
    }
}

impl UdpArgs {
    fn run(self) -> CmdResult {
        let cfg = udp::UdpBenchConfig {
            a: self.ips.0,
            b: self.ips.1,
            netns: self.netns,
            duration: Duration::from_millis(self.millis),
            depth: 8,
        };
        let r = udp::run(&cfg)?;
        if self.json {
            super::print_json_pretty(&r)?;
        } else {
            print!("{}", r.table());
        }
        Ok(())
    }
}
