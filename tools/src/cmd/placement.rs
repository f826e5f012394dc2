//! `vhca placement`.

use super::CmdResult;
use std::net::Ipv4Addr;
use vhca::interop::placement;

#[derive(clap::Args)]
pub struct Args {
    /// The target (`placement_target` on an rxe peer) to connect to.
    target: Ipv4Addr,
    /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
    #[arg(long)]
    ip: Ipv4Addr,
    /// The target's TCP port.
    #[arg(short = 'p', long, default_value_t = placement::DEFAULT_PORT)]
    port: u16,
    /// The 8 bytes the ATOMIC WRITE stores (a number, stored little-endian).
    #[arg(long, default_value_t = 0x1122_3344_5566_7788)]
    value: u64,
    /// Which operations to post.
    #[arg(long, value_enum, default_value = "all")]
    ops: placement::Ops,
    /// Send FLUSHes with Linux rxe's ICRC (it covers the headers twice; rxe drops IBTA's).
    #[arg(long)]
    rxe_icrc: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let rep = placement::run(
            self.ip,
            self.target,
            self.port,
            self.value,
            self.ops,
            self.rxe_icrc,
        )?;
        if self.json {
            println!("{}", serde_json::to_string(&rep)?);
        } else {
            for (op, status) in &rep.completions {
                println!("{op}: {status}");
            }
            println!(
                "target buffer: block and value {:#018x} in place",
                rep.value
            );
        }
        Ok(())
    }
}
