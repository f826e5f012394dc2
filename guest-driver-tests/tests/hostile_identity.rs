//! A frontend that loads a device state naming an identity or limits its slot was not given
//! (issue 9, finding 3; docs/migration.md, "Identity policy"). Each blob is a real VF's state,
//! saved through a frontend (`Migration` drives SAVE on a VF of another `vhca serve`), with
//! the VF checkpoint inside decoded, patched and encoded again on its way to the slot under
//! attack. Before the policy, a state with another VF's GID and MAC took over that VF's
//! traffic on the in-process switch, the UDP fabric bound whatever address a state named,
//! and limits of `u32::MAX` loaded and stayed with the slot for its next frontend.

use serde_json::Value;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vhca_device::checkpoint;
use vhca_device::{Gid, Mtu, Pf, Psn, VfIdentity, VfLimits};
use vhca_guest::migrate::{MigrateError, Migration, Timeline};
use vhca_guest::programs::{rc_pair, rc_pingpong};
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext};
use vhca_vhost::device_state;

const READY: Duration = Duration::from_secs(60);
const ROCE_PORT: u16 = 4791;

fn open(s: &ServeProcess, vf: u16) -> GuestContext {
    GuestContext::connect(s.socket(vf), &DriverConfig::small())
        .unwrap_or_else(|e| panic!("connect to vf{vf}: {e}"))
}

fn ctl(s: &ServeProcess, cmd: &str) -> Value {
    let t = Instant::now();
    let v = vhca_vhost::ctl::request(&s.socket_dir().join("ctl.sock"), cmd)
        .unwrap_or_else(|e| panic!("vhca ctl {cmd}: {e}"));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "vhca ctl {cmd} took {:?}",
        t.elapsed()
    );
    v
}

/// `vhca ctl vfs`'s GID and MAC of VF `vf`.
fn ctl_identity(s: &ServeProcess, vf: usize) -> (String, String) {
    let v = ctl(s, "vfs");
    let e = &v[vf];
    (
        e["gid"].as_str().expect("gid").to_owned(),
        e["mac"].as_str().expect("mac").to_owned(),
    )
}

/// The local address of each UDP link of the process (`vhca ctl counters`).
fn udp_locals(s: &ServeProcess) -> Vec<String> {
    let c = ctl(s, "counters");
    c["switch"]["udp"]
        .as_array()
        .expect("a UDP fabric")
        .iter()
        .map(|l| l["local"].as_str().expect("local").to_owned())
        .collect()
}

/// Rewrites the identity inside the VF checkpoint that a device state carries.
fn patch_identity(blob: &mut Vec<u8>, change: &mut dyn FnMut(&mut VfIdentity)) {
    let mut ds = device_state::decode(blob).expect("the source wrote a device state");
    let (h, mut vf) = checkpoint::decode(&ds.port.checkpoint).expect("with a VF checkpoint");
    let mut id = VfIdentity::from(vf.identity);
    change(&mut id);
    vf.identity = checkpoint::IdentityStateV2::of(&id, vf.identity.key_byte);
    ds.port.checkpoint = checkpoint::encode(&vf, h.codec);
    *blob = device_state::encode(&ds);
}

/// Migrates `ctx`'s VF to the VF socket `dest` with its identity changed on the way. On a
/// refusal the source resumes and `ctx` carries on there.
fn migrate_patched(
    ctx: &mut GuestContext,
    dest: &Path,
    mut change: impl FnMut(&mut VfIdentity) + Send + 'static,
) -> Result<Timeline, MigrateError> {
    let mut m = Migration::begin(ctx.driver_mut(), dest)?;
    m.tamper = Some(Box::new(move |b: &mut Vec<u8>| {
        patch_identity(b, &mut change)
    }));
    m.finish(ctx.driver_mut())
}

fn expect_refused(r: Result<Timeline, MigrateError>) {
    match r {
        Err(MigrateError::SourceResumed { .. }) => {}
        Err(e) => panic!("the migration failed otherwise: {e}"),
        Ok(t) => panic!("the destination installed the patched state:\n{t}"),
    }
}

fn exits_cleanly(s: &mut ServeProcess) {
    assert_eq!(
        s.terminate(Duration::from_secs(10)).map(|st| st.code()),
        Some(Some(0)),
        "vhca serve exits 0 on SIGTERM"
    );
}

/// (a), (b): on `vhca serve --vfs 3`, vf1 and vf2 run an RC pair while a frontend on vf0
/// loads a state with vf1's GID, MAC and GUIDs. Refused, with or without --accept-identity;
/// vf1<->vf2 traffic runs throughout and after, checked byte for byte, and vf0 keeps its own
/// identity.
fn another_vfs_identity_is_refused(extra: &[&str], why: &str) {
    let mut s = ServeProcess::start_with_args(3, extra, READY).expect("vhca serve --vfs 3");
    // The attacker's own VF: vf0 of another process of PF 0, so its state is vf0's identity,
    // which this process's vf0 would load as is.
    let p = ServeProcess::start(1, READY).expect("the attacker's process");
    let mut a = open(&p, 0);
    let (mut b, mut c) = (open(&s, 1), open(&s, 2));
    let (eb, ec) = rc_pair(
        &mut b,
        &mut c,
        1 << 16,
        16,
        (Psn(7), Psn(0xfffff0)),
        Mtu::Mtu1024,
    )
    .expect("vf1<->vf2 RC pair");
    let pf = Pf::new(0, 3);
    let (own, victim) = (pf.default_identity(0), pf.default_identity(1));

    let attacking = AtomicBool::new(true);
    let after = std::thread::scope(|sc| {
        let traffic = sc.spawn(|| {
            let mut rounds = 0u32;
            while attacking.load(Ordering::Acquire) || rounds < 3 {
                rc_pingpong(&mut b, &eb, &mut c, &ec, 1024, 4)
                    .unwrap_or_else(|e| panic!("vf1<->vf2 traffic, round {rounds}: {e}"));
                if !attacking.load(Ordering::Acquire) {
                    rounds += 1;
                }
            }
            rounds
        });
        let r = migrate_patched(&mut a, &s.socket(0), move |id| {
            id.gid = victim.gid;
            id.mac = victim.mac;
            id.node_guid = victim.node_guid;
            id.port_guid = victim.port_guid;
        });
        attacking.store(false, Ordering::Release);
        let after = traffic.join().expect("traffic thread");
        expect_refused(r);
        after
    });
    assert!(after >= 3, "traffic after the attack: {after} rounds");
    s.wait_for_log(why, READY)
        .expect("the destination says why it refused the state");
    assert_eq!(
        ctl_identity(&s, 0),
        (own.gid.to_string(), own.mac.to_string()),
        "vf0 keeps its own identity"
    );
    assert_eq!(
        ctl_identity(&s, 1),
        (victim.gid.to_string(), victim.mac.to_string())
    );
    // And after vf0's frontend left, vf1<->vf2 still talk.
    assert_eq!(
        rc_pingpong(&mut b, &eb, &mut c, &ec, 4096, 8).unwrap(),
        2 * 4096 * 8
    );
    drop((b, c));
    exits_cleanly(&mut s);
}

#[test]
fn a_state_with_another_vfs_gid_and_mac_is_refused() {
    another_vfs_identity_is_refused(&[], "--accept-identity");
}

#[test]
fn accept_identity_still_refuses_another_live_vfs_identity() {
    another_vfs_identity_is_refused(&["--accept-identity"], "which is VF 1's of this PF");
}

/// (c) On the UDP fabric a state naming an address the slot was not given is refused, and no
/// socket of the process is bound to it: this test binds it itself afterwards.
#[test]
fn a_foreign_address_on_udp_is_refused_and_never_bound() {
    let (own, src, foreign) = ("127.0.93.1", "127.0.93.2", [127, 0, 93, 3]);
    let mut s = ServeProcess::start_with_args(1, &["--udp-ip", own], READY).expect("destination");
    let p = ServeProcess::start_with_args(1, &["--udp-ip", src], READY).expect("source");
    let mut a = open(&p, 0);
    expect_refused(migrate_patched(&mut a, &s.socket(0), move |id| {
        id.gid = Gid::from_ipv4(foreign)
    }));
    s.wait_for_log("identity policy", READY)
        .expect("the destination says why");
    assert_eq!(udp_locals(&s), [format!("{own}:{ROCE_PORT}")]);
    assert_eq!(ctl_identity(&s, 0).0, format!("::ffff:{own}"));
    let ip = std::net::Ipv4Addr::from(foreign);
    UdpSocket::bind((ip, ROCE_PORT))
        .unwrap_or_else(|e| panic!("{ip}:{ROCE_PORT} is free (nothing bound it): {e}"));
    exits_cleanly(&mut s);
}

/// (c) With --accept-identity, an address another VF of the process has is still refused.
#[test]
fn accept_identity_refuses_another_vfs_address_on_udp() {
    let mut s =
        ServeProcess::start_with_args(2, &["--udp-ip", "127.0.93.11", "--accept-identity"], READY)
            .expect("destination");
    let p = ServeProcess::start_with_args(1, &["--udp-ip", "127.0.93.21"], READY).expect("source");
    let mut a = open(&p, 0);
    // The GID alone is vf1's (the MAC is vf0's own).
    expect_refused(migrate_patched(&mut a, &s.socket(0), |id| {
        id.gid = Gid::from_ipv4([127, 0, 93, 12])
    }));
    s.wait_for_log("which is VF 1's of this PF", READY)
        .expect("the destination says why");
    assert_eq!(
        udp_locals(&s),
        [
            format!("127.0.93.11:{ROCE_PORT}"),
            format!("127.0.93.12:{ROCE_PORT}")
        ]
    );
    exits_cleanly(&mut s);
}

/// (d) Limits above the PF's are refused; limits below are taken for the connection only:
/// the next frontend of the slot sees the PF's.
#[test]
fn limits_above_the_pfs_are_refused_and_none_outlive_the_connection() {
    let mut s = ServeProcess::start(1, READY).expect("destination");
    let p = ServeProcess::start(1, READY).expect("source");
    let pf_limits = VfLimits::default();
    let mut a = open(&p, 0);
    expect_refused(migrate_patched(&mut a, &s.socket(0), |id| {
        let l = &mut id.limits;
        for v in [
            &mut l.max_qp,
            &mut l.max_qp_wr,
            &mut l.max_sge,
            &mut l.max_cq,
            &mut l.max_cqe,
            &mut l.max_mr,
            &mut l.max_pd,
            &mut l.max_srq,
            &mut l.max_ah,
            &mut l.max_msg_sz,
        ] {
            *v = u32::MAX;
        }
        l.max_mr_size = u64::MAX;
    }));
    s.wait_for_log("above this PF's", READY)
        .expect("the destination says why");
    {
        let next = open(&s, 0);
        let c = next.driver().config();
        assert_eq!(
            (c.max_qp, c.max_cq, c.max_mr_size),
            (pf_limits.max_qp, pf_limits.max_cq, pf_limits.max_mr_size),
            "the next frontend sees the PF's limits"
        );
    }
    // Lower limits than the PF's are the source's to keep while its guest runs here...
    let t = migrate_patched(&mut a, &s.socket(0), |id| {
        id.limits.max_qp = 100;
        id.limits.max_cq = 50;
    })
    .expect("a state within the PF's limits loads");
    assert!(t.state_bytes > 0);
    drop(a);
    // ...and end with its connection.
    let next = open(&s, 0);
    let c = next.driver().config();
    assert_eq!(
        (c.max_qp, c.max_cq),
        (pf_limits.max_qp, pf_limits.max_cq),
        "the slot's next frontend sees the PF's limits again"
    );
    drop(next);
    exits_cleanly(&mut s);
}

/// (e) A migration destination started with --accept-identity takes a VF of another PF in, on
/// the UDP fabric: the VF keeps its address while its guest runs there (RC traffic with a
/// peer in a third process carries on); when the VF migrates back (the same frontend, as
/// QEMU does), the destination's slot takes its own identity and address back.
#[test]
fn an_accept_identity_destination_hosts_a_migrating_vf_until_it_leaves() {
    let (src_ip, dst_ip, peer_ip) = ("127.0.94.1", "127.0.94.2", "127.0.94.3");
    let mut p = ServeProcess::start_with_args(1, &["--pf-index", "1", "--udp-ip", src_ip], READY)
        .expect("source");
    let mut s = ServeProcess::start_with_args(
        1,
        &["--pf-index", "2", "--udp-ip", dst_ip, "--accept-identity"],
        READY,
    )
    .expect("destination");
    let q = ServeProcess::start_with_args(1, &["--pf-index", "3", "--udp-ip", peer_ip], READY)
        .expect("peer");
    let (mut a, mut b) = (open(&p, 0), open(&q, 0));
    let moving = *a.driver().config();
    let (ea, eb) = rc_pair(&mut a, &mut b, 1 << 16, 16, (Psn(1), Psn(2)), Mtu::Mtu1024).unwrap();
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 1024, 8).unwrap(),
        2 * 1024 * 8
    );
    let m = Migration::begin(a.driver_mut(), s.socket(0)).expect("begin");
    m.finish(a.driver_mut())
        .expect("the destination takes the VF in");
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 8).unwrap(),
        2 * 4096 * 8,
        "the same QPs carry on from the destination"
    );
    assert_eq!(
        ctl_identity(&s, 0),
        (moving.gid.to_string(), moving.mac.to_string())
    );
    assert_eq!(udp_locals(&s), [format!("{src_ip}:{ROCE_PORT}")]);

    // Back to the source's slot, which is the VF's own: no option needed there.
    let m = Migration::begin(a.driver_mut(), p.socket(0)).expect("begin the way back");
    m.finish(a.driver_mut())
        .expect("the source's slot takes its VF back");
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 8).unwrap(),
        2 * 4096 * 8,
        "the same QPs carry on from the source again"
    );
    s.wait_for_log("slot back to its assigned identity", READY)
        .expect("the destination's slot takes its own identity back");
    let own = Pf::new(2, 1).default_identity(0);
    assert_eq!(
        ctl_identity(&s, 0),
        (format!("::ffff:{dst_ip}"), own.mac.to_string())
    );
    assert_eq!(udp_locals(&s), [format!("{dst_ip}:{ROCE_PORT}")]);
    assert_eq!(udp_locals(&p), [format!("{src_ip}:{ROCE_PORT}")]);
    drop((a, b));
    exits_cleanly(&mut s);
    exits_cleanly(&mut p);
}

/// (d), (e) On a migration destination, a slot whose VF migrated in and did not leave again
/// keeps hosting that VF's identity for its next frontend (the next leg of an A -> B -> A
/// journey that reconnects, as `vhca migrate-attached` does) — but with the PF's limits, not
/// the lower ones the state brought.
#[test]
fn an_accept_identity_slot_keeps_its_vf_for_the_next_frontend_with_the_pfs_limits() {
    let (src_ip, dst_ip) = ("127.0.95.1", "127.0.95.2");
    let p = ServeProcess::start_with_args(1, &["--pf-index", "1", "--udp-ip", src_ip], READY)
        .expect("source");
    let mut s = ServeProcess::start_with_args(
        1,
        &["--pf-index", "2", "--udp-ip", dst_ip, "--accept-identity"],
        READY,
    )
    .expect("destination");
    let mut a = open(&p, 0);
    let moving = *a.driver().config();
    migrate_patched(&mut a, &s.socket(0), |id| {
        id.limits.max_qp = 100;
        id.limits.max_cq = 50;
    })
    .expect("a VF of another PF, within this PF's limits, moves in");
    drop(a);
    let next = open(&s, 0);
    let c = next.driver().config();
    let pf_limits = VfLimits::default();
    assert_eq!(
        (c.gid, c.mac),
        (moving.gid, moving.mac),
        "the slot hosts the VF"
    );
    assert_eq!(
        (c.max_qp, c.max_cq),
        (pf_limits.max_qp, pf_limits.max_cq),
        "with the PF's limits"
    );
    assert_eq!(udp_locals(&s), [format!("{src_ip}:{ROCE_PORT}")]);
    drop(next);
    exits_cleanly(&mut s);
}

/// (e) Between processes configured alike (same PF index, same slot), no option is needed:
/// the state names the slot's own identity.
#[test]
fn a_migration_to_the_same_identity_needs_no_option() {
    let p = ServeProcess::start(2, READY).expect("source");
    let mut s = ServeProcess::start(2, READY).expect("destination");
    let (mut a, mut b) = (open(&p, 0), open(&p, 1));
    let (ea, eb) = rc_pair(&mut a, &mut b, 1 << 16, 16, (Psn(3), Psn(4)), Mtu::Mtu1024).unwrap();
    let ma = Migration::begin(a.driver_mut(), s.socket(0)).unwrap();
    let mb = Migration::begin(b.driver_mut(), s.socket(1)).unwrap();
    ma.finish(a.driver_mut()).expect("vf0 moves");
    mb.finish(b.driver_mut()).expect("vf1 moves");
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 2048, 8).unwrap(),
        2 * 2048 * 8
    );
    let own = Pf::new(0, 2).default_identity(0);
    assert_eq!(
        ctl_identity(&s, 0),
        (own.gid.to_string(), own.mac.to_string())
    );
    drop((a, b));
    exits_cleanly(&mut s);
}
