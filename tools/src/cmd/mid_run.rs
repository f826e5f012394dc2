//! The `--migrate-*` options `pingpong`, `perf` and `opcodes` share on a `--vf`, and the
//! printing of a run's report with its migration's.

use super::{CmdError, CmdResult};
use std::path::PathBuf;
use vhca::migration::vf_mid_run::{MigrateOptions, Migrator};

/// Live migration of the `--vf` VF in the middle of a `pingpong`, `perf` or `opcodes` run.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Live-migrate the VF (`--vf`) to this VF socket of another `vhca serve` mid-run, then
    /// carry on there; prints a migration report (blackout, the stall the traffic saw).
    #[arg(long, value_name = "SOCKET", requires_all = ["vf", "migrate_at"], conflicts_with = "ip")]
    migrate_to: Option<PathBuf>,
    /// Switch over when this many iterations completed (on a side without iterations of its
    /// own: at its N-th 10 ms tick while it waits).
    #[arg(long, value_name = "N", requires = "migrate_to", value_parser = clap::value_parser!(u64).range(1..))]
    migrate_at: Option<u64>,
    /// Begin pre-copy (dirty logging, full RAM copy) at this count (default: N/2).
    #[arg(long, value_name = "M", requires = "migrate_to")]
    migrate_precopy_from: Option<u64>,
    /// Dirty-page pre-copy rounds between the beginning and the switch-over.
    #[arg(long, value_name = "R", default_value_t = 1, requires = "migrate_to")]
    migrate_rounds: u32,
    /// Shell command run between the source's save and the destination's load, with VHCA_IP
    /// and VHCA_MAC (move the VF's address and MAC there, as `migrate-attached --hook`).
    #[arg(long, value_name = "CMD", requires = "migrate_to")]
    migrate_hook: Option<String>,
}

impl MigrateArgs {
    /// The hook state of the run; `None` without `--migrate-to`.
    pub fn migrator(&self) -> Result<Option<Migrator>, CmdError> {
        let (Some(dst), Some(at)) = (&self.migrate_to, self.migrate_at) else {
            return Ok(None);
        };
        Migrator::new(MigrateOptions {
            dst: dst.clone(),
            at,
            precopy_from: self.migrate_precopy_from,
            rounds: self.migrate_rounds,
            hook: self.migrate_hook.clone(),
        })
        .map(Some)
        .map_err(|e| CmdError::Usage(e.to_string()))
    }
}

/// Prints a run's report (`json`: one object, with the migration's under "migration") and
/// the migration's lines on stderr; fails when a migration was asked for and did not happen.
pub fn print_run<R: serde::Serialize>(
    rep: &R,
    text: String,
    json: bool,
    mig: Option<&Migrator>,
) -> CmdResult {
    let m = mig.map(Migrator::report).transpose()?;
    if let Some(m) = &m {
        eprint!("{}", m.lines());
    }
    if json {
        let mut v = serde_json::to_value(rep)?;
        if let (Some(m), Some(o)) = (&m, v.as_object_mut()) {
            o.insert("migration".into(), serde_json::to_value(m)?);
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{text}");
    }
    Ok(())
}
