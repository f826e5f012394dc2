//! `vhca demo`.

use super::{CmdError, CmdResult};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Operations each side of each connection posts.
    #[arg(long, default_value_t = 400)]
    ops: usize,
    /// Seeds the workload and the fabric's faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Record every packet the VFs transmit (before the fabric's faults) in this pcap file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let start = Instant::now();
        let r = vhca::demo::run_captured(self.ops, self.seed, self.pcap.as_deref()).map_err(
            |source| CmdError::Capture {
                path: self.pcap.clone().unwrap_or_default(),
                source,
            },
        )?;
        print!("{}", vhca::demo::summary(&r, start.elapsed()));
        for v in &r.violations {
            eprintln!("violation: {v}");
        }
        if r.ok() {
            Ok(())
        } else {
            Err(CmdError::Check(format!(
                "{} violations of the invariants",
                r.violations.len()
            )))
        }
    }
}
