//! `vhca migrate-attached` between three `vhca serve` processes on the UDP fabric, on loopback
//! addresses (no namespaces, no root): the VF at 127.0.0.51 moves from the source process to
//! a destination slot whose own address is 127.0.0.52, mid-traffic, and back again. Both
//! processes are on one host, so the destination can bind the VF's address only because the
//! source let go of it at the save — the sequence a live upgrade of `vhca serve` on one host
//! uses. A hook that fails aborts the migration: the source takes its address back and
//! carries on. tools/netns-migrate.sh runs the same across network namespaces, with the
//! address and MAC moving between them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vhca_guest::serve::ServeProcess;

const READY: Duration = Duration::from_secs(60);

fn serve(pf: &str, ip: &str, extra: &[&str]) -> ServeProcess {
    let mut args = vec!["--pf-index", pf, "--udp-ip", ip];
    args.extend_from_slice(extra);
    ServeProcess::start_with_args(1, &args, READY)
        .unwrap_or_else(|e| panic!("vhca serve --udp-ip {ip}: {e}"))
}

/// Runs `vhca migrate-attached`; returns (success, stdout, stderr).
fn migrate(src: &Path, dst: &Path, peer: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vhca"))
        .arg("migrate-attached")
        .arg("--src")
        .arg(src)
        .arg("--dst")
        .arg(dst)
        .arg("--peer")
        .arg(peer)
        .args(extra)
        .output()
        .expect("running vhca migrate-attached");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_udp_vf_moves_to_another_process_on_the_same_host_and_back_mid_traffic() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "a_udp_vf_moves_to_another_process_on_the_same_host_and_back_mid_traffic",
        std::time::Duration::from_secs(300),
    );
    // The processes run this test's own vhca binary.
    std::env::set_var("VHCA_BIN", env!("CARGO_BIN_EXE_vhca"));
    let mut src = serve("1", "127.0.0.51", &[]);
    // A VF of PF 1 moves into the destination's slot, which PF 2 assigned another identity:
    // the destination must accept it (docs/migration.md, "Identity policy"). The way back
    // needs nothing: the source's slot is the VF's own.
    let mut dst = serve("2", "127.0.0.52", &["--accept-identity"]);
    let peer = serve("3", "127.0.0.53", &[]);
    let t = Duration::from_secs(20);

    // The hook sees the VF's address and MAC; a failing hook aborts after the save.
    let check_env = r#"test "$VHCA_IP" = 127.0.0.51 && test "$VHCA_MAC" = 02:56:48:43:01:00"#;
    let (ok, out, err) = migrate(
        &src.socket(0),
        &dst.socket(0),
        &peer.socket(0),
        &["--qps", "2", "--size", "8192", "--hook", "false"],
    );
    assert!(!ok, "a failing hook must fail the migration: {out}");
    assert!(
        err.contains("the source VF resumed and completed every WR in flight"),
        "{err}"
    );
    // The save released the address, the resume took it back.
    src.wait_for_log("UDP link released", t).unwrap();
    src.wait_for_log(
        "UDP link bound to the VF's address port=0 local=127.0.0.51:4791",
        t,
    )
    .unwrap();

    let (ok, out, err) = migrate(
        &src.socket(0),
        &dst.socket(0),
        &peer.socket(0),
        &["--qps", "6", "--size", "65536", "--hook", check_env],
    );
    assert!(ok, "migration to the destination failed: {out}\n{err}");
    for needle in [
        "VF ::ffff:127.0.0.51",
        "in flight at the stop (source VF's saved state): SEND ",
        "every WR completed once, data and atomics checked",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    src.wait_for_log("UDP link released", t).unwrap();
    dst.wait_for_log(
        "UDP link bound to the VF's address port=0 local=127.0.0.51:4791",
        t,
    )
    .unwrap_or_else(|e| panic!("the destination never bound the VF's address: {e}"));

    // Back to the source's slot, with more QPs.
    let (ok, out, err) = migrate(
        &dst.socket(0),
        &src.socket(0),
        &peer.socket(0),
        &["--qps", "64", "--size", "1024", "--hook", check_env],
    );
    assert!(ok, "migration back failed: {out}\n{err}");
    assert!(out.contains("64 RC QP pairs"), "{out}");
    dst.wait_for_log("UDP link released", t).unwrap();
    src.wait_for_log(
        "UDP link bound to the VF's address port=0 local=127.0.0.51:4791",
        t,
    )
    .unwrap();
}
