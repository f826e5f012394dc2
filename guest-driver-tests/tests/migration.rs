//! Live migration over vhost-user between `vhca serve` processes (docs/migration.md): the
//! guest driver plays QEMU's migration sequence with [`vhca_guest::migrate::Migration`].
//!
//! Both VFs of a connected pair move from process P1 to process P3 while their RC connection
//! carries traffic; the same QPs carry on afterwards and every opcode still works. Faults: a
//! corrupted state and a destination that dies leave the source running.

use std::time::Duration;
use vhca_device::{Mtu, Psn};
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
