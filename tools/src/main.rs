//! `vhca`: the command line. Only argument handling lives here.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vhca::sim;
use vhca_fabric::FaultLevel;

#[derive(Parser)]
#[command(
    name = "vhca",
    version,
    about = "A virtual RDMA HCA: software RoCE/IB VFs you can live-migrate"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The embedded default: three VFs on two PFs run every RC opcode and UD over a lossy
    /// in-process fabric, checked, with a short summary.
    Demo {
        /// Operations each side of each connection posts.
        #[arg(long, default_value_t = 400)]
        ops: usize,
        /// Seeds the workload and the fabric's faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Record every packet the VFs transmit (before the fabric's faults) in this pcap file.
        #[arg(long, value_name = "FILE")]
        pcap: Option<std::path::PathBuf>,
    },
    /// Deterministic simulation: many VFs and QPs, random workloads, a faulty fabric, checked
    /// continuously.
    Sim {
        /// Seeds to run, as A..B (B excluded) or a single number.
        #[arg(long, default_value = "0..10")]
        seeds: String,
        /// Fabric faults: none, light or heavy (≥ 10% loss plus duplication, reordering, delay).
        #[arg(long, default_value = "heavy")]
        faults: FaultLevel,
        /// Print one JSON object per seed instead of a line of text.
        #[arg(long)]
        json: bool,
    },
    /// RC (or UD) ping-pong over RoCEv2/UDP, compatible with ibv_rc_pingpong/ibv_ud_pingpong.
    Pingpong {
        /// The server to connect to; without it, act as the server.
        server: Option<std::net::Ipv4Addr>,
        /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// TCP port of the exchange.
        #[arg(short = 'p', long, default_value_t = vhca::pingpong::DEFAULT_PORT)]
        port: u16,
        /// Message size.
        #[arg(short = 's', long, default_value_t = 4096)]
        size: u32,
        /// Iterations.
        #[arg(short = 'n', long, default_value_t = 1000)]
        iters: u32,
        /// Path MTU in bytes (256, 512, 1024, 2048, 4096).
        #[arg(short = 'm', long, default_value_t = 1024)]
        mtu: u32,
        /// Receive queue depth.
        #[arg(short = 'r', long, default_value_t = 500)]
        rx_depth: u32,
        /// Unreliable datagram (ibv_ud_pingpong) instead of RC.
        #[arg(long)]
        ud: bool,
        /// GID index (accepted for command-line compatibility; vhca VFs have one GID).
        #[arg(short = 'g', long)]
        gid_index: Option<u32>,
        /// Carry RoCEv2 through this TAP device instead of a UDP socket: the VF answers ARP
        /// for --ip with its own MAC, and the kernel needs no address for it.
        #[arg(long, value_name = "NAME")]
        tap: Option<String>,
        /// Record the RoCEv2 traffic in this pcap file.
        #[arg(long, value_name = "FILE")]
        pcap: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// In-process bandwidth, message rate and latency beside this machine's memcpy bandwidth.
    Bench {
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
        /// Milliseconds each measurement runs.
        #[arg(long, default_value_t = 800)]
        millis: u64,
        /// Only the rows whose `test:bytes` contains this, e.g. `write_bw:65536`.
        #[arg(long)]
        only: Option<String>,
        /// Instead: RoCEv2 over the UDP bridge (64 KiB RDMA WRITEs at MTU 4096 between two
        /// nodes) beside a plain UDP blast of the same datagrams.
        #[arg(long)]
        udp: bool,
        /// With --udp: the two nodes' IPv4 addresses, A,B.
        #[arg(long, value_name = "A,B", default_value = "127.0.0.31,127.0.0.32")]
        ips: String,
        /// With --udp: network namespaces (`ip netns` names) to bind A and B in, NSA,NSB.
        #[arg(long, value_name = "NSA,NSB")]
        netns: Option<String>,
    },
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("bad --seeds {s:?}: use A..B or N");
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b.trim().parse().map_err(|_| bad())?;
            if b <= a {
                return Err(bad());
            }
            Ok(a..b)
        }
        None => {
            let a: u64 = s.trim().parse().map_err(|_| bad())?;
            Ok(a..a + 1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Pingpong {
            server,
            ip,
            port,
            size,
            iters,
            mtu,
            rx_depth,
            ud,
            gid_index: _,
            tap,
            pcap,
            json,
        } => {
            let Some(mtu) = vhca_device::Mtu::ALL.into_iter().find(|m| m.bytes() == mtu) else {
                eprintln!("bad MTU {mtu}: use 256, 512, 1024, 2048 or 4096");
                return ExitCode::from(2);
            };
            let o = vhca::pingpong::Options {
                port,
                size,
                iters,
                mtu,
                rx_depth,
                ud,
                tap,
                pcap,
                ..Default::default()
            };
            let r = match server {
                Some(srv) => vhca::pingpong::client(ip, srv, &o),
                None => vhca::pingpong::server(ip, &o),
            };
            match r {
                Ok(rep) => {
                    if json {
                        println!("{}", serde_json::to_string(&rep).unwrap_or_default());
                    } else {
                        print!("{}", rep.lines());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pingpong failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Demo { ops, seed, pcap } => {
            let start = std::time::Instant::now();
            let r = match vhca::demo::run_captured(ops, seed, pcap.as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("demo: cannot write the capture: {e}");
                    return ExitCode::FAILURE;
                }
            };
            print!("{}", vhca::demo::summary(&r, start.elapsed()));
            for v in &r.violations {
                eprintln!("violation: {v}");
            }
            if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Bench {
            json,
            millis,
            udp: true,
            ips,
            netns,
            ..
        } => {
            let cfg = match vhca::udp_bench::UdpBenchConfig::parse(&ips, netns.as_deref(), millis) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match vhca::udp_bench::run(&cfg) {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    } else {
                        print!("{}", r.table());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench --udp failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bench {
            json, millis, only, ..
        } => {
            let cfg = vhca::bench::BenchConfig {
                duration: std::time::Duration::from_millis(millis),
                ..Default::default()
            };
            match vhca::bench::run(&cfg, only.as_deref()) {
                Ok(rows) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&rows).unwrap_or_default()
                        );
                    } else {
                        print!("{}", vhca::bench::table(&rows));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Sim {
            seeds,
            faults,
            json,
        } => {
            let range = match parse_seeds(&seeds) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut failed = 0u64;
            let mut total_ops = 0u64;
            let n = range.end - range.start;
            for seed in range {
                let r = sim::run(seed, faults);
                total_ops += r.ops_completed;
                if json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    println!(
                        "seed {seed}: {} ops={} bytes={} packets={} retransmits={} fabric_drops={} virtual={:.3}s hash={:016x}{}",
                        if r.ok() { "ok" } else { "FAILED" },
                        r.ops_completed,
                        r.bytes,
                        r.packets,
                        r.retransmits,
                        r.dropped_by_fabric,
                        r.virtual_ns as f64 / 1e9,
                        r.trace_hash,
                        if r.injected.is_empty() { String::new() } else { format!(" injected={}", r.injected.len()) },
                    );
                }
                if !r.ok() {
                    failed += 1;
                    for v in &r.violations {
                        eprintln!("  violation: {v}");
                    }
                    eprintln!("  replay: {}", sim::replay_command(seed, faults));
                }
            }
            println!(
                "{} seeds, {} passed, {} failed, {} operations checked",
                n,
                n - failed,
                failed,
                total_ops
            );
            if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
