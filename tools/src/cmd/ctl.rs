//! `vhca ctl`.

use super::CmdResult;
use clap::ValueEnum;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("server").required(true).args(["ctl", "socket_dir"])))]
pub struct Args {
    /// The server's control socket.
    #[arg(long, value_name = "PATH")]
    ctl: Option<PathBuf>,
    /// The server's socket directory (its control socket is DIR/ctl.sock).
    #[arg(long, value_name = "DIR")]
    socket_dir: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    /// What to show.
    what: CtlWhat,
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

impl Args {
    pub fn run(self) -> CmdResult {
        // The group makes one of the two present.
        let path = match (self.ctl, self.socket_dir) {
            (Some(p), _) => p,
            (None, Some(d)) => d.join("ctl.sock"),
            (None, None) => unreachable!("clap requires --ctl or --socket-dir"),
        };
        let v = vhca_vhost::ctl::request(&path, self.what.name())?;
        if self.json {
            super::print_json_pretty(&v)?;
        } else {
            print!("{}", vhca_vhost::ctl::render_text(self.what.name(), &v));
        }
        Ok(())
    }
}
