//! `vhca pingpong --vf` and `vhca perf --vf`: the tools on a VF of a running `vhca serve
//! --udp-ip` (a child process), through the guest driver, against the same tools on an
//! in-process node with its own UDP socket on another loopback address: both directions,
//! pingpong RC and UD, all four perf tests. Then the library API with a hook between
//! iterations.
//!
//! Every 127.0.0.0/8 address is local, so no root and no namespace: the serve process's VF
//! sends from 127.0.78.x:4791, the node from 127.0.78.y:4791, through the kernel. Each test
//! uses addresses of its own (tests run in parallel).

use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;
use vhca::interop::endpoint::{connect_vf, Progress};
use vhca::interop::{perf, pingpong};
use vhca_device::Gid;
use vhca_fabric::node::Node;
use vhca_guest::watchdog::Watchdog;

mod common;
use common::*;

const ITERS: u32 = 100;

fn ping_opts(ud: bool) -> pingpong::Options {
    pingpong::Options {
        size: if ud { 1024 } else { 4096 },
        iters: ITERS,
        ud,
        stall: Duration::from_secs(30),
        // RC clients check every reply byte for byte (the CLI's --chk).
        check: !ud,
        ..Default::default()
    }
}

/// The CLI arguments of `o` (the interop script's flags).
fn ping_args(o: &pingpong::Options, port: u16) -> Vec<String> {
    let mut a = vec![
        "-p".into(),
        port.to_string(),
        "-s".into(),
        o.size.to_string(),
        "-n".into(),
        o.iters.to_string(),
        "--json".into(),
    ];
    if o.ud {
        a.push("--ud".into());
    }
    if o.uc {
        a.push("--uc".into());
    }
    if o.srq {
        a.push("--srq".into());
        a.push("-q".into());
        a.push(o.num_qp.to_string());
    }
    if o.check {
        a.push("--chk".into());
    }
    a
}

fn check_ping(r: &Value, o: &pingpong::Options) {
    assert_eq!(r["iters"], o.iters, "{r}");
    assert_eq!(r["bytes"], 2 * o.size as u64 * o.iters as u64, "{r}");
}

/// ibv_uc_pingpong's options: RC's, on a UC QP, every reply checked.
fn uc_opts() -> pingpong::Options {
    pingpong::Options {
        uc: true,
        ..ping_opts(false)
    }
}

/// ibv_srq_pingpong's options: RC QPs on one SRQ (no echo check: every QP shares the buffer).
fn srq_opts() -> pingpong::Options {
    pingpong::Options {
        srq: true,
        num_qp: 6,
        check: false,
        ..ping_opts(false)
    }
}

/// `vhca pingpong --vf` client against an in-process node server.
fn ping_vf_client(ud: bool, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) {
    ping_vf_client_with(ping_opts(ud), vf_ip, node_ip)
}

fn ping_vf_client_with(o: pingpong::Options, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) {
    let p = serve(vf_ip);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(node_ip, 64 << 20).expect("node");
        pingpong::server_on(
            &mut node,
            listener,
            &so,
            &mut vhca::interop::endpoint::no_hook,
        )
    });
    let mut args = vec!["pingpong".into(), "--vf".into()];
    args.push(p.socket(0).display().to_string());
    args.push("127.0.0.1".into());
    args.extend(ping_args(&o, port));
    let client = json_of(vhca(&args));
    let server = srv.join().expect("server thread").expect("node server");
    check_ping(&client, &o);
    // The VF's link is in the serve process: its report has no link counters.
    assert!(client.get("link").is_none(), "{client}");
    assert_eq!(
        (server.iters, server.bytes),
        (o.iters, 2 * o.size as u64 * o.iters as u64)
    );
    // The node's RoCEv2 came from the VF's address, through the kernel.
    let link = server.link.expect("a node's report has its link counters");
    assert!(link.rx_packets >= o.iters as u64, "{link:?}");
}

/// `vhca pingpong --vf` server against an in-process node client.
fn ping_vf_server(ud: bool, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) {
    ping_vf_server_with(ping_opts(ud), vf_ip, node_ip)
}

fn ping_vf_server_with(o: pingpong::Options, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) {
    let p = serve(vf_ip);
    let o = pingpong::Options {
        port: free_port(),
        ..o
    };
    let mut args = vec!["pingpong".into(), "--vf".into()];
    args.push(p.socket(0).display().to_string());
    args.extend(ping_args(&o, o.port));
    let mut child = vhca(&args);
    let log = wait_listening(&mut child);
    let client = pingpong::client(node_ip, Ipv4Addr::LOCALHOST, &o).expect("node client");
    let server = json_of(child);
    drop(log);
    check_ping(&server, &o);
    assert!(server.get("link").is_none(), "{server}");
    assert_eq!(
        (client.iters, client.bytes),
        (o.iters, 2 * o.size as u64 * o.iters as u64)
    );
}

#[test]
fn pingpong_rc_vf_client_to_node_server() {
    let _w = Watchdog::arm("pingpong_rc_vf_client_to_node_server", DEADLINE);
    ping_vf_client(
        false,
        Ipv4Addr::new(127, 0, 78, 1),
        Ipv4Addr::new(127, 0, 78, 2),
    );
}

#[test]
fn pingpong_rc_node_client_to_vf_server() {
    let _w = Watchdog::arm("pingpong_rc_node_client_to_vf_server", DEADLINE);
    ping_vf_server(
        false,
        Ipv4Addr::new(127, 0, 78, 11),
        Ipv4Addr::new(127, 0, 78, 12),
    );
}

#[test]
fn pingpong_ud_vf_client_to_node_server() {
    let _w = Watchdog::arm("pingpong_ud_vf_client_to_node_server", DEADLINE);
    ping_vf_client(
        true,
        Ipv4Addr::new(127, 0, 78, 21),
        Ipv4Addr::new(127, 0, 78, 22),
    );
}

#[test]
fn pingpong_ud_node_client_to_vf_server() {
    let _w = Watchdog::arm("pingpong_ud_node_client_to_vf_server", DEADLINE);
    ping_vf_server(
        true,
        Ipv4Addr::new(127, 0, 78, 31),
        Ipv4Addr::new(127, 0, 78, 32),
    );
}

#[test]
fn pingpong_uc_vf_client_to_node_server() {
    let _w = Watchdog::arm("pingpong_uc_vf_client_to_node_server", DEADLINE);
    ping_vf_client_with(
        uc_opts(),
        Ipv4Addr::new(127, 0, 75, 1),
        Ipv4Addr::new(127, 0, 75, 2),
    );
}

#[test]
fn pingpong_uc_node_client_to_vf_server() {
    let _w = Watchdog::arm("pingpong_uc_node_client_to_vf_server", DEADLINE);
    ping_vf_server_with(
        uc_opts(),
        Ipv4Addr::new(127, 0, 75, 11),
        Ipv4Addr::new(127, 0, 75, 12),
    );
}

/// Two in-process nodes, UC, every reply checked; the wire carries UC opcodes only and no
/// ACKs.
#[test]
fn pingpong_uc_node_to_node_loopback() {
    let _w = Watchdog::arm("pingpong_uc_node_to_node_loopback", DEADLINE);
    let o = uc_opts();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(Ipv4Addr::new(127, 0, 75, 21), 64 << 20).expect("node");
        pingpong::server_on(
            &mut node,
            listener,
            &so,
            &mut vhca::interop::endpoint::no_hook,
        )
    });
    let co = pingpong::Options { port, ..o.clone() };
    let client = pingpong::client(Ipv4Addr::new(127, 0, 75, 22), Ipv4Addr::LOCALHOST, &co)
        .expect("node client");
    let server = srv.join().expect("server thread").expect("node server");
    for r in [&client, &server] {
        assert_eq!(
            (r.iters, r.bytes),
            (o.iters, 2 * o.size as u64 * o.iters as u64)
        );
        let link = r
            .link
            .as_ref()
            .expect("a node's report has its link counters");
        // 4096-byte messages at MTU 1024: four packets per message, nothing else.
        assert_eq!(link.tx_packets, 4 * o.iters as u64, "{link:?}");
    }
}

#[test]
fn pingpong_srq_vf_client_to_node_server() {
    let _w = Watchdog::arm("pingpong_srq_vf_client_to_node_server", DEADLINE);
    ping_vf_client_with(
        srq_opts(),
        Ipv4Addr::new(127, 0, 75, 31),
        Ipv4Addr::new(127, 0, 75, 32),
    );
}

#[test]
fn pingpong_srq_node_client_to_vf_server() {
    let _w = Watchdog::arm("pingpong_srq_node_client_to_vf_server", DEADLINE);
    ping_vf_server_with(
        srq_opts(),
        Ipv4Addr::new(127, 0, 75, 41),
        Ipv4Addr::new(127, 0, 75, 42),
    );
}

/// Two in-process nodes, `--srq` with the tool's default 16 QPs; a side started with another
/// QP count is refused at the exchange.
#[test]
fn pingpong_srq_node_to_node_loopback() {
    let _w = Watchdog::arm("pingpong_srq_node_to_node_loopback", DEADLINE);
    for (server_qps, ok) in [(16, true), (4, false)] {
        let o = pingpong::Options {
            num_qp: 16,
            ..srq_opts()
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
        let port = listener.local_addr().unwrap().port();
        let so = pingpong::Options {
            num_qp: server_qps,
            ..o.clone()
        };
        let srv = std::thread::spawn(move || {
            let mut node = Node::new(Ipv4Addr::new(127, 0, 75, 51), 64 << 20).expect("node");
            pingpong::server_on(
                &mut node,
                listener,
                &so,
                &mut vhca::interop::endpoint::no_hook,
            )
        });
        let co = pingpong::Options { port, ..o.clone() };
        let client = pingpong::client(Ipv4Addr::new(127, 0, 75, 52), Ipv4Addr::LOCALHOST, &co);
        let server = srv.join().expect("server thread");
        if !ok {
            assert!(server.is_err(), "a server with 4 QPs took 16");
            assert!(client.is_err());
            continue;
        }
        for r in [client.expect("client"), server.expect("server")] {
            assert_eq!(
                (r.iters, r.bytes),
                (o.iters, 2 * o.size as u64 * o.iters as u64)
            );
            let link = r.link.expect("a node's report has its link counters");
            assert!(link.rx_packets >= 4 * o.iters as u64, "{link:?}");
        }
    }
}

fn perf_opts(test: perf::Test) -> perf::Options {
    let mut o = perf::Options::new(test);
    o.size = 4096;
    o.iters = 200;
    o.timeout = Duration::from_secs(30);
    o
}

fn perf_args(o: &perf::Options, port: u16) -> Vec<String> {
    vec![
        "-p".into(),
        port.to_string(),
        "-s".into(),
        o.size.to_string(),
        "-n".into(),
        o.iters.to_string(),
        "--timeout".into(),
        o.timeout.as_secs().to_string(),
        "--json".into(),
    ]
}

/// What both sides of a test must agree on; `client` and `server` are the JSON reports of
/// either side.
fn check_perf(test: perf::Test, o: &perf::Options, client: &Value, server: &Value) {
    let total = o.size as u64 * o.iters as u64;
    if test == perf::Test::SendLat {
        for r in [client, server] {
            assert_eq!(r["iterations"], o.iters, "{r}");
            assert_eq!(r["bytes_transferred"], total, "{r}");
            assert!(r["t_typical_usec"].as_f64().unwrap() > 0.0, "{r}");
        }
        return;
    }
    assert_eq!(client["role"], "client");
    assert_eq!(server["role"], "server");
    assert_eq!(client["bytes"], o.size, "{client}");
    assert_eq!(client["iterations"], o.iters, "{client}");
    assert_eq!(client["bytes_transferred"], total, "{client}");
    assert!(client["bw_average_mb_per_sec"].as_f64().unwrap() > 0.0);
    if test == perf::Test::SendBw {
        // The server counted what arrived.
        assert_eq!(server["bytes_transferred"], total, "{server}");
    } else {
        // The server prints the client's report, as perftest's does.
        // (One of the two went through printed JSON, which serde_json parses to within an
        // ulp or so, hence no exact comparison.)
        assert_eq!(server["source"], "peer");
        let (s, c) = (
            server["bw_average_mb_per_sec"].as_f64().unwrap(),
            client["bw_average_mb_per_sec"].as_f64().unwrap(),
        );
        assert!((s - c).abs() <= c * 1e-12, "server {s}, client {c}");
    }
}

/// `vhca perf --vf` client against an in-process node server.
fn perf_vf_client(test: perf::Test, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) {
    let p = serve(vf_ip);
    let o = perf_opts(test);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || perf::serve(node_ip, listener, &o));
    let mut args = vec!["perf".into(), test.binary().into(), "--vf".into()];
    args.push(p.socket(0).display().to_string());
    args.push("127.0.0.1".into());
    args.extend(perf_args(&o, port));
    let client = json_of(vhca(&args));
    let server = srv.join().expect("server thread").expect("node server");
    let server = serde_json::to_value(&server).unwrap();
    check_perf(test, &o, &client, &server);
}

/// `vhca perf --vf` server against an in-process node client.
fn perf_vf_server(test: perf::Test, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) {
    let p = serve(vf_ip);
    let mut o = perf_opts(test);
    o.port = free_port();
    let mut args = vec!["perf".into(), test.binary().into(), "--vf".into()];
    args.push(p.socket(0).display().to_string());
    args.extend(perf_args(&o, o.port));
    let mut child = vhca(&args);
    let log = wait_listening(&mut child);
    let client = perf::client(node_ip, Ipv4Addr::LOCALHOST, &o).expect("node client");
    let server = json_of(child);
    drop(log);
    check_perf(test, &o, &serde_json::to_value(&client).unwrap(), &server);
}

#[test]
fn perf_write_bw_vf_client_to_node_server() {
    let _w = Watchdog::arm("perf_write_bw_vf_client_to_node_server", DEADLINE);
    perf_vf_client(
        perf::Test::WriteBw,
        Ipv4Addr::new(127, 0, 78, 41),
        Ipv4Addr::new(127, 0, 78, 42),
    );
}

#[test]
fn perf_write_bw_node_client_to_vf_server() {
    let _w = Watchdog::arm("perf_write_bw_node_client_to_vf_server", DEADLINE);
    perf_vf_server(
        perf::Test::WriteBw,
        Ipv4Addr::new(127, 0, 78, 51),
        Ipv4Addr::new(127, 0, 78, 52),
    );
}

#[test]
fn perf_send_bw_vf_client_to_node_server() {
    let _w = Watchdog::arm("perf_send_bw_vf_client_to_node_server", DEADLINE);
    perf_vf_client(
        perf::Test::SendBw,
        Ipv4Addr::new(127, 0, 78, 61),
        Ipv4Addr::new(127, 0, 78, 62),
    );
}

#[test]
fn perf_send_bw_node_client_to_vf_server() {
    let _w = Watchdog::arm("perf_send_bw_node_client_to_vf_server", DEADLINE);
    perf_vf_server(
        perf::Test::SendBw,
        Ipv4Addr::new(127, 0, 78, 71),
        Ipv4Addr::new(127, 0, 78, 72),
    );
}

#[test]
fn perf_read_bw_vf_client_to_node_server() {
    let _w = Watchdog::arm("perf_read_bw_vf_client_to_node_server", DEADLINE);
    perf_vf_client(
        perf::Test::ReadBw,
        Ipv4Addr::new(127, 0, 78, 91),
        Ipv4Addr::new(127, 0, 78, 92),
    );
}

#[test]
fn perf_read_bw_node_client_to_vf_server() {
    let _w = Watchdog::arm("perf_read_bw_node_client_to_vf_server", DEADLINE);
    perf_vf_server(
        perf::Test::ReadBw,
        Ipv4Addr::new(127, 0, 78, 101),
        Ipv4Addr::new(127, 0, 78, 102),
    );
}

#[test]
fn perf_send_lat_vf_client_to_node_server() {
    let _w = Watchdog::arm("perf_send_lat_vf_client_to_node_server", DEADLINE);
    perf_vf_client(
        perf::Test::SendLat,
        Ipv4Addr::new(127, 0, 78, 111),
        Ipv4Addr::new(127, 0, 78, 112),
    );
}

#[test]
fn perf_send_lat_node_client_to_vf_server() {
    let _w = Watchdog::arm("perf_send_lat_node_client_to_vf_server", DEADLINE);
    perf_vf_server(
        perf::Test::SendLat,
        Ipv4Addr::new(127, 0, 78, 121),
        Ipv4Addr::new(127, 0, 78, 122),
    );
}

#[test]
fn vf_mode_refuses_a_tap_or_a_capture() {
    let _w = Watchdog::arm("vf_mode_refuses_a_tap_or_a_capture", DEADLINE);
    // The check comes before the socket is opened: the path need not exist.
    let o = pingpong::Options {
        pcap: Some("x.pcap".into()),
        ..ping_opts(false)
    };
    let vf = vhca_guest::VfTarget::Socket("/nonexistent/vf0.sock".into());
    let e = pingpong::vf_server(&vf, &o).expect_err("a capture is the serve process's");
    assert!(matches!(e, pingpong::PingError::Options(_)), "{e}");
}

/// The library API a migration orchestrator uses: the same programs on a `GuestContext`, with
/// a hook that gets the context between iterations. The hook here issues a device command
/// mid-run (what a migration's stop and resume are, on a larger scale) and records the calls.
#[test]
fn hooks_run_between_iterations_on_a_guest_context() {
    let w = Watchdog::arm("hooks_run_between_iterations_on_a_guest_context", DEADLINE);
    let vf_ip = Ipv4Addr::new(127, 0, 78, 81);
    let node_ip = Ipv4Addr::new(127, 0, 78, 82);
    w.phase("starting vhca serve");
    let p = serve(vf_ip);
    let mut ctx = connect_vf(&p.socket(0), 32 << 20).expect("guest on the VF");

    // pingpong: once per round trip, in order, ending at the last.
    w.phase("pingpong client on the VF, hook per iteration");
    let o = ping_opts(false);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port()));
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(node_ip, 64 << 20).expect("node");
        pingpong::server_on(
            &mut node,
            listener,
            &so,
            &mut vhca::interop::endpoint::no_hook,
        )
    });
    let mut seen = Vec::new();
    let r = pingpong::client_on(&mut ctx, server, &o, &mut |c, p: Progress| {
        // The device answers commands between iterations: the GID is the serve address.
        let gid = c.query_gid(0).map_err(|e| e.to_string())?;
        if gid != Gid::from_ipv4(vf_ip.octets()) {
            return Err(format!("GID {gid:?}").into());
        }
        seen.push(p);
        Ok(())
    })
    .expect("pingpong on the VF");
    srv.join().expect("server thread").expect("node server");
    assert_eq!(r.iters, ITERS);
    let want: Vec<Progress> = (1..=ITERS as u64)
        .map(|i| Progress {
            done: Some(i),
            total: ITERS as u64,
        })
        .collect();
    assert_eq!(seen, want);

    // perf write_bw client on the same context: counts advance (moderated) up to the total.
    w.phase("perf write_bw client on the VF");
    let mut o = perf_opts(perf::Test::WriteBw);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    o.port = listener.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || perf::serve(node_ip, listener, &o));
    let mut done = Vec::new();
    perf::client_on(
        &mut ctx,
        (Ipv4Addr::LOCALHOST, o.port).into(),
        &o,
        &mut |_, p: Progress| {
            done.push(p.done.ok_or("a client has iterations")?);
            Ok(())
        },
    )
    .expect("write_bw on the VF");
    srv.join().expect("server thread").expect("node server");
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&(o.iters as u64)));

    // A write_bw server has no iterations of its own: it calls the hook while it waits for
    w.phase("perf write_bw server on the VF, client paused by its hook");
    // the client, here paused for 50 ms mid-run by its own hook so the wait is long enough.
    let mut o = perf_opts(perf::Test::WriteBw);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    o.port = listener.local_addr().unwrap().port();
    let cli = std::thread::spawn(move || {
        let mut node = Node::new(node_ip, 64 << 20).expect("node");
        let server = SocketAddr::from((Ipv4Addr::LOCALHOST, o.port));
        perf::client_on(&mut node, server, &o, &mut |_, p: Progress| {
            if p.done >= Some(100) && p.done < Some(200) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })
    });
    let mut ticks = Vec::new();
    let r = perf::serve_on(&mut ctx, listener, &o, &mut |_, p: Progress| {
        ticks.push(p);
        Ok(())
    })
    .expect("write_bw server on the VF");
    cli.join().expect("client thread").expect("node client");
    assert_eq!(serde_json::to_value(&r).unwrap()["source"], "peer");
    assert!(!ticks.is_empty());
    assert!(ticks.iter().all(|p| *p
        == Progress {
            done: None,
            total: o.iters as u64
        }));

    // A hook's error ends the run with it.
    w.phase("pingpong client on the VF stopped by its hook");
    let o = ping_opts(false);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port()));
    let so = pingpong::Options {
        stall: Duration::from_secs(2),
        ..o.clone()
    };
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(node_ip, 64 << 20).expect("node");
        pingpong::server_on(
            &mut node,
            listener,
            &so,
            &mut vhca::interop::endpoint::no_hook,
        )
    });
    let e = pingpong::client_on(&mut ctx, server, &o, &mut |_, p: Progress| {
        if p.done == Some(10) {
            Err("stop here".into())
        } else {
            Ok(())
        }
    })
    .expect_err("the hook stops the run");
    assert!(
        matches!(&e, pingpong::PingError::Hook(m) if m.to_string() == "stop here"),
        "{e}"
    );
    // The server, left waiting, gives up.
    w.phase("the pingpong server left waiting gives up");
    assert!(matches!(
        srv.join().expect("server thread"),
        Err(pingpong::PingError::Stalled(_))
    ));
}

/// The migration report inside a tool's JSON: it happened, with a blackout.
fn check_migration<'a>(r: &'a Value, counting: &str) -> &'a Value {
    let m = &r["migration"];
    assert_eq!(m["counting"], counting, "{r}");
    assert!(m["blackout_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(m["state_bytes"].as_u64().unwrap() > 0, "{r}");
    m
}

/// `vhca pingpong --vf --migrate-to`: the VF moves to another serve process at iteration 50 of
/// 100 (same host: the source releases the VF's address at the save, the destination binds
/// it at the load) and the run finishes there; the node server sees every iteration.
#[test]
fn pingpong_vf_client_migrates_mid_run() {
    let _w = Watchdog::arm("pingpong_vf_client_migrates_mid_run", DEADLINE);
    let (src_ip, dst_ip, node_ip) = (
        Ipv4Addr::new(127, 0, 78, 131),
        Ipv4Addr::new(127, 0, 78, 132),
        Ipv4Addr::new(127, 0, 78, 133),
    );
    let (src, dst) = (serve(src_ip), serve_destination(dst_ip));
    let o = ping_opts(false);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(node_ip, 64 << 20).expect("node");
        pingpong::server_on(
            &mut node,
            listener,
            &so,
            &mut vhca::interop::endpoint::no_hook,
        )
    });
    let mut args = vec!["pingpong".into(), "--vf".into()];
    args.push(src.socket(0).display().to_string());
    args.push("127.0.0.1".into());
    args.extend(ping_args(&o, port));
    args.extend([
        "--migrate-to".into(),
        dst.socket(0).display().to_string(),
        "--migrate-at".into(),
        "50".into(),
        "--migrate-hook".into(),
        "test \"$VHCA_IP\" = 127.0.78.131".into(),
    ]);
    let client = json_of(vhca(&args));
    let server = srv.join().expect("server thread").expect("node server");
    check_ping(&client, &o);
    let m = check_migration(&client, "iterations");
    assert_eq!(m["at"], 50, "{client}");
    assert_eq!(m["precopy_from"], 25, "{client}");
    assert_eq!(m["precopy_rounds"], 1, "{client}");
    assert!(m["hook_ms"].as_f64().unwrap() > 0.0, "{client}");
    // What the report guarantees by construction, not by timing: the stall is the longest
    // gap of a window that contains the migrated iteration's gap, and that gap (switch-over
    // completion to the next) contains the resume-to-completion gap (resume to the same
    // next completion). Each figure is positive.
    let (stall, it, resume, blackout) = (
        m["stall_ms"].as_f64().unwrap(),
        m["migrated_iteration_ms"].as_f64().unwrap(),
        m["resume_to_completion_ms"].as_f64().unwrap(),
        m["blackout_ms"].as_f64().unwrap(),
    );
    assert!(stall >= it, "{client}");
    assert!(it >= resume, "{client}");
    assert!(resume > 0.0 && blackout > 0.0, "{client}");
    assert_eq!(server.iters, o.iters);
}

/// `vhca perf write_bw --vf --migrate-to` as the server, which has no iterations of its own:
/// it migrates at its third 10 ms tick of the client's data phase.
#[test]
fn perf_write_bw_vf_server_migrates_mid_run() {
    let _w = Watchdog::arm("perf_write_bw_vf_server_migrates_mid_run", DEADLINE);
    let (src_ip, dst_ip, node_ip) = (
        Ipv4Addr::new(127, 0, 78, 141),
        Ipv4Addr::new(127, 0, 78, 142),
        Ipv4Addr::new(127, 0, 78, 143),
    );
    let (src, dst) = (serve(src_ip), serve_destination(dst_ip));
    let mut o = perf_opts(perf::Test::WriteBw);
    // Long enough a data phase (about 200 MB) for three ticks and the pre-copy.
    o.iters = 50_000;
    o.port = free_port();
    let mut args = vec!["perf".into(), "write_bw".into(), "--vf".into()];
    args.push(src.socket(0).display().to_string());
    args.extend(perf_args(&o, o.port));
    args.extend([
        "--migrate-to".into(),
        dst.socket(0).display().to_string(),
        "--migrate-at".into(),
        "3".into(),
    ]);
    let mut child = vhca(&args);
    let log = wait_listening(&mut child);
    let client = perf::client(node_ip, Ipv4Addr::LOCALHOST, &o).expect("node client");
    let server = json_of(child);
    drop(log);
    check_perf(
        perf::Test::WriteBw,
        &o,
        &serde_json::to_value(&client).unwrap(),
        &server,
    );
    let m = check_migration(&server, "hook calls");
    assert_eq!(m["at"], 3, "{server}");
    // No completions of its own: no stall figures on this side.
    assert!(m.get("stall_ms").is_none(), "{server}");
}

#[test]
fn migrate_options_need_a_vf_and_an_iteration() {
    let _w = Watchdog::arm("migrate_options_need_a_vf_and_an_iteration", DEADLINE);
    let out = vhca(&[
        "pingpong".into(),
        "--ip".into(),
        "127.0.78.61".into(),
        "--migrate-to".into(),
        "/nonexistent".into(),
        "--migrate-at".into(),
        "5".into(),
    ])
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
    let out = vhca(&[
        "pingpong".into(),
        "--vf".into(),
        "/nonexistent".into(),
        "--migrate-to".into(),
        "/nonexistent".into(),
    ])
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
}
