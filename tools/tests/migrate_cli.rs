//! `vhca migrate` as a user runs it: two vhost-user backends, one live migration,
//! and the same QPs carrying traffic afterwards.

use std::process::Command;

#[test]
fn vhca_migrate_moves_a_vf_and_its_qps_keep_working() {
    let out = Command::new(env!("CARGO_BIN_EXE_vhca"))
        .args(["migrate", "--rounds", "1", "--size", "256"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vhca migrate failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state_bytes: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("device state: "))
        .and_then(|l| l.strip_suffix(" bytes"))
        .expect("a device-state size line")
        .parse()
        .unwrap();
    assert!(state_bytes > 0, "an empty device state cannot hold the QPs");
    assert!(stdout.contains("round 1:"), "no pre-copy round: {stdout}");
    assert!(
        stdout.contains("after: the same QPs"),
        "traffic after the migration was not checked: {stdout}"
    );
}
