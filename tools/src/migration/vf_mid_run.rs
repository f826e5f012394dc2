//! Live-migrating the VF under a running `vhca pingpong --vf` / `vhca perf --vf` (options
//! `--migrate-to DST.sock --migrate-at N`): a [`Migrator`] is the run's [`Hook`]; when the run
//! reaches iteration N it stops the VF, moves its state to the destination VF socket (running
//! `--migrate-hook CMD` between the source's save and the destination's load, where the VF's
//! address and MAC move: docs/migration.md, "UDP fabrics") and resumes it there; the run then
//! carries on on the destination. Pre-copy (the full RAM copy and `--migrate-rounds` dirty
//! rounds) happens at earlier iterations, so the switch-over's pause is the stop-and-copy only.
//!
//! It also measures what the traffic saw: the time of every hook call is a completion time
//! (the programs call their hook each time their iteration count advances), so the gaps
//! between consecutive calls around the switch-over are the stall the peer's traffic saw.
//! A side with no iterations of its own (an `ib_write_bw` server) calls its hook every
//! [`IDLE_TICK`](crate::interop::endpoint::IDLE_TICK) instead: there N counts those calls, and no stall
//! is measured on that side (its peer's completions are not visible to it).
//!
//! [`Hook`]: crate::interop::endpoint::Hook

use crate::interop::endpoint::{HookError, Progress};
use crate::migration::hook_command::HookCommand;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use vhca_guest::migrate::MigrateError;
use vhca_guest::migrate::{Migration, Timeline};
use vhca_guest::GuestContext;

/// Where and when to migrate.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// The destination VF's vhost-user socket (a VF of another `vhca serve`).
    pub dst: PathBuf,
    /// Switch over when this many iterations completed (on a side without iterations: at the
    /// N-th hook call, about N × 10 ms into its wait).
    pub at: u64,
    /// Begin (dirty logging, full RAM copy) when this many completed; `None`: at `at / 2`.
    pub precopy_from: Option<u64>,
    /// Dirty-page rounds between the beginning and the switch-over, evenly spread.
    pub rounds: u32,
    /// Shell command run between the source's save and the destination's load, with
    /// `VHCA_IP` and `VHCA_MAC` (as `vhca migrate-attached --hook`).
    pub hook: Option<String>,
}

/// Options that cannot work together (a usage error).
#[derive(Debug, Error)]
pub enum MigrateOptionsError {
    #[error("--migrate-at must be at least 1")]
    AtZero,
    #[error("--migrate-precopy-from must not be after --migrate-at")]
    PrecopyAfterSwitch,
}

/// What went wrong with the migration under the run.
#[derive(Debug, Error)]
pub enum VfMigrateError {
    #[error("migration begin: {0}")]
    Begin(#[source] MigrateError),
    #[error("pre-copy round: {0}")]
    Round(#[source] MigrateError),
    #[error("QUERY_GID: {0}")]
    QueryGid(#[source] vhca_device::VerbsError),
    #[error("migration: {0}")]
    Finish(#[source] MigrateError),
    #[error("the run ended before the migration at {at} (it reached {reached})")]
    NotReached { at: u64, reached: u64 },
}

impl From<VfMigrateError> for HookError {
    fn from(e: VfMigrateError) -> HookError {
        HookError::Migration(Box::new(e))
    }
}

/// Completions counted after the switch-over for the stall window.
const AFTER: usize = 20;
/// Completions before the switch-over in the stall window.
const BEFORE: usize = 5;

/// What the migration did and what the traffic saw. Times in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationReport {
    pub dst: String,
    /// The count at the switch-over (iterations, or hook calls on a side without iterations).
    pub at: u64,
    /// "iterations" or "hook calls" (what `at` counts).
    pub counting: &'static str,
    /// The count at which pre-copy began.
    pub precopy_from: u64,
    pub precopy_rounds: usize,
    /// Longest pause a pre-copy step (full copy or a round) put into the traffic.
    pub precopy_pause_ms: f64,
    pub ram_bytes: u64,
    pub state_bytes: usize,
    /// Pages copied after the stop.
    pub stop_copy_pages: u64,
    /// From the first GET_VRING_BASE to the destination's rings kicked.
    pub blackout_ms: f64,
    /// When the switch-over began (the stop), milliseconds since the Unix epoch: lines it up
    /// with a capture of the traffic.
    pub stop_unix_ms: f64,
    /// The --migrate-hook command's run time (inside the blackout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_ms: Option<f64>,
    /// Median gap between consecutive completions before pre-copy began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typical_gap_ms: Option<f64>,
    /// From the completion at which the switch-over ran to the next one: the iteration (or
    /// the completion batch) in flight across the migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrated_iteration_ms: Option<f64>,
    /// From the destination's resume to the next completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_to_completion_ms: Option<f64>,
    /// Longest gap between consecutive completions from 5 before the switch-over to 20 after
    /// it: the stall the traffic saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall_ms: Option<f64>,
}

impl MigrationReport {
    /// The report as text lines (stderr of the tools).
    pub fn lines(&self) -> String {
        let ms = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.1} ms"));
        format!(
            "migration to {}: at {} {} (pre-copy from {}, {} rounds, longest pre-copy pause {:.1} ms)\n\
             migration: {} B RAM, {} B device state, {} pages copied after the stop, hook {}\n\
             migration: blackout {:.1} ms; stall {} (migrated iteration {}, resume to next completion {}, typical gap {})\n",
            self.dst,
            self.at,
            self.counting,
            self.precopy_from,
            self.precopy_rounds,
            self.precopy_pause_ms,
            self.ram_bytes,
            self.state_bytes,
            self.stop_copy_pages,
            ms(self.hook_ms),
            self.blackout_ms,
            ms(self.stall_ms),
            ms(self.migrated_iteration_ms),
            ms(self.resume_to_completion_ms),
            ms(self.typical_gap_ms),
        )
    }
}

enum Stage {
    Idle,
    Copying(Box<Migration>),
    Done,
}

/// The hook state of one migrating run.
pub struct Migrator {
    o: MigrateOptions,
    stage: Stage,
    /// Completion (hook call) times and counts.
    calls: Vec<(Instant, u64)>,
    ticks: u64,
    counting_iterations: bool,
    begun_at: Option<(usize, u64)>,
    next_round: u32,
    longest_pause: Duration,
    switch_call: Option<usize>,
    resumed: Option<Instant>,
    stop_wall: Option<std::time::SystemTime>,
    timeline: Option<Timeline>,
    hook_took: Arc<Mutex<Option<Duration>>>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Migrator {
    pub fn new(o: MigrateOptions) -> Result<Migrator, MigrateOptionsError> {
        if o.at == 0 {
            return Err(MigrateOptionsError::AtZero);
        }
        if o.precopy_from.is_some_and(|p| p > o.at) {
            return Err(MigrateOptionsError::PrecopyAfterSwitch);
        }
        Ok(Migrator {
            o,
            stage: Stage::Idle,
            calls: Vec::new(),
            ticks: 0,
            counting_iterations: true,
            begun_at: None,
            next_round: 0,
            longest_pause: Duration::ZERO,
            switch_call: None,
            resumed: None,
            stop_wall: None,
            timeline: None,
            hook_took: Arc::new(Mutex::new(None)),
        })
    }

    fn precopy_from(&self) -> u64 {
        self.o.precopy_from.unwrap_or(self.o.at / 2)
    }

    /// The count at which round `i` (0-based) runs.
    fn round_at(&self, begin: u64, i: u32) -> u64 {
        let span = self.o.at.saturating_sub(begin);
        begin + span * u64::from(i + 1) / (u64::from(self.o.rounds) + 1)
    }

    /// The [`Hook`](crate::interop::endpoint::Hook) of the run.
    pub fn hook(&mut self, c: &mut GuestContext, p: Progress) -> Result<(), VfMigrateError> {
        let now = Instant::now();
        let n = match p.done {
            Some(n) => n,
            None => {
                self.counting_iterations = false;
                self.ticks += 1;
                self.ticks
            }
        };
        self.calls.push((now, n));
        let idx = self.calls.len() - 1;
        if matches!(self.stage, Stage::Idle) && n >= self.precopy_from() {
            let m = Migration::begin(c.driver_mut(), &self.o.dst).map_err(VfMigrateError::Begin)?;
            self.begun_at = Some((idx, n));
            self.stage = Stage::Copying(Box::new(m));
            self.longest_pause = self.longest_pause.max(now.elapsed());
        }
        let begin = self.begun_at.map_or(0, |(_, b)| b);
        if n < self.o.at {
            if self.next_round < self.o.rounds && n >= self.round_at(begin, self.next_round) {
                if let Stage::Copying(m) = &mut self.stage {
                    let t = Instant::now();
                    m.round(c.driver()).map_err(VfMigrateError::Round)?;
                    self.longest_pause = self.longest_pause.max(t.elapsed());
                    self.next_round += 1;
                }
            }
            return Ok(());
        }
        let Stage::Copying(_) = self.stage else {
            return Ok(());
        };
        let Stage::Copying(mut m) = std::mem::replace(&mut self.stage, Stage::Done) else {
            unreachable!("checked above")
        };
        if let Some(cmd) = self.o.hook.clone() {
            // The device's GID (the serve process chose the VF's address).
            let ip = c
                .query_gid(0)
                .map_err(VfMigrateError::QueryGid)?
                .to_ipv4()
                .map(std::net::Ipv4Addr::from);
            let mac = c.driver().config().mac;
            m.between =
                Some(HookCommand { cmd, ip, mac }.into_migration_hook(self.hook_took.clone()));
        }
        self.switch_call = Some(idx);
        self.stop_wall = Some(std::time::SystemTime::now());
        let timeline = m.finish(c.driver_mut()).map_err(VfMigrateError::Finish)?;
        self.resumed = Some(Instant::now());
        self.timeline = Some(timeline);
        Ok(())
    }

    /// The report once the run ended; an error if the switch-over never happened (the run
    /// ended first).
    pub fn report(&self) -> Result<MigrationReport, VfMigrateError> {
        let (Some(t), Some(k)) = (&self.timeline, self.switch_call) else {
            return Err(VfMigrateError::NotReached {
                at: self.o.at,
                reached: self.calls.last().map_or(0, |c| c.1),
            });
        };
        let gap = |i: usize| ms(self.calls[i + 1].0 - self.calls[i].0);
        let (mut typical, mut migrated, mut after, mut stall) = (None, None, None, None);
        if self.counting_iterations {
            let begin_idx = self.begun_at.map_or(k, |(i, _)| i);
            let mut before: Vec<f64> = (0..begin_idx.saturating_sub(1)).map(gap).collect();
            before.sort_by(f64::total_cmp);
            typical = before.get(before.len() / 2).copied();
            if k + 1 < self.calls.len() {
                migrated = Some(gap(k));
                after = self.resumed.map(|r| ms(self.calls[k + 1].0 - r));
                let last = (k + AFTER).min(self.calls.len() - 1);
                stall = (k.saturating_sub(BEFORE)..last)
                    .map(gap)
                    .max_by(f64::total_cmp);
            }
        }
        let hook_ms = self
            .hook_took
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(ms);
        Ok(MigrationReport {
            dst: self.o.dst.display().to_string(),
            at: self.calls[k].1,
            counting: if self.counting_iterations {
                "iterations"
            } else {
                "hook calls"
            },
            precopy_from: self.begun_at.map_or(self.calls[k].1, |(_, b)| b),
            precopy_rounds: t.rounds.len().saturating_sub(1),
            precopy_pause_ms: ms(self.longest_pause),
            ram_bytes: t.ram_bytes,
            state_bytes: t.state_bytes,
            stop_copy_pages: t.last.copied_pages,
            blackout_ms: ms(t.blackout),
            stop_unix_ms: self
                .stop_wall
                .and_then(|w| w.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, ms),
            hook_ms,
            typical_gap_ms: typical,
            migrated_iteration_ms: migrated,
            resume_to_completion_ms: after,
            stall_ms: stall,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_spread_between_begin_and_switch() {
        let m = Migrator::new(MigrateOptions {
            dst: "x".into(),
            at: 1000,
            precopy_from: None,
            rounds: 3,
            hook: None,
        })
        .unwrap();
        assert_eq!(m.precopy_from(), 500);
        let at: Vec<u64> = (0..3).map(|i| m.round_at(500, i)).collect();
        assert_eq!(at, [625, 750, 875]);
        assert!(Migrator::new(MigrateOptions {
            dst: "x".into(),
            at: 0,
            precopy_from: None,
            rounds: 0,
            hook: None,
        })
        .is_err());
    }
}
