//! Receiver-not-ready: RNR NAKs, the RNR delay in virtual time, infinite and exhausted retries.

mod common;
use common::*;
use vhca_device::packet::{Opcode as O, Syndrome};
use vhca_device::{Nanos, QpState, SendOp, SendWr, WcOpcode, WcStatus};

/// IBTA table 45: code 5 = 0.06 ms, code 14 = 1.28 ms.
const RNR5: u64 = 60_000;
const RNR14: u64 = 1_280_000;

fn rnr_naks(net: &Net) -> Vec<&Sent> {
    net.sent_with(O::RC_ACK)
        .into_iter()
        .filter(|s| matches!(s.pkt.ext.aeth.unwrap().syndrome, Syndrome::RnrNak { .. }))
        .collect()
}

#[test]
fn rnr_nak_then_wait_then_success() {
    let mut net = Net::new(2);
    let opts = RcOpts {
        min_rnr_timer: 5,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    let dst = net.rbuf(1, 64);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"hello"));
    // Deliver the SEND and the RNR NAK, nothing more.
    net.step();
    net.step();
    let naks = rnr_naks(&net);
    assert_eq!(naks.len(), 1);
    assert_eq!(naks[0].psn(), 0x1000);
    assert_eq!(naks[0].pkt.ext.aeth.unwrap().syndrome.to_byte(), 0x20 | 5);
    assert_eq!(net.vf(1).counters().rnr_naks_sent, 1);
    assert!(net.send_wcs(&a).is_empty());
    // The requester waits exactly the RNR delay.
    assert_eq!(net.next_timeout(), Some(Nanos(RNR5)));
    net.post_recv(&b, 9, vec![dst.sge()]);
    net.run();
    let sends: Vec<_> = net
        .sent_with(O::RC_SEND_ONLY)
        .iter()
        .map(|s| s.at.0)
        .collect();
    assert_eq!(sends, vec![0, RNR5]);
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len), (9, 5));
    assert_eq!(net.read(1, dst.addr, 5), b"hello");
}

#[test]
fn rnr_on_a_multi_packet_send_does_not_spend_transport_retries() {
    // retry_cnt 0: any sequence-error retry would fail the QP; an RNR wait must not.
    let mut net = Net::new(2);
    let opts = RcOpts {
        min_rnr_timer: 5,
        retry_cnt: 0,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    let src = net.rbuf(0, 4000);
    let dst = net.rbuf(1, 4000);
    net.fill(&src, &pattern(4000, 1));
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.step();
    net.step();
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.run();
    let w = one(net.send_wcs(&a));
    assert_eq!(w.status, WcStatus::Success, "{w:?}");
    assert_eq!(net.contents(&dst), pattern(4000, 1));
    assert_eq!(rnr_naks(&net).len(), 1);
    // The rest of the RNR'd message is dropped silently, not NAKed as a sequence error.
    assert_eq!(net.vf(1).counters().seq_naks_sent, 0);
}

#[test]
fn rnr_retry_7_retries_forever() {
    let mut net = Net::new(2);
    let opts = RcOpts {
        min_rnr_timer: 14,
        rnr_retry: 7,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"x"));
    net.run_for(100 * RNR14);
    let n = rnr_naks(&net).len();
    assert!(n >= 50, "{n} RNR NAKs in 100 RNR periods");
    assert!(net.send_wcs(&a).is_empty());
    assert_eq!(net.state(&a), QpState::Rts);
    // Consecutive attempts are one RNR delay apart.
    let t: Vec<u64> = net
        .sent_with(O::RC_SEND_ONLY)
        .iter()
        .map(|s| s.at.0)
        .collect();
    assert!(t.windows(2).all(|w| w[1] - w[0] == RNR14), "{t:?}");
    let dst = net.rbuf(1, 8);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.read(1, dst.addr, 1), b"x");
}

#[test]
fn rnr_retry_exhaustion() {
    for rnr_retry in [0u8, 1, 3] {
        let mut net = Net::new(2);
        let opts = RcOpts {
            min_rnr_timer: 5,
            rnr_retry,
            ..RcOpts::default()
        };
        let (a, _b) = net.rc_pair(0, 1, &opts);
        net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"x"));
        net.post_send(&a, SendWr::new(2, SendOp::Send).inline(b"y"));
        net.run();
        let wcs = net.send_wcs(&a);
        assert_eq!(
            wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
            vec![(1, WcStatus::RnrRetryExcErr), (2, WcStatus::WrFlushErr)],
            "rnr_retry {rnr_retry}"
        );
        let t: Vec<u64> = net
            .sent_with(O::RC_SEND_ONLY)
            .iter()
            .filter(|s| s.psn() == 0x1000)
            .map(|s| s.at.0)
            .collect();
        assert_eq!(
            t,
            (0..=rnr_retry as u64).map(|k| k * RNR5).collect::<Vec<_>>()
        );
        assert_eq!(net.state(&a), QpState::Err);
    }
}

#[test]
fn write_with_imm_waits_for_a_receive() {
    let mut net = Net::new(2);
    let opts = RcOpts {
        min_rnr_timer: 5,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    let src = net.rbuf(0, 3000);
    let dst = net.rbuf(1, 3000);
    net.fill(&src, &pattern(3000, 2));
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::WriteWithImm {
                remote_addr: dst.addr,
                rkey: dst.key,
                imm: 3,
            },
        )
        .sge(src.sge()),
    );
    net.step();
    net.step();
    assert_eq!(rnr_naks(&net).len(), 1);
    net.post_recv(&b, 5, vec![]);
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.opcode, r.byte_len, r.imm),
        (5, WcOpcode::RecvRdmaWithImm, 3000, Some(3))
    );
    assert_eq!(net.contents(&dst), pattern(3000, 2));
}

#[test]
fn rnr_wait_keeps_later_wqes_in_order() {
    let mut net = Net::new(2);
    let opts = RcOpts {
        min_rnr_timer: 5,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    let remote = net.rbuf(1, 64);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"first"));
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .inline(b"second"),
    );
    net.step();
    net.step();
    net.post_recv(&b, 1, vec![remote.sge_at(32, 32)]);
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
        vec![(1, WcStatus::Success), (2, WcStatus::Success)]
    );
    assert_eq!(net.read(1, remote.addr, 6), b"second");
    assert_eq!(net.read(1, remote.addr + 32, 5), b"first");
}
