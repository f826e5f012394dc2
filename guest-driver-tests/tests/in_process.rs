//! The shared verbs programs on in-process VFs (the same programs run over vhost-user later).

use std::cell::RefCell;
use std::rc::Rc;
use vhca_device::{Mtu, Psn};
use vhca_fabric::{Context, FaultConfig, FaultLevel, World, WorldConfig};
use vhca_guest::programs::{
    rc_every_opcode, rc_invalidate, rc_pair, rc_pingpong, rc_placement, ud_exchange,
};

fn two_contexts(faults: FaultConfig) -> (Context, Context) {
    let mut w = World::new(WorldConfig {
        faults,
        latency_ns: 1_000,
        seed: 9,
        ..Default::default()
    });
    let p0 = w.add_pf(2);
    let p1 = w.add_pf(1);
    let a = w.add_vf(p0).unwrap();
    let b = w.add_vf(p1).unwrap();
    let shared = Rc::new(RefCell::new(w));
    (Context::open(&shared, a), Context::open(&shared, b))
}

#[test]
fn rc_pingpong_program_runs_in_process() {
    for faults in [
        FaultConfig::default(),
        FaultConfig::level(FaultLevel::Heavy),
    ] {
        let (mut a, mut b) = two_contexts(faults);
        let (ea, eb) = rc_pair(
            &mut a,
            &mut b,
            1 << 16,
            64,
            (Psn(0x123), Psn(0xfffffe)),
            Mtu::Mtu1024,
        )
        .unwrap();
        let moved = rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 50).unwrap();
        assert_eq!(moved, 2 * 4096 * 50);
    }
}

#[test]
fn every_opcode_program_runs_in_process() {
    let (mut a, mut b) = two_contexts(FaultConfig::level(FaultLevel::Light));
    let (ea, eb) = rc_pair(&mut a, &mut b, 1 << 18, 16, (Psn(1), Psn(2)), Mtu::Mtu4096).unwrap();
    for size in [0, 1, 4096, 70_000] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, size).unwrap();
    }
}

#[test]
fn atomic_write_and_flush_program_runs_in_process() {
    let (mut a, mut b) = two_contexts(FaultConfig::level(FaultLevel::Heavy));
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 12,
        16,
        (Psn(7), Psn(0xffffff)),
        Mtu::Mtu256,
    )
    .unwrap();
    rc_placement(&mut a, &ea, &mut b, &eb, 0x1122_3344_5566_7788).unwrap();
}

#[test]
fn invalidation_program_runs_in_process() {
    let (mut a, mut b) = two_contexts(FaultConfig::default());
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 16,
        16,
        (Psn(10), Psn(20)),
        Mtu::Mtu1024,
    )
    .unwrap();
    rc_invalidate(&mut a, &ea, &mut b, &eb).unwrap();
}

#[test]
fn windows_and_fast_reg_program_runs_in_process() {
    let (mut a, mut b) = two_contexts(FaultConfig::default());
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 16,
        16,
        (Psn(10), Psn(20)),
        Mtu::Mtu1024,
    )
    .unwrap();
    vhca_guest::programs::windows::rc_windows(&mut a, &ea, &mut b, &eb).unwrap();
}

#[test]
fn ud_program_runs_in_process() {
    let (mut a, mut b) = two_contexts(FaultConfig::default());
    for size in [0, 1, 1000] {
        ud_exchange(&mut a, &mut b, size).unwrap();
    }
}

#[test]
fn bench_measurements_run_in_process() {
    let (mut a, mut b) = two_contexts(FaultConfig::default());
    let cfg = vhca_guest::bench::BenchConfig {
        writes: 50,
        round_trips: 20,
        ..Default::default()
    };
    let r = vhca_guest::bench::run(&mut a, &mut b, &cfg).unwrap();
    assert_eq!(r.write_bytes, 50 * 65536);
    assert!(r.write_bytes_per_sec > 0.0);
    assert!(r.send_latency_median <= r.send_latency_p99);
}
