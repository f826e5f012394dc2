//! `vhca guest-pair`.

use super::CmdResult;
use vhca_device::Mtu;
use vhca_guest::VfTarget;

#[derive(clap::Args)]
pub struct Args {
    /// Side A's VF: a VF socket, or in a guest a VF's PCI address (`pci:0000:00:03.0`).
    a: VfTarget,
    /// Side B's VF, the same way.
    b: VfTarget,
    /// Ping-pong message size in bytes (at most 32 KiB).
    #[arg(long, default_value_t = 4096)]
    size: u32,
    /// Ping-pong round trips.
    #[arg(long, default_value_t = 100)]
    iters: u32,
    /// Path MTU of the RC pair in bytes: 256, 512, 1024, 2048 or 4096.
    #[arg(long, default_value = "1024", value_parser = super::args::mtu)]
    mtu: Mtu,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let report = vhca::guest_pair::run(&vhca::guest_pair::Options {
            a: self.a,
            b: self.b,
            msg_size: self.size,
            iters: self.iters,
            mtu: self.mtu,
        })?;
        print!("{report}");
        Ok(())
    }
}
