//! `vhca state`.

use super::args::codec;
use super::{CmdError, CmdResult};
use std::path::{Path, PathBuf};
use vhca::state;
use vhca_device::checkpoint::Codec;

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
        #[arg(long, value_parser = codec, default_value = "json")]
        to: &'static dyn Codec,
    },
    /// Turn a v1 checkpoint into v2 (validated first; same codec unless --to).
    Upgrade {
        /// The v1 checkpoint file to read.
        input: PathBuf,
        /// Where to write the v2 checkpoint.
        output: PathBuf,
        /// The codec to write (default: the input's).
        #[arg(long, value_parser = codec)]
        to: Option<&'static dyn Codec>,
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
        #[arg(long, value_parser = codec, default_value = "binary")]
        codec: &'static dyn Codec,
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
                write(&output, &state::convert(&read(&input)?, to)?)?;
            }
            StateOp::Upgrade { input, output, to } => {
                write(&output, &state::upgrade(&read(&input)?, to)?)?;
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
            StateOp::Sample { output, codec } => write(&output, &state::sample(codec)?)?,
        }
        Ok(())
    }
}
