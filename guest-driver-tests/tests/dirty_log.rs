//! The dirty log sees every byte the device writes into guest memory, payloads included.
//!
//! A page the device writes but does not mark would still migrate in these tests (the
//! orchestrator also compares page contents, standing in for KVM's log of guest CPU writes), so
//! the log itself is checked here: RDMA WRITEs fill 16 pages of the responder's buffer, and the
//! responder's log must name at least those 16 pages.

use std::time::Duration;
use vhca_device::{Mtu, Psn};
use vhca_guest::bench::write_bandwidth;
use vhca_guest::migrate::Migration;
use vhca_guest::programs::rc_pair;
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext};

#[test]
fn rdma_write_payload_pages_reach_the_responders_dirty_log() {
    let ready = Duration::from_secs(60);
    let src = ServeProcess::start(2, ready).expect("source starts");
    let dst = ServeProcess::start(2, ready).expect("destination starts");
    let cfg = DriverConfig::small();
    let mut a = GuestContext::connect(src.socket(0), &cfg).unwrap();
    let mut b = GuestContext::connect(src.socket(1), &cfg).unwrap();
    let (ea, eb) = rc_pair(&mut a, &mut b, 1 << 16, 8, (Psn(1), Psn(2)), Mtu::Mtu4096).unwrap();

    let mut mb = Migration::begin(b.driver_mut(), dst.socket(1)).unwrap();
    // Start from a clean log.
    mb.round(b.driver()).unwrap();
    let quiet = mb.round(b.driver()).unwrap();
    assert_eq!(
        quiet.device_pages, 0,
        "nothing ran, nothing logged: {quiet:?}"
    );

    // RDMA WRITEs raise no completion at the responder: its only device writes are payload.
    write_bandwidth(&mut a, &ea, &mut b, &eb, 1 << 16, 4, 2).unwrap();
    let r = mb.round(b.driver()).unwrap();
    assert!(
        r.device_pages >= 16,
        "64 KiB of RDMA WRITE payload is 16 logged pages: {r:?}"
    );
}
