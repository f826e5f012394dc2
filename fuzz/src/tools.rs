//! Text exchanged with peers that are not trusted: the control socket's request line
//! (vhost/src/ctl.rs) and the TCP side-channel messages of `vhca pingpong` (ibv_rc_pingpong's
//! 52-byte destination) and `vhca perf` (perftest's 108-byte key message).
//!
//! Properties: no bytes panic a parser; a message that parses re-encodes to one that parses
//! to the same value; the control socket answers every request line with one JSON line of
//! `{"ok":…}` and a readable rendering.

use serde_json::{json, Value};
use std::sync::OnceLock;
use vhca::perf::KeyMsg;
use vhca::pingpong::Dest;
use vhca_device::{Mac, VecMemory, VfIdentity};
use vhca_vhost::ctl::{self, Request};
use vhca_vhost::fabric::SwitchFabric;
use vhca_vhost::pf::{PfState, Shared};
use vhca_vhost::port::VfPort;

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

/// What `ctl::handle` does with the line it read (it reads at most 64 KiB of it).
pub fn check_ctl(data: &[u8]) {
    let line = String::from_utf8_lossy(&data[..data.len().min(64 * 1024)]);
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(r) => match ctl::answer(shared(), &r.cmd) {
            Ok(v) => {
                let _ = ctl::render_text(&r.cmd, &v);
                json!({"ok": true, "result": v})
            }
            Err(e) => json!({"ok": false, "error": e}),
        },
        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let out = reply.to_string();
    assert!(!out.contains('\n'), "an answer is one line");
    let back: Value = serde_json::from_str(&out).expect("an answer is JSON");
    assert!(back["ok"].is_boolean());
}
