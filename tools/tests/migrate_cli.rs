//! `vhca migrate` as a user runs it: two vhost-user backends, one live migration of two VFs
//! with several connected QPs, and the same QPs carrying traffic afterwards; the JSON report.

use std::process::Command;

#[test]
fn vhca_migrate_moves_two_vfs_and_their_qps_keep_working() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "vhca_migrate_moves_two_vfs_and_their_qps_keep_working",
        std::time::Duration::from_secs(300),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vhca"))
        .args([
            "migrate", "--rounds", "1", "--size", "256", "--qps", "4", "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vhca migrate failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(r["qps"], 4);
    let vfs = r["vfs"].as_array().expect("one entry per VF");
    assert_eq!(vfs.len(), 2);
    for v in vfs {
        assert!(
            v["state_bytes"].as_u64().unwrap() > 0,
            "an empty device state cannot hold the QPs: {v}"
        );
        // Round 0 (everything) and the one pre-copy round.
        assert_eq!(v["rounds"].as_array().unwrap().len(), 2, "{v}");
        assert!(v["blackout_us"].as_u64().unwrap() > 0, "{v}");
    }
    assert_eq!(r["in_flight"], 4);
    // Every phase's traffic was checked: before, 1 round, before the stop, in flight, after.
    assert!(r["bytes_checked"].as_u64().unwrap() >= (4 * 2 * 256) * 4 + 4 * 256);
}
