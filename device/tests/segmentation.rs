//! Segmentation at every path MTU, AckReq placement, READ PSN accounting and PSN wrap.

mod common;
use common::*;
use vhca_device::packet::Opcode as O;
use vhca_device::{Mtu, SendOp, SendWr, WcStatus};

fn pair(mtu: Mtu, psn_a: u32) -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(
        0,
        1,
        &RcOpts {
            mtu,
            psn_a,
            ..RcOpts::default()
        },
    );
    (net, a, b)
}

/// Requests `a` (node 0) put on the wire, in order.
fn requests(net: &Net) -> Vec<&Sent> {
    net.log.iter().filter(|s| s.from == 0).collect()
}

#[test]
fn send_segments_at_every_mtu() {
    for mtu in Mtu::ALL {
        let m = mtu.bytes();
        let len = 5 * m + 17;
        let (mut net, a, b) = pair(mtu, 100);
        let src = net.rbuf(0, len);
        let dst = net.rbuf(1, len);
        net.fill(&src, &pattern(len as usize, 1));
        net.post_recv(&b, 1, vec![dst.sge()]);
        net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
        net.run();
        assert!(one(net.send_wcs(&a)).is_ok());
        assert_eq!(one(net.recv_wcs(&b)).byte_len, len);
        assert_eq!(net.contents(&dst), pattern(len as usize, 1), "mtu {m}");
        let reqs = requests(&net);
        let ops: Vec<_> = reqs.iter().map(|s| s.op()).collect();
        assert_eq!(
            ops,
            vec![
                O::RC_SEND_FIRST,
                O::RC_SEND_MIDDLE,
                O::RC_SEND_MIDDLE,
                O::RC_SEND_MIDDLE,
                O::RC_SEND_MIDDLE,
                O::RC_SEND_LAST
            ],
            "mtu {m}"
        );
        for (i, s) in reqs.iter().enumerate() {
            assert_eq!(s.psn(), 100 + i as u32);
            let want = if i == 5 { 17 } else { m as usize };
            assert_eq!(s.pkt.payload.len(), want, "mtu {m} packet {i}");
            assert_eq!(s.pkt.bth.ack_req, i == 5, "AckReq only on the last packet");
            assert_eq!(s.pkt.bth.pad as usize, (4 - want % 4) % 4);
            assert_eq!(s.pkt.bth.dest_qp, b.qpn);
            assert_eq!(s.pkt.bth.pkey, 0xffff);
            assert!(s.pkt.is_well_formed());
        }
        // One ACK, for the last PSN, MSN 1.
        let acks: Vec<_> = net.log.iter().filter(|s| s.from == 1).collect();
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].op(), O::RC_ACK);
        assert_eq!(acks[0].psn(), 105);
        assert_eq!(acks[0].pkt.ext.aeth.unwrap().msn.0, 1);
    }
}

#[test]
fn exact_multiple_of_the_mtu_and_only_packets() {
    for mtu in Mtu::ALL {
        let m = mtu.bytes();
        let (mut net, a, b) = pair(mtu, 0);
        let src = net.rbuf(0, 2 * m);
        let dst = net.rbuf(1, 2 * m);
        net.fill(&src, &pattern(2 * m as usize, 2));
        net.post_recv(&b, 1, vec![dst.sge()]);
        net.post_recv(&b, 2, vec![dst.sge()]);
        net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
        net.post_send(&a, SendWr::new(2, SendOp::Send).sge(src.sge_at(0, m)));
        net.run();
        let ops: Vec<_> = requests(&net)
            .iter()
            .map(|s| (s.op(), s.pkt.payload.len()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (O::RC_SEND_FIRST, m as usize),
                (O::RC_SEND_LAST, m as usize),
                (O::RC_SEND_ONLY, m as usize)
            ]
        );
        assert_eq!(net.recv_wcs(&b).len(), 2);
    }
}

#[test]
fn write_segments_with_reth_only_on_first() {
    for mtu in Mtu::ALL {
        let m = mtu.bytes();
        let len = 3 * m + 1;
        let (mut net, a, _b) = pair(mtu, 7);
        let src = net.rbuf(0, len);
        let dst = net.rbuf(1, len);
        net.fill(&src, &pattern(len as usize, 3));
        net.post_send(
            &a,
            SendWr::new(
                1,
                SendOp::WriteWithImm {
                    remote_addr: dst.addr,
                    rkey: dst.key,
                    imm: 1,
                },
            )
            .sge(src.sge()),
        );
        net.post_recv(&_b, 1, vec![]);
        net.run();
        assert!(one(net.send_wcs(&a)).is_ok());
        assert_eq!(net.contents(&dst), pattern(len as usize, 3));
        let reqs = requests(&net);
        let ops: Vec<_> = reqs.iter().map(|s| s.op()).collect();
        assert_eq!(
            ops,
            vec![
                O::RC_WRITE_FIRST,
                O::RC_WRITE_MIDDLE,
                O::RC_WRITE_MIDDLE,
                O::RC_WRITE_LAST_IMM
            ]
        );
        let reth = reqs[0].pkt.ext.reth.unwrap();
        assert_eq!((reth.va, reth.rkey, reth.len), (dst.addr, dst.key, len));
        assert!(reqs[1..].iter().all(|s| s.pkt.ext.reth.is_none()));
        assert_eq!(reqs[3].pkt.ext.imm, Some(1));
        assert_eq!(reqs[3].pkt.payload.len(), 1);
        assert_eq!(reqs.iter().filter(|s| s.pkt.bth.ack_req).count(), 1);
    }
}

#[test]
fn read_responses_consume_one_psn_per_packet() {
    for mtu in Mtu::ALL {
        let m = mtu.bytes();
        let len = 3 * m + 1;
        let (mut net, a, b) = pair(mtu, 1000);
        let remote = net.rbuf(1, len);
        let local = net.rbuf(0, len);
        let dst = net.rbuf(1, 16);
        net.fill(&remote, &pattern(len as usize, 4));
        net.post_send(
            &a,
            SendWr::new(
                1,
                SendOp::Read {
                    remote_addr: remote.addr,
                    rkey: remote.key,
                },
            )
            .sge(local.sge()),
        );
        net.post_recv(&b, 1, vec![dst.sge()]);
        net.post_send(&a, SendWr::new(2, SendOp::Send).inline(&[1, 2, 3]));
        net.run();
        let wcs = net.send_wcs(&a);
        assert_eq!(wcs.len(), 2);
        assert!(wcs.iter().all(|w| w.status == WcStatus::Success));
        assert_eq!(net.contents(&local), pattern(len as usize, 4));
        let reqs = requests(&net);
        assert_eq!(reqs[0].op(), O::RC_READ_REQUEST);
        assert_eq!(reqs[0].psn(), 1000);
        assert!(reqs[0].pkt.bth.ack_req);
        assert_eq!(reqs[0].pkt.ext.reth.unwrap().len, len);
        assert_eq!(reqs[1].op(), O::RC_SEND_ONLY);
        assert_eq!(
            reqs[1].psn(),
            1004,
            "a READ of 4 response packets consumes 4 PSNs (mtu {m})"
        );
        let resp: Vec<_> = net
            .log
            .iter()
            .filter(|s| s.from == 1 && s.op().is_read_response())
            .collect();
        let ops: Vec<_> = resp
            .iter()
            .map(|s| {
                (
                    s.op(),
                    s.psn(),
                    s.pkt.payload.len(),
                    s.pkt.ext.aeth.is_some(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                (O::RC_READ_RESP_FIRST, 1000, m as usize, true),
                (O::RC_READ_RESP_MIDDLE, 1001, m as usize, false),
                (O::RC_READ_RESP_MIDDLE, 1002, m as usize, false),
                (O::RC_READ_RESP_LAST, 1003, 1, true),
            ]
        );
        // The MSN of the READ's responses counts it as a completed message.
        assert_eq!(resp[0].pkt.ext.aeth.unwrap().msn.0, 1);
    }
}

#[test]
fn ack_req_at_least_every_64_packets() {
    let (mut net, a, b) = pair(Mtu::Mtu256, 0);
    let len = 150 * 256 + 5;
    let src = net.rbuf(0, len);
    let dst = net.rbuf(1, len);
    net.fill(&src, &pattern(len as usize, 5));
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.run();
    assert!(one(net.send_wcs(&a)).is_ok());
    assert_eq!(net.contents(&dst), pattern(len as usize, 5));
    let reqs = requests(&net);
    assert_eq!(reqs.len(), 151);
    let mut since = 0;
    for s in &reqs {
        since += 1;
        assert!(since <= 64, "more than 64 packets without AckReq");
        if s.pkt.bth.ack_req {
            since = 0;
        }
    }
    assert!(reqs.last().unwrap().pkt.bth.ack_req);
    assert!(reqs.iter().filter(|s| s.pkt.bth.ack_req).count() >= 3);
    // The requester never runs more than 128 PSNs ahead of the acknowledged ones.
    assert_eq!(net.counters_retransmits(0), 0);
}

#[test]
fn psn_wraps_at_24_bits() {
    let (mut net, a, b) = pair(Mtu::Mtu256, 0xff_fffd);
    let len = 4 * 256 + 3;
    let src = net.rbuf(0, len);
    let dst = net.rbuf(1, len);
    let remote = net.rbuf(1, 600);
    let local = net.rbuf(0, 600);
    net.fill(&src, &pattern(len as usize, 6));
    net.fill(&remote, &pattern(600, 7));
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::Read {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .sge(local.sge()),
    );
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::FetchAdd {
                remote_addr: remote.addr,
                rkey: remote.key,
                add: 1,
            },
        )
        .sge(local.sge_at(0, 8)),
    );
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
        vec![
            (1, WcStatus::Success),
            (2, WcStatus::Success),
            (3, WcStatus::Success)
        ]
    );
    assert_eq!(net.contents(&dst), pattern(len as usize, 6));
    let psns: Vec<_> = requests(&net).iter().map(|s| s.psn()).collect();
    assert_eq!(psns, vec![0xff_fffd, 0xff_fffe, 0xff_ffff, 0, 1, 2, 5]);
    let (attr, _) = net.vf(0).query_qp(a.qpn).unwrap();
    assert_eq!(attr.sq_psn.0, 6);
    let (attr, _) = net.vf(1).query_qp(b.qpn).unwrap();
    assert_eq!(attr.rq_psn.0, 6);
}

trait Retransmits {
    fn counters_retransmits(&mut self, node: usize) -> u64;
}
impl Retransmits for Net {
    fn counters_retransmits(&mut self, node: usize) -> u64 {
        self.vf(node).counters().retransmits
    }
}
