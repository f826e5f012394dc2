//! UC: SEND and RDMA WRITE without acknowledgements; a lost packet drops its message and the
//! responder resyncs at the next FIRST/ONLY; READ and atomics refused at post time.

mod common;
use common::*;
use vhca_device::packet::Opcode as O;
use vhca_device::{
    Access, Nanos, Psn, QpAttr, QpAttrMask as M, QpState, SendFlags, SendOp, SendWr, VecMemory,
    VerbsError, VfLimits, WcOpcode, WcStatus,
};

fn signaled(id: u64, op: SendOp) -> SendWr {
    SendWr::new(id, op).flags(SendFlags::SIGNALED)
}

#[test]
fn uc_send_uses_uc_opcodes_never_asks_for_acks_and_completes_on_transmit() {
    let mut net = Net::new(2);
    let o = RcOpts::default();
    let (a, b) = net.uc_pair(0, 1, &o);
    let src = net.rbuf(0, 3000);
    let dst = net.rbuf(1, 4096);
    net.fill(&src, &pattern(3000, 3));
    net.post_recv(&b, 7, vec![dst.sge()]);
    net.post_send(
        &a,
        signaled(1, SendOp::SendWithImm { imm: 0x55 }).sge(src.sge()),
    );
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!(
        (s.wr_id, s.status, s.opcode),
        (1, WcStatus::Success, WcOpcode::Send)
    );
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.status, r.byte_len),
        (7, WcStatus::Success, 3000)
    );
    assert_eq!(r.imm, Some(0x55));
    assert_eq!(&net.contents(&dst)[..3000], &pattern(3000, 3)[..]);
    let ops: Vec<O> = net.log.iter().map(|s| s.op()).collect();
    assert_eq!(
        ops,
        [O::UC_SEND_FIRST, O::UC_SEND_MIDDLE, O::UC_SEND_LAST_IMM]
    );
    assert!(net.log.iter().all(|s| !s.pkt.bth.ack_req && s.from == 0));
    let psns: Vec<u32> = net.log.iter().map(|s| s.psn()).collect();
    assert_eq!(psns, [o.psn_a, o.psn_a + 1, o.psn_a + 2]);
}

#[test]
fn uc_write_and_write_with_imm() {
    let mut net = Net::new(2);
    let o = RcOpts::default();
    let (a, b) = net.uc_pair(0, 1, &o);
    let src = net.rbuf(0, 2500);
    let dst = net.rbuf(1, 4096);
    net.fill(&src, &pattern(2500, 9));
    net.post_send(
        &a,
        signaled(
            1,
            SendOp::Write {
                remote_addr: dst.addr,
                rkey: dst.key,
            },
        )
        .sge(src.sge_at(0, 100)),
    );
    net.post_recv(&b, 3, vec![]);
    net.post_send(
        &a,
        signaled(
            2,
            SendOp::WriteWithImm {
                remote_addr: dst.at(100),
                rkey: dst.key,
                imm: 0x77,
            },
        )
        .sge(src.sge_at(100, 2400)),
    );
    net.run();
    let s = net.send_wcs(&a);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|w| w.status == WcStatus::Success));
    assert_eq!(s[0].opcode, WcOpcode::RdmaWrite);
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.status, r.opcode, r.byte_len, r.imm),
        (
            3,
            WcStatus::Success,
            WcOpcode::RecvRdmaWithImm,
            2400,
            Some(0x77)
        )
    );
    assert_eq!(&net.contents(&dst)[..2500], &pattern(2500, 9)[..]);
    let ops: Vec<O> = net.log.iter().map(|s| s.op()).collect();
    assert_eq!(
        ops,
        [
            O::UC_WRITE_ONLY,
            O::UC_WRITE_FIRST,
            O::UC_WRITE_MIDDLE,
            O::UC_WRITE_LAST_IMM
        ]
    );
}

#[test]
fn read_atomics_and_send_with_invalidate_are_refused_on_uc() {
    let mut net = Net::new(2);
    let (a, _b) = net.uc_pair(0, 1, &RcOpts::default());
    let buf = net.rbuf(0, 64);
    for op in [
        SendOp::Read {
            remote_addr: 0x1000,
            rkey: buf.key,
        },
        SendOp::CmpSwap {
            remote_addr: 0x1000,
            rkey: buf.key,
            compare: 0,
            swap: 1,
        },
        SendOp::FetchAdd {
            remote_addr: 0x1000,
            rkey: buf.key,
            add: 1,
        },
        SendOp::SendWithInv { rkey: buf.key },
    ] {
        let wr = signaled(1, op).sge(buf.sge_at(0, 8));
        assert!(
            matches!(net.vf(0).post_send(a.qpn, &wr), Err(VerbsError::Invalid(_))),
            "{op:?}"
        );
    }
    // The QP is untouched: a SEND still works.
    net.post_send(&a, signaled(2, SendOp::Send).sge(buf.sge_at(0, 8)));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
}

#[test]
fn a_psn_gap_drops_the_message_keeps_its_receive_and_the_next_first_resyncs() {
    let mut net = Net::new(2);
    let o = RcOpts::default();
    let (a, b) = net.uc_pair(0, 1, &o);
    let src = net.rbuf(0, 3000);
    let dst = net.rbuf(1, 3000);
    net.fill(&src, &pattern(3000, 5));
    // Lose the MIDDLE of the first message.
    let lost = o.psn_a + 1;
    net.set_hook(move |s| {
        if s.psn() == lost && s.from == 0 {
            vec![]
        } else {
            vec![s.pkt.clone()]
        }
    });
    net.post_recv(&b, 10, vec![dst.sge()]);
    net.post_recv(&b, 11, vec![dst.sge()]);
    net.post_send(&a, signaled(1, SendOp::Send).sge(src.sge()));
    net.post_send(
        &a,
        signaled(2, SendOp::SendWithImm { imm: 9 }).sge(src.sge_at(0, 2500)),
    );
    net.run();
    // The sender knows nothing of the loss.
    let s = net.send_wcs(&a);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|w| w.status == WcStatus::Success));
    // The first message is gone; the second one used the receive the first had taken.
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len, r.imm), (10, 2500, Some(9)));
    assert_eq!(&net.contents(&dst)[..2500], &pattern(3000, 5)[..2500]);
    assert_eq!(net.state(&b), QpState::Rts);
    assert!(net.log.iter().all(|s| s.from == 0), "UC never answers");
    let c = net.vf_ref(1).counters();
    assert!(c.out_of_sequence >= 1);
    // The third message still lands in order after the resync.
    net.clear_hook();
    net.post_send(&a, signaled(3, SendOp::Send).sge(src.sge_at(0, 10)));
    net.run();
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len), (11, 10));
}

#[test]
fn a_lost_last_packet_drops_the_message_and_a_middle_after_a_gap_is_ignored() {
    let mut net = Net::new(2);
    let o = RcOpts::default();
    let (a, b) = net.uc_pair(0, 1, &o);
    let src = net.rbuf(0, 3072);
    let dst = net.rbuf(1, 4096);
    let target = net.rbuf(1, 4096);
    net.fill(&src, &pattern(3072, 1));
    // Lose the LAST of a 3-packet WRITE_WITH_IMM (PSN +2) and the FIRST of the next SEND
    // (PSN +3): its MIDDLE and LAST must be dropped, not placed.
    let base = o.psn_a;
    net.set_hook(move |s| {
        if s.psn() == base + 2 || s.psn() == base + 3 {
            vec![]
        } else {
            vec![s.pkt.clone()]
        }
    });
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::WriteWithImm {
                remote_addr: target.addr,
                rkey: target.key,
                imm: 1,
            },
        )
        .sge(src.sge()),
    );
    net.post_send(&a, SendWr::new(2, SendOp::Send).sge(src.sge()));
    net.post_send(&a, SendWr::new(3, SendOp::Send).sge(src.sge_at(0, 4)));
    net.run();
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len, r.opcode), (1, 4, WcOpcode::Recv));
    assert_eq!(&net.contents(&dst)[..4], &pattern(3072, 1)[..4]);
    assert_eq!(net.state(&b), QpState::Rts);
}

#[test]
fn a_duplicate_is_never_delivered_twice() {
    let mut net = Net::new(2);
    let (a, b) = net.uc_pair(0, 1, &RcOpts::default());
    let src = net.rbuf(0, 16);
    let dst = net.rbuf(1, 16);
    net.set_hook(|s| vec![s.pkt.clone(), s.pkt.clone()]);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_recv(&b, 2, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(one(net.recv_wcs(&b)).wr_id, 1);
    assert!(net.vf_ref(1).counters().duplicate_requests >= 1);
}

#[test]
fn no_receive_or_a_bad_rkey_drops_the_message_silently() {
    let mut net = Net::new(2);
    let (a, b) = net.uc_pair(0, 1, &RcOpts::default());
    let src = net.rbuf(0, 64);
    let dst = net.rbuf(1, 64);
    // No receive posted: the SEND is dropped, nothing comes back, the QP stays in RTS.
    net.post_send(&a, signaled(1, SendOp::Send).sge(src.sge()));
    // A WRITE with a wrong R_Key: dropped.
    net.post_send(
        &a,
        signaled(
            2,
            SendOp::Write {
                remote_addr: dst.addr,
                rkey: vhca_device::MemKey(dst.key.0 ^ 0x100),
            },
        )
        .sge(src.sge()),
    );
    // A SEND longer than the receive buffer: dropped, its receive kept for the next one.
    let small = net.rbuf(1, 8);
    net.post_send(&a, signaled(3, SendOp::Send).sge(src.sge()));
    net.run();
    net.post_recv(&b, 7, vec![small.sge()]);
    net.post_send(&a, signaled(4, SendOp::Send).sge(src.sge()));
    net.post_send(&a, signaled(5, SendOp::Send).sge(src.sge_at(0, 8)));
    net.run();
    let s = net.send_wcs(&a);
    assert_eq!(s.len(), 5);
    assert!(s.iter().all(|w| w.status == WcStatus::Success));
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len), (7, 8));
    assert_eq!(net.state(&a), QpState::Rts);
    assert_eq!(net.state(&b), QpState::Rts);
    assert!(net.log.iter().all(|s| s.from == 0));
}

#[test]
fn a_receive_that_cannot_be_written_fails_locally_and_the_qp_enters_err() {
    let mut net = Net::new(2);
    let (a, b) = net.uc_pair(0, 1, &RcOpts::default());
    let src = net.rbuf(0, 64);
    let ro = net.buf(1, 64, Access::empty());
    net.post_recv(&b, 1, vec![ro.sge()]);
    net.post_send(&a, signaled(1, SendOp::Send).sge(src.sge()));
    net.run();
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.status), (1, WcStatus::LocProtErr));
    assert_eq!(net.state(&b), QpState::Err);
    assert!(net.log.iter().all(|s| s.from == 0));
}

#[test]
fn a_local_send_error_completes_with_its_status_and_the_qp_enters_err() {
    let mut net = Net::new(2);
    let (a, _b) = net.uc_pair(0, 1, &RcOpts::default());
    let src = net.rbuf(0, 64);
    let mut sge = src.sge();
    sge.lkey = vhca_device::MemKey(src.key.0 ^ 0x100);
    net.post_send(&a, signaled(1, SendOp::Send).sge(sge));
    net.post_send(&a, signaled(2, SendOp::Send).sge(src.sge()));
    net.run();
    let s = net.send_wcs(&a);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].status, WcStatus::LocProtErr);
    assert_eq!(s[1].status, WcStatus::WrFlushErr);
    assert_eq!(net.state(&a), QpState::Err);
    assert!(net.log.is_empty());
}

#[test]
fn uc_modify_refuses_reliable_attributes_and_query_reports_live_psns() {
    let mut net = Net::new(2);
    let o = RcOpts::default();
    let (a, b) = net.uc_pair(0, 1, &o);
    let rts = QpAttr {
        qp_state: QpState::Rts,
        timeout: 14,
        ..QpAttr::default()
    };
    assert!(net.modify(&a, &rts, M::TIMEOUT).is_err());
    let src = net.rbuf(0, 2048);
    let dst = net.rbuf(1, 2048);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()));
    net.run();
    let (qa, _) = net.vf_ref(0).query_qp(a.qpn).unwrap();
    let (qb, _) = net.vf_ref(1).query_qp(b.qpn).unwrap();
    assert_eq!(qa.sq_psn.0, o.psn_a + 2);
    assert_eq!(qb.rq_psn.0, o.psn_a + 2);
}

#[test]
fn a_uc_message_half_received_survives_a_checkpoint_of_both_ends() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use vhca_device::checkpoint::{self, codec};
    let mut net = Net::new(2);
    let o = RcOpts::default();
    let (a, b) = net.uc_pair(0, 1, &o);
    let src = net.rbuf(0, 3000);
    let dst = net.rbuf(1, 3000);
    net.fill(&src, &pattern(3000, 8));
    // Deliver only the FIRST; hold the rest.
    let held = Rc::new(RefCell::new(Vec::new()));
    let h = held.clone();
    let first = o.psn_a;
    net.set_hook(move |s| {
        if s.psn() == first {
            vec![s.pkt.clone()]
        } else {
            h.borrow_mut().push(s.pkt.clone());
            vec![]
        }
    });
    net.post_recv(&b, 4, vec![dst.sge()]);
    net.post_send(&a, signaled(1, SendOp::Send).sge(src.sge()));
    net.post_send(&a, signaled(2, SendOp::Send).sge(src.sge_at(0, 5)));
    net.run();
    assert_eq!(held.borrow().len(), 3);
    for node in [0, 1] {
        let now = net.now;
        let vf = net.vf(node);
        let blob = checkpoint::save(vf, now, codec::BINARY);
        let mem = vf.memory().clone();
        let back = checkpoint::load(&blob, mem, now).unwrap();
        let before = checkpoint::state_of(net.vf_ref(node), now);
        assert!(checkpoint::state_of(&back, now) == before);
        *net.vf(node) = back;
    }
    let (q, _) = net.vf_ref(1).query_qp(b.qpn).unwrap();
    assert_eq!(q.rq_psn.0, o.psn_a + 1, "expected PSN restored");
    let now = net.now;
    for p in held.borrow().iter() {
        net.vf(1).handle_packet(now, p);
    }
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len), (4, 3000));
    assert_eq!(net.contents(&dst), pattern(3000, 8));
    // The second SEND found no receive and was dropped; the restored requester goes on at
    // the next PSN.
    net.clear_hook();
    net.post_recv(&b, 5, vec![dst.sge()]);
    net.post_send(&a, signaled(3, SendOp::Send).sge(src.sge_at(0, 7)));
    net.run();
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len), (5, 7));
}

#[test]
fn a_checkpoint_giving_a_uc_qp_reliable_transport_state_is_refused() {
    use vhca_device::checkpoint::{self, RdAtomicResourceStateV2};
    let mut net = Net::new(2);
    let (a, _b) = net.uc_pair(0, 1, &RcOpts::default());
    let good = checkpoint::state_of(net.vf_ref(0), net.now);
    let lim = VfLimits::default();
    let mem = || VecMemory::shared(MEM_SIZE);
    assert!(checkpoint::restore(good.clone(), mem(), Nanos(0), &lim).is_ok());
    let i = good.qps.iter().position(|q| q.qpn == a.qpn).unwrap();
    let mut s = good.clone();
    s.qps[i].req.deadline = Some(Nanos(5));
    assert!(checkpoint::restore(s, mem(), Nanos(0), &lim).is_err());
    let mut s = good.clone();
    s.qps[i]
        .resp
        .resources
        .push(RdAtomicResourceStateV2::Atomic {
            psn: Psn(1),
            orig: 0,
        });
    assert!(checkpoint::restore(s, mem(), Nanos(0), &lim).is_err());
}
