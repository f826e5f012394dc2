//! `vhca`: the command line. This file holds only the list of commands and the dispatch;
//! each command's options and body live in its module under cmd/.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vhca",
    version,
    about = "A virtual RDMA HCA: software RoCE/IB VFs you can live-migrate",
    after_help = "Exit codes: 0 ok; 1 the run failed (an error, or a check it makes); \
                  2 usage error.\nRun `vhca <command> --help` for a command's options."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// The order is the help's table of contents: in-process first, then the serve process and
// what talks to it, then interop, then migration, then files.
#[derive(Subcommand)]
enum Cmd {
    /// Three VFs on two PFs run every RC opcode and UD over a lossy in-process fabric, checked
    Demo(cmd::demo::Args),
    /// Deterministic simulation: random VFs, QPs and workloads over a faulty fabric, checked
    Sim(cmd::sim::Args),
    /// Benchmarks: in-process (the default), through vhost-user, or over the UDP bridge
    Bench(cmd::bench::Args),
    /// Run one PF: N VFs, each a vhost-user socket DIR/vfN.sock (stops on SIGTERM/SIGINT)
    Serve(cmd::serve::Args),
    /// Ask a running `vhca serve` for its VFs, QPs or counters through its control socket
    Ctl(cmd::ctl::Args),
    /// Play a guest on two VF sockets, connect an RC pair, check ping-pong and every opcode
    GuestPair(cmd::guest_pair::Args),
    /// RC or UD ping-pong over RoCEv2, compatible with ibv_rc_pingpong/ibv_ud_pingpong
    Pingpong(cmd::pingpong::Args),
    /// perftest-compatible ib_send_bw, ib_write_bw, ib_read_bw and ib_send_lat over RoCEv2
    Perf(cmd::perf::Args),
    /// librdmacm's rping (-s server / -c client), connected by the IB CM with rdma_cm's IP header
    Rping(cmd::rping::Args),
    /// Every RC opcode and UD between two processes' VFs, every byte checked
    ///
    /// A server and a client exchange their QPs over TCP (port 18517), then the client runs
    /// SEND, SEND_WITH_IMM, RDMA_WRITE, RDMA_WRITE_WITH_IMM, RDMA_READ, both atomics and a
    /// UD exchange per iteration; both sides check what they see, compare summaries at the
    /// end and report the longest gap between iterations (docs/interop.md).
    Opcodes(cmd::opcodes::Args),
    /// ATOMIC WRITE and FLUSH (IBTA 1.5) as requester against an rxe peer's placement_target
    ///
    /// WRITE, FLUSH of its range, ATOMIC WRITE, FLUSH of the whole MR, then the target's
    /// buffer is read back over TCP and checked (docs/interop.md).
    Placement(cmd::placement::Args),
    /// Memory windows (type 1 and 2) and fast-register MRs against an rxe peer's windows_target
    ///
    /// --role responder: rxe's windows, vhca WRITEs/READs through them and invalidates one by
    /// SEND_WITH_INV; --role requester: vhca's windows and fast-register MR, rxe accesses
    /// them; both check data on both sides and every refusal (docs/interop.md).
    Windows(cmd::windows::Args),
    /// Live-migrate an RC-connected VF pair between two `vhca serve`s it starts, as QEMU does
    ///
    /// A source and a destination `vhca serve`, a connected RC pair under traffic, pre-copy
    /// rounds from the dirty log, device state, resume; prints the timeline
    /// (docs/migration.md).
    Migrate(cmd::migrate::Args),
    /// Live-migrate a VF between running `vhca serve`s while every RC opcode is in flight
    ///
    /// Plays the guest on the migrating VF and on its RC peer (other namespaces, other
    /// hosts), migrates the VF mid-traffic with WRs of every RC opcode in flight, runs
    /// --hook between the source's save and the destination's load (move the VF's address
    /// there), checks every byte.
    MigrateAttached(cmd::migrate_attached::Args),
    /// Send a gratuitous ARP for a VF's IP from its MAC, after moving it (needs CAP_NET_RAW)
    Announce(cmd::announce::Args),
    /// Checkpoint files: inspect, convert, upgrade, diff, validate, stats, export, schema, sample, bench
    State(cmd::state::Args),
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Demo(_) => "demo",
            Cmd::Sim(_) => "sim",
            Cmd::Bench(_) => "bench",
            Cmd::Serve(_) => "serve",
            Cmd::Ctl(_) => "ctl",
            Cmd::GuestPair(_) => "guest-pair",
            Cmd::Pingpong(_) => "pingpong",
            Cmd::Perf(_) => "perf",
            Cmd::Rping(_) => "rping",
            Cmd::Opcodes(_) => "opcodes",
            Cmd::Placement(_) => "placement",
            Cmd::Windows(_) => "windows",
            Cmd::Migrate(_) => "migrate",
            Cmd::MigrateAttached(_) => "migrate-attached",
            Cmd::Announce(_) => "announce",
            Cmd::State(_) => "state",
        }
    }

    fn run(self) -> cmd::CmdResult {
        match self {
            Cmd::Demo(a) => a.run(),
            Cmd::Sim(a) => a.run(),
            Cmd::Bench(a) => a.run(),
            Cmd::Serve(a) => a.run(),
            Cmd::Ctl(a) => a.run(),
            Cmd::GuestPair(a) => a.run(),
            Cmd::Pingpong(a) => a.run(),
            Cmd::Perf(a) => a.run(),
            Cmd::Rping(a) => a.run(),
            Cmd::Opcodes(a) => a.run(),
            Cmd::Placement(a) => a.run(),
            Cmd::Windows(a) => a.run(),
            Cmd::Migrate(a) => a.run(),
            Cmd::MigrateAttached(a) => a.run(),
            Cmd::Announce(a) => a.run(),
            Cmd::State(a) => a.run(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.cmd.name();
    match cli.cmd.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhca {name}: error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
