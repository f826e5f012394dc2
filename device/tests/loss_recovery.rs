//! Duplicates, losses, gaps and reordering: exactly-once execution and go-back-N recovery.

mod common;
use common::*;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use vhca_device::packet::{NakCode, Opcode as O, Packet, Syndrome};
use vhca_device::{Mtu, Nanos, QpState, SendOp, SendWr, WcOpcode, WcStatus};

/// timeout 10: 4.096 µs × 1024.
const T10: u64 = 4096 << 10;

fn pair() -> (Net, Ep, Ep) {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(
        0,
        1,
        &RcOpts {
            timeout: 10,
            ..RcOpts::default()
        },
    );
    (net, a, b)
}

/// Duplicates every packet from `from` that `pred` selects, the first `times` times.
fn duplicate(net: &mut Net, from: usize, times: u32, pred: impl Fn(&Packet) -> bool + 'static) {
    let left = Cell::new(times);
    net.set_hook(move |s| {
        if s.from == from && pred(&s.pkt) && left.get() > 0 {
            left.set(left.get() - 1);
            vec![s.pkt.clone(), s.pkt.clone()]
        } else {
            vec![s.pkt.clone()]
        }
    });
}

fn seq_naks(net: &Net) -> Vec<&Sent> {
    net.sent_with(O::RC_ACK)
        .into_iter()
        .filter(|s| s.pkt.ext.aeth.unwrap().syndrome == Syndrome::Nak(NakCode::PsnSequenceError))
        .collect()
}

#[test]
fn duplicated_send_is_reacked_not_executed_twice() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 3000);
    let d1 = net.rbuf(1, 3000);
    let d2 = net.rbuf(1, 3000);
    net.fill(&src, &pattern(3000, 1));
    duplicate(&mut net, 0, u32::MAX, |p| p.bth.opcode.is_send());
    net.post_recv(&b, 1, vec![d1.sge()]);
    net.post_recv(&b, 2, vec![d2.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len), (1, 3000));
    assert_eq!(net.contents(&d1), pattern(3000, 1));
    assert_eq!(
        net.contents(&d2),
        vec![0; 3000],
        "the second receive was not consumed"
    );
    assert_eq!(net.vf(1).counters().duplicate_requests, 3);
    // Re-ACKs name the last good PSN.
    let acks: Vec<_> = net.sent_with(O::RC_ACK).iter().map(|s| s.psn()).collect();
    assert!(acks.iter().all(|&p| p == 0x1002), "{acks:?}");
    // The second receive still works for the next message.
    net.clear_hook();
    net.post_send(&a, SendWr::new(2, SendOp::Send).inline(b"next"));
    net.run();
    assert_eq!(one(net.recv_wcs(&b)).wr_id, 2);
    assert_eq!(net.read(1, d2.addr, 4), b"next");
}

#[test]
fn duplicated_write_with_imm_completes_once() {
    let (mut net, a, b) = pair();
    let src = net.rbuf(0, 2048);
    let dst = net.rbuf(1, 2048);
    net.fill(&src, &pattern(2048, 2));
    duplicate(&mut net, 0, u32::MAX, |p| p.bth.opcode.is_write());
    net.post_recv(&b, 1, vec![]);
    net.post_recv(&b, 2, vec![]);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::WriteWithImm {
                remote_addr: dst.addr,
                rkey: dst.key,
                imm: 4,
            },
        )
        .sge(src.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).wr_id, 1);
    assert_eq!(net.contents(&dst), pattern(2048, 2));
}

#[test]
fn lost_ack_is_recovered_by_the_timer() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 16);
    drop_first(&mut net, 1, 1, |p| p.bth.opcode == O::RC_ACK);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"abc"));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).byte_len, 3);
    let t: Vec<_> = net
        .sent_with(O::RC_SEND_ONLY)
        .iter()
        .map(|s| s.at.0)
        .collect();
    assert_eq!(t, vec![0, T10]);
    assert_eq!(net.vf(1).counters().duplicate_requests, 1);
    assert_eq!(net.vf(0).counters().retransmits, 1);
}

/// A migration stopped the requester while its SEND's ACK was on the way (dropped), and the
/// requester resumed and resent while the responder was still stopped (dropped too). When the
/// responder resumes, its prompt completes the SEND at once: no retransmit timer.
#[test]
fn a_resumed_responder_completes_a_send_whose_ack_was_lost() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 16);
    let stopped = Rc::new(Cell::new(true));
    let s = stopped.clone();
    // While "stopped", everything b sends is lost.
    net.set_hook(move |p| {
        if p.from == 1 && s.get() {
            vec![]
        } else {
            vec![p.pkt.clone()]
        }
    });
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"abc"));
    while net.step() {}
    assert_eq!(one(net.recv_wcs(&b)).byte_len, 3, "the SEND arrived");
    assert!(net.send_wcs(&a).is_empty(), "its ACK did not");
    stopped.set(false);
    let now = net.now;
    net.vf(1).resume(now);
    while net.step() {}
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.now, Nanos(0), "no timer ran");
    assert_eq!(net.vf(0).counters().retransmits, 0);
}

/// Both ends migrate: the requester resumes first and resends into a responder that is still
/// stopped (lost); when the responder resumes, its prompt makes the requester resend at once.
#[test]
fn a_requester_that_resumed_first_resends_when_its_peer_resumes() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 16);
    let stopped = Rc::new(Cell::new(true));
    let s = stopped.clone();
    // While "stopped", everything sent to b is lost.
    net.set_hook(move |p| {
        if p.from == 0 && s.get() {
            vec![]
        } else {
            vec![p.pkt.clone()]
        }
    });
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"abc"));
    while net.step() {}
    let now = net.now;
    net.vf(0).resume(now);
    while net.step() {}
    assert_eq!(
        net.sent_with(O::RC_SEND_ONLY).len(),
        2,
        "sent, resent, both lost"
    );
    stopped.set(false);
    net.vf(1).resume(now);
    while net.step() {}
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.read(1, dst.addr, 3), b"abc");
    assert_eq!(net.now, Nanos(0), "no timer ran");
}

#[test]
fn lost_request_is_recovered_by_the_timer() {
    let (mut net, a, b) = pair();
    let dst = net.rbuf(1, 16);
    drop_first(&mut net, 0, 1, |_| true);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"abc"));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.read(1, dst.addr, 3), b"abc");
    assert_eq!(net.vf(1).counters().duplicate_requests, 0);
}

#[test]
fn resent_read_is_executed_again() {
    let (mut net, a, b) = pair();
    let remote = net.rbuf(1, 100);
    let local = net.rbuf(0, 100);
    net.fill(&remote, &pattern(100, 3));
    drop_first(&mut net, 1, 1, |p| p.bth.opcode.is_read_response());
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
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(net.contents(&local), pattern(100, 3));
    assert_eq!(net.sent_with(O::RC_READ_REQUEST).len(), 2);
    assert_eq!(net.sent_with(O::RC_READ_RESP_ONLY).len(), 2);
    assert_eq!(net.vf(1).counters().duplicate_requests, 1);
    let _ = b;
}

#[test]
fn lost_middle_read_response_resumes_the_read() {
    let (mut net, a, _b) = pair();
    let len = 5 * 1024;
    let remote = net.rbuf(1, len);
    let local = net.rbuf(0, len);
    net.fill(&remote, &pattern(len as usize, 4));
    drop_first(&mut net, 1, 1, |p| {
        p.bth.opcode == O::RC_READ_RESP_MIDDLE && p.bth.psn.0 == 0x1002
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
    net.post_send(
        &a,
        SendWr::new(2, SendOp::Send).flags(vhca_device::SendFlags::SIGNALED),
    );
    net.post_recv(&_b, 1, vec![]);
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
        vec![(1, WcStatus::Success), (2, WcStatus::Success)]
    );
    assert_eq!(net.contents(&local), pattern(len as usize, 4));
    // The second READ request asks only for what is missing.
    let reqs = net.sent_with(O::RC_READ_REQUEST);
    assert_eq!(reqs.len(), 2);
    let r2 = reqs[1].pkt.ext.reth.unwrap();
    assert_eq!(reqs[1].psn(), 0x1002);
    assert_eq!((r2.va, r2.len), (remote.addr + 2048, len - 2048));
    assert!(
        net.log.iter().all(|s| s.at == Nanos(0)),
        "a gap in the responses is an implied NAK, no timer needed"
    );
}

#[test]
fn duplicated_atomic_executes_once() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 8);
    let local = net.rbuf(0, 16);
    net.write_u64(1, remote.addr, 100);
    duplicate(&mut net, 0, u32::MAX, |p| p.bth.opcode.is_atomic());
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::FetchAdd {
                remote_addr: remote.addr,
                rkey: remote.key,
                add: 5,
            },
        )
        .sge(local.sge_at(0, 8)),
    );
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::CmpSwap {
                remote_addr: remote.addr,
                rkey: remote.key,
                compare: 105,
                swap: 7,
            },
        )
        .sge(local.sge_at(8, 8)),
    );
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(
        wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
        vec![(1, WcStatus::Success), (2, WcStatus::Success)]
    );
    assert_eq!(net.read_u64(0, local.addr), 100);
    assert_eq!(net.read_u64(0, local.addr + 8), 105);
    assert_eq!(net.read_u64(1, remote.addr), 7);
    assert_eq!(net.vf(1).counters().duplicate_requests, 2);
}

#[test]
fn lost_atomic_ack_returns_the_saved_result() {
    let (mut net, a, _b) = pair();
    let remote = net.rbuf(1, 8);
    let local = net.rbuf(0, 8);
    net.write_u64(1, remote.addr, 40);
    drop_first(&mut net, 1, 1, |p| p.bth.opcode == O::RC_ATOMIC_ACK);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::FetchAdd {
                remote_addr: remote.addr,
                rkey: remote.key,
                add: 2,
            },
        )
        .sge(local.sge()),
    );
    net.run();
    let w = one(net.send_wcs(&a));
    assert_eq!(
        (w.status, w.opcode),
        (WcStatus::Success, WcOpcode::FetchAdd)
    );
    assert_eq!(
        net.read_u64(0, local.addr),
        40,
        "the original value, not the re-executed one"
    );
    assert_eq!(net.read_u64(1, remote.addr), 42, "executed exactly once");
    let t: Vec<_> = net
        .sent_with(O::RC_FETCH_ADD)
        .iter()
        .map(|s| s.at.0)
        .collect();
    assert_eq!(t, vec![0, T10]);
}

#[test]
fn psn_gap_gets_exactly_one_nak_and_go_back_n() {
    let (mut net, a, b) = pair();
    let len = 6 * 1024;
    let src = net.rbuf(0, len);
    let dst = net.rbuf(1, len);
    net.fill(&src, &pattern(len as usize, 5));
    drop_first(&mut net, 0, 1, |p| p.bth.psn.0 == 0x1001);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.post_recv(&b, 2, vec![]);
    net.post_send(&a, SendWr::new(2, SendOp::Send));
    net.run();
    assert_eq!(net.send_wcs(&a).len(), 2);
    assert_eq!(
        net.recv_wcs(&b)
            .iter()
            .map(|w| (w.wr_id, w.status))
            .collect::<Vec<_>>(),
        vec![(1, WcStatus::Success), (2, WcStatus::Success)]
    );
    assert_eq!(net.contents(&dst), pattern(len as usize, 5));
    let naks = seq_naks(&net);
    assert_eq!(naks.len(), 1, "one NAK per gap");
    assert_eq!(naks[0].psn(), 0x1001);
    assert_eq!(net.vf(1).counters().seq_naks_sent, 1);
    assert_eq!(net.vf(1).counters().out_of_sequence, 5);
    // Go-back-N from the missing PSN, without waiting for the timer.
    let psns: Vec<_> = net
        .log
        .iter()
        .filter(|s| s.from == 0)
        .map(|s| s.psn() - 0x1000)
        .collect();
    assert_eq!(psns, vec![0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]);
    assert!(
        net.log.iter().all(|s| s.at == Nanos(0)),
        "recovery needs no timer"
    );
}

#[test]
fn reordered_packets_recover() {
    let (mut net, a, b) = pair();
    let len = 4 * 1024;
    let src = net.rbuf(0, len);
    let dst = net.rbuf(1, len);
    net.fill(&src, &pattern(len as usize, 6));
    // Hold PSN 1 back and deliver it after PSN 2.
    let held: Rc<RefCell<Option<Packet>>> = Rc::new(RefCell::new(None));
    let done = Cell::new(false);
    net.set_hook(move |s| {
        if s.from == 0 && s.psn() == 0x1001 && !done.get() {
            done.set(true);
            *held.borrow_mut() = Some(s.pkt.clone());
            return vec![];
        }
        let mut out = vec![s.pkt.clone()];
        if s.from == 0 && s.psn() == 0x1002 {
            out.extend(held.borrow_mut().take());
        }
        out
    });
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).byte_len, len);
    assert_eq!(net.contents(&dst), pattern(len as usize, 6));
    // PSN 2 arrived before 1 (one gap: NAK 1); 3 arrived while 2 had been dropped (a new gap:
    // NAK 2). Each gap gets its NAK; the requester goes back and nothing is lost or doubled.
    let naks: Vec<_> = seq_naks(&net).iter().map(|s| s.psn() - 0x1000).collect();
    assert_eq!(naks, vec![1, 2]);
    assert!(net.log.iter().all(|s| s.at == Nanos(0)));
}

#[test]
fn lossy_link_delivers_everything_exactly_once() {
    // 15% loss in both directions from a fixed LCG: every operation still completes, in order,
    // with the right bytes, and atomics execute exactly once.
    for seed in 1u64..=8 {
        let mut net = Net::new(2);
        let opts = RcOpts {
            timeout: 8,
            retry_cnt: 7,
            mtu: Mtu::Mtu512,
            max_rd_atomic: 4,
            max_dest_rd_atomic: 4,
            ..RcOpts::default()
        };
        let (a, b) = net.rc_pair(0, 1, &opts);
        let state = Cell::new(seed);
        let held: RefCell<Vec<Packet>> = RefCell::new(Vec::new());
        let faults = seed > 4; // seeds 5..=8 also duplicate and reorder
        net.set_hook(move |s| {
            let x = state
                .get()
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state.set(x);
            let r = (x >> 33) % 100;
            let mut out = match r {
                0..15 => vec![],
                15..20 if faults => vec![s.pkt.clone(), s.pkt.clone()],
                20..25 if faults => {
                    held.borrow_mut().push(s.pkt.clone());
                    vec![]
                }
                _ => vec![s.pkt.clone()],
            };
            if r % 3 == 0 {
                out.append(&mut held.borrow_mut());
            }
            out
        });
        let n = 30u32;
        let src = net.rbuf(0, 2000 * n);
        let dst = net.rbuf(1, 2000 * n);
        let wdst = net.rbuf(1, 2000 * n);
        let rsrc = net.rbuf(1, 2000 * n);
        let rdst = net.rbuf(0, 2000 * n);
        let counter = net.rbuf(1, 8);
        let fetched = net.rbuf(0, 8 * n);
        net.fill(&src, &pattern((2000 * n) as usize, 7));
        net.fill(&rsrc, &pattern((2000 * n) as usize, 8));
        for i in 0..n {
            let len = 1 + (i * 397) % 2000;
            let off = i * 2000;
            let wr = match i % 4 {
                0 => {
                    net.post_recv(&b, i as u64, vec![dst.sge_at(off, 2000)]);
                    SendWr::new(i as u64, SendOp::Send).sge(src.sge_at(off, len))
                }
                1 => SendWr::new(
                    i as u64,
                    SendOp::Write {
                        remote_addr: wdst.at(off as u64),
                        rkey: wdst.key,
                    },
                )
                .sge(src.sge_at(off, len)),
                2 => SendWr::new(
                    i as u64,
                    SendOp::Read {
                        remote_addr: rsrc.at(off as u64),
                        rkey: rsrc.key,
                    },
                )
                .sge(rdst.sge_at(off, len)),
                _ => SendWr::new(
                    i as u64,
                    SendOp::FetchAdd {
                        remote_addr: counter.addr,
                        rkey: counter.key,
                        add: 1,
                    },
                )
                .sge(fetched.sge_at(8 * i, 8)),
            };
            net.post_send(&a, wr);
        }
        net.run();
        let wcs = net.send_wcs(&a);
        assert_eq!(
            wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
            (0..n as u64)
                .map(|i| (i, WcStatus::Success))
                .collect::<Vec<_>>(),
            "seed {seed}"
        );
        let r = net.recv_wcs(&b);
        assert_eq!(r.len() as u32, n / 4 + 1, "seed {seed}");
        let mut fetched_vals = Vec::new();
        for i in 0..n {
            let len = (1 + (i * 397) % 2000) as usize;
            let off = (i * 2000) as u64;
            let want_src =
                pattern((2000 * n) as usize, 7)[off as usize..off as usize + len].to_vec();
            match i % 4 {
                0 => assert_eq!(
                    net.read(1, dst.at(off), len),
                    want_src,
                    "seed {seed} send {i}"
                ),
                1 => assert_eq!(
                    net.read(1, wdst.at(off), len),
                    want_src,
                    "seed {seed} write {i}"
                ),
                2 => assert_eq!(
                    net.read(0, rdst.at(off), len),
                    pattern((2000 * n) as usize, 8)[off as usize..off as usize + len].to_vec(),
                    "seed {seed} read {i}"
                ),
                _ => fetched_vals.push(net.read_u64(0, fetched.addr + 8 * i as u64)),
            }
        }
        assert_eq!(
            net.read_u64(1, counter.addr),
            fetched_vals.len() as u64,
            "seed {seed}: atomics exactly once"
        );
        assert_eq!(
            fetched_vals,
            (0..fetched_vals.len() as u64).collect::<Vec<_>>(),
            "seed {seed}"
        );
        assert_eq!(net.state(&a), QpState::Rts);
        assert_eq!(net.state(&b), QpState::Rts);
    }
}

#[test]
fn a_burst_of_out_of_order_responses_costs_one_retry() {
    // retry_cnt 1: the lost FIRST response makes MIDDLE, MIDDLE, LAST, the atomic ACK and the
    // ACK behind the READ all arrive out of order. Together they are one loss, one retry.
    let mut net = Net::new(2);
    let opts = RcOpts {
        retry_cnt: 1,
        timeout: 10,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    let remote = net.rbuf(1, 4096);
    let local = net.rbuf(0, 4096);
    let counter = net.rbuf(1, 8);
    net.fill(&remote, &pattern(4096, 9));
    drop_first(&mut net, 1, 1, |p| p.bth.opcode == O::RC_READ_RESP_FIRST);
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
    net.post_send(
        &a,
        SendWr::new(
            2,
            SendOp::FetchAdd {
                remote_addr: counter.addr,
                rkey: counter.key,
                add: 1,
            },
        )
        .sge(local.sge_at(0, 8)),
    );
    net.post_recv(&b, 1, vec![]);
    net.post_send(&a, SendWr::new(3, SendOp::Send));
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
    assert_eq!(
        net.read(0, local.addr + 8, 4088),
        pattern(4096, 9)[8..].to_vec()
    );
    assert_eq!(net.read_u64(0, local.addr), 0);
    assert_eq!(net.read_u64(1, counter.addr), 1);
    assert_eq!(net.sent_with(O::RC_READ_REQUEST).len(), 2);
    assert!(net.log.iter().all(|s| s.at == Nanos(0)));
}

#[test]
fn a_duplicate_send_behind_which_a_read_arrived_is_reacked_below_the_read() {
    // The ACK of a SEND and the response of the READ behind it are both lost: the requester
    // resends both. The re-ACK of the duplicate SEND must not name the READ's PSN: a READ is
    // answered by its response, and rxe's completer takes an ACK naming a pending READ's PSN as
    // that READ's completion without its data (seen against rping at 5% loss).
    let (mut net, a, b) = pair();
    let remote = net.rbuf(1, 64);
    let local = net.rbuf(0, 64);
    let d = net.rbuf(1, 64);
    net.fill(&remote, &pattern(64, 9));
    net.post_recv(&b, 1, vec![d.sge()]);
    drop_first(&mut net, 1, 2, |p| {
        p.bth.opcode == O::RC_ACK || p.bth.opcode.is_read_response()
    });
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"ping"));
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
    net.run();
    let wcs = net.send_wcs(&a);
    assert_eq!(wcs.len(), 2, "{wcs:?}");
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    assert_eq!(net.contents(&local), pattern(64, 9));
    let send_psn = net.sent_with(O::RC_SEND_ONLY)[0].psn();
    let read_psn = net.sent_with(O::RC_READ_REQUEST)[0].psn();
    assert_eq!(read_psn, send_psn + 1);
    // Every ACK the responder sent names the SEND, never the READ.
    let acks: Vec<u32> = net
        .sent_with(O::RC_ACK)
        .iter()
        .filter(|s| s.from == 1)
        .map(|s| s.psn())
        .collect();
    assert!(
        acks.len() >= 2,
        "the duplicate SEND was not re-ACKed: {acks:?}"
    );
    assert!(
        acks.iter().all(|&p| p == send_psn),
        "{acks:?} (SEND {send_psn:#x})"
    );
    assert!(net.vf(1).counters().duplicate_requests >= 2);
}
