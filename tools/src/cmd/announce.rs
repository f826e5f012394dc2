//! `vhca announce`.

use super::{CmdError, CmdResult};
use std::net::Ipv4Addr;
use vhca_device::Mac;

#[derive(clap::Args)]
pub struct Args {
    /// The interface to send it out of (run inside its network namespace).
    #[arg(long, value_name = "IF")]
    dev: String,
    /// The IPv4 address announced (the VF's).
    #[arg(long)]
    ip: Ipv4Addr,
    /// The MAC that now has it (the VF's), as aa:bb:cc:dd:ee:ff.
    #[arg(long, value_parser = super::args::mac)]
    mac: Mac,
}

impl Args {
    pub fn run(self) -> CmdResult {
        vhca_fabric::announce::gratuitous_arp(&self.dev, self.mac, self.ip).map_err(|source| {
            CmdError::Announce {
                dev: self.dev.clone(),
                source,
            }
        })
    }
}
