//! `vhca sim`: deterministic simulation of many VFs and QPs over a faulty in-process fabric.
//!
//! A seed picks the topology (PFs, VFs, RC connections, UD QPs), the workload (every opcode,
//! sizes 0 B–1 MiB, SGLs) and the fabric's faults. While it runs, every completion is checked
//! against a model of what must have happened (see [`check`]). The same seed gives the same
//! run and the same trace hash.

pub mod check;
pub mod flow;
pub mod plan;

use crate::sim::check::Checker;
use crate::sim::plan::Plan;
use crate::sim::plan::PlannedMigration;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use vhca_device::{Nanos, WorkCompletion};
use vhca_fabric::world::fnv;
use vhca_fabric::world::Migration;
use vhca_fabric::{FaultConfig, FaultLevel, World, WorldConfig};

/// What one seed did.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub faults: FaultLevel,
    pub trace_hash: u64,
    pub ops_completed: u64,
    pub bytes: u64,
    pub packets: u64,
    pub retransmits: u64,
    pub dropped_by_fabric: u64,
    pub virtual_ns: u64,
    pub injected: Vec<String>,
    pub migrations: u64,
    pub violations: Vec<String>,
    pub by_status: std::collections::BTreeMap<String, u64>,
    pub by_op: std::collections::BTreeMap<&'static str, u64>,
    /// The peer's requests through fast-register MRs and windows, checked.
    pub remote_keys: check::RemoteKeyCounts,
    /// Per VF: (address, counters).
    #[serde(serialize_with = "counters_by_name")]
    pub vf_counters: Vec<(String, vhca_device::resources::Counters)>,
    pub switch: vhca_fabric::switch::SwitchCounters,
}

/// `vf_counters` as JSON: each VF's counters an object of counter name → value (the device's
/// `Counters` has no serde of its own; it is not a format).
fn counters_by_name<S: serde::Serializer>(
    v: &[(String, vhca_device::resources::Counters)],
    s: S,
) -> Result<S::Ok, S::Error> {
    struct ByName<'a>(&'a vhca_device::resources::Counters);
    impl Serialize for ByName<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.fields())
        }
    }
    s.collect_seq(v.iter().map(|(a, c)| (a, ByName(c))))
}

impl SimReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// How long before a planned migration's stop its VF's state is pre-copied.
const PRECOPY_LEAD: Nanos = Nanos(200_000);

/// Virtual time after which a run that has not finished is a violation (a stall).
const TIME_LIMIT: Nanos = Nanos(600_000_000_000);

/// Runs one seed.
pub fn run(seed: u64, level: FaultLevel) -> SimReport {
    run_with(seed, level, false)
}

/// Runs one seed; with `migrate`, VFs also migrate between PFs at random moments.
pub fn run_with(seed: u64, level: FaultLevel, migrate: bool) -> SimReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = Plan::draw(&mut rng);
    if migrate {
        plan.draw_migrations(&mut rng);
    }
    run_plan(seed, level, FaultConfig::level(level), &plan, &mut rng)
}

/// Runs a given plan (the demo's fixed one, or a seed's) under `faults`.
pub fn run_plan(
    seed: u64,
    level: FaultLevel,
    faults: FaultConfig,
    plan: &Plan,
    rng: &mut ChaCha8Rng,
) -> SimReport {
    run_plan_tapped(seed, level, faults, plan, rng, None)
}

/// [`run_plan`] with an observer of every transmitted packet (a pcap capture).
pub fn run_plan_tapped(
    seed: u64,
    level: FaultLevel,
    faults: FaultConfig,
    plan: &Plan,
    rng: &mut ChaCha8Rng,
    tap: Option<vhca_fabric::world::Tap>,
) -> SimReport {
    let mut world = World::new(WorldConfig {
        seed: seed ^ 0x5eed_fab1,
        faults,
        latency_ns: 1_000,
        vf_mem_bytes: plan.vf_mem_bytes,
    });
    world.tap = tap;
    if std::env::var_os("VHCA_SIM_TRACE").is_some() {
        world.tap = Some(Box::new(|now, p| {
            let nak = p.ext.aeth.is_some_and(|a| a.syndrome.to_byte() & 0xe0 != 0);
            if nak || std::env::var("VHCA_SIM_TRACE").as_deref() == Ok("all") {
                eprintln!(
                    "{now} {} -> {} {:?} qp={} psn={} ack_req={} aeth={:?} reth={:?} len={}",
                    p.src_gid,
                    p.dst_gid,
                    p.bth.opcode,
                    p.bth.dest_qp.0,
                    p.bth.psn.0,
                    p.bth.ack_req,
                    p.ext.aeth,
                    p.ext.reth,
                    p.payload.len()
                );
            }
        }));
    }
    let mut checker = Checker::default();
    let mut flows = match flow::build(&mut world, plan, rng) {
        Ok(f) => f,
        Err(e) => {
            checker.violation(format!("setup failed: {e}"));
            Vec::new()
        }
    };
    let mut wcs: Vec<WorkCompletion> = Vec::with_capacity(64);
    let mut steps: u64 = 0;
    let mut pending: std::collections::VecDeque<PlannedMigration> =
        plan.migrations.iter().copied().collect();
    let mut in_flight: Vec<(Migration, Nanos, usize)> = Vec::new();
    let mut migrations = 0u64;
    // Device-state pre-copy: the VF of the next planned migration is checkpointed in full
    // PRECOPY_LEAD before its stop while it keeps running, and only the delta against that
    // base crosses in the blackout; the destination checks base + delta against the source's
    // state at the stop (`World::finish_migration`).
    let mut precopied: Option<vhca_fabric::world::Precopy> = None;
    loop {
        if let Some(m) = pending.front() {
            let addr = world.vfs()[m.vf];
            let due = Nanos(m.at.0.saturating_sub(PRECOPY_LEAD.0));
            if precopied.is_none() && world.now >= due && world.has_vf(addr) {
                match world.precopy(addr) {
                    Ok(p) => precopied = Some(p),
                    Err(e) => checker.violation(format!("pre-copy of {addr} failed: {e}")),
                }
            }
        }
        // Migrations: start those due, finish those whose blackout is over.
        while pending.front().is_some_and(|m| m.at <= world.now) {
            let Some(m) = pending.pop_front() else { break };
            let addr = world.vfs()[m.vf];
            let pre = precopied.take().filter(|p| p.of == addr);
            if !world.has_vf(addr) {
                continue; // already in flight: this one is skipped
            }
            match world.begin_migration(addr, pre) {
                Ok(t) => {
                    for f in flows.iter_mut() {
                        f.relocate(addr, t.in_flight);
                    }
                    in_flight.push((t, world.now.saturating_add(m.blackout_ns), m.dest_pf))
                }
                Err(e) => checker.violation(format!("migration of {addr} could not start: {e}")),
            }
        }
        let mut i = 0;
        while i < in_flight.len() {
            if in_flight[i].1 > world.now {
                i += 1;
                continue;
            }
            let (t, _, dest) = in_flight.swap_remove(i);
            let (from, away, started) = (t.from, t.in_flight, t.started);
            let bytes = match &t.base {
                Some(b) => format!(
                    "{} delta bytes after a {}-byte pre-copy",
                    t.blob.len(),
                    b.len()
                ),
                None => format!("{} state bytes", t.blob.len()),
            };
            // The planned PF, or the next one with a free slot.
            let npf = plan.pfs.len();
            let to = (0..npf)
                .map(|k| (dest + k) % npf)
                .find(|p| world.has_free_slot(*p))
                .unwrap_or(dest);
            match world.finish_migration(t, to) {
                Ok(to) => {
                    migrations += 1;
                    for f in flows.iter_mut() {
                        f.relocate(away, to);
                    }
                    checker.injected(format!(
                        "migration {from} -> {to}, blackout {} us, {bytes}",
                        (world.now.0 - started.0) / 1000
                    ));
                }
                Err(e) => checker.violation(format!("migration of {from} could not finish: {e}")),
            }
        }
        for f in flows.iter_mut() {
            f.post_ready(&mut world, rng, &mut checker);
        }
        for (i, when) in plan.cuts.iter() {
            if world.now >= *when {
                // The switch cuts a link between two VFs: every connection between them dies.
                if let Some(pair) = flows.get(*i).and_then(|f| f.vf_pair()) {
                    for f in flows.iter_mut().filter(|f| f.vf_pair() == Some(pair)) {
                        f.cut(&mut world, &mut checker);
                    }
                }
            }
        }
        let mut moved = world.step();
        steps += 1;
        for f in flows.iter_mut() {
            // A completion is progress too: LOCAL_INV completes without putting a packet out.
            moved |= f.poll(&mut world, &mut wcs, &mut checker) > 0;
        }
        if flows.iter().all(|f| f.finished()) && pending.is_empty() && in_flight.is_empty() {
            break;
        }
        if !moved {
            // The next thing to happen may be a migration starting or ending.
            let mig = pending
                .front()
                .map(|m| {
                    // The pre-copy instant while it is still ahead, else the stop.
                    let due = Nanos(m.at.0.saturating_sub(PRECOPY_LEAD.0));
                    if precopied.is_none() && due > world.now {
                        due
                    } else {
                        m.at
                    }
                })
                .into_iter()
                .chain(in_flight.iter().map(|m| m.1))
                .min();
            let next = match (world.next_event(), mig) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(t) if t <= TIME_LIMIT => world.now = world.now.max(t),
                _ => {
                    let stuck: Vec<String> = flows
                        .iter()
                        .filter(|f| !f.finished())
                        .map(|f| f.describe(&world))
                        .collect();
                    checker.violation(format!(
                        "stalled at {} with nothing scheduled: {}",
                        world.now,
                        stuck.join("; ")
                    ));
                    break;
                }
            }
        }
        if steps > 50_000_000 {
            checker.violation("step limit reached".into());
            break;
        }
    }
    for f in flows.iter() {
        f.final_checks(&world, &mut checker);
    }
    let mut packets = 0;
    let mut retransmits = 0;
    let mut vf_counters = Vec::new();
    for a in world.vfs() {
        if !world.has_vf(a) {
            // Still in flight: a migration that could not finish, on record as a violation.
            continue;
        }
        let c = world.vf(a).counters();
        packets += c.tx_packets;
        retransmits += c.retransmits;
        vf_counters.push((a.to_string(), c.clone()));
    }
    let s = &world.switch.counters;
    let mut hash = world.trace_hash;
    hash = fnv(hash, checker.completion_hash);
    SimReport {
        seed,
        faults: level,
        trace_hash: hash,
        ops_completed: checker.ops_completed,
        bytes: checker.bytes,
        packets,
        retransmits,
        dropped_by_fabric: s.dropped + s.corrupted,
        virtual_ns: world.now.0,
        injected: checker.injected.clone(),
        migrations,
        violations: checker.violations,
        by_status: checker.by_status,
        by_op: checker.by_op,
        remote_keys: checker.remote_keys,
        vf_counters,
        switch: world.switch.counters.clone(),
    }
}

/// The command that replays one seed.
pub fn replay_command(seed: u64, level: FaultLevel) -> String {
    format!(
        "cargo run --release -p vhca -- sim --seeds {seed}..{} --faults {level}",
        seed + 1
    )
}

/// The command that replays one seed of `vhca sim --migrate`.
pub fn replay_command_migrate(seed: u64, level: FaultLevel) -> String {
    format!("{} --migrate", replay_command(seed, level))
}
