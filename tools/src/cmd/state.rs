//! `vhca state`.

use super::args::CodecArg;
use super::{CmdError, CmdResult};
use std::path::{Path, PathBuf};
use vhca::state;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    op: StateOp,
}

#[derive(clap::Subcommand)]
enum StateOp {
    /// Print a summary: header, identity, objects, every QP with its PSNs; and whether it is valid.
    Inspect {
        /// The checkpoint file.
        file: PathBuf,
    },
    /// Re-encode a checkpoint with another codec.
    Convert {
        /// The checkpoint file to read.
        input: PathBuf,
        /// Where to write the re-encoded checkpoint.
        output: PathBuf,
        /// The codec to write.
        #[arg(long, value_enum, default_value = "json")]
        to: CodecArg,
    },
    /// Print the fields that differ between two checkpoints, as paths; exit 1 if any do.
    Diff {
        /// The first checkpoint file.
        a: PathBuf,
        /// The second checkpoint file.
        b: PathBuf,
    },
    /// Exit 0 when the file decodes and is consistent.
    Validate {
        /// The checkpoint file.
        file: PathBuf,
    },
    /// Write a checkpoint of a VF in the middle of RC traffic, to try the other commands on.
    Sample {
        /// Where to write it.
        output: PathBuf,
        /// The codec to write.
        #[arg(long, value_enum, default_value = "binary")]
        codec: CodecArg,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, CmdError> {
    std::fs::read(path).map_err(|source| CmdError::File {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> CmdResult {
    std::fs::write(path, bytes).map_err(|source| CmdError::File {
        path: path.into(),
        source,
    })
}

impl Args {
    pub fn run(self) -> CmdResult {
        match self.op {
            StateOp::Inspect { file } => print!("{}", state::inspect(&read(&file)?)?),
            StateOp::Convert { input, output, to } => {
                write(&output, &state::convert(&read(&input)?, to.into())?)?;
            }
            StateOp::Diff { a, b } => {
                let d = state::diff(&read(&a)?, &read(&b)?)?;
                for line in &d {
                    println!("{line}");
                }
                if !d.is_empty() {
                    return Err(CmdError::Check(format!("{} fields differ", d.len())));
                }
            }
            StateOp::Validate { file } => {
                state::validate(&read(&file)?)?;
                println!("{}: valid", file.display());
            }
            StateOp::Sample { output, codec } => write(&output, &state::sample(codec.into())?)?,
        }
        Ok(())
    }
}
