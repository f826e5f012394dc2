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
        /// Also migrate VFs between PFs at random moments (checkpoint, blackout, restore,
        /// resume), under the same invariants.
        #[arg(long)]
        migrate: bool,
    },
    /// RC (or UD) ping-pong over RoCEv2/UDP, compatible with ibv_rc_pingpong/ibv_ud_pingpong.
    Pingpong {
        /// The server to connect to; without it, act as the server.
        server: Option<std::net::Ipv4Addr>,
        /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
        #[arg(long, required_unless_present = "vf")]
        ip: Option<std::net::Ipv4Addr>,
        /// Run on the VF behind this vhost-user socket (a VF of a running `vhca serve
        /// --udp-ip`) through the guest driver, instead of on a VF of this process: the VF's
        /// GID is the one its device reports.
        #[arg(long, value_name = "SOCKET", conflicts_with_all = ["ip", "tap", "pcap"])]
        vf: Option<PathBuf>,
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
        /// RC local ACK timeout exponent: 4.096 µs × 2^T (ibv_rc_pingpong: 14, 67 ms).
        #[arg(short = 'u', long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(1..=31))]
        qp_timeout: u8,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        migrate: MigrateArgs,
    },
    /// A live migration over vhost-user as QEMU drives it: a source and a destination `vhca
    /// serve`, a connected RC pair under traffic, pre-copy rounds from the dirty log, device
    /// state, resume; prints the timeline (docs/migration.md).
    /// Plays a guest on two VF sockets (one `vhca serve` or two), connects an RC pair and
    /// checks ping-pong and every RC opcode, data compared.
    GuestPair {
        /// VF socket of side A.
        a: PathBuf,
        /// VF socket of side B.
        b: PathBuf,
        /// Ping-pong message size (at most 32 KiB).
        #[arg(long, default_value_t = 4096)]
        size: u32,
        /// Ping-pong round trips.
        #[arg(long, default_value_t = 100)]
        iters: u32,
        /// Path MTU of the RC pair: 256, 512, 1024, 2048 or 4096.
        #[arg(long, default_value_t = 1024)]
        mtu: u32,
    },
    Migrate {
        /// Pre-copy rounds while traffic runs.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Message size of the traffic on every QP (at most 32 KiB).
        #[arg(long, default_value_t = 1024)]
        size: u32,
        /// Connected RC QP pairs between the two VFs, each carrying traffic.
        #[arg(long, default_value_t = 1)]
        qps: u32,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// After the last copy, compare all guest RAM with the destination's; fail if a page
        /// differs (its time is not counted in the blackout).
        #[arg(long)]
        verify_pages: bool,
        /// Move the VFs one after the other (each VF's blackout without the other's migration
        /// competing for the CPUs) instead of stopping both at once as a VM's devices are.
        #[arg(long)]
        sequential: bool,
        /// Print both vhca serve processes' logs to stderr afterwards (the device side's
        /// capture, encode, decode and install times).
        #[arg(long)]
        serve_logs: bool,
    },
    /// Checkpoint files: inspect, convert, diff, validate (docs/checkpoint-format.md).
    State {
        #[command(subcommand)]
        op: StateOp,
    },
    /// perftest-compatible RC tests over RoCEv2/UDP: client or server for ib_send_bw,
    /// ib_write_bw, ib_read_bw and ib_send_lat (perftest 4.5-0.17, Ethernet/GID exchange).
    Perf {
        /// The test: send_bw, write_bw, read_bw or send_lat (ib_* names accepted).
        test: vhca::perf::Test,
        /// The server to connect to; without it, act as the server.
        server: Option<std::net::Ipv4Addr>,
        /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
        #[arg(long, required_unless_present = "vf")]
        ip: Option<std::net::Ipv4Addr>,
        /// Run on the VF behind this vhost-user socket (a VF of a running `vhca serve
        /// --udp-ip`) through the guest driver, instead of on a VF of this process: the VF's
        /// GID is the one its device reports.
        #[arg(long, value_name = "SOCKET", conflicts_with = "ip")]
        vf: Option<PathBuf>,
        /// TCP port of the side channel.
        #[arg(short = 'p', long, default_value_t = vhca::perf::DEFAULT_PORT)]
        port: u16,
        /// Message size (default: perftest's, 65536 for bw tests, 2 for send_lat).
        #[arg(short = 's', long)]
        size: Option<u32>,
        /// Iterations (default: perftest's, 5000 for write_bw, else 1000).
        #[arg(short = 'n', long)]
        iters: Option<u32>,
        /// This port's MTU in bytes (256 .. 4096); the peer's may lower it.
        #[arg(short = 'm', long, default_value_t = 1024)]
        mtu: u32,
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
        /// Device name (accepted for compatibility).
        #[arg(short = 'd', long)]
        ib_dev: Option<String>,
        /// Do not fail on CPU frequency warnings (accepted for compatibility; vhca measures
        /// with the monotonic clock).
        #[arg(short = 'F', long)]
        cpu_freq: bool,
        /// Seconds without progress before giving up.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// RC local ACK timeout exponent: 4.096 µs × 2^T (perftest's -u, default 14).
        #[arg(short = 'u', long, default_value_t = 14, value_parser = clap::value_parser!(u8).range(1..=31))]
        qp_timeout: u8,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        migrate: MigrateArgs,
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
        /// Measure through the vhost-user path (a `vhca serve` child and two guest drivers)
        /// beside the same program in-process.
        #[arg(long, conflicts_with = "udp")]
        vhost: bool,
        /// With --udp: the two nodes' IPv4 addresses, A,B.
        #[arg(long, value_name = "A,B", default_value = "127.0.0.31,127.0.0.32")]
        ips: String,
        /// With --udp: network namespaces (`ip netns` names) to bind A and B in, NSA,NSB.
        #[arg(long, value_name = "NSA,NSB")]
        netns: Option<String>,
        /// With --vhost: 64 KiB RDMA WRITEs in the bandwidth run (20,000 ≈ 1.3 GB: long
        /// enough that one scheduler hiccup does not decide the figure).
        #[arg(long, default_value_t = 20000)]
        writes: u32,
        /// With --vhost: WRITEs kept outstanding.
        #[arg(long, default_value_t = 16)]
        depth: u32,
        /// With --vhost: SEND ping-pongs in the latency run.
        #[arg(long, default_value_t = 1000)]
        round_trips: u32,
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
        /// Speak RoCEv2 over kernel UDP sockets: VF i at IP+i, port 4791 (the address must
        /// be on a local interface). Without it the VFs reach only each other, in-process.
        #[arg(long, conflicts_with = "tap")]
        udp_ip: Option<std::net::Ipv4Addr>,
        /// Carry the VFs' RoCEv2 through TAP devices, one per VF (comma-separated names; bring
        /// them up and bridge them with `ip link`). Needs --tap-ip.
        #[arg(long, value_delimiter = ',', requires = "tap_ip")]
        tap: Vec<String>,
        /// The first VF's IPv4 address on the TAP fabric (VF i: IP+i); the VF answers ARP.
        #[arg(long, requires = "tap")]
        tap_ip: Option<std::net::Ipv4Addr>,
        /// Microseconds a VF thread keeps polling its doorbell queue after a doorbell before
        /// it sleeps (0: never poll). Like QEMU's poll-max-ns: a guest that posts again soon
        /// is served without a wake-up.
        #[arg(long, default_value_t = 32)]
        busy_poll_us: u64,
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
    /// A live migration between `vhca serve` processes that already run (other namespaces,
    /// other hosts): plays the guest on the migrating VF and on its RC peer, migrates the VF
    /// mid-traffic with WRs of every RC opcode in flight, runs --hook between the source's
    /// save and the destination's load (move the VF's address there), checks every byte.
    MigrateAttached {
        /// VF socket of the migrating VF in the source process.
        #[arg(long)]
        src: PathBuf,
        /// VF socket in the destination process.
        #[arg(long)]
        dst: PathBuf,
        /// VF socket of the RC peer (a third process).
        #[arg(long)]
        peer: PathBuf,
        /// RC QP pairs between the VF and its peer.
        #[arg(long, default_value_t = 1)]
        qps: u32,
        /// Message size of every SEND, WRITE and READ.
        #[arg(long, default_value_t = 4096)]
        size: u32,
        /// Path MTU: 256, 512, 1024, 2048 or 4096.
        #[arg(long, default_value_t = 1024)]
        mtu: u32,
        /// Pre-copy rounds, each after a burst of every opcode.
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Shell command run after the source saved (and released) the VF and before the
        /// destination loads it; gets VHCA_IP and VHCA_MAC.
        #[arg(long)]
        hook: Option<String>,
        /// RC ACK timeout exponent (4.096 µs × 2^T): 7 retries must outlast the blackout.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=31))]
        qp_timeout: u8,
    },
    /// Sends a gratuitous ARP for IP from MAC out of an interface (needs CAP_NET_RAW): after a
    /// migration on the UDP fabric, switches learn where the VF's MAC went.
    Announce {
        /// The interface (run inside its network namespace).
        #[arg(long)]
        dev: String,
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// aa:bb:cc:dd:ee:ff
        #[arg(long, value_parser = parse_mac)]
        mac: vhca_device::Mac,
    },
}

/// Live migration of the `--vf` VF in the middle of a `pingpong` or `perf` run.
#[derive(clap::Args)]
struct MigrateArgs {
    /// Live-migrate the VF (`--vf`) to this VF socket of another `vhca serve` mid-run, then
    /// carry on there; prints a migration report (blackout, the stall the traffic saw).
    #[arg(long, value_name = "SOCKET", requires_all = ["vf", "migrate_at"], conflicts_with = "ip")]
    migrate_to: Option<PathBuf>,
    /// Switch over when this many iterations completed (on a write_bw/read_bw server, which
    /// has none of its own: at its N-th 10 ms tick while it waits).
    #[arg(long, value_name = "N", requires = "migrate_to")]
    migrate_at: Option<u64>,
    /// Begin pre-copy (dirty logging, full RAM copy) at this count (default: N/2).
    #[arg(long, value_name = "M", requires = "migrate_to")]
    migrate_precopy_from: Option<u64>,
    /// Dirty-page pre-copy rounds between the beginning and the switch-over.
    #[arg(long, value_name = "R", default_value_t = 1, requires = "migrate_to")]
    migrate_rounds: u32,
    /// Shell command run between the source's save and the destination's load, with VHCA_IP
    /// and VHCA_MAC (move the VF's address and MAC there, as `migrate-attached --hook`).
    #[arg(long, value_name = "CMD", requires = "migrate_to")]
    migrate_hook: Option<String>,
}

impl MigrateArgs {
    fn migrator(&self) -> Result<Option<vhca::vf_migrate::Migrator>, String> {
        let (Some(dst), Some(at)) = (&self.migrate_to, self.migrate_at) else {
            return Ok(None);
        };
        vhca::vf_migrate::Migrator::new(vhca::vf_migrate::MigrateOptions {
            dst: dst.clone(),
            at,
            precopy_from: self.migrate_precopy_from,
            rounds: self.migrate_rounds,
            hook: self.migrate_hook.clone(),
        })
        .map(Some)
    }
}

/// Prints a run's report (`json`: one object, with the migration's under "migration") and
/// the migration's lines on stderr; fails when a migration was asked for and did not happen.
fn print_run<R: serde::Serialize>(
    rep: &R,
    text: String,
    json: bool,
    mig: Option<&vhca::vf_migrate::Migrator>,
) -> ExitCode {
    let m = match mig.map(|m| m.report()).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("migration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(m) = &m {
        eprint!("{}", m.lines());
    }
    if json {
        let mut v = serde_json::to_value(rep).unwrap_or_default();
        if let (Some(m), Some(o)) = (&m, v.as_object_mut()) {
            o.insert(
                "migration".into(),
                serde_json::to_value(m).unwrap_or_default(),
            );
        }
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else {
        print!("{text}");
    }
    ExitCode::SUCCESS
}

fn parse_mac(s: &str) -> Result<vhca_device::Mac, String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(vhca_device::Mac(
        bytes
            .try_into()
            .map_err(|_| format!("{s}: a MAC has six bytes"))?,
    ))
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

#[derive(Subcommand)]
enum StateOp {
    /// Print a summary: header, identity, objects, every QP with its PSNs; and whether it is valid.
    Inspect { file: std::path::PathBuf },
    /// Re-encode with another codec.
    Convert {
        input: std::path::PathBuf,
        output: std::path::PathBuf,
        /// binary or json
        #[arg(long, default_value = "json")]
        to: String,
    },
    /// Print the fields that differ, as paths.
    Diff {
        a: std::path::PathBuf,
        b: std::path::PathBuf,
    },
    /// Exit 0 when the file decodes and is consistent.
    Validate { file: std::path::PathBuf },
    /// Write a checkpoint of a VF in the middle of RC traffic, to try the other commands on.
    Sample {
        output: std::path::PathBuf,
        #[arg(long, default_value = "binary")]
        codec: String,
    },
}

fn codec_of(s: &str) -> Option<vhca_device::checkpoint::Codec> {
    match s {
        "binary" | "bin" => Some(vhca_device::checkpoint::Codec::Binary),
        "json" => Some(vhca_device::checkpoint::Codec::Json),
        _ => None,
    }
}

fn run_state(op: StateOp) -> Result<(), String> {
    use vhca::state;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    match op {
        StateOp::Inspect { file } => {
            print!(
                "{}",
                state::inspect(&read(&file)?).map_err(|e| e.to_string())?
            );
        }
        StateOp::Convert { input, output, to } => {
            let codec = codec_of(&to).ok_or(format!("unknown codec {to:?} (binary, json)"))?;
            let out = state::convert(&read(&input)?, codec).map_err(|e| e.to_string())?;
            std::fs::write(&output, out).map_err(|e| format!("{}: {e}", output.display()))?;
        }
        StateOp::Diff { a, b } => {
            let d = state::diff(&read(&a)?, &read(&b)?).map_err(|e| e.to_string())?;
            for line in &d {
                println!("{line}");
            }
            if !d.is_empty() {
                return Err(format!("{} fields differ", d.len()));
            }
        }
        StateOp::Validate { file } => {
            state::validate(&read(&file)?).map_err(|e| e.to_string())?;
            println!("{}: valid", file.display());
        }
        StateOp::Sample { output, codec } => {
            let codec =
                codec_of(&codec).ok_or(format!("unknown codec {codec:?} (binary, json)"))?;
            std::fs::write(&output, state::sample(codec))
                .map_err(|e| format!("{}: {e}", output.display()))?;
        }
    }
    Ok(())
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

/// Prints a command's report, or its error on stderr, and gives the exit code.
fn report(cmd: &str, r: Result<String, String>) -> ExitCode {
    match r {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vhca {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::GuestPair {
            a,
            b,
            size,
            iters,
            mtu,
        } => {
            let Some(mtu) = vhca_device::Mtu::from_bytes(mtu) else {
                eprintln!("vhca guest-pair: --mtu must be 256, 512, 1024, 2048 or 4096");
                return ExitCode::FAILURE;
            };
            let r = vhca::guest_pair::run(&vhca::guest_pair::Options {
                a,
                b,
                msg_size: size,
                iters,
                mtu,
            });
            report("guest-pair", r)
        }
        Cmd::Migrate {
            rounds,
            size,
            qps,
            json,
            verify_pages,
            sequential,
            serve_logs,
        } => report(
            "migrate",
            vhca::migrate::run(&vhca::migrate::Options {
                rounds,
                msg_size: size,
                qps,
                json,
                verify_pages,
                sequential,
                serve_logs,
            }),
        ),
        Cmd::State { op } => match run_state(op) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vhca state: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Pingpong {
            server,
            ip,
            vf,
            port,
            size,
            iters,
            mtu,
            rx_depth,
            ud,
            gid_index: _,
            tap,
            pcap,
            qp_timeout,
            json,
            migrate,
        } => {
            let Some(mtu) = vhca_device::Mtu::from_bytes(mtu) else {
                eprintln!("bad MTU {mtu}: use 256, 512, 1024, 2048 or 4096");
                return ExitCode::from(2);
            };
            let mut mig = match migrate.migrator() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("pingpong: {e}");
                    return ExitCode::from(2);
                }
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
                qp_timeout,
                ..Default::default()
            };
            // clap makes one of --ip and --vf present.
            // Without --migrate-to the hook does nothing.
            let mut hook = |c: &mut vhca_guest::GuestContext, p| match mig.as_mut() {
                Some(m) => m.hook(c, p),
                None => Ok(()),
            };
            let r = match (vf, ip, server) {
                (Some(vf), _, Some(srv)) => vhca::pingpong::vf_client_with(&vf, srv, &o, &mut hook),
                (Some(vf), _, None) => vhca::pingpong::vf_server_with(&vf, &o, &mut hook),
                (None, Some(ip), Some(srv)) => vhca::pingpong::client(ip, srv, &o),
                (None, Some(ip), None) => vhca::pingpong::server(ip, &o),
                (None, None, _) => unreachable!("clap requires --ip without --vf"),
            };
            match r {
                Ok(rep) => print_run(&rep, rep.lines(), json, mig.as_ref()),
                Err(e) => {
                    eprintln!("pingpong failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve {
            vfs,
            socket_dir,
            pf_index,
            ctl,
            udp_ip,
            tap,
            tap_ip,
            busy_poll_us,
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
                network: match (udp_ip, tap_ip) {
                    (Some(ip), _) => vhca_vhost::serve::Network::Udp(ip),
                    (None, Some(ip)) => vhca_vhost::serve::Network::Tap { taps: tap, ip },
                    (None, None) => vhca_vhost::serve::Network::Switch,
                },
                busy_poll: std::time::Duration::from_micros(busy_poll_us),
            };
            match vhca_vhost::serve::run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vhca serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::MigrateAttached {
            src,
            dst,
            peer,
            qps,
            size,
            mtu,
            rounds,
            hook,
            qp_timeout,
        } => {
            let Some(mtu) = vhca_device::Mtu::from_bytes(mtu) else {
                eprintln!("vhca migrate-attached: --mtu must be 256, 512, 1024, 2048 or 4096");
                return ExitCode::FAILURE;
            };
            report(
                "migrate-attached",
                vhca::migrate_attached::run(&vhca::migrate_attached::Options {
                    src,
                    dst,
                    peer,
                    qps,
                    msg_size: size,
                    mtu,
                    rounds,
                    hook,
                    qp_timeout,
                }),
            )
        }
        Cmd::Announce { dev, ip, mac } => report(
            "announce",
            vhca_fabric::announce::gratuitous_arp(&dev, mac, ip)
                .map(|()| String::new())
                .map_err(|e| format!("{dev}: {e}")),
        ),
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
        Cmd::Perf {
            test,
            server,
            ip,
            vf,
            port,
            size,
            iters,
            mtu,
            tx_depth,
            rx_depth,
            cq_mod,
            outs,
            gid_index: _,
            ib_dev: _,
            cpu_freq: _,
            timeout,
            qp_timeout,
            json,
            migrate,
        } => {
            let Some(mtu) = vhca_device::Mtu::from_bytes(mtu) else {
                eprintln!("bad MTU {mtu}: use 256, 512, 1024, 2048 or 4096");
                return ExitCode::from(2);
            };
            let mut mig = match migrate.migrator() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("perf: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut o = vhca::perf::Options::new(test);
            o.port = port;
            o.size = size.unwrap_or(o.size);
            o.iters = iters.unwrap_or(o.iters);
            o.mtu = mtu;
            o.tx_depth = tx_depth;
            o.rx_depth = rx_depth;
            o.cq_mod = cq_mod;
            o.out_reads = outs;
            o.timeout = std::time::Duration::from_secs(timeout);
            o.qp_timeout = qp_timeout;
            // clap makes one of --ip and --vf present.
            // Without --migrate-to the hook does nothing.
            let mut hook = |c: &mut vhca_guest::GuestContext, p| match mig.as_mut() {
                Some(m) => m.hook(c, p),
                None => Ok(()),
            };
            let r = match (vf, ip, server) {
                (Some(vf), _, Some(srv)) => vhca::perf::vf_client_with(&vf, srv, &o, &mut hook),
                (Some(vf), _, None) => vhca::perf::vf_server_with(&vf, &o, &mut hook),
                (None, Some(ip), Some(srv)) => vhca::perf::client(ip, srv, &o),
                (None, Some(ip), None) => vhca::perf::server(ip, &o),
                (None, None, _) => unreachable!("clap requires --ip without --vf"),
            };
            match r {
                Ok(rep) => print_run(&rep, rep.table(), json, mig.as_ref()),
                Err(e) => {
                    eprintln!("perf {} failed: {e}", test.binary());
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
            json,
            vhost: true,
            writes,
            depth,
            round_trips,
            ..
        } => {
            let cfg = vhca_guest::bench::BenchConfig {
                writes: writes.max(1),
                depth: depth.max(1),
                round_trips: round_trips.max(1),
                ..Default::default()
            };
            match vhca::vhost_bench::run(&cfg) {
                Ok(rows) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&rows).unwrap_or_default()
                        );
                    } else {
                        print!("{}", vhca::vhost_bench::table(&rows));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench --vhost failed: {e}");
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
            migrate,
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
                let r = sim::run_with(seed, faults, migrate);
                total_ops += r.ops_completed;
                if json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    println!(
                        "seed {seed}: {} ops={} bytes={} packets={} retransmits={} fabric_drops={} virtual={:.3}s hash={:016x}{}{}",
                        if r.ok() { "ok" } else { "FAILED" },
                        r.ops_completed,
                        r.bytes,
                        r.packets,
                        r.retransmits,
                        r.dropped_by_fabric,
                        r.virtual_ns as f64 / 1e9,
                        r.trace_hash,
                        if migrate { format!(" migrations={}", r.migrations) } else { String::new() },
                        if r.injected.is_empty() { String::new() } else { format!(" injected={}", r.injected.len()) },
                    );
                }
                if !r.ok() {
                    failed += 1;
                    for v in &r.violations {
                        eprintln!("  violation: {v}");
                    }
                    let replay = if migrate {
                        sim::replay_command_migrate(seed, faults)
                    } else {
                        sim::replay_command(seed, faults)
                    };
                    eprintln!("  replay: {replay}");
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
