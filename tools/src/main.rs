//! `vhca`: the command line. Only argument handling lives here.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
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
    },
    /// One PF process: N VFs, each a vhost-user device on DIR/vfN.sock, connected through the
    /// in-process switch. Stops cleanly on SIGTERM or SIGINT.
    Serve {
        /// How many VFs (1..=256).
        #[arg(long, default_value_t = 1)]
        vfs: u16,
        /// Where the VF sockets (vf0.sock, vf1.sock, ...) are created.
        #[arg(long)]
        socket_dir: PathBuf,
        /// The PF's index: part of every VF's MAC and GID.
        #[arg(long, default_value_t = 0)]
        pf_index: u8,
        /// The control socket (default: DIR/ctl.sock).
        #[arg(long)]
        ctl: Option<PathBuf>,
    },
    /// Asks a running `vhca serve` through its control socket.
    Ctl {
        /// The control socket of the server.
        #[arg(long, conflicts_with = "socket_dir")]
        ctl: Option<PathBuf>,
        /// The server's socket directory (its control socket is DIR/ctl.sock).
        #[arg(long)]
        socket_dir: Option<PathBuf>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        /// What to show.
        what: CtlWhat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CtlWhat {
    /// The VFs with their identity and connection state.
    Vfs,
    /// Every QP: type, state, SQ PSN, expected PSN, una.
    Qps,
    /// Per-VF device and backend counters, and the switch's.
    Counters,
}

impl CtlWhat {
    fn name(self) -> &'static str {
        match self {
            CtlWhat::Vfs => "vfs",
            CtlWhat::Qps => "qps",
            CtlWhat::Counters => "counters",
        }
    }
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
        Cmd::Serve {
            vfs,
            socket_dir,
            pf_index,
            ctl,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let cfg = vhca_vhost::serve::ServeConfig {
                vfs,
                socket_dir,
                pf_index,
                ctl,
            };
            match vhca_vhost::serve::run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vhca serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Ctl {
            ctl,
            socket_dir,
            json,
            what,
        } => {
            let path = ctl
                .or_else(|| socket_dir.map(|d| d.join("ctl.sock")))
                .unwrap_or_else(|| PathBuf::from("ctl.sock"));
            match vhca_vhost::ctl::request(&path, what.name()) {
                Ok(v) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    } else {
                        print!("{}", vhca_vhost::ctl::render_text(what.name(), &v));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vhca ctl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Demo { ops, seed } => {
            let start = std::time::Instant::now();
            let r = vhca::demo::run(ops, seed);
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
        Cmd::Bench { json, millis, only } => {
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
