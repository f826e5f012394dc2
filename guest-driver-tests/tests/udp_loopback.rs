//! The shared verbs programs between two vhca nodes over real kernel UDP sockets (RoCEv2 on
//! port 4791 of 127.0.0.1 and 127.0.0.2).

use std::net::Ipv4Addr;
use vhca_device::{Mtu, Psn};
use vhca_fabric::node::{BackgroundNode, Node};
use vhca_guest::programs::{rc_every_opcode, rc_pair, rc_pingpong};

fn nodes(a: u8, b: u8) -> (Node, Node) {
    let na = Node::new(Ipv4Addr::new(127, 0, 0, a), 8 << 20).expect("bind 127.0.0.x:4791");
    let nb = Node::new(Ipv4Addr::new(127, 0, 0, b), 8 << 20).expect("bind 127.0.0.y:4791");
    (na, nb)
}

#[test]
fn rc_pingpong_and_every_opcode_over_kernel_udp() {
    let (mut a, b) = nodes(11, 12);
    // b runs in a thread of its own, as a peer process would; a is driven by the program.
    let mut b = BackgroundNode::spawn(b);
    let (ea, eb) = rc_pair(
        &mut a,
        &mut b,
        1 << 20,
        64,
        (Psn(0x11_1111), Psn(0x22_2222)),
        Mtu::Mtu1024,
    )
    .unwrap();
    assert_eq!(
        rc_pingpong(&mut a, &ea, &mut b, &eb, 4096, 20).unwrap(),
        2 * 4096 * 20
    );
    for size in [0, 1, 1024, 100_000] {
        if let Err(e) = rc_every_opcode(&mut a, &ea, &mut b, &eb, size) {
            let mut wcs = Vec::new();
            let _ = a.vf.poll_cq(ea.cq, 16, &mut wcs);
            panic!("size {size}: {e}: {wcs:?} a={:?}", a.link.counters);
        }
    }
    // Everything went through the sockets, with the ICRC rxe would check.
    let bc = b.with(|n| n.link.counters.clone());
    assert!(a.link.counters.tx_packets > 100 && bc.rx_packets > 100);
    assert_eq!(a.link.counters.rx_malformed + bc.rx_malformed, 0);
    assert_eq!(a.link.counters.tx_errors + bc.tx_errors, 0);
}
