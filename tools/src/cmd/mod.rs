//! One module per `vhca` subcommand: its arguments (a clap `Args` struct) and its `run`,
//! which turns them into the library's options, runs it and prints the result. Errors come
//! back as a [`CmdError`]; `main` prints them once and picks the exit code.

pub mod announce;
pub mod args;
pub mod bench;
pub mod ctl;
pub mod demo;
pub mod guest_pair;
pub mod mid_run;
pub mod migrate;
pub mod migrate_attached;
pub mod opcodes;
pub mod perf;
pub mod pingpong;
pub mod placement;
pub mod rping;
pub mod serve;
pub mod sim;
pub mod state;
pub mod windows;

use std::process::ExitCode;
use thiserror::Error;

/// Why a command failed. [`CmdError::exit_code`] is the convention of every command:
/// 0 ok, 1 the run failed (an error, or a check it makes), 2 a usage error (clap's own, and
/// the [`CmdError::Usage`] that clap cannot see), 3 a ping-pong whose last SEND was never
/// acknowledged ([`vhca::interop::pingpong::PingError::LastSendUnacknowledged`]) or an rping
/// server whose last go-ahead was not
/// ([`vhca::interop::rping::RpingError::LastGoAheadUnacknowledged`]), or a write_lat whose last
/// WRITE was not ([`vhca::interop::perf::PerfError::LastWriteUnacknowledged`]).
#[derive(Debug, Error)]
pub enum CmdError {
    /// Options that cannot work together, found after clap parsed them.
    #[error("{0}")]
    Usage(String),
    /// The run completed, and what it checks did not hold (printed above, on stderr).
    #[error("{0}")]
    Check(String),
    #[error("encoding the result as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the capture {}: {source}", path.display())]
    Capture {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pingpong(#[from] vhca::interop::pingpong::PingError),
    #[error(transparent)]
    Perf(#[from] vhca::interop::perf::PerfError),
    #[error(transparent)]
    Rping(#[from] vhca::interop::rping::RpingError),
    #[error(transparent)]
    Opcodes(#[from] vhca::interop::opcodes::OpcodesError),
    #[error(transparent)]
    Placement(#[from] vhca::interop::placement::PlacementError),
    #[error(transparent)]
    Windows(#[from] vhca::interop::windows::WindowsError),
    #[error(transparent)]
    VfMigration(#[from] vhca::migration::vf_mid_run::VfMigrateError),
    #[error(transparent)]
    ServePair(#[from] vhca::migration::serve_pair::ServePairError),
    #[error(transparent)]
    Attached(#[from] vhca::migration::attached::AttachedError),
    #[error(transparent)]
    GuestPair(#[from] vhca::guest_pair::GuestPairError),
    #[error(transparent)]
    State(#[from] vhca::state::StateError),
    #[error(transparent)]
    Checkpoint(#[from] vhca_device::checkpoint::CheckpointError),
    #[error(transparent)]
    Serve(#[from] vhca_vhost::serve::ServeError),
    #[error(transparent)]
    Ctl(#[from] vhca_vhost::ctl::CtlError),
    #[error("{dev}: {source}")]
    Announce {
        dev: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    InprocBench(#[from] vhca_device::VerbsError),
    #[error(transparent)]
    VhostBench(#[from] vhca::bench::vhost::VhostBenchError),
    #[error(transparent)]
    UdpBench(#[from] vhca::bench::udp::UdpBenchError),
}

impl CmdError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CmdError::Usage(_) => ExitCode::from(2),
            CmdError::Pingpong(e) => ExitCode::from(e.exit_status()),
            CmdError::Rping(e) => ExitCode::from(e.exit_status()),
            CmdError::Perf(e) => ExitCode::from(e.exit_status()),
            _ => ExitCode::FAILURE,
        }
    }
}

/// A command's result.
pub type CmdResult = Result<(), CmdError>;

/// Prints `v` as pretty JSON on stdout.
pub fn print_json_pretty(v: &impl serde::Serialize) -> CmdResult {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
