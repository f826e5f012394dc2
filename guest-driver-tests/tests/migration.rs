//! Live migration over vhost-user between `vhca serve` processes (docs/migration.md): the
//! guest driver plays QEMU's migration sequence with [`vhca_guest::migrate::Migration`].
//!
//! Both VFs of a connected pair move from process P1 to process P3 while their RC connection
//! carries traffic; the same QPs carry on afterwards and every opcode still works. The pair
//! also moves back and forth between two processes 20 times: a VF whose state was saved is
//! reset on disconnect and takes the next migration in. 1,024 connected QPs move with at most
//! 512 bytes of state each, every one carrying checked traffic afterwards. Faults: a corrupted state and a
//! destination that dies leave the source running.

use std::time::Duration;
use vhca_device::{Mtu, Psn};
use vhca_guest::many::{qp_set_traffic, ram_needed, rc_qp_sets};
use vhca_guest::migrate::{MigrateError, Migration};
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong, Endpoint};
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext};

const READY: Duration = Duration::from_secs(60);

fn cfg() -> DriverConfig {
    DriverConfig::small()
}

fn open(s: &ServeProcess, vf: u16) -> GuestContext {
    GuestContext::connect(s.socket(vf), &cfg()).unwrap_or_else(|e| panic!("connect to vf{vf}: {e}"))
}

fn connected(a: &mut GuestContext, b: &mut GuestContext) -> (Endpoint, Endpoint) {
    let (ea, eb) = rc_pair(a, b, 1 << 16, 16, (Psn(0x123), Psn(0xfffffe)), Mtu::Mtu1024).unwrap();
    (ea, eb)
}

#[test]
fn a_connected_pair_moves_to_another_process_mid_traffic() {
    let p1 = ServeProcess::start(2, READY).expect("P1 starts");
    let p3 = ServeProcess::start(2, READY).expect("P3 starts");
    let mut a = open(&p1, 0);
    let mut b = open(&p1, 1);
    let gid_a = a.driver().config().gid;
    let (ea, eb) = connected(&mut a, &mut b);
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 512, 10).unwrap(),
        2 * 512 * 10
    );

    let mut ma = Migration::begin(a.driver_mut(), p3.socket(0)).unwrap();
    let mut mb = Migration::begin(b.driver_mut(), p3.socket(1)).unwrap();
    for _ in 0..3 {
        // Traffic between the rounds: the device dirties payload, CQE and used-ring pages.
        assert_eq!(
            rc_pingpong(&mut a, &ea, &mut b, &eb, 1024, 20).unwrap(),
            2 * 1024 * 20
        );
        let r = ma.round(a.driver()).unwrap();
        assert!(
            r.device_pages > 0,
            "the device's writes reach the dirty log: {r:?}"
        );
        mb.round(b.driver()).unwrap();
    }
    let ta = ma.finish(a.driver_mut()).unwrap();
    let tb = mb.finish(b.driver_mut()).unwrap();
    println!("vf0:\n{ta}\nvf1:\n{tb}");
    assert!(ta.state_bytes > 0 && tb.state_bytes > 0);

    // The same QPs, now served by P3, carry on; then every opcode on fresh connections.
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 20).unwrap(),
        2 * 4096 * 20
    );
    assert_eq!(a.driver().config().gid, gid_a);
    for size in [0, 1, 4096] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, size).unwrap();
        rc_every_opcode(&mut b, &eb, &mut a, &ea, size).unwrap();
    }
}

#[test]
fn a_pair_moves_back_and_forth_twenty_times() {
    let pa = ServeProcess::start(2, READY).expect("A starts");
    let pb = ServeProcess::start(2, READY).expect("B starts");
    let mut a = open(&pa, 0);
    let mut b = open(&pa, 1);
    let (ea, eb) = connected(&mut a, &mut b);
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 256, 5).unwrap(),
        2 * 256 * 5
    );
    let mut sizes = Vec::new();
    for hop in 0..20u32 {
        // Even hops go A -> B, odd ones back: each destination VF is the one that saved its
        // state (or was left fresh) on the previous hop.
        let to = if hop % 2 == 0 { &pb } else { &pa };
        let mut ma = Migration::begin(a.driver_mut(), to.socket(0))
            .unwrap_or_else(|e| panic!("hop {hop}: begin vf0: {e}"));
        let mut mb = Migration::begin(b.driver_mut(), to.socket(1))
            .unwrap_or_else(|e| panic!("hop {hop}: begin vf1: {e}"));
        ma.verify_pages = true;
        mb.verify_pages = true;
        // Traffic between the copy rounds, as in a live migration.
        let size = 1 + hop * 97;
        assert_eq!(
            rc_pingpong(&mut a, &ea, &mut b, &eb, size, 4).unwrap(),
            2 * u64::from(size) * 4,
            "hop {hop}: traffic during pre-copy"
        );
        ma.round(a.driver()).unwrap();
        mb.round(b.driver()).unwrap();
        let ta = ma
            .finish(a.driver_mut())
            .unwrap_or_else(|e| panic!("hop {hop}: finish vf0: {e}"));
        let tb = mb
            .finish(b.driver_mut())
            .unwrap_or_else(|e| panic!("hop {hop}: finish vf1: {e}"));
        assert_eq!(
            ta.missed_pages,
            Some(0),
            "hop {hop}: vf0 page escaped the logs"
        );
        assert_eq!(
            tb.missed_pages,
            Some(0),
            "hop {hop}: vf1 page escaped the logs"
        );
        sizes.push((ta.state_bytes, tb.state_bytes));
        // After the hop: the same QPs, every message checked byte for byte (rc_pingpong and
        // rc_every_opcode fail on any error completion).
        assert_eq!(
            rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 8).unwrap(),
            2 * 4096 * 8,
            "hop {hop}: traffic after"
        );
        rc_every_opcode(&mut a, &ea, &mut b, &eb, 64 + hop)
            .unwrap_or_else(|e| panic!("hop {hop}: every opcode a->b: {e}"));
        rc_every_opcode(&mut b, &eb, &mut a, &ea, 4096)
            .unwrap_or_else(|e| panic!("hop {hop}: every opcode b->a: {e}"));
    }
    // Nothing accumulates from hop to hop. The first hops grow the state a little: each one's
    // READs and atomics fill the responders' resources (kept for replaying duplicates, at
    // most max_dest_rd_atomic = 16 per QP); once those are full the size stays put.
    let (mid, last) = (sizes[9], sizes[sizes.len() - 1]);
    assert!(
        last.0 <= mid.0 + 4 && last.1 <= mid.1 + 4,
        "state sizes over the hops: {sizes:?}"
    );
}

#[test]
fn a_corrupted_state_is_refused_and_the_source_keeps_running() {
    let p1 = ServeProcess::start(2, READY).expect("P1 starts");
    let mut p3 = ServeProcess::start(1, READY).expect("P3 starts");
    let mut a = open(&p1, 0);
    let mut b = open(&p1, 1);
    let (ea, eb) = connected(&mut a, &mut b);
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 512, 5).unwrap(),
        2 * 512 * 5
    );
    let mut m = Migration::begin(b.driver_mut(), p3.socket(0)).unwrap();
    m.tamper = Some(Box::new(|blob: &mut Vec<u8>| {
        let mid = blob.len() / 2;
        blob[mid] ^= 0x5a;
    }));
    let e = m.finish(b.driver_mut()).unwrap_err();
    assert!(matches!(e, MigrateError::SourceResumed { .. }), "{e}");
    p3.wait_for_log("device state transfer failed", READY)
        .expect("the destination says why");
    assert!(p3.running());
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 512, 10).unwrap(),
        2 * 512 * 10
    );
}

#[test]
fn a_destination_that_dies_leaves_the_source_running() {
    let p1 = ServeProcess::start(2, READY).expect("P1 starts");
    let p3 = ServeProcess::start(1, READY).expect("P3 starts");
    let mut a = open(&p1, 0);
    let mut b = open(&p1, 1);
    let (ea, eb) = connected(&mut a, &mut b);
    let mut m = Migration::begin(b.driver_mut(), p3.socket(0)).unwrap();
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 512, 5).unwrap(),
        2 * 512 * 5
    );
    m.round(b.driver()).unwrap();
    drop(p3); // killed
    let e = m.finish(b.driver_mut()).unwrap_err();
    assert!(matches!(e, MigrateError::SourceResumed { .. }), "{e}");
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 512, 10).unwrap(),
        2 * 512 * 10
    );
}

#[test]
fn a_thousand_qps_move_and_each_carries_traffic_afterwards() {
    const QPS: usize = 1024;
    const SLOT: u32 = 256;
    let p1 = ServeProcess::start(2, READY).expect("P1 starts");
    let p3 = ServeProcess::start(2, READY).expect("P3 starts");
    let mut cfg = cfg();
    cfg.mem_size = ((8 << 20) + ram_needed(QPS, SLOT)).next_multiple_of(1 << 20);
    let connect = |s: &ServeProcess, vf: u16| {
        GuestContext::connect(s.socket(vf), &cfg).unwrap_or_else(|e| panic!("vf{vf}: {e}"))
    };
    let (mut a, mut b) = (connect(&p1, 0), connect(&p1, 1));
    let (sa, sb) = rc_qp_sets(&mut a, &mut b, QPS, SLOT, Mtu::Mtu1024).unwrap();
    qp_set_traffic(&mut a, &sa, &mut b, &sb, SLOT, 0).unwrap();

    let mut ma = Migration::begin(a.driver_mut(), p3.socket(0)).unwrap();
    let mut mb = Migration::begin(b.driver_mut(), p3.socket(1)).unwrap();
    ma.verify_pages = true;
    mb.verify_pages = true;
    qp_set_traffic(&mut a, &sa, &mut b, &sb, SLOT - 1, 1).unwrap();
    ma.round(a.driver()).unwrap();
    mb.round(b.driver()).unwrap();
    // Every QP is idle at the stop: nothing posted, nothing in flight.
    let ta = ma.finish(a.driver_mut()).unwrap();
    let tb = mb.finish(b.driver_mut()).unwrap();
    println!("vf0:\n{ta}\nvf1:\n{tb}");
    for t in [&ta, &tb] {
        assert_eq!(t.missed_pages, Some(0), "a write escaped both dirty logs");
        // The target: ≤ 512 bytes of device state per idle QP, here with the VF's
        // fixed part (PD, CQ, MR, events, counters) counted against the QPs too.
        assert!(
            t.state_bytes <= 512 * QPS,
            "{} bytes of state for {QPS} idle QPs",
            t.state_bytes
        );
    }
    // Every QP, now in P3, carries a message each way, checked byte for byte and matched to
    // its QP; any error completion fails the test. Then every opcode on a few of them.
    for round in 2..4 {
        qp_set_traffic(&mut a, &sa, &mut b, &sb, 1 + round * 60, round).unwrap();
    }
    for i in [0, QPS / 2, QPS - 1] {
        let (ea, eb) = (sa.endpoint(i), sb.endpoint(i));
        rc_every_opcode(&mut a, &ea, &mut b, &eb, 128).unwrap();
        rc_every_opcode(&mut b, &eb, &mut a, &ea, 64).unwrap();
    }
}
