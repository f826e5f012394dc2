//! `vhca serve` as a real process, spoken to by rust-vmm's vhost-user `Frontend` and by
//! `vhca ctl`: no guest driver needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use vhca_device::Pf;
use vhca_vhost::protocol::config::{RdmaConfig, CONFIG_SIZE};
use vhca_vhost::protocol::features;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

const TIMEOUT: Duration = Duration::from_secs(20);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vhca")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vhca-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `vhca serve` child that is killed if a test fails before it stops it.
struct Served {
    child: Option<Child>,
    dir: PathBuf,
}

impl Served {
    /// Starts the server and waits (on its stdout, with a timeout) until it listens.
    fn start(name: &str, vfs: u16) -> Served {
        let dir = fresh_dir(name);
        let mut child = Command::new(bin())
            .args(["serve", "--vfs", &vfs.to_string(), "--socket-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vhca serve");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("vhca serve never said ready");
        assert!(line.contains("ready"), "unexpected first line: {line:?}");
        Served {
            child: Some(child),
            dir,
        }
    }

    fn socket(&self, vf: u16) -> PathBuf {
        self.dir.join(format!("vf{vf}.sock"))
    }

    fn sigterm(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id() as i32;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(TIMEOUT)
            .expect("vhca serve did not exit after SIGTERM")
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctl_json(dir: &Path, what: &str) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["ctl", "--json", "--socket-dir"])
        .arg(dir)
        .arg(what)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vhca ctl {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The start of QEMU's sequence: features, protocol features, queue count, config.
fn handshake(path: &Path) -> (Frontend, RdmaConfig) {
    let mut fe = Frontend::connect(path, 3).expect("connect");
    let f = fe.get_features().unwrap();
    assert_eq!(
        f,
        features::DEVICE
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | vhca_vhost::backend::LOG_ALL
    );
    fe.set_owner().unwrap();
    let pf = fe.get_protocol_features().unwrap();
    assert!(pf.contains(VhostUserProtocolFeatures::CONFIG));
    assert!(pf.contains(VhostUserProtocolFeatures::MQ));
    fe.set_protocol_features(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ)
        .unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 3);
    fe.set_features(f).unwrap();
    let (_, cfg) = fe
        .get_config(
            0,
            CONFIG_SIZE as u32,
            VhostUserConfigFlags::empty(),
            &[0u8; CONFIG_SIZE],
        )
        .expect("GET_CONFIG");
    (fe, RdmaConfig::decode(&cfg).unwrap())
}

#[test]
fn serve_answers_vhost_user_and_ctl_then_stops_on_sigterm() {
    let mut s = Served::start("basic", 2);
    let pf = Pf::new(0, 2);
    for vf in 0..2 {
        let (mut fe, cfg) = handshake(&s.socket(vf));
        let id = pf.default_identity(vf);
        assert_eq!(cfg, RdmaConfig::from_identity(&id), "VF {vf}");
        // A part of the layout, and a read across its end.
        let (_, part) = fe
            .get_config(24, 16, VhostUserConfigFlags::empty(), &[0u8; 16])
            .unwrap();
        assert_eq!(part, id.gid.0.to_vec());
        let (_, tail) = fe
            .get_config(120, 16, VhostUserConfigFlags::empty(), &[0u8; 16])
            .unwrap();
        assert_eq!(&tail[..8], &cfg.encode()[120..128]);
        assert_eq!(&tail[8..], &[0u8; 8], "past the layout reads as zero");
        // The frontend stays connected while ctl looks.
        if vf == 1 {
            let vfs = ctl_json(&s.dir, "vfs");
            let vfs = vfs.as_array().unwrap();
            assert_eq!(vfs.len(), 2);
            assert_eq!(vfs[1]["gid"], id.gid.to_string());
            assert_eq!(vfs[1]["mac"], id.mac.to_string());
            assert_eq!(vfs[1]["connected"], true);
            let qps = ctl_json(&s.dir, "qps");
            assert_eq!(qps, serde_json::json!([]));
            let c = ctl_json(&s.dir, "counters");
            assert_eq!(c["vfs"].as_array().unwrap().len(), 2);
            assert!(c["switch"].is_object());
        }
    }
    let st = s.sigterm();
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
    assert!(!s.socket(0).exists(), "sockets are removed at exit");
}

#[test]
fn a_vf_accepts_a_new_frontend_after_a_disconnect() {
    let mut s = Served::start("reconnect", 1);
    let path = s.socket(0);
    for round in 0..3 {
        let (fe, cfg) = handshake(&path);
        assert_eq!(
            cfg.gid,
            Pf::new(0, 1).default_identity(0).gid,
            "round {round}"
        );
        drop(fe);
    }
    // Connected while SIGTERM arrives: the connection is cut and the process still exits 0.
    let (_fe, _) = handshake(&path);
    let vfs = ctl_json(&s.dir, "vfs");
    assert_eq!(vfs[0]["connections"], 4);
    let st = s.sigterm();
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
}

#[test]
fn ctl_without_a_server_fails_cleanly() {
    let dir = fresh_dir("noserver");
    let out = Command::new(bin())
        .args(["ctl", "--socket-dir"])
        .arg(&dir)
        .arg("vfs")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("control socket"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_udp_address_that_is_not_local() {
    let dir = fresh_dir("udp-not-local");
    // 192.0.2.0/24 is TEST-NET-1: on no interface of a test machine.
    let out = Command::new(bin())
        .args(["serve", "--udp-ip", "192.0.2.1", "--socket-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot bind the UDP fabric"), "{err}");
}

#[test]
fn serve_wants_one_tap_device_per_vf() {
    let dir = fresh_dir("tap-count");
    let out = Command::new(bin())
        .args([
            "serve",
            "--vfs",
            "2",
            "--tap",
            "vhtapx",
            "--tap-ip",
            "10.99.9.1",
        ])
        .arg("--socket-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 TAP devices named for 2 VFs"), "{err}");
}
