//! `vhca state`.

use super::args::codec;
use super::{print_json_pretty, CmdError, CmdResult};
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
    /// Where a checkpoint's bytes go: by kind of object (from the section table, nothing
    /// decoded) and the QP bytes by part (init, attr, rq, req, resp)
    Stats {
        /// The checkpoint file (v1 or v2, any codec, full or delta).
        file: PathBuf,
        /// Print the numbers as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every codec on VFs of N idle connected RC QPs: bytes in all, per QP and per kind,
    /// encode and decode times, migration cost at 10/25/100 Gb/s, and a delta after 1% of
    /// the QPs moved on (docs/benchmarks.md)
    Bench {
        /// QP counts, one run each.
        #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_value = "1,1024,16384",
              value_parser = clap::value_parser!(u32).range(1..=65536))]
        qps: Vec<u32>,
        /// Repetitions of each timing (the median is printed).
        #[arg(long, value_name = "N", default_value_t = 5,
              value_parser = clap::value_parser!(u32).range(1..))]
        reps: u32,
        /// Print the report as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of what `export` prints (a `CheckpointV2`: Full or Delta)
    Schema,
    /// Print any checkpoint (v1 or v2, any codec, full or delta) as one JSON document that
    /// follows `vhca state schema`
    Export {
        /// The checkpoint file.
        file: PathBuf,
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
            StateOp::Stats { file, json } => {
                let s = state::stats::stats(&read(&file)?)?;
                if json {
                    print_json_pretty(&s)?;
                } else {
                    print!("{}", s.text());
                }
            }
            StateOp::Bench { qps, reps, json } => {
                let r = state::bench::run(&state::bench::Options { qps, reps })?;
                if json {
                    print_json_pretty(&r)?;
                } else {
                    print!("{}", r.text());
                }
            }
            StateOp::Schema => println!("{}", state::export::schema_text()?),
            StateOp::Export { file } => println!("{}", state::export::export(&read(&file)?)?),
        }
        Ok(())
    }
}
