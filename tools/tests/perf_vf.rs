//! `vhca perf --vf` for ib_write_lat, ib_read_lat, ib_atomic_bw and ib_atomic_lat: the CLI on a
//! VF of a running `vhca serve --udp-ip` (a child process), through the guest driver, against
//! the library on an in-process node on another loopback address, both roles; and `-a` and
//! `-A` on a VF. Every test has addresses of its own on 127.0.87.x (tests run in parallel).

use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;
use vhca::interop::perf::{self, AtomicOp, Options, Test};
use vhca_guest::watchdog::Watchdog;

mod common;
use common::*;

fn opts(test: Test, iters: u32) -> Options {
    let mut o = Options::new(test);
    if !matches!(test, Test::AtomicBw | Test::AtomicLat) {
        o.size = 64;
    }
    o.iters = iters;
    o.timeout = Duration::from_secs(30);
    o
}

/// The CLI arguments of `o`.
fn args(o: &Options, port: u16) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-p".into(),
        port.to_string(),
        "-n".into(),
        o.iters.to_string(),
        "--timeout".into(),
        o.timeout.as_secs().to_string(),
        "--json".into(),
    ];
    if !matches!(o.test, Test::AtomicBw | Test::AtomicLat) {
        a.extend(["-s".into(), o.size.to_string()]);
    }
    if let Some(op) = o.atomic {
        a.extend(["-A".into(), op.name().into()]);
    }
    if o.all_sizes {
        a.push("-a".into());
    }
    if o.qps != 1 {
        a.extend(["-q".into(), o.qps.to_string()]);
    }
    if o.inline_size != 0 {
        a.extend(["-I".into(), o.inline_size.to_string()]);
    }
    if o.report_gbits {
        a.push("--report_gbits".into());
    }
    if o.duplex {
        a.push("-b".into());
    }
    if o.events {
        a.push("-e".into());
    }
    if let Some(d) = o.duration {
        a.extend(["-D".into(), d.to_string()]);
    }
    if o.rdma_cm {
        a.push("-R".into());
    }
    a
}

/// `vhca perf --vf` client against an in-process node server: (client, server) JSON.
fn vf_client(o: Options, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) -> (Value, Value) {
    let p = serve(vf_ip);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind TCP");
    let port = listener.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || perf::serve(node_ip, listener, &o));
    let mut a = vec!["perf".into(), o.test.binary().into(), "--vf".into()];
    a.push(p.socket(0).display().to_string());
    a.push("127.0.0.1".into());
    a.extend(args(&o, port));
    let client = json_of(vhca(&a));
    let server = srv.join().expect("server thread").expect("node server");
    (client, serde_json::to_value(&server).unwrap())
}

/// `vhca perf --vf` server against an in-process node client: (client, server) JSON.
fn vf_server(mut o: Options, vf_ip: Ipv4Addr, node_ip: Ipv4Addr) -> (Value, Value) {
    let p = serve(vf_ip);
    o.port = free_port();
    let mut a = vec!["perf".into(), o.test.binary().into(), "--vf".into()];
    a.push(p.socket(0).display().to_string());
    a.extend(args(&o, o.port));
    let mut child = vhca(&a);
    let log = wait_listening(&mut child);
    let client = perf::client(node_ip, Ipv4Addr::LOCALHOST, &o).expect("node client");
    let server = json_of(child);
    drop(log);
    (serde_json::to_value(&client).unwrap(), server)
}

fn ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 87, host)
}

fn check_lat(r: &Value, size: u64, iters: u64) {
    assert_eq!(r["source"], "local", "{r}");
    assert_eq!(r["bytes"], size, "{r}");
    assert_eq!(r["iterations"], iters, "{r}");
    let (min, typ, max) = (
        r["t_min_usec"].as_f64().unwrap(),
        r["t_typical_usec"].as_f64().unwrap(),
        r["t_max_usec"].as_f64().unwrap(),
    );
    assert!(min > 0.0 && min <= typ && typ <= max, "{r}");
}

#[test]
fn write_lat_vf_both_roles() {
    let w = Watchdog::arm("write_lat_vf_both_roles", DEADLINE);
    w.phase("client on the VF");
    let o = opts(Test::WriteLat, 200);
    let (c, s) = vf_client(o, ip(11), ip(12));
    for r in [&c, &s] {
        check_lat(r, 64, 200);
        // Every one of the peer's WRITEs arrived (the last byte carries the count).
        assert_eq!(r["bytes_transferred"], 64 * 200, "{r}");
    }
    w.phase("server on the VF");
    let (c, s) = vf_server(o, ip(21), ip(22));
    for r in [&c, &s] {
        check_lat(r, 64, 200);
        assert_eq!(r["bytes_transferred"], 64 * 200, "{r}");
    }
}

#[test]
fn read_lat_vf_both_roles() {
    let w = Watchdog::arm("read_lat_vf_both_roles", DEADLINE);
    w.phase("client on the VF");
    let o = opts(Test::ReadLat, 200);
    let (c, s) = vf_client(o, ip(31), ip(32));
    check_lat(&c, 64, 200);
    assert_eq!(c["bytes_transferred"], 64 * 200);
    assert_eq!(s["source"], "none", "{s}");
    w.phase("server on the VF");
    let (c, s) = vf_server(o, ip(41), ip(42));
    check_lat(&c, 64, 200);
    assert_eq!(s["source"], "none", "{s}");
}

#[test]
fn atomic_lat_vf_both_roles() {
    let w = Watchdog::arm("atomic_lat_vf_both_roles", DEADLINE);
    w.phase("FETCH_AND_ADD client on the VF");
    let o = opts(Test::AtomicLat, 150);
    let (c, s) = vf_client(o, ip(51), ip(52));
    check_lat(&c, 8, 150);
    assert!(
        c["checked"].as_str().unwrap().contains("FETCH_AND_ADD"),
        "{c}"
    );
    assert!(s["checked"].as_str().unwrap().contains("sum to 150"), "{s}");
    w.phase("CMP_AND_SWAP server on the VF");
    let mut o = o;
    o.atomic = Some(AtomicOp::CmpAndSwap);
    let (c, s) = vf_server(o, ip(61), ip(62));
    check_lat(&c, 8, 150);
    assert!(s["checked"].as_str().unwrap().contains("sum to 0"), "{s}");
}

#[test]
fn atomic_bw_vf_both_roles() {
    let w = Watchdog::arm("atomic_bw_vf_both_roles", DEADLINE);
    for (vf_client_side, op, hosts) in [
        (true, AtomicOp::FetchAndAdd, (71, 72)),
        (false, AtomicOp::FetchAndAdd, (81, 82)),
        (true, AtomicOp::CmpAndSwap, (91, 92)),
    ] {
        w.phase(if vf_client_side {
            "client on the VF"
        } else {
            "server on the VF"
        });
        let mut o = opts(Test::AtomicBw, 1000);
        o.atomic = Some(op);
        let (c, s) = if vf_client_side {
            vf_client(o, ip(hosts.0), ip(hosts.1))
        } else {
            vf_server(o, ip(hosts.0), ip(hosts.1))
        };
        assert_eq!(c["bytes"], 8, "{c}");
        assert_eq!(c["iterations"], 1000, "{c}");
        assert_eq!(c["bytes_transferred"], 8000, "{c}");
        assert!(c["bw_average_mb_per_sec"].as_f64().unwrap() > 0.0);
        assert_eq!(s["source"], "peer", "{s}");
        let want = match op {
            AtomicOp::FetchAndAdd => "sum to 1000",
            AtomicOp::CmpAndSwap => "sum to 0",
        };
        assert!(s["checked"].as_str().unwrap().contains(want), "{s}");
    }
}

/// `-a` on a VF: one JSON array element per size, 2 B to 8 MiB, in either role.
#[test]
fn all_sizes_vf() {
    let w = Watchdog::arm("all_sizes_vf", DEADLINE);
    let sizes = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap_or_else(|| panic!("an array: {v}"))
            .iter()
            .map(|r| r["bytes"].as_u64().unwrap())
            .collect()
    };
    let every: Vec<u64> = (1..24).map(|i| 1u64 << i).collect();
    w.phase("write_lat -a, client on the VF");
    let mut o = opts(Test::WriteLat, 5);
    o.all_sizes = true;
    let (c, s) = vf_client(o, ip(101), ip(102));
    assert_eq!(sizes(&c), every);
    assert_eq!(sizes(&s), every);
    w.phase("write_bw -a, server on the VF");
    let mut o = opts(Test::WriteBw, 5);
    o.all_sizes = true;
    let (c, s) = vf_server(o, ip(111), ip(112));
    assert_eq!(sizes(&c), every);
    // The server prints the client's last report, as perftest's does.
    assert_eq!(s["bytes"], 8 << 20, "{s}");
}

/// `-q`, `-I` and `--report_gbits` through the CLI on a VF, either role.
#[test]
fn options_vf() {
    let w = Watchdog::arm("options_vf", DEADLINE);
    w.phase("write_bw -q 3 --report_gbits, client on the VF");
    let mut o = opts(Test::WriteBw, 200);
    o.qps = 3;
    o.report_gbits = true;
    let (c, s) = vf_client(o, ip(121), ip(122));
    assert_eq!(c["iterations"], 600, "{c}");
    assert_eq!(c["bytes_transferred"], 600 * 64, "{c}");
    assert_eq!(c["unit"], "Gb/sec", "{c}");
    assert_eq!(s["iterations"], 600, "{s}");
    w.phase("send_bw -q 3 -I 64, server on the VF");
    let mut o = opts(Test::SendBw, 200);
    o.qps = 3;
    o.inline_size = 64;
    let (c, s) = vf_server(o, ip(131), ip(132));
    assert_eq!(c["bytes_transferred"], 600 * 64, "{c}");
    assert_eq!(s["bytes_transferred"], 600 * 64, "{s}");
    w.phase("atomic_bw -q 2, server on the VF");
    let mut o = opts(Test::AtomicBw, 300);
    o.qps = 2;
    let (_, s) = vf_server(o, ip(141), ip(142));
    assert!(s["checked"].as_str().unwrap().contains("sum to 600"), "{s}");
}

/// `-D` through the CLI on a VF, either role.
#[test]
fn duration_vf() {
    let w = Watchdog::arm("duration_vf", DEADLINE);
    w.phase("write_bw -D 1, client on the VF");
    let mut o = opts(Test::WriteBw, 1000);
    o.duration = Some(1);
    let (c, s) = vf_client(o, ip(151), ip(152));
    assert!(c["iterations"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(s["iterations"], c["iterations"], "{s}");
    w.phase("write_lat -D 1, server on the VF");
    let mut o = opts(Test::WriteLat, 1000);
    o.duration = Some(1);
    let (c, s) = vf_server(o, ip(161), ip(162));
    for r in [&c, &s] {
        assert!(r["tps"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// `-b` through the CLI on a VF, either role.
#[test]
fn bidirectional_vf() {
    let w = Watchdog::arm("bidirectional_vf", DEADLINE);
    w.phase("write_bw -b, client on the VF");
    let mut o = opts(Test::WriteBw, 300);
    o.duplex = true;
    let (c, s) = vf_client(o, ip(171), ip(172));
    for r in [&c, &s] {
        assert_eq!(r["source"], "local+peer", "{r}");
        assert_eq!(r["bytes_transferred"], 300 * 64, "{r}");
    }
    w.phase("send_bw -b, client on the VF");
    let mut o = opts(Test::SendBw, 300);
    o.duplex = true;
    let (c, s) = vf_client(o, ip(221), ip(222));
    for r in [&c, &s] {
        assert_eq!(r["source"], "local+peer", "{r}");
        assert_eq!(r["bytes_transferred"], 300 * 64, "{r}");
    }
    w.phase("read_bw -b, server on the VF");
    let mut o = opts(Test::ReadBw, 300);
    o.duplex = true;
    let (c, s) = vf_server(o, ip(181), ip(182));
    for r in [&c, &s] {
        assert_eq!(r["source"], "local+peer", "{r}");
        assert_eq!(r["bytes_transferred"], 300 * 64, "{r}");
    }
}

/// `-e` through the CLI on a VF (its events come over the virtio event queue), either role.
#[test]
fn events_vf() {
    let w = Watchdog::arm("events_vf", DEADLINE);
    w.phase("send_bw -e, client on the VF");
    let mut o = opts(Test::SendBw, 300);
    o.events = true;
    let (c, s) = vf_client(o, ip(191), ip(192));
    assert_eq!(c["bytes_transferred"], 300 * 64, "{c}");
    assert_eq!(s["bytes_transferred"], 300 * 64, "{s}");
    w.phase("send_lat -e, server on the VF");
    let mut o = opts(Test::SendLat, 200);
    o.events = true;
    let (c, s) = vf_server(o, ip(201), ip(202));
    for r in [&c, &s] {
        check_lat(r, 64, 200);
    }
    w.phase("atomic_lat -e, client on the VF");
    let mut o = opts(Test::AtomicLat, 200);
    o.events = true;
    let (c, _) = vf_client(o, ip(211), ip(212));
    check_lat(&c, 8, 200);
}

/// What perftest refuses, the CLI refuses with perftest's words (exit 1, before any socket).
#[test]
fn refusals_cli() {
    let _w = Watchdog::arm("refusals_cli", DEADLINE);
    for (args, says) in [
        (
            &["write_lat", "-q", "2"][..],
            "Multiple QPs only available on bw tests",
        ),
        (
            &["read_lat", "-I", "16"][..],
            "Inline feature not available on READ/Atomic verbs",
        ),
        (
            &["atomic_bw", "-s", "16"][..],
            "Message size cannot be changed for Atomic tests",
        ),
        (
            &["write_bw", "-A", "CMP_AND_SWAP"][..],
            "You are not running the atomic_lat/bw test!",
        ),
        (
            &["send_lat", "-b"][..],
            "Bidirectional is only available in BW test",
        ),
        (
            &["write_bw", "-e"][..],
            "Events feature not available on WRITE verb",
        ),
    ] {
        let mut a: Vec<String> = vec!["perf".into()];
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["--ip".into(), ip(200).to_string(), "-p".into(), "1".into()]);
        let out = vhca(&a).wait_with_output().expect("vhca");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `-R` on a VF: the side channel and the data QPs connected by the CM on the VF's QP1 (no TCP
/// at all), the CLI on the VF against the library on an in-process node, both roles.
#[test]
fn rdma_cm_vf_both_roles() {
    let w = Watchdog::arm("rdma_cm_vf_both_roles", DEADLINE);
    let mut o = opts(Test::WriteBw, 200);
    o.rdma_cm = true;
    o.qps = 2;
    o.port = 18515;

    w.phase("client on the VF");
    let (vf_ip, node_ip) = (ip(111), ip(112));
    let p = serve(vf_ip);
    let so = o;
    let srv = std::thread::spawn(move || perf::server(node_ip, &so));
    let mut a = vec!["perf".into(), o.test.binary().into(), "--vf".into()];
    a.push(p.socket(0).display().to_string());
    a.push(node_ip.to_string());
    a.extend(args(&o, o.port));
    let c = json_of(vhca(&a));
    let s = srv.join().expect("server thread").expect("node server");
    assert_eq!(
        (c["iterations"].as_u64(), c["bytes"].as_u64()),
        (Some(400), Some(64)),
        "{c}"
    );
    assert_eq!(c["bytes_transferred"], 64 * 400, "{c}");
    assert!(s.table().contains("rdma_cm QPs\t : ON"), "{}", s.table());

    w.phase("server on the VF");
    let (vf_ip, node_ip) = (ip(121), ip(122));
    let p = serve(vf_ip);
    let mut a = vec!["perf".into(), o.test.binary().into(), "--vf".into()];
    a.push(p.socket(0).display().to_string());
    a.extend(args(&o, o.port));
    let mut child = vhca(&a);
    let log = wait_line(&mut child, "listening on rdma_cm port 18515");
    let c = perf::client(node_ip, vf_ip, &o).expect("node client");
    let s = json_of(child);
    drop(log);
    assert!(c.table().contains("rdma_cm QPs\t : ON"), "{}", c.table());
    assert_eq!(s["iterations"], 400, "{s}");
    assert_eq!(s["source"], "peer", "{s}");
}
