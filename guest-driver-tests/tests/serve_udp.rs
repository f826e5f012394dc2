//! Two `vhca serve` processes whose VFs speak RoCEv2 over real kernel UDP sockets
//! (`--udp-ip`): a guest on each side connects an RC pair across the processes and runs
//! traffic and every RC opcode through the kernel. Loopback addresses stand in for two hosts
//! (every 127.0.0.0/8 address is local, so no namespace is needed); tools/netns-test.sh runs
//! the pingpong/perf tools across namespaces over veth.

use serde_json::Value;
use std::time::Duration;
use vhca_device::{Gid, Mtu, Psn};
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong};
use vhca_guest::serve::ServeProcess;
use vhca_guest::{DriverConfig, GuestContext};

const READY: Duration = Duration::from_secs(60);

fn cfg() -> DriverConfig {
    DriverConfig::small()
}

/// UDP packets the process's VF 0 socket sent and received.
fn udp_counts(s: &ServeProcess) -> (u64, u64) {
    let c: Value = vhca_vhost::ctl::request(&s.socket_dir().join("ctl.sock"), "counters")
        .expect("vhca ctl counters");
    let link = &c["switch"]["udp"][0]["link"];
    (
        link["tx_packets"].as_u64().expect("tx_packets"),
        link["rx_packets"].as_u64().expect("rx_packets"),
    )
}

#[test]
fn vfs_of_two_serve_processes_talk_rc_over_kernel_udp() {
    let p1 = ServeProcess::start_with_args(1, &["--udp-ip", "127.0.0.11"], READY).expect("P1");
    let p2 = ServeProcess::start_with_args(1, &["--udp-ip", "127.0.0.21"], READY).expect("P2");
    let mut a = GuestContext::connect(p1.socket(0), &cfg()).expect("guest on P1");
    let mut b = GuestContext::connect(p2.socket(0), &cfg()).expect("guest on P2");
    // The VF's GID is its UDP address, as rxe derives it.
    assert_eq!(a.driver().config().gid, Gid::from_ipv4([127, 0, 0, 11]));
    assert_eq!(b.driver().config().gid, Gid::from_ipv4([127, 0, 0, 21]));

    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 16,
        16,
        (Psn(0xfffff0), Psn(0x42)),
        Mtu::Mtu1024,
    )
    .unwrap();
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 20).unwrap(),
        2 * 4096 * 20
    );
    for size in [0, 1, 1500, 1 << 15] {
        rc_every_opcode(&mut a, &ea, &mut b, &eb, size)
            .unwrap_or_else(|e| panic!("every opcode at {size} B: {e}"));
    }

    // Every packet went through the kernel: each side sent and received at least the 20
    // 4 KiB messages (4 packets each at MTU 1024) one way.
    let (tx1, rx1) = udp_counts(&p1);
    let (tx2, rx2) = udp_counts(&p2);
    assert!(tx1 >= 80 && rx2 >= 80, "P1→P2: sent {tx1}, received {rx2}");
    assert!(tx2 >= 80 && rx1 >= 80, "P2→P1: sent {tx2}, received {rx1}");
}
