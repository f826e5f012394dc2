//! `vhca migrate`.

use super::CmdResult;

#[derive(clap::Args)]
pub struct Args {
    /// Pre-copy rounds while traffic runs.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Message size in bytes of the traffic on every QP (at most 32 KiB).
    #[arg(long, default_value_t = 1024)]
    size: u32,
    /// Connected RC QP pairs between the two VFs, each carrying traffic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
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
}

impl Args {
    pub fn run(self) -> CmdResult {
        let report = vhca::migration::serve_pair::run(&vhca::migration::serve_pair::Options {
            rounds: self.rounds,
            msg_size: self.size,
            qps: self.qps,
            json: self.json,
            verify_pages: self.verify_pages,
            sequential: self.sequential,
            serve_logs: self.serve_logs,
        })?;
        print!("{report}");
        Ok(())
    }
}
