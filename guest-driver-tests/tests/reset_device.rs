//! A guest's device reset reaches the VF (issue 10, found with QEMU 11.1): QEMU's
//! `virtio_reset` stops the rings and sends RESET_DEVICE to a back-end that negotiated it, and
//! `vhca serve` answers with a fresh VF of the same identity. Before, the serve process did not
//! offer RESET_DEVICE: a guest program that drove the VF, exited (resetting the device) and was
//! followed by another left its QPs on the VF, their rings in guest memory the next program
//! reused. Over the real QEMU path the same is checked by tools/qemu-test/guest.sh.
//!
//! No sleeps: every wait is on a reply or a log line, with a deadline.

use serde_json::Value;
use std::time::Duration;
use vhca_device::{Mtu, Psn};
use vhca_guest::programs::{rc_pair, rc_pingpong};
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext};

const READY: Duration = Duration::from_secs(60);

fn qps_of(s: &ServeProcess, vf: u64) -> usize {
    let v: Value = vhca_vhost::ctl::request(&s.socket_dir().join("ctl.sock"), "qps")
        .unwrap_or_else(|e| panic!("vhca ctl qps: {e}"));
    v.as_array()
        .expect("a list of QPs")
        .iter()
        .filter(|q| q["vf"].as_u64() == Some(vf))
        .count()
}

fn identity(s: &ServeProcess, vf: usize) -> (String, String) {
    let v: Value = vhca_vhost::ctl::request(&s.socket_dir().join("ctl.sock"), "vfs").unwrap();
    (
        v[vf]["gid"].as_str().unwrap().to_owned(),
        v[vf]["mac"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_guest_reset_leaves_a_fresh_vf_with_its_identity_on_the_same_connection() {
    let mut s = ServeProcess::start(2, READY).expect("vhca serve");
    let cfg = DriverConfig::small();
    let mut a = GuestContext::connect(s.socket(0), &cfg).expect("guest on vf0");
    let mut b = GuestContext::connect(s.socket(1), &cfg).expect("guest on vf1");
    let (ea, eb) = rc_pair(&mut a, &mut b, 1 << 16, 16, (Psn(1), Psn(2)), Mtu::Mtu1024).unwrap();
    rc_pingpong(&mut a, &ea, &mut b, &eb, 1024, 10).unwrap();
    assert_eq!(qps_of(&s, 0), 1);
    assert_eq!(qps_of(&s, 1), 1);
    let before = identity(&s, 0);

    // QEMU's part of the guest's reset: the rings stop, then RESET_DEVICE; the frontend's
    // connection stays (QEMU keeps it for the next driver).
    let mut drv = a.into_driver();
    drv.reset_device().expect("GET_VRING_BASE and RESET_DEVICE");
    s.wait_for_log("VF reset by the frontend (RESET_DEVICE) vf=0", READY)
        .expect("the serve process logs the reset");
    assert_eq!(
        qps_of(&s, 0),
        0,
        "the reset VF holds none of its last driver's QPs"
    );
    assert_eq!(qps_of(&s, 1), 1, "the other VF is untouched");
    assert_eq!(identity(&s, 0), before, "the reset VF keeps its identity");
    assert!(
        !s.log().contains("frontend disconnected; VF reset vf=0"),
        "the reset came over the connection, not from a disconnect"
    );
    drop(drv);
}
