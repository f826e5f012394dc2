//! `vhca sim`.

use super::{CmdError, CmdResult};
use std::ops::Range;
use vhca::sim;
use vhca_fabric::FaultLevel;

#[derive(clap::Args)]
pub struct Args {
    /// Seeds to run, as A..B (B excluded) or a single number.
    #[arg(long, default_value = "0..10", value_name = "A..B|N", value_parser = super::args::seeds)]
    seeds: Range<u64>,
    /// Fabric faults: none, light or heavy (≥ 10% loss plus duplication, reordering, delay).
    #[arg(long, default_value = "heavy")]
    faults: FaultLevel,
    /// Print one JSON object per seed instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Also migrate VFs between PFs at random moments (checkpoint, blackout, restore,
    /// resume), under the same invariants.
    #[arg(long)]
    migrate: bool,
}

impl Args {
    pub fn run(self) -> CmdResult {
        let (faults, migrate) = (self.faults, self.migrate);
        let mut failed = 0u64;
        let mut total_ops = 0u64;
        let mut through_keys = sim::check::RemoteKeyCounts::default();
        let n = self.seeds.end - self.seeds.start;
        for seed in self.seeds {
            let r = sim::run_with(seed, faults, migrate);
            total_ops += r.ops_completed;
            through_keys.through_fast_reg += r.remote_keys.through_fast_reg;
            through_keys.through_window += r.remote_keys.through_window;
            through_keys.refused += r.remote_keys.refused;
            through_keys.invalidated_by_send += r.remote_keys.invalidated_by_send;
            if self.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "seed {seed}: {} ops={} bytes={} packets={} retransmits={} fabric_drops={} virtual={:.3}s hash={:016x}{}{}",
                    if r.ok() { "ok" } else { "FAILED" },
                    r.ops_completed,
                    r.bytes,
                    r.packets,
                    r.retransmits,
                    r.dropped_by_fabric,
                    r.virtual_ns as f64 / 1e9,
                    r.trace_hash,
                    if migrate { format!(" migrations={}", r.migrations) } else { String::new() },
                    if r.injected.is_empty() { String::new() } else { format!(" injected={}", r.injected.len()) },
                );
            }
            if !r.ok() {
                failed += 1;
                for v in &r.violations {
                    eprintln!("  violation: {v}");
                }
                let replay = if migrate {
                    sim::replay_command_migrate(seed, faults)
                } else {
                    sim::replay_command(seed, faults)
                };
                eprintln!("  replay: {replay}");
            }
        }
        println!(
            "{} seeds, {} passed, {} failed, {} operations checked",
            n,
            n - failed,
            failed,
            total_ops
        );
        let k = through_keys;
        println!(
            "through remote keys: {} via fast-register MRs, {} via windows, {} refused as predicted, {} invalidated by SEND_WITH_INV",
            k.through_fast_reg, k.through_window, k.refused, k.invalidated_by_send
        );
        if failed > 0 {
            Err(CmdError::Check(format!("{failed} of {n} seeds failed")))
        } else {
            Ok(())
        }
    }
}
