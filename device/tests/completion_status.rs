//! Every completion status the device produces, with the QP state and events that go with it.

mod common;
use common::*;
use vhca_device::packet::{Opcode as O, Payload};
use vhca_device::{
    Access, AsyncEvent, MemKey, QpAttr, QpAttrMask as M, QpState, SendOp, SendWr, Sge, WcOpcode,
    WcStatus,
};

fn pair_with(opts: RcOpts) -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &opts);
    (net, a, b)
}

fn pair() -> (Net, Ep, Ep) {
    pair_with(RcOpts::default())
}

fn events(net: &mut Net, node: usize) -> Vec<AsyncEvent> {
    std::iter::from_fn(|| net.vf(node).poll_async_event()).collect()
}

fn statuses(wcs: &[vhca_device::WorkCompletion]) -> Vec<(u64, WcStatus)> {
    wcs.iter().map(|w| (w.wr_id, w.status)).collect()
}

#[test]
fn success() {
    let (mut net, a, b) = pair();
    net.post_recv(&b, 1, vec![]);
    net.post_send(&a, SendWr::new(1, SendOp::Send));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).status, WcStatus::Success);
}

#[test]
fn receive_buffer_too_small_is_loc_len_err_and_rem_inv_req_err() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 2000);
    let dst = net.rbuf(1, 1500);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_recv(&b, 2, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.post_send(&a, SendWr::new(2, SendOp::Send).sge(src.sge_at(0, 10)));
    net.run();
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        vec![(1, WcStatus::RemInvReqErr), (2, WcStatus::WrFlushErr)]
    );
    let r = net.recv_wcs(&b);
    assert_eq!(
        statuses(&r),
        vec![(1, WcStatus::LocLenErr), (2, WcStatus::WrFlushErr)]
    );
    assert_eq!(net.state(&a), QpState::Err);
    assert_eq!(net.state(&b), QpState::Err);
    assert_eq!(events(&mut net, 1), vec![AsyncEvent::QpReqErr(b.qpn)]);
    assert_eq!(
        net.sent_with(O::RC_ACK)
            .last()
            .unwrap()
            .pkt
            .ext
            .aeth
            .unwrap()
            .syndrome
            .to_byte(),
        0x61
    );
}

#[test]
fn single_packet_send_too_large_for_receive() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 100);
    let dst = net.rbuf(1, 50);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemInvReqErr);
    assert_eq!(one(net.recv_wcs(&b)).status, WcStatus::LocLenErr);
    assert_eq!(
        net.contents(&dst),
        vec![0; 50],
        "nothing written past or into a too-small buffer"
    );
}

#[test]
fn ud_too_long_and_ud_receive_too_small() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 0x11, None);
    let b = net.ud_qp(1, 0x11, None);
    let dest = net.ud_dest(&a, &b, 0x11);
    let big = net.rbuf(0, 4097);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(big.sge()).ud(dest));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocLenErr);
    assert_eq!(net.state(&a), QpState::Sqe);
    assert!(net.log.is_empty());
    // Receive buffer too small for GRH + payload.
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 0x11, None);
    let b = net.ud_qp(1, 0x11, None);
    let dest = net.ud_dest(&a, &b, 0x11);
    let src = net.rbuf(0, 100);
    let dst = net.rbuf(1, 139);
    net.post_recv(&b, 7, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()).ud(dest));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.status), (7, WcStatus::LocLenErr));
}

#[test]
fn loc_qp_op_err_for_an_address_handle_of_another_pd() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 0x11, None);
    let b = net.ud_qp(1, 0x11, None);
    let other_pd = net.vf(0).alloc_pd().unwrap();
    let dgid = net.gid(1);
    let ah = net
        .vf(0)
        .create_ah(
            other_pd,
            vhca_device::AhAttr {
                dgid,
                ..Default::default()
            },
        )
        .unwrap();
    let dest = vhca_device::UdDest {
        ah,
        remote_qpn: b.qpn,
        remote_qkey: 0x11,
    };
    net.post_send(&a, SendWr::new(1, SendOp::Send).ud(dest));
    net.post_send(&a, SendWr::new(2, SendOp::Send).ud(dest));
    net.run();
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        vec![(1, WcStatus::LocQpOpErr), (2, WcStatus::WrFlushErr)]
    );
    assert_eq!(net.state(&a), QpState::Sqe);
}

#[test]
fn send_with_inv_of_a_bad_key_is_loc_qp_op_err_and_rem_op_err() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 16);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::SendWithInv {
                rkey: MemKey(0x77_7701),
            },
        )
        .inline(&[1, 2]),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemOpErr);
    assert_eq!(one(net.recv_wcs(&b)).status, WcStatus::LocQpOpErr);
    assert_eq!(net.state(&b), QpState::Err);
    assert_eq!(events(&mut net, 1), vec![AsyncEvent::QpFatal(b.qpn)]);
}

#[test]
fn bad_lkey_is_loc_prot_err_and_flushes_the_rest() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 64);
    net.post_recv(&b, 1, vec![]);
    net.post_send(
        &a,
        SendWr::new(1, SendOp::Send).sge(Sge {
            addr: src.addr,
            len: 8,
            lkey: MemKey(src.key.0 ^ 0x40),
        }),
    );
    net.post_send(&a, SendWr::new(2, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        vec![(1, WcStatus::LocProtErr), (2, WcStatus::WrFlushErr)]
    );
    assert_eq!(net.state(&a), QpState::Err);
    assert!(
        net.log.is_empty(),
        "a WQE with a bad lkey puts nothing on the wire"
    );
    // The peer is untouched.
    assert_eq!(net.state(&b), QpState::Rts);
}

#[test]
fn sge_outside_its_mr_is_loc_prot_err() {
    let (mut net, a, _b) = pair();
    let src = net.rbuf(0, 64);
    net.post_send(
        &a,
        SendWr::new(1, SendOp::Send)
            .sge(src.sge_at(0, 64))
            .sge(Sge {
                addr: src.addr + 60,
                len: 8,
                lkey: src.key,
            }),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocProtErr);
}

#[test]
fn local_read_into_a_read_only_mr_is_loc_prot_err() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 64);
    let local = net.buf(0, 64, Access::empty());
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
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocProtErr);
}

#[test]
fn moving_to_err_flushes_send_and_receive_wqes_and_posting_in_err_flushes() {
    let (mut net, a, b) = pair();
    for i in 0..3 {
        net.post_send(&a, SendWr::new(i, SendOp::Send));
        net.post_recv(&a, 10 + i, vec![]);
    }
    let err = QpAttr {
        qp_state: QpState::Err,
        ..QpAttr::default()
    };
    net.modify(&a, &err, M::STATE).unwrap();
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        (0..3)
            .map(|i| (i, WcStatus::WrFlushErr))
            .collect::<Vec<_>>()
    );
    let r = net.recv_wcs(&a);
    assert_eq!(
        statuses(&r),
        (10..13)
            .map(|i| (i, WcStatus::WrFlushErr))
            .collect::<Vec<_>>()
    );
    assert_eq!(r[0].opcode, WcOpcode::Recv);
    net.post_send(
        &a,
        SendWr::new(20, SendOp::Send).flags(vhca_device::SendFlags::empty()),
    );
    net.post_recv(&a, 21, vec![]);
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        vec![(20, WcStatus::WrFlushErr)],
        "flushes are always reported, signaled or not"
    );
    assert_eq!(
        statuses(&net.recv_wcs(&a)),
        vec![(21, WcStatus::WrFlushErr)]
    );
    net.run();
    assert!(net.log.is_empty());
    assert_eq!(net.state(&b), QpState::Rts);
}

#[test]
fn err_while_messages_are_in_flight_flushes_them() {
    let (mut net, a, b) = pair();
    net.set_hook(|_| vec![]); // nothing arrives
    for i in 0..3 {
        net.post_send(&a, SendWr::new(i, SendOp::Send));
    }
    net.step();
    assert_eq!(net.log.len(), 3);
    let err = QpAttr {
        qp_state: QpState::Err,
        ..QpAttr::default()
    };
    net.modify(&a, &err, M::STATE).unwrap();
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        (0..3)
            .map(|i| (i, WcStatus::WrFlushErr))
            .collect::<Vec<_>>()
    );
    let n = net.log.len();
    net.run();
    assert_eq!(net.log.len(), n, "no retransmissions from a QP in ERR");
    let _ = b;
}

#[test]
fn bad_rkey_and_missing_remote_access_are_rem_access_err() {
    type Case = (&'static str, Box<dyn Fn(&Buf, &Buf) -> SendOp>);
    let cases: Vec<Case> = vec![
        (
            "write bad rkey",
            Box::new(|r, _| SendOp::Write {
                remote_addr: r.addr,
                rkey: MemKey(r.key.0.wrapping_add(1)),
            }),
        ),
        (
            "write out of bounds",
            Box::new(|r, _| SendOp::Write {
                remote_addr: r.addr + 60,
                rkey: r.key,
            }),
        ),
        (
            "write to read-only",
            Box::new(|_, ro| SendOp::Write {
                remote_addr: ro.addr,
                rkey: ro.key,
            }),
        ),
        (
            "read bad rkey",
            Box::new(|r, _| SendOp::Read {
                remote_addr: r.addr,
                rkey: MemKey(0x5501),
            }),
        ),
        (
            "read without remote read",
            Box::new(|_, ro| SendOp::Read {
                remote_addr: ro.addr + 64,
                rkey: ro.key,
            }),
        ),
        (
            "atomic out of bounds",
            Box::new(|r, _| SendOp::FetchAdd {
                remote_addr: r.addr + 64,
                rkey: r.key,
                add: 1,
            }),
        ),
        (
            "atomic without atomic access",
            Box::new(|_, ro| SendOp::CmpSwap {
                remote_addr: ro.addr,
                rkey: ro.key,
                compare: 0,
                swap: 1,
            }),
        ),
    ];
    for (name, mk) in cases {
        let (mut net, a, b) = pair();
        let remote = net.rbuf(1, 64);
        // Write-only region: no REMOTE_READ, no REMOTE_ATOMIC. Read-only: at offset 64.
        let ro = net.buf(1, 128, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
        let ro = if name.contains("write to") {
            net.buf(1, 64, Access::REMOTE_READ)
        } else {
            ro
        };
        let local = net.rbuf(0, 64);
        let op = mk(&remote, &ro);
        let len = if op.is_atomic() { 8 } else { 16 };
        net.post_send(&a, SendWr::new(1, op).sge(local.sge_at(0, len)));
        net.post_send(&a, SendWr::new(2, SendOp::Send));
        net.run();
        assert_eq!(
            statuses(&net.send_wcs(&a)),
            vec![(1, WcStatus::RemAccessErr), (2, WcStatus::WrFlushErr)],
            "{name}"
        );
        assert_eq!(net.state(&a), QpState::Err, "{name}");
        assert_eq!(net.state(&b), QpState::Err, "{name}");
        assert_eq!(
            events(&mut net, 1),
            vec![AsyncEvent::QpAccessErr(b.qpn)],
            "{name}"
        );
        assert_eq!(net.contents(&remote), vec![0; 64], "{name}");
    }
}

#[test]
fn qp_without_remote_write_access_rejects_writes() {
    let (mut net, a, b) = pair_with(RcOpts {
        access: Access::LOCAL_WRITE,
        ..RcOpts::default()
    });
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
        .inline(&[1]),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemAccessErr);
    assert_eq!(net.contents(&remote), vec![0; 64]);
    let _ = b;
}

#[test]
fn receive_wqe_with_a_bad_lkey_is_rem_op_err() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 64);
    net.post_recv(
        &b,
        1,
        vec![Sge {
            addr: dst.addr,
            len: 64,
            lkey: MemKey(0x9901),
        }],
    );
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(&[1, 2, 3]));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemOpErr);
    assert_eq!(one(net.recv_wcs(&b)).status, WcStatus::LocProtErr);
    assert_eq!(events(&mut net, 1), vec![AsyncEvent::QpFatal(b.qpn)]);
}

/// timeout 10: 4.096 µs × 1024.
const T10: u64 = 4096 << 10;

#[test]
fn retry_exc_err_after_retry_cnt_retries_in_virtual_time() {
    for retry_cnt in [0u8, 1, 3, 7] {
        let (mut net, a, _b) = pair_with(RcOpts {
            timeout: 10,
            retry_cnt,
            ..RcOpts::default()
        });
        net.set_hook(|s| {
            if s.from == 0 {
                vec![]
            } else {
                vec![s.pkt.clone()]
            }
        });
        net.now = vhca_device::Nanos(5_000);
        net.post_send(&a, SendWr::new(1, SendOp::Send).inline(&[1]));
        net.post_send(&a, SendWr::new(2, SendOp::Send).inline(&[2]));
        net.run();
        let wcs = net.send_wcs(&a);
        assert_eq!(
            statuses(&wcs),
            vec![(1, WcStatus::RetryExcErr), (2, WcStatus::WrFlushErr)],
            "retry_cnt {retry_cnt}"
        );
        // IBTA: retry_cnt retries after the first attempt (7 is not infinite, unlike rxe).
        let first: Vec<_> = net
            .log
            .iter()
            .filter(|s| s.psn() == 0x1000)
            .map(|s| s.at.0)
            .collect();
        let expect: Vec<u64> = (0..=retry_cnt as u64).map(|k| 5_000 + k * T10).collect();
        assert_eq!(
            first, expect,
            "retry_cnt {retry_cnt}: transmissions every 4.096 µs × 2^timeout"
        );
        assert_eq!(
            net.now.0,
            5_000 + (retry_cnt as u64 + 1) * T10,
            "the error is reported when the last timer expires"
        );
        assert_eq!(net.state(&a), QpState::Err);
        assert_eq!(net.vf(0).counters().retry_timeouts, retry_cnt as u64 + 1);
    }
}

#[test]
fn timeout_zero_disables_the_retransmit_timer() {
    let (mut net, a, _b) = pair_with(RcOpts {
        timeout: 0,
        ..RcOpts::default()
    });
    net.set_hook(|s| {
        if s.from == 0 {
            vec![]
        } else {
            vec![s.pkt.clone()]
        }
    });
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(&[1]));
    net.run();
    assert!(net.send_wcs(&a).is_empty());
    assert_eq!(net.log.len(), 1);
    assert_eq!(net.next_timeout(), None);
}

#[test]
fn truncated_read_response_is_bad_resp_err() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 3000);
    let local = net.rbuf(0, 3000);
    net.set_hook(|s| {
        let mut p = s.pkt.clone();
        if p.bth.opcode == O::RC_READ_RESP_MIDDLE {
            let mut v = p.payload.to_vec();
            v.truncate(100);
            p.payload = Payload::Bytes(v);
        }
        vec![p]
    });
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
    net.post_send(&a, SendWr::new(2, SendOp::Send));
    net.run();
    assert_eq!(
        statuses(&net.send_wcs(&a)),
        vec![(1, WcStatus::BadRespErr), (2, WcStatus::WrFlushErr)]
    );
    assert_eq!(net.state(&a), QpState::Err);
}

#[test]
fn atomic_with_a_wrong_length_or_misaligned_address_fails_locally() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 64);
    let local = net.rbuf(0, 64);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::FetchAdd {
                remote_addr: remote.addr,
                rkey: remote.key,
                add: 1,
            },
        )
        .sge(local.sge_at(0, 4)),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocLenErr);
    assert!(net.log.is_empty());
    assert_eq!(net.read_u64(1, remote.addr), 0);
}
