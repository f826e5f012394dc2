//! A hostile or careless client of `vhca serve`'s control socket cannot starve the others:
//! idle connections, half-written requests and bytes that are not UTF-8 (issue: "hostile
//! frontends"; before, one connection was served at a time with a 5 s read timeout, 20 idle
//! clients delayed a request by 100 s, and invalid UTF-8 got no reply).

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use vhca_guest::serve::ServeProcess;

const READY: Duration = Duration::from_secs(60);

#[test]
fn idle_control_clients_do_not_delay_vhca_ctl() {
    let mut s = ServeProcess::start(3, READY).expect("vhca serve");
    let ctl = s.socket_dir().join("ctl.sock");
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&ctl).expect("connect"))
        .collect();
    let mut half = UnixStream::connect(&ctl).expect("connect");
    half.write_all(b"{\"cmd\":\"vf").unwrap();
    // ctl::request gives up after 5 s: one idle client served first would already fail it.
    let vfs = vhca_vhost::ctl::request(&ctl, "vfs").expect("vhca ctl vfs while 21 clients idle");
    assert_eq!(vfs.as_array().map(Vec::len), Some(3));
    drop(idle);
    drop(half);
    assert_eq!(
        s.terminate(Duration::from_secs(10)).map(|st| st.code()),
        Some(Some(0))
    );
}

#[test]
fn malformed_control_requests_get_an_answer() {
    let mut s = ServeProcess::start(1, READY).expect("vhca serve");
    let ctl = s.socket_dir().join("ctl.sock");
    for req in [
        &b"\xff\xfe\x80\n"[..],
        b"not json\n",
        b"{\"cmd\":\"reboot\"}\n",
        b"{\"cmd\":42}\n",
        b"\n",
    ] {
        let mut c = UnixStream::connect(&ctl).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req).unwrap();
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("reply to {req:?} is not JSON ({e}): {line:?}"));
        assert_eq!(v["ok"], false, "{req:?}: {line}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{line}");
    }
    // And the server still answers a good one.
    assert!(vhca_vhost::ctl::request(&ctl, "counters").is_ok());
    assert_eq!(
        s.terminate(Duration::from_secs(10)).map(|st| st.code()),
        Some(Some(0))
    );
}
