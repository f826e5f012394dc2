//! A VF carried by another device type (project issue 10: stock QEMU attaches VFs as
//! `vhost-user-fs-pci`): the guest sees virtio-fs's config space, not the RDMA one, and QEMU
//! passes only the transport feature bits through. A guest driver in carrier mode — no CONFIG
//! protocol feature, no GET_CONFIG, no device-specific feature bit acked — learns everything
//! through commands and runs RC and UD traffic against a real `vhca serve`.

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use vhca_device::{Mtu, Psn};
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong, ud_exchange};
use vhca_guest::serve::{vhca_binary, ServeProcess};
use vhca_guest::{DriverConfig, GuestContext};
use vhca_vhost::protocol::command::{body, Command as Cmd};
use vhca_vhost::protocol::config::RdmaConfig;
use vhca_vhost::protocol::{features, PROTOCOL_VERSION};
use vhost::vhost_user::VhostUserProtocolFeatures;

const READY: Duration = Duration::from_secs(60);

/// Feature bits 0–23: the device-specific ones a carrier frontend filters out.
const DEVICE_SPECIFIC_RANGE: u64 = (1 << 24) - 1;

fn carrier() -> DriverConfig {
    DriverConfig {
        carrier: true,
        // A Linux virtio driver acks EVENT_IDX, and QEMU passes it through.
        event_idx: true,
        ..DriverConfig::small()
    }
}

/// `vhca ctl --socket-dir DIR --json vfs`, run as the binary an operator would run.
fn ctl_vfs(s: &ServeProcess) -> Vec<Value> {
    let out = Command::new(vhca_binary().expect("vhca binary"))
        .args(["ctl", "--json", "--socket-dir"])
        .arg(s.socket_dir())
        .arg("vfs")
        .stdin(Stdio::null())
        .output()
        .expect("run vhca ctl");
    assert!(
        out.status.success(),
        "vhca ctl vfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("vhca ctl vfs prints JSON");
    v.as_array().expect("a list of VFs").clone()
}

/// What a carrier-mode driver negotiated: nothing device specific, no config window.
fn assert_carrier_session(g: &GuestContext) {
    let d = g.driver();
    assert_eq!(d.config_reads(), 0, "carrier mode read the config window");
    assert!(
        !d.startup_messages().contains(&"GET_CONFIG"),
        "{:?}",
        d.startup_messages()
    );
    assert!(!d
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG));
    let acked = d.acked_features();
    assert_eq!(acked & DEVICE_SPECIFIC_RANGE, 0, "acked {acked:#x}");
    assert_ne!(acked & features::VERSION_1, 0);
    assert_ne!(acked & features::EVENT_IDX, 0);
}

#[test]
fn carrier_guest_runs_rc_and_ud_with_no_device_feature_and_no_config_window() {
    let s = ServeProcess::start(2, READY).expect("vhca serve");
    let mut a = GuestContext::connect(s.socket(0), &carrier()).expect("guest on VF 0");
    let mut b = GuestContext::connect(s.socket(1), &carrier()).expect("guest on VF 1");
    assert_carrier_session(&a);
    assert_carrier_session(&b);

    // The identity came through QUERY_DEVICE and is the one the operator sees.
    let vfs = ctl_vfs(&s);
    for (i, g) in [&mut a, &mut b].into_iter().enumerate() {
        let c = *g.driver().config();
        assert_eq!(c.version, PROTOCOL_VERSION);
        assert_eq!(c.gid.to_string(), vfs[i]["gid"].as_str().unwrap(), "VF {i}");
        assert_eq!(c.mac.to_string(), vfs[i]["mac"].as_str().unwrap(), "VF {i}");
        assert_eq!(
            format!("{:016x}", c.node_guid),
            vfs[i]["node_guid"].as_str().unwrap()
        );
        assert_eq!(
            format!("{:016x}", c.port_guid),
            vfs[i]["port_guid"].as_str().unwrap()
        );
        let mtu = Mtu::from_enum(c.active_mtu).expect("an ibv_mtu");
        assert_eq!(u64::from(mtu.bytes()), vfs[i]["mtu"].as_u64().unwrap());
        // What the unacked feature bits would have said, reported by the device itself.
        assert_eq!(u64::from(c.device_features), features::DEVICE_SPECIFIC);
        assert_eq!(g.query_gid(0).expect("QUERY_GID"), c.gid);
        let port = body::read_port(&g.driver_mut().execute(&Cmd::QueryPort).unwrap()).unwrap();
        assert_eq!((port.state, port.active_mtu), (4, mtu));
    }
    assert_ne!(a.driver().config().gid, b.driver().config().gid);

    // RC, with every opcode, and UD: none of RC/UD/SRQ was acked.
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 16,
        16,
        (Psn(0x10), Psn(0x20)),
        Mtu::Mtu1024,
    )
    .expect("RC pair");
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 20).expect("rc_pingpong"),
        2 * 4096 * 20
    );
    for size in [0, 1, 1500, 1 << 15] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, size)
            .unwrap_or_else(|e| panic!("every opcode at {size} B: {e}"));
    }
    for size in [0, 1, 1000] {
        ud_exchange(&mut a, &mut b, size).unwrap_or_else(|e| panic!("UD at {size} B: {e}"));
    }
    // Still nothing read from the config window after all that traffic.
    assert_eq!(a.driver().config_reads() + b.driver().config_reads(), 0);
}

#[test]
fn query_device_answers_the_bytes_of_the_config_window() {
    let s = ServeProcess::start(1, READY).expect("vhca serve");
    // The default mode reads the config window (and acks RC/UD/SRQ) ...
    let mut g = GuestContext::connect(s.socket(0), &DriverConfig::small()).expect("guest");
    assert_eq!(g.driver().config_reads(), 1);
    assert_eq!(
        g.driver().acked_features() & DEVICE_SPECIFIC_RANGE,
        features::RC | features::UD | features::SRQ
    );
    let window = *g.driver().config();
    // ... and QUERY_DEVICE says exactly the same, the device-specific bits included.
    let answer = g.driver_mut().execute(&Cmd::QueryDevice).unwrap();
    assert_eq!(answer, window.encode());
    assert_eq!(RdmaConfig::decode(&answer).unwrap(), window);
    assert_eq!(u64::from(window.device_features), features::DEVICE_SPECIFIC);
}
