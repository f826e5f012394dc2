//! `vhca migrate-attached`.

use super::CmdResult;
use std::path::PathBuf;
use vhca_device::Mtu;

#[derive(clap::Args)]
pub struct Args {
    /// VF socket of the migrating VF in the source process.
    #[arg(long, value_name = "SOCKET")]
    src: PathBuf,
    /// VF socket in the destination process.
    #[arg(long, value_name = "SOCKET")]
    dst: PathBuf,
    /// VF socket of the RC peer (a third process).
    #[arg(long, value_name = "SOCKET")]
    peer: PathBuf,
    /// RC QP pairs between the VF and its peer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    qps: u32,
    /// Message size in bytes of every SEND, WRITE and READ (1 .. 1048576).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    size: u32,
    /// Path MTU in bytes: 256, 512, 1024, 2048 or 4096.
    #[arg(long, default_value = "1024", value_parser = super::args::mtu)]
    mtu: Mtu,
    /// Pre-copy rounds, each after a burst of every opcode.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Shell command run after the source saved (and released) the VF and before the
    /// destination loads it; gets VHCA_IP and VHCA_MAC.
    #[arg(long, value_name = "CMD")]
    hook: Option<String>,
    /// RC ACK timeout exponent (4.096 µs × 2^T): 7 retries must outlast the blackout.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=31))]
    qp_timeout: u8,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let report = vhca::migration::attached::run(&vhca::migration::attached::Options {
            src: self.src,
            dst: self.dst,
            peer: self.peer,
            qps: self.qps,
            msg_size: self.size,
            mtu: self.mtu,
            rounds: self.rounds,
            hook: self.hook,
            qp_timeout: self.qp_timeout,
        })?;
        print!("{report}");
        Ok(())
    }
}
