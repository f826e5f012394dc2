//! max_rd_atomic, fences, solicited events, CQ overflow, SRQs and their limit event.

mod common;
use common::*;
use std::cell::Cell;
use std::rc::Rc;
use vhca_device::packet::Opcode as O;
use vhca_device::{AsyncEvent, QpState, SendFlags, SendOp, SendWr, WcStatus};

fn events(net: &mut Net, node: usize) -> Vec<AsyncEvent> {
    std::iter::from_fn(|| net.vf(node).poll_async_event()).collect()
}

#[test]
fn never_more_than_max_rd_atomic_reads_and_atomics_outstanding() {
    for max in [1u8, 2, 4] {
        let mut net = Net::new(2);
        let opts = RcOpts {
            max_rd_atomic: max,
            max_dest_rd_atomic: max,
            ..RcOpts::default()
        };
        let (a, b) = net.rc_pair(0, 1, &opts);
        let remote = net.rbuf(1, 16 * 3000);
        let local = net.rbuf(0, 16 * 3000);
        net.fill(&remote, &pattern(16 * 3000, 1));
        let outstanding = Rc::new(Cell::new(0i32));
        let peak = Rc::new(Cell::new(0i32));
        let (o, pk) = (outstanding.clone(), peak.clone());
        net.set_hook(move |s| {
            match s.op() {
                O::RC_READ_REQUEST | O::RC_FETCH_ADD | O::RC_CMP_SWAP => o.set(o.get() + 1),
                O::RC_READ_RESP_LAST | O::RC_READ_RESP_ONLY | O::RC_ATOMIC_ACK => {
                    o.set(o.get() - 1)
                }
                _ => {}
            }
            pk.set(pk.get().max(o.get()));
            vec![s.pkt.clone()]
        });
        for i in 0..16u32 {
            let op = if i % 3 == 2 {
                SendOp::FetchAdd {
                    remote_addr: remote.at(8 * i as u64),
                    rkey: remote.key,
                    add: 1,
                }
            } else {
                SendOp::Read {
                    remote_addr: remote.at(3000 * i as u64),
                    rkey: remote.key,
                }
            };
            let len = if i % 3 == 2 { 8 } else { 3000 };
            net.post_send(
                &a,
                SendWr::new(i as u64, op).sge(local.sge_at(3000 * i, len)),
            );
            // Interleaved SENDs are not limited.
            net.post_recv(&b, i as u64, vec![]);
            net.post_send(
                &a,
                SendWr::new(100 + i as u64, SendOp::Send).flags(SendFlags::empty()),
            );
        }
        net.run();
        let wcs = net.send_wcs(&a);
        assert_eq!(wcs.len(), 16);
        assert!(wcs.iter().all(|w| w.is_ok()));
        assert_eq!(peak.get(), max as i32, "max_rd_atomic {max}");
        assert_eq!(outstanding.get(), 0);
    }
}

#[test]
fn fence_waits_for_earlier_reads() {
    for fence in [false, true] {
        let mut net = Net::new(2);
        let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
        let remote = net.rbuf(1, 8192);
        let local = net.rbuf(0, 8192);
        net.post_recv(&b, 1, vec![]);
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
        let flags = if fence {
            SendFlags::SIGNALED | SendFlags::FENCE
        } else {
            SendFlags::SIGNALED
        };
        net.post_send(&a, SendWr::new(2, SendOp::Send).flags(flags));
        net.run();
        assert_eq!(net.send_wcs(&a).len(), 2);
        let pos = |op: O| net.log.iter().position(|s| s.op() == op).unwrap();
        let send = pos(O::RC_SEND_ONLY);
        let last_resp = pos(O::RC_READ_RESP_LAST);
        if fence {
            assert!(
                send > last_resp,
                "the fenced SEND leaves after the READ's last response"
            );
        } else {
            assert_eq!(
                send, 1,
                "without a fence the SEND follows the READ request at once"
            );
        }
    }
}

#[test]
fn fence_does_not_wait_for_earlier_sends_or_writes() {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    let remote = net.rbuf(1, 64);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .inline(&[1; 8]),
    );
    net.post_recv(&b, 1, vec![]);
    net.post_send(
        &a,
        SendWr::new(2, SendOp::Send).flags(SendFlags::SIGNALED | SendFlags::FENCE),
    );
    net.step();
    assert_eq!(net.log.len(), 2, "both requests go out in the same round");
    net.run();
    assert_eq!(net.send_wcs(&a).len(), 2);
}

#[test]
fn cq_armed_for_solicited_only_notifies_on_se_or_error() {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    let dst = net.rbuf(1, 64);
    for i in 0..4 {
        net.post_recv(&b, i, vec![dst.sge()]);
    }
    net.vf(1).req_notify_cq(b.rcq, true).unwrap();
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"plain"));
    net.run();
    assert_eq!(
        net.vf(1).poll_cq_event(),
        None,
        "an unsolicited receive does not notify"
    );
    net.post_send(
        &a,
        SendWr::new(2, SendOp::Send)
            .flags(SendFlags::SIGNALED | SendFlags::SOLICITED)
            .inline(b"se"),
    );
    net.run();
    assert_eq!(net.vf(1).poll_cq_event(), Some(b.rcq));
    assert_eq!(net.vf(1).poll_cq_event(), None);
    let se: Vec<_> = net
        .sent_with(O::RC_SEND_ONLY)
        .iter()
        .map(|s| s.pkt.bth.se)
        .collect();
    assert_eq!(se, vec![false, true]);
    let r = net.recv_wcs(&b);
    assert_eq!(
        r.iter().map(|w| w.solicited).collect::<Vec<_>>(),
        vec![false, true]
    );
    // Disarmed after one event.
    net.post_send(
        &a,
        SendWr::new(3, SendOp::Send)
            .flags(SendFlags::SIGNALED | SendFlags::SOLICITED)
            .inline(b"se"),
    );
    net.run();
    assert_eq!(net.vf(1).poll_cq_event(), None);
    // Armed again: an error completion notifies even without SE.
    net.vf(1).req_notify_cq(b.rcq, true).unwrap();
    let big = vec![0u8; 100];
    net.post_send(&a, SendWr::new(4, SendOp::Send).inline(&big));
    net.run();
    assert_eq!(net.vf(1).poll_cq_event(), Some(b.rcq));
    // Arm for any completion: the sender's CQ notifies on an ordinary completion.
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    net.vf(0).req_notify_cq(a.scq, false).unwrap();
    net.post_recv(&b, 1, vec![]);
    net.post_send(&a, SendWr::new(1, SendOp::Send));
    net.run();
    assert_eq!(net.vf(0).poll_cq_event(), Some(a.scq));
}

#[test]
fn cq_overflow_raises_a_cq_error() {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(
        0,
        1,
        &RcOpts {
            cq_size: 4,
            ..RcOpts::default()
        },
    );
    let remote = net.rbuf(1, 64);
    for i in 0..6 {
        net.post_send(
            &a,
            SendWr::new(
                i,
                SendOp::Write {
                    remote_addr: remote.addr,
                    rkey: remote.key,
                },
            )
            .inline(&[i as u8]),
        );
    }
    net.run();
    assert_eq!(events(&mut net, 0), vec![AsyncEvent::CqErr(a.scq)]);
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    // An overrun CQ stays in error: later completions are lost, not stored.
    net.post_send(
        &a,
        SendWr::new(
            9,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .inline(&[9]),
    );
    net.run();
    assert!(net.send_wcs(&a).is_empty());
    let _ = b;
}

#[test]
fn srq_shared_by_two_qps_with_the_limit_event() {
    let mut net = Net::new(2);
    let pd = net.nodes[1].pd;
    let srq = net.vf(1).create_srq(pd, 16, 2).unwrap();
    let opts = RcOpts {
        srq_b: Some(srq),
        ..RcOpts::default()
    };
    let (a1, b1) = net.rc_pair(0, 1, &opts);
    let (a2, b2) = net.rc_pair(0, 1, &opts);
    // Posting to the QP's own RQ is refused when it uses an SRQ.
    assert!(net
        .vf(1)
        .post_recv(
            b1.qpn,
            vhca_device::RecvWr {
                wr_id: 0,
                sgl: vec![]
            }
        )
        .is_err());
    let dst = net.rbuf(1, 16 * 64);
    for i in 0..6u32 {
        net.vf(1)
            .post_srq_recv(
                srq,
                vhca_device::RecvWr {
                    wr_id: i as u64,
                    sgl: vec![dst.sge_at(64 * i, 64)],
                },
            )
            .unwrap();
    }
    net.vf(1).modify_srq(srq, 3).unwrap();
    assert!(
        net.vf(1).modify_srq(srq, 17).is_err(),
        "limit above the SRQ size"
    );
    // Two messages through each QP, alternating.
    for i in 0..2u8 {
        net.post_send(
            &a1,
            SendWr::new(i as u64, SendOp::Send).inline(&[0xa0 + i; 10]),
        );
        net.post_send(
            &a2,
            SendWr::new(i as u64, SendOp::Send).inline(&[0xb0 + i; 20]),
        );
        net.run();
    }
    let r1 = net.recv_wcs(&b1);
    let r2 = net.recv_wcs(&b2);
    assert_eq!(
        r1.iter()
            .map(|w| (w.wr_id, w.byte_len, w.qpn))
            .collect::<Vec<_>>(),
        vec![(0, 10, b1.qpn), (2, 10, b1.qpn)]
    );
    assert_eq!(
        r2.iter()
            .map(|w| (w.wr_id, w.byte_len, w.qpn))
            .collect::<Vec<_>>(),
        vec![(1, 20, b2.qpn), (3, 20, b2.qpn)]
    );
    assert_eq!(net.read(1, dst.addr, 10), vec![0xa0; 10]);
    assert_eq!(net.read(1, dst.at(64), 20), vec![0xb0; 20]);
    // 6 posted, 4 taken: 2 left < 3 fired the event exactly once.
    assert_eq!(events(&mut net, 1), vec![AsyncEvent::SrqLimitReached(srq)]);
    // Two WQEs left: x and y take them, z finds the SRQ empty and is RNR-NAKed until more
    // receives arrive.
    assert_eq!(net.send_wcs(&a1).len(), 2);
    assert_eq!(net.send_wcs(&a2).len(), 2);
    net.post_send(&a1, SendWr::new(9, SendOp::Send).inline(b"x"));
    net.post_send(&a2, SendWr::new(9, SendOp::Send).inline(b"y"));
    net.post_send(&a1, SendWr::new(10, SendOp::Send).inline(b"z"));
    net.run_for(1_000_000);
    assert!(net.vf(1).counters().rnr_naks_sent > 0);
    assert_eq!(
        net.send_wcs(&a1)
            .iter()
            .map(|w| w.wr_id)
            .collect::<Vec<_>>(),
        vec![9]
    );
    assert_eq!(
        net.send_wcs(&a2)
            .iter()
            .map(|w| w.wr_id)
            .collect::<Vec<_>>(),
        vec![9]
    );
    for i in 20..24u32 {
        net.vf(1)
            .post_srq_recv(
                srq,
                vhca_device::RecvWr {
                    wr_id: i as u64,
                    sgl: vec![dst.sge_at(64 * (i - 10), 64)],
                },
            )
            .unwrap();
    }
    net.run();
    assert_eq!(
        net.send_wcs(&a1)
            .iter()
            .map(|w| w.wr_id)
            .collect::<Vec<_>>(),
        vec![10]
    );
    let r1: Vec<_> = net.recv_wcs(&b1).iter().map(|w| w.wr_id).collect();
    let r2: Vec<_> = net.recv_wcs(&b2).iter().map(|w| w.wr_id).collect();
    assert_eq!((r1, r2), (vec![4, 20], vec![5]));
    // A QP of an SRQ in ERR raises LAST_WQE_REACHED; the SRQ keeps its WQEs.
    let err = vhca_device::QpAttr {
        qp_state: QpState::Err,
        ..Default::default()
    };
    net.modify(&b1, &err, vhca_device::QpAttrMask::STATE)
        .unwrap();
    assert_eq!(
        events(&mut net, 1),
        vec![AsyncEvent::QpLastWqeReached(b1.qpn)]
    );
    net.post_send(&a2, SendWr::new(11, SendOp::Send).inline(b"w"));
    net.run();
    assert_eq!(one(net.recv_wcs(&b2)).wr_id, 21);
    assert!(net.vf(1).destroy_srq(srq).is_err(), "in use");
}

#[test]
fn responder_errors_raise_affiliated_async_events_requester_errors_do_not() {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Write {
                remote_addr: 0x10,
                rkey: vhca_device::MemKey(0x12_3456),
            },
        )
        .inline(&[1]),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemAccessErr);
    assert_eq!(events(&mut net, 1), vec![AsyncEvent::QpAccessErr(b.qpn)]);
    assert_eq!(
        events(&mut net, 0),
        vec![],
        "the requester learns from its completion"
    );
}
