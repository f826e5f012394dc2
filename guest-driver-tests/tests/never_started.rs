//! A VF whose guest never started it migrates (issue 10, found with QEMU 11.1): QEMU stops only
//! the rings it started, so a VM whose guest never loaded a driver for the VF sends
//! SET_DEVICE_STATE_FD(SAVE) + CHECK_DEVICE_STATE with no GET_VRING_BASE before them, and on
//! the destination LOAD + CHECK before SET_FEATURES and the memory table. Before: `vhca serve`
//! refused that SAVE, logged nothing, and the migration failed. A SAVE while the VF's rings run
//! and nothing stopped them stays refused, and now says so in the log (docs/migration.md, "A VF
//! whose guest never started it").
//!
//! No sleeps: every wait is on a reply or a log line, with a deadline.

use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use vhca_device::checkpoint;
use vhca_device::{Mtu, Pf, Psn, Verbs, VfIdentity};
use vhca_guest::migrate::{load_state, open_session, save_state, save_unstopped, MigrateError};
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong};
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext, GuestDriver};
use vhca_vhost::device_state;

const READY: Duration = Duration::from_secs(60);

fn ctl(s: &ServeProcess, cmd: &str) -> Value {
    vhca_vhost::ctl::request(&s.socket_dir().join("ctl.sock"), cmd)
        .unwrap_or_else(|e| panic!("vhca ctl {cmd}: {e}"))
}

/// `vhca ctl vfs`'s GID and MAC of VF `vf`.
fn ctl_identity(s: &ServeProcess, vf: usize) -> (String, String) {
    let v = ctl(s, "vfs");
    (
        v[vf]["gid"].as_str().expect("gid").to_owned(),
        v[vf]["mac"].as_str().expect("mac").to_owned(),
    )
}

fn shown(id: &VfIdentity) -> (String, String) {
    (id.gid.to_string(), id.mac.to_string())
}

/// The source of a never-started VF: PF 1, one VF, nothing but QEMU's opening on vf0, then
/// SAVE + CHECK. Returns the process (its log tells what it did) and the state.
fn save_a_never_started_vf() -> (ServeProcess, Vec<u8>) {
    let mut p = ServeProcess::start_with_args(1, &["--pf-index", "1"], READY).expect("source");
    let stream = UnixStream::connect(p.socket(0)).expect("connect the source's vf0");
    let f = open_session(stream, "source", true).expect("QEMU's opening handshake");
    let blob = match save_state(&f, "source") {
        Ok(b) => b,
        Err(e) => panic!("SAVE of a never-started VF: {e}; log:\n{}", p.log()),
    };
    p.wait_for_log("VF suspended for SAVE without GET_VRING_BASE", READY)
        .expect("the save of a VF no GET_VRING_BASE stopped is logged");
    drop(f);
    (p, blob)
}

/// (1) SAVE + CHECK right after the opening handshake: accepted, and the state is the VF's
/// identity (PF 1's vf0), no features acked, no objects.
#[test]
fn a_never_started_vf_saves_its_identity() {
    let (p, blob) = save_a_never_started_vf();
    let ds = device_state::decode(&blob).expect("the source wrote a device state");
    assert_eq!(ds.acked_features, 0, "no SET_FEATURES came");
    let (_, vf) = checkpoint::decode(&ds.port.checkpoint).expect("with a VF checkpoint");
    let own = Pf::new(1, 1).default_identity(0);
    assert_eq!(shown(&VfIdentity::from(vf.identity)), shown(&own));
    assert_eq!(shown(&VfIdentity::from(vf.identity)), ctl_identity(&p, 0));
}

/// (2) A destination (PF 2, --accept-identity) loads that state on vf0 before any
/// SET_FEATURES or memory table, on the session its guest later starts the device on; the
/// guest then sees the source's identity and runs RC traffic with vf1 of the destination.
#[test]
fn a_never_started_vf_loads_and_runs_once_the_destinations_guest_starts_it() {
    let (_p, blob) = save_a_never_started_vf();
    let moving = Pf::new(1, 1).default_identity(0);
    let mut s = ServeProcess::start_with_args(2, &["--pf-index", "2", "--accept-identity"], READY)
        .expect("destination");
    assert_ne!(
        ctl_identity(&s, 0),
        shown(&moving),
        "vf0 starts as PF 2's own"
    );
    let stream = UnixStream::connect(s.socket(0)).expect("connect the destination's vf0");
    let later = stream
        .try_clone()
        .expect("the session, for the guest's start");
    // As QEMU's incoming VM: the opening, then the state, before the guest runs at all.
    let f = open_session(stream, "destination", false).expect("the destination's opening");
    if let Err(e) = load_state(&f, &blob) {
        panic!(
            "LOAD before SET_FEATURES and the memory table: {e}; log:\n{}",
            s.log()
        );
    }
    s.wait_for_log("device state loaded", READY)
        .expect("the destination installs the state");
    assert_eq!(
        ctl_identity(&s, 0),
        shown(&moving),
        "ctl vfs shows the source's identity"
    );
    drop(f);

    // The destination's guest starts the device on the same session, later.
    let drv = GuestDriver::start(later, &DriverConfig::small()).expect("the guest starts vf0");
    let mut a = GuestContext::new(drv);
    assert_eq!(
        (a.driver().config().gid, a.driver().config().mac),
        (moving.gid, moving.mac),
        "the guest sees the migrated identity"
    );
    let mut b = GuestContext::connect(s.socket(1), &DriverConfig::small()).expect("vf1");
    let (ea, eb) = rc_pair(&mut a, &mut b, 1 << 16, 16, (Psn(5), Psn(6)), Mtu::Mtu1024)
        .expect("an RC pair between the migrated vf0 and vf1");
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 2048, 8).unwrap(),
        2 * 2048 * 8
    );
    rc_every_opcode(&mut a, &ea, &mut b, &eb, 64).unwrap();
    assert_eq!(ctl_identity(&s, 0), shown(&moving));
}

/// (3) A running VF (its guest made a PD) whose frontend asks for SAVE without stopping the
/// rings: refused, with an error naming the VF and why; the VF carries on (PD numbers too).
#[test]
fn a_save_while_the_rings_run_is_refused_and_logged() {
    let mut s = ServeProcess::start(1, READY).expect("vhca serve");
    let mut a = GuestContext::connect(s.socket(0), &DriverConfig::small()).expect("vf0");
    let pd = a.alloc_pd().expect("a PD");
    match save_unstopped(a.driver()) {
        Err(MigrateError::VhostUser { step, .. }) => {
            assert_eq!(step, "SET_DEVICE_STATE_FD(SAVE)")
        }
        Err(e) => panic!("refused at another step: {e}"),
        Ok(b) => panic!("a running VF gave its state ({} bytes)", b.len()),
    }
    s.wait_for_log("device state transfer refused", READY)
        .expect("the refusal is logged");
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("device state transfer refused"))
        .expect("the refusal's line");
    assert!(
        line.contains("ERROR") && line.contains("vf=0") && line.contains("GET_VRING_BASE"),
        "the refusal names the VF and why: {line}"
    );
    let next = a.alloc_pd().expect("the VF still answers commands");
    assert!(next.0 > pd.0, "PD numbers continue: {pd:?} then {next:?}");
}
