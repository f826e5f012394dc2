//! `vhca guest-pair` as a user runs it against a running `vhca serve`.

use std::process::Command;
use std::time::Duration;
use vhca_guest::serve::ServeProcess;

fn guest_pair(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vhca"))
        .arg("guest-pair")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn guest_pair_checks_rc_between_two_vfs_of_a_serve_process() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "guest_pair_checks_rc_between_two_vfs_of_a_serve_process",
        std::time::Duration::from_secs(300),
    );
    std::env::set_var("VHCA_BIN", env!("CARGO_BIN_EXE_vhca"));
    let s = ServeProcess::start(2, Duration::from_secs(60)).expect("vhca serve");
    let (a, b) = (s.socket(0), s.socket(1));
    let out = guest_pair(&[
        a.as_os_str(),
        b.as_os_str(),
        "--iters".as_ref(),
        "10".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ping-pong 81920 B in 10 round trips") && stdout.contains(": ok"),
        "{stdout}"
    );
}

#[test]
fn guest_pair_reports_a_missing_socket() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "guest_pair_reports_a_missing_socket",
        std::time::Duration::from_secs(300),
    );
    let out = guest_pair(&[
        "/nonexistent/vf0.sock".as_ref(),
        "/nonexistent/vf1.sock".as_ref(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("guest on /nonexistent/vf0.sock"), "{err}");
}
