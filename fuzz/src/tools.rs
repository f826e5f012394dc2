//! Text exchanged with peers that are not trusted: the control socket's request line
//! (vhost/src/ctl/) and the TCP side-channel messages of `vhca pingpong` (ibv_rc_pingpong's
//! 52-byte destination) and `vhca perf` (perftest's 108-byte key message).
//!
//! Properties: no bytes panic a parser; a message that parses re-encodes to one that parses
//! to the same value; the control socket answers every request line with one JSON line of
//! `{"ok":…}` and a readable rendering.

use serde_json::Value;
use std::sync::OnceLock;
use vhca::interop::perf::KeyMsg;
use vhca::interop::pingpong::Dest;
use vhca_device::{Mac, VecMemory, VfIdentity};
use vhca_vhost::ctl;
use vhca_vhost::fabric::SwitchFabric;
use vhca_vhost::pf::PfState;
use vhca_vhost::port::VfPort;
use vhca_vhost::shared::Shared;

pub fn check_messages(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(d) = Dest::decode(rest) {
            assert_eq!(Dest::decode(&d.encode()).expect("re-decode"), d);
        }
    } else if let Ok(k) = KeyMsg::decode(rest) {
        assert_eq!(KeyMsg::decode(&k.encode()).expect("re-decode"), k);
    }
}

/// A serve process's shared state with two idle VFs, made once.
fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let ports = (0..2u8)
            .map(|i| {
                let id = VfIdentity::new(Mac([2, 0, 0, 0, 0, i + 1]), [10, 0, 0, i + 1]);
                VfPort::new(id, VecMemory::shared(4096))
            })
            .collect();
        let st = PfState::new(ports, Box::new(SwitchFabric::ideal()));
        Shared::new(st, vec!["vf0.sock".into(), "vf1.sock".into()])
            .expect("eventfds for the control socket's state")
    })
}

/// The control socket's answer to one request line, exactly as its server makes it
/// (`ctl::reply_line`: any bytes, UTF-8 or not, JSON or not), and its text rendering.
pub fn check_ctl(data: &[u8]) {
    let line = &data[..data.len().min(vhca_vhost::ctl::server::MAX_REQUEST)];
    let out = ctl::reply_line(shared(), line);
    assert!(!out.contains('\n'), "an answer is one line");
    let back: Value = serde_json::from_str(&out).expect("an answer is JSON");
    assert!(back["ok"].is_boolean());
    if back["ok"] == true {
        if let Ok(req) = serde_json::from_slice::<ctl::Request>(line) {
            let _ = ctl::render_text(&req.cmd, &back["result"]);
        }
    }
}
