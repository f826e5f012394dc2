//! `vhca opcodes`: the two-process check of every RC opcode and UD.
//!
//! * The CLI, server and client as two processes on two VFs of one `vhca serve --vfs 2`
//!   (sockets, the in-process switch): both exit 0 and their reports agree.
//! * The library on in-process nodes over kernel UDP on loopback (127.0.79.x, `--ip`): edge
//!   sizes, MTUs and windows.
//! * That the checks catch corruption: a client that sends a wrong byte, a server that serves
//!   the wrong READ data; both sides fail naming the iteration and the opcode.
//! * A lost UD answer is resent; a live migration of the client's VF mid-run.
//!
//! Every 127.0.0.0/8 address is local, so no root and no namespace; each test uses addresses
//! of its own (tests run in parallel).

use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Child;
use std::thread::JoinHandle;
use std::time::Duration;
use vhca::interop::opcodes::{self, Fault, OpcodesError, Options, Report};
use vhca_guest::serve::ServeProcess;

mod common;
use common::*;

/// The child's one-line JSON report; panics with its output (or `log`, the stderr a
/// [`wait_listening`] thread kept) when it failed.
fn json_of(child: Child, log: Option<JoinHandle<String>>) -> Value {
    let out = child.wait_with_output().expect("wait for vhca");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = match log {
        Some(l) => l.join().unwrap_or_default(),
        None => String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(out.status.success(), "vhca failed: {stdout}{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What both reports must say for `n` iterations of `size` bytes, and that they agree.
fn check_reports(client: &Value, server: &Value, n: u64, size: u64) {
    assert_eq!(client["role"], "client", "{client}");
    assert_eq!(server["role"], "server", "{server}");
    for r in [client, server] {
        assert_eq!(r["iterations"], n, "{r}");
        assert_eq!(r["size"], size, "{r}");
        for (op, count) in r["ops"].as_object().expect("ops") {
            assert_eq!(count, n, "{op} in {r}");
        }
        assert_eq!(r["ops"].as_object().unwrap().len(), 9, "{r}");
        assert!(r["longest_gap_us"].as_u64().is_some(), "{r}");
    }
    // The same run seen from both ends.
    for k in [
        "bytes",
        "ops",
        "checksum_to_server",
        "checksum_from_server",
        "mtu",
        "window",
    ] {
        assert_eq!(client[k], server[k], "{k}: {client} vs {server}");
    }
    // Each side's report carries the other's summary, which is what the other measured.
    assert_eq!(client["peer"]["longest_gap_us"], server["longest_gap_us"]);
    assert_eq!(server["peer"]["longest_gap_us"], client["longest_gap_us"]);
    assert_eq!(client["remote"], server["local"]);
    assert_eq!(server["remote"], client["local"]);
    let ud = client["ud_size"].as_u64().unwrap();
    assert_eq!(client["bytes"], n * (5 * size + 16 + 2 * ud), "{client}");
}

/// Server and client as two `vhca opcodes` processes on two VFs of one `vhca serve`.
#[test]
fn opcodes_between_two_vfs_of_one_serve_process() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "opcodes_between_two_vfs_of_one_serve_process",
        std::time::Duration::from_secs(300),
    );
    std::env::set_var("VHCA_BIN", env!("CARGO_BIN_EXE_vhca"));
    let s = ServeProcess::start(2, READY).expect("vhca serve");
    let port = free_port().to_string();
    let n = 300u64;
    let vf = |i| s.socket(i).display().to_string();
    let common = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["opcodes", "-p", &port, "--json"]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let mut server = vhca(&common(&["--vf", &vf(0)]));
    let log = wait_listening(&mut server);
    let n_arg = n.to_string();
    let client = vhca(&common(&["--vf", &vf(1), "127.0.0.1", "-n", &n_arg]));
    let client = json_of(client, None);
    let server = json_of(server, Some(log));
    check_reports(&client, &server, n, 4096);
    assert_eq!(client["mtu"], 1024);
}

/// Both sides through the library, on in-process nodes over UDP loopback.
fn run_nodes(
    host: u8,
    client_o: Options,
    server_o: Options,
) -> (Result<Report, OpcodesError>, Result<Report, OpcodesError>) {
    let sip = Ipv4Addr::new(127, 0, 79, host);
    let cip = Ipv4Addr::new(127, 0, 79, host + 1);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || opcodes::serve(sip, listener, &server_o));
    let c = opcodes::client(cip, Ipv4Addr::LOCALHOST, &Options { port, ..client_o });
    (c, srv.join().expect("server thread"))
}

fn quick(iters: u64) -> Options {
    Options {
        iters,
        timeout: Duration::from_secs(20),
        ..Options::default()
    }
}

fn ok(r: Result<Report, OpcodesError>, who: &str) -> Value {
    serde_json::to_value(r.unwrap_or_else(|e| panic!("{who}: {e}"))).unwrap()
}

#[test]
fn opcodes_over_udp_loopback_at_edge_sizes() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "opcodes_over_udp_loopback_at_edge_sizes",
        std::time::Duration::from_secs(300),
    );
    // One byte (a 16-byte datagram at the smallest MTU), one iteration in flight.
    let o = Options {
        size: 1,
        window: 1,
        mtu: vhca_device::Mtu::Mtu256,
        ..quick(50)
    };
    let (c, s) = run_nodes(
        1,
        o.clone(),
        Options {
            size: 4096,
            ..quick(1)
        },
    );
    let (c, s) = (ok(c, "client"), ok(s, "server"));
    check_reports(&c, &s, 50, 1);
    assert_eq!(
        (c["ud_size"].as_u64(), c["mtu"].as_u64()),
        (Some(16), Some(256))
    );
    // Messages of many packets, the smaller MTU of the two, the widest window; the server
    // takes the iteration count from the client (its own is 1).
    let o = Options {
        size: 9000,
        window: opcodes::MAX_WINDOW,
        mtu: vhca_device::Mtu::Mtu4096,
        ..quick(100)
    };
    let so = Options {
        size: 16384,
        window: opcodes::MAX_WINDOW,
        mtu: vhca_device::Mtu::Mtu2048,
        ..quick(1)
    };
    let (c, s) = run_nodes(3, o, so);
    let (c, s) = (ok(c, "client"), ok(s, "server"));
    check_reports(&c, &s, 100, 9000);
    assert_eq!(
        (c["mtu"].as_u64(), c["ud_size"].as_u64()),
        (Some(2048), Some(2048))
    );
}

#[test]
fn a_server_refuses_a_client_larger_than_it_allocated_for() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "a_server_refuses_a_client_larger_than_it_allocated_for",
        std::time::Duration::from_secs(300),
    );
    let (c, s) = run_nodes(
        5,
        Options {
            size: 8192,
            ..quick(10)
        },
        quick(10),
    );
    let (c, s) = (c.unwrap_err(), s.unwrap_err());
    assert!(matches!(s, OpcodesError::Options(_)), "{s}");
    assert!(
        matches!(&c, OpcodesError::PeerFailed(m) if m.contains("larger than this server's -s 4096")),
        "{c}"
    );
}

/// A client that sends one wrong bit: the server catches it, names the iteration and the
/// opcode, and tells the client, which fails with that reason.
#[test]
fn a_corrupted_send_fails_both_sides() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "a_corrupted_send_fails_both_sides",
        std::time::Duration::from_secs(300),
    );
    let o = Options {
        fault: Some(Fault::CorruptSend { iteration: 7 }),
        ..quick(50)
    };
    let (c, s) = run_nodes(7, o, quick(1));
    let s = s.expect_err("the server must catch the bad SEND");
    assert!(
        matches!(&s, OpcodesError::Check { iter: 7, op, what }
            if op.name() == "SEND" && what.contains("1 of 4096 bytes differ, the first at offset 2048")),
        "{s}"
    );
    let c = c.expect_err("the client must fail too");
    assert!(
        matches!(&c, OpcodesError::PeerFailed(m) if m.starts_with("iteration 7, SEND:")),
        "{c}"
    );
}

/// A server that serves the wrong READ data: at set-up (iteration 2, within the first
/// window) and when it refills a slot (iteration 13).
#[test]
fn a_corrupted_read_fails_both_sides() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "a_corrupted_read_fails_both_sides",
        std::time::Duration::from_secs(300),
    );
    for (host, it) in [(9u8, 2u64), (11, 13)] {
        let so = Options {
            fault: Some(Fault::CorruptRead { iteration: it }),
            ..quick(1)
        };
        let (c, s) = run_nodes(host, quick(50), so);
        let c = c.expect_err("the client must catch the bad READ");
        assert!(
            matches!(&c, OpcodesError::Check { iter, op, what }
                if *iter == it && op.name() == "RDMA_READ" && what.contains("offset 4095")),
            "{c}"
        );
        let s = s.expect_err("the server must fail too");
        assert!(
            matches!(&s, OpcodesError::PeerFailed(m) if m.starts_with(&format!("iteration {it}, RDMA_READ:"))),
            "{s}"
        );
    }
}

/// An answer the network lost: the client sends its datagram again, the server answers the
/// duplicate, and the run completes with the same counts on both sides.
#[test]
fn a_lost_ud_answer_is_resent() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "a_lost_ud_answer_is_resent",
        std::time::Duration::from_secs(300),
    );
    let so = Options {
        fault: Some(Fault::LoseAnswer { iteration: 20 }),
        ..quick(1)
    };
    let (c, s) = run_nodes(13, quick(40), so);
    let (c, s) = (ok(c, "client"), ok(s, "server"));
    check_reports(&c, &s, 40, 4096);
    assert!(c["ud_retransmits"].as_u64() >= Some(1), "{c}");
    assert!(s["ud_duplicates"].as_u64() >= Some(1), "{s}");
    // The client waited out the resend timer (250 ms) at iteration 20.
    assert!(c["longest_gap_us"].as_u64() >= Some(200_000), "{c}");
    assert_eq!(c["longest_gap_after_iteration"], 20, "{c}");
}

/// `vhca opcodes --vf --migrate-to`: the client's VF moves to another serve process halfway
/// (UDP fabric, same host: the source releases the address at the save, the destination
/// binds it at the load); every byte is still checked, on both sides.
#[test]
fn the_client_vf_migrates_mid_run() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "the_client_vf_migrates_mid_run",
        std::time::Duration::from_secs(300),
    );
    std::env::set_var("VHCA_BIN", env!("CARGO_BIN_EXE_vhca"));
    let src =
        ServeProcess::start_with_args(1, &["--udp-ip", "127.0.79.21"], READY).expect("vhca serve");
    let dst =
        ServeProcess::start_with_args(1, &["--udp-ip", "127.0.79.22", "--accept-identity"], READY)
            .expect("vhca serve --accept-identity");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || {
        opcodes::serve(Ipv4Addr::new(127, 0, 79, 23), listener, &quick(1))
    });
    let args: Vec<String> = [
        "opcodes",
        "--vf",
        &src.socket(0).display().to_string(),
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-n",
        "300",
        "--json",
        "--migrate-to",
        &dst.socket(0).display().to_string(),
        "--migrate-at",
        "150",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let client = json_of(vhca(&args), None);
    let server = ok(srv.join().expect("server thread"), "server");
    check_reports(&client, &server, 300, 4096);
    let m = &client["migration"];
    // At the completion that reached 150 (completions can advance the count by more than
    // one at a time, up to the window).
    let at = m["at"].as_u64().unwrap();
    assert!((150..150 + 4).contains(&at), "{client}");
    assert!(m["blackout_ms"].as_f64().unwrap() > 0.0, "{client}");
    // The switch-over ran between two completed iterations: the longest gap holds it.
    let blackout_us = m["blackout_ms"].as_f64().unwrap() * 1000.0;
    assert!(
        client["longest_gap_us"].as_f64().unwrap() >= blackout_us,
        "{client}"
    );
}

#[test]
fn the_command_needs_an_ip_or_a_vf() {
    let _w = vhca_guest::watchdog::Watchdog::arm(
        "the_command_needs_an_ip_or_a_vf",
        std::time::Duration::from_secs(300),
    );
    let out = vhca(&["opcodes".into()]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = vhca(&[
        "opcodes".into(),
        "--ip".into(),
        "127.0.79.31".into(),
        "-s".into(),
        "0".into(),
    ])
    .wait_with_output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A server that is not there: the client says where it tried.
    let port = free_port().to_string();
    let out = vhca(&[
        "opcodes".into(),
        "--ip".into(),
        "127.0.79.32".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.clone(),
        "--timeout".into(),
        "1".into(),
    ])
    .wait_with_output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("connecting to 127.0.0.1:{port}")),
        "{err}"
    );
}
