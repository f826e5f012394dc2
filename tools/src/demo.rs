//! `vhca demo`: the embedded default. One process, two PFs, three VFs (two on PF 0, one on
//! PF 1), RC connections between every pair running every opcode, and a UD group, over a lossy
//! in-process fabric. Every completion is checked the way `vhca sim` checks it.

use crate::sim::plan::{Plan, RcPlan, UdPlan};
use crate::sim::{run_plan, run_plan_tapped, SimReport};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;
use vhca_device::Mtu;
use vhca_fabric::{FaultConfig, FaultLevel};

/// The demo's fabric: lossy enough that retransmission, duplicate handling and reordering all
/// happen, mild enough that the run reads like a working network.
pub fn faults() -> FaultConfig {
    FaultConfig {
        drop: 0.02,
        duplicate: 0.01,
        reorder: 0.01,
        reorder_window_ns: 20_000,
        delay: 0.02,
        max_delay_ns: 50_000,
        corrupt: 0.002,
        corrupt_undetected: 0.0,
    }
}

/// pf0/vf0, pf0/vf1 and pf1/vf0; an RC connection between each pair; a UD group of all three.
pub fn plan(ops_per_side: usize) -> Plan {
    let rc = |a, b, mtu| RcPlan {
        a,
        b,
        mtu,
        max_size: 256 * 1024,
        depth: [8, 8],
        ops: [ops_per_side, ops_per_side],
        rq_slots: [8, 8],
        bad_rkey_at: None,
        timeout: 10,
        max_rd_atomic: 8,
        all_ops: true,
        local_keys: true,
        remote_key_errors: false,
    };
    Plan {
        pfs: vec![2, 1],
        vfs: vec![(0, 0), (0, 1), (1, 0)],
        rc: vec![
            rc(0, 1, Mtu::Mtu4096),
            rc(0, 2, Mtu::Mtu1024),
            rc(1, 2, Mtu::Mtu256),
        ],
        ud: vec![UdPlan {
            members: vec![0, 1, 2],
            ops: ops_per_side,
            bad_qkey_every: None,
            gsi: false,
        }],
        uc: Vec::new(),
        cuts: Vec::new(),
        migrations: Vec::new(),
        vf_mem_bytes: 64 << 20,
    }
}

pub fn run(ops_per_side: usize, seed: u64) -> SimReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    run_plan(
        seed,
        FaultLevel::Light,
        faults(),
        &plan(ops_per_side),
        &mut rng,
    )
}

/// [`run`], recording every transmitted packet in the pcap file `pcap` when given.
pub fn run_captured(
    ops_per_side: usize,
    seed: u64,
    pcap: Option<&std::path::Path>,
) -> std::io::Result<SimReport> {
    let Some(path) = pcap else {
        return Ok(run(ops_per_side, seed));
    };
    let tap = vhca_fabric::capture::world_tap(path)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok(run_plan_tapped(
        seed,
        FaultLevel::Light,
        faults(),
        &plan(ops_per_side),
        &mut rng,
        Some(tap),
    ))
}

/// The short summary the demo prints.
pub fn summary(r: &SimReport, wall: std::time::Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "vhca demo: 2 PFs, 3 VFs, 3 RC connections (MTU 4096, 1024, 256) and 3 UD QPs over a lossy in-process fabric");
    let _ = writeln!(
        s,
        "fabric: {} packets in, {} dropped, {} corrupted (dropped at ICRC), {} duplicated, {} delayed or reordered",
        r.switch.received, r.switch.dropped, r.switch.corrupted, r.switch.duplicated, r.switch.delayed
    );
    let _ = writeln!(
        s,
        "operations checked: {} ({} bytes, byte for byte)",
        r.ops_completed, r.bytes
    );
    for (op, n) in &r.by_op {
        let _ = writeln!(s, "  {op:<22} {n}");
    }
    let _ = writeln!(s, "completions by status:");
    for (st, n) in &r.by_status {
        let _ = writeln!(s, "  {st:<22} {n}");
    }
    let _ = writeln!(
        s,
        "per VF:          tx_pkts  retransmits  timeouts  seq_naks_rx  rnr_naks_rx  duplicates"
    );
    for (vf, c) in &r.vf_counters {
        let _ = writeln!(
            s,
            "  {vf:<12} {:>9} {:>12} {:>9} {:>12} {:>12} {:>11}",
            c.tx_packets,
            c.retransmits,
            c.retry_timeouts,
            c.seq_naks_received,
            c.rnr_naks_received,
            c.duplicate_requests
        );
    }
    let _ = writeln!(
        s,
        "virtual time {:.3} s, wall time {:.3} s, trace hash {:016x}: {}",
        r.virtual_ns as f64 / 1e9,
        wall.as_secs_f64(),
        r.trace_hash,
        if r.ok() {
            "all invariants held"
        } else {
            "VIOLATIONS (see above)"
        }
    );
    s
}
