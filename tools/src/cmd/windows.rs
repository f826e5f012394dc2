//! `vhca windows`.

use super::CmdResult;
use std::net::Ipv4Addr;
use vhca::interop::windows;

#[derive(clap::Args)]
pub struct Args {
    /// The target (`windows_target` on an rxe peer) to connect to.
    target: Ipv4Addr,
    /// This side's IPv4 address: the VF's GID is ::ffff:IP and RoCEv2 goes from IP:4791.
    #[arg(long)]
    ip: Ipv4Addr,
    /// The target's TCP port.
    #[arg(short = 'p', long, default_value_t = windows::DEFAULT_PORT)]
    port: u16,
    /// rxe's part: `responder` (rxe's windows, vhca accesses them) or `requester` (vhca's
    /// windows and fast-register MR, rxe accesses them).
    #[arg(long, value_enum)]
    role: windows::Role,
    /// The link loses packets: a refusal whose NAK rxe sent may end in RETRY_EXC_ERR (counted,
    /// and only with rxe's QP found in ERR).
    #[arg(long)]
    lossy: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let rep = windows::run(windows::Opts {
            ip: self.ip,
            target: self.target,
            port: self.port,
            role: self.role,
            lossy: self.lossy,
        })?;
        if self.json {
            println!("{}", serde_json::to_string(&rep)?);
        } else {
            for c in &rep.checks {
                println!("ok: {c}");
            }
            for f in &rep.findings {
                println!("finding: {f}");
            }
            println!(
                "{} checks passed ({} refusals seen as a retry timeout)",
                rep.checks.len(),
                rep.refusals_by_timeout
            );
        }
        Ok(())
    }
}
