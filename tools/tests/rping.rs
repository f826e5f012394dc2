//! `vhca rping` against `vhca rping` over kernel UDP on loopback (127.0.91.x:4791): the
//! connection comes up through the CM on each side's QP1 (REQ with rdma_cm's IP header, REP,
//! RTU), the pings run, the client's DREQ takes it down; in-process, as CLI children, and with
//! one side on a VF of a `vhca serve` (QP1 created through the device protocol).

use std::net::Ipv4Addr;
use std::time::Duration;
use vhca::interop::rping::{self, Options, Report};
use vhca_fabric::node::Node;
use vhca_guest::watchdog::Watchdog;

mod common;
use common::*;

fn opts(count: u64, size: u32) -> Options {
    Options {
        count,
        size,
        validate: true,
        stall: Duration::from_secs(30),
        ..Options::default()
    }
}

fn pair(server_ip: Ipv4Addr, client_ip: Ipv4Addr, o: &Options) -> (Report, Report) {
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(server_ip, 16 << 20).expect("server node");
        rping::server_on(&mut node, &so)
    });
    let mut node = Node::new(client_ip, 16 << 20).expect("client node");
    let c = rping::client_on(&mut node, server_ip, o).expect("client");
    let s = srv.join().expect("server thread").expect("server");
    (c, s)
}

#[test]
fn rping_in_process_small_and_multi_packet_buffers() {
    let _w = Watchdog::arm("rping_in_process", DEADLINE);
    for (i, size) in [(1u8, 64u32), (3, 5000)] {
        let o = opts(25, size);
        let (c, s) = pair(
            Ipv4Addr::new(127, 0, 91, i),
            Ipv4Addr::new(127, 0, 91, i + 1),
            &o,
        );
        assert_eq!(
            (c.role, c.pings, c.size, c.validated),
            ("client", 25, size, true)
        );
        assert_eq!(
            (s.role, s.pings),
            ("server", 25),
            "the server answered every ping"
        );
        // REQ, RTU, DREQ out of the client; REP, DREP out of the server. No loss here, but
        // the client's first REQ may reach the server's address before its socket is bound:
        // resent then, which is what the resend timer is for.
        assert_eq!(c.cm_sent - c.cm_resent, 3, "{c:?}");
        assert!(c.cm_resent <= 2, "{c:?}");
        assert!(s.cm_sent >= 2 && s.cm_received >= 3, "{s:?}");
    }
}

#[test]
fn rping_cli_client_to_cli_server() {
    let _w = Watchdog::arm("rping_cli", DEADLINE);
    let port = 7000 + (std::process::id() % 1000) as u16;
    let mut server = vhca(&[
        "rping".into(),
        "-s".into(),
        "--ip".into(),
        "127.0.91.11".into(),
        "-p".into(),
        port.to_string(),
        "-S".into(),
        "200".into(),
        "--json".into(),
    ]);
    let log = wait_line(&mut server, "listening on port");
    let client = json_of(vhca(&[
        "rping".into(),
        "-c".into(),
        "-a".into(),
        "127.0.91.11".into(),
        "--ip".into(),
        "127.0.91.12".into(),
        "-p".into(),
        port.to_string(),
        "-C".into(),
        "7".into(),
        "-S".into(),
        "200".into(),
        "-V".into(),
        "--json".into(),
    ]));
    let server = json_of(server);
    drop(log);
    assert_eq!(client["pings"], 7);
    assert_eq!(client["validated"], true);
    assert_eq!(server["pings"], 7);
    assert_eq!(server["role"], "server");
}

#[test]
fn rping_between_a_vf_of_vhca_serve_and_a_node() {
    let _w = Watchdog::arm("rping_vf", DEADLINE);
    // The VF is the server: its QP1 and RC QP are created through the guest driver.
    let vf_ip = Ipv4Addr::new(127, 0, 91, 21);
    let node_ip = Ipv4Addr::new(127, 0, 91, 22);
    let p = serve(vf_ip);
    let mut server = vhca(&[
        "rping".into(),
        "-s".into(),
        "--vf".into(),
        p.socket(0).display().to_string(),
        "--json".into(),
    ]);
    let log = wait_line(&mut server, "listening on port");
    let mut node = Node::new(node_ip, 16 << 20).expect("node");
    let c = rping::client_on(&mut node, vf_ip, &opts(10, 64)).expect("node client");
    let s = json_of(server);
    drop(log);
    assert_eq!((c.pings, s["pings"].as_u64()), (10, Some(10)));
    drop(node);

    // And the other way: the VF is the client.
    let o = opts(10, 300);
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut node = Node::new(node_ip, 16 << 20).expect("node");
        rping::server_on(&mut node, &so)
    });
    let client = json_of(vhca(&[
        "rping".into(),
        "-c".into(),
        "-a".into(),
        node_ip.to_string(),
        "--vf".into(),
        p.socket(0).display().to_string(),
        "-C".into(),
        "10".into(),
        "-S".into(),
        "300".into(),
        "-V".into(),
        "--json".into(),
    ]));
    let s = srv.join().expect("server thread").expect("node server");
    assert_eq!(client["pings"], 10);
    assert_eq!(s.pings, 10);
}
