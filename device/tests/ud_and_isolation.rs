//! UD datagrams, and isolation between VFs.

mod common;
use common::*;
use vhca_device::packet::Opcode as O;
use vhca_device::{Access, MemKey, SendFlags, SendOp, SendWr, Sge, WcOpcode, WcStatus};

#[test]
fn ud_send_puts_a_grh_before_the_payload_and_reports_the_source() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 0x1234, None);
    let b = net.ud_qp(1, 0x1234, None);
    let dest = net.ud_dest(&a, &b, 0x1234);
    let src = net.rbuf(0, 1000);
    let dst = net.rbuf(1, 2000);
    net.fill(&src, &pattern(1000, 1));
    net.post_recv(&b, 5, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()).ud(dest));
    net.run();
    let s = one(net.send_wcs(&a));
    assert_eq!((s.status, s.opcode), (WcStatus::Success, WcOpcode::Send));
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.status, r.byte_len, r.grh),
        (5, WcStatus::Success, 1040, true)
    );
    assert_eq!(r.src_qp, a.qpn);
    assert_eq!(r.src_gid, net.gid(0));
    assert_eq!(r.imm, None);
    let buf = net.contents(&dst);
    assert_eq!(&buf[40..1040], &pattern(1000, 1)[..]);
    // The GRH: IPv6 version, next header 0x1b, SGID and DGID.
    assert_eq!(buf[0] >> 4, 6);
    assert_eq!(buf[6], 0x1b);
    assert_eq!(&buf[8..24], &net.gid(0).0);
    assert_eq!(&buf[24..40], &net.gid(1).0);
    let pkt = &net.log[0].pkt;
    assert_eq!(pkt.bth.opcode, O::UD_SEND_ONLY);
    let deth = pkt.ext.deth.unwrap();
    assert_eq!((deth.qkey, deth.src_qp), (0x1234, a.qpn));
    assert_eq!(pkt.bth.dest_qp, b.qpn);
    assert!(
        net.log.iter().all(|s| s.op() != O::RC_ACK),
        "UD is not acknowledged"
    );
}

#[test]
fn ud_send_with_imm_and_solicited() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 9, None);
    let b = net.ud_qp(1, 9, None);
    let dest = net.ud_dest(&a, &b, 9);
    let dst = net.rbuf(1, 100);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.vf(1).req_notify_cq(b.rcq, true).unwrap();
    net.post_send(
        &a,
        SendWr::new(1, SendOp::SendWithImm { imm: 0xabcd })
            .flags(SendFlags::SIGNALED | SendFlags::SOLICITED)
            .inline(b"imm")
            .ud(dest),
    );
    net.run();
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.byte_len, r.imm, r.solicited), (43, Some(0xabcd), true));
    assert_eq!(net.read(1, dst.addr + 40, 3), b"imm");
    assert_eq!(net.vf(1).poll_cq_event(), Some(b.rcq));
    assert_eq!(net.log[0].op(), O::UD_SEND_ONLY_IMM);
}

#[test]
fn ud_qkey_mismatch_is_dropped_and_counted() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 1, None);
    let b = net.ud_qp(1, 2, None);
    let dest = net.ud_dest(&a, &b, 1);
    let dst = net.rbuf(1, 100);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"x").ud(dest));
    net.run();
    assert_eq!(
        one(net.send_wcs(&a)).status,
        WcStatus::Success,
        "UD sends complete on the wire"
    );
    assert!(net.recv_wcs(&b).is_empty());
    assert_eq!(net.vf(1).counters().qkey_violations, 1);
    // The receive WQE was not consumed: a matching Q_Key still lands in it.
    let good = net.ud_dest(&a, &b, 2);
    net.post_send(&a, SendWr::new(2, SendOp::Send).inline(b"y").ud(good));
    net.run();
    assert_eq!(one(net.recv_wcs(&b)).wr_id, 1);
    // A Q_Key with the high bit set means "use my QP's Q_Key" (here 1: mismatch again).
    let own = net.ud_dest(&a, &b, 0x8000_0000);
    net.post_send(&a, SendWr::new(3, SendOp::Send).inline(b"z").ud(own));
    net.run();
    assert_eq!(net.vf(1).counters().qkey_violations, 2);
}

#[test]
fn ud_without_a_receive_is_dropped_silently() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 1, None);
    let b = net.ud_qp(1, 1, None);
    let dest = net.ud_dest(&a, &b, 1);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"x").ud(dest));
    net.run();
    assert_eq!(net.vf(1).counters().ud_no_recv, 1);
    assert_eq!(net.log.len(), 1, "no RNR for UD");
}

#[test]
fn ud_with_an_srq_and_many_senders() {
    let mut net = Net::new(3);
    let pd = net.nodes[2].pd;
    let srq = net.vf(2).create_srq(pd, 8, 1).unwrap();
    let c = net.ud_qp(2, 5, Some(srq));
    let dst = net.rbuf(2, 8 * 100);
    for i in 0..4u32 {
        net.vf(2)
            .post_srq_recv(
                srq,
                vhca_device::RecvWr {
                    wr_id: i as u64,
                    sgl: vec![dst.sge_at(100 * i, 100)],
                },
            )
            .unwrap();
    }
    let a = net.ud_qp(0, 5, None);
    let b = net.ud_qp(1, 5, None);
    let da = net.ud_dest(&a, &c, 5);
    let db = net.ud_dest(&b, &c, 5);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"from a").ud(da));
    net.post_send(&b, SendWr::new(1, SendOp::Send).inline(b"from b").ud(db));
    net.run();
    let r = net.recv_wcs(&c);
    assert_eq!(r.len(), 2);
    let srcs: Vec<_> = r.iter().map(|w| (w.src_gid, w.src_qp)).collect();
    assert!(srcs.contains(&(net.gid(0), a.qpn)));
    assert!(srcs.contains(&(net.gid(1), b.qpn)));
}

#[test]
fn rc_packets_for_a_ud_qp_and_ud_packets_for_an_rc_qp_are_dropped() {
    let mut net = Net::new(2);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    let u = net.ud_qp(0, 1, None);
    let dest = net.ud_dest(&u, &b, 1);
    net.post_recv(&b, 1, vec![]);
    net.post_send(&u, SendWr::new(1, SendOp::Send).ud(dest));
    net.run();
    assert!(net.recv_wcs(&b).is_empty());
    assert_eq!(net.vf(1).counters().rx_dropped, 1);
    let _ = a;
}

#[test]
fn rc_packets_from_a_stranger_are_dropped() {
    // A third VF sends to b's QPN: b only listens to its connected peer.
    let mut net = Net::new(3);
    let (_a, b) = net.rc_pair(0, 1, &RcOpts::default());
    let (c, _d) = net.rc_pair(2, 1, &RcOpts::default());
    net.post_recv(&b, 1, vec![]);
    net.set_hook(move |s| {
        let mut p = s.pkt.clone();
        if s.from == 2 {
            p.bth.dest_qp = b.qpn; // redirect c's request to b's QP
        }
        vec![p]
    });
    net.post_send(&c, SendWr::new(1, SendOp::Send));
    net.run_for(1_000_000);
    assert!(net.recv_wcs(&b).is_empty());
    assert!(net.vf(1).counters().rx_dropped >= 1);
}

#[test]
fn a_vf_never_reaches_another_vfs_memory() {
    // Three VFs on one PF: a and b are connected; c keeps a secret in a registered MR.
    let mut net = Net::with_layout(&[3]);
    let (a, _b) = net.rc_pair(0, 1, &RcOpts::default());
    let _pad1 = net.rbuf(2, 64);
    let _pad2 = net.rbuf(2, 64);
    let secret = net.rbuf(2, 64);
    net.fill(&secret, &[0x5e; 64]);
    let local = net.rbuf(0, 64);
    assert!(
        net.vf(1).mr(secret.key).is_none(),
        "c's key names nothing in b"
    );
    // a reads with c's rkey through b: the responder looks it up in b's table only.
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Read {
                remote_addr: secret.addr,
                rkey: secret.key,
            },
        )
        .sge(local.sge()),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemAccessErr);
    assert_eq!(net.contents(&local), vec![0; 64]);
    // A local key of another VF fails as a local protection error.
    let mut net = Net::with_layout(&[3]);
    let (a, b) = net.rc_pair(0, 1, &RcOpts::default());
    let _p = net.rbuf(2, 64);
    let secret = net.rbuf(2, 64);
    net.fill(&secret, &[0x5e; 64]);
    let dst = net.rbuf(1, 64);
    net.post_recv(&b, 1, vec![dst.sge()]);
    net.post_send(
        &a,
        SendWr::new(1, SendOp::Send).sge(Sge {
            addr: secret.addr,
            len: 64,
            lkey: secret.key,
        }),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocProtErr);
    assert_eq!(net.contents(&dst), vec![0; 64]);
    // Same addresses, different memories: a WRITE into b at c's secret address changes only b.
    let mut net = Net::with_layout(&[3]);
    let (a, _b) = net.rc_pair(0, 1, &RcOpts::default());
    let in_b = net.rbuf(1, 64);
    let in_c = net.rbuf(2, 64);
    assert_eq!(in_b.addr, in_c.addr);
    net.fill(&in_c, &[0x5e; 64]);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Write {
                remote_addr: in_b.addr,
                rkey: in_b.key,
            },
        )
        .inline(&[1; 64]),
    );
    net.run();
    assert_eq!(net.contents(&in_b), vec![1; 64]);
    assert_eq!(net.contents(&in_c), vec![0x5e; 64]);
}

#[test]
fn mrs_of_another_pd_are_refused() {
    let mut net = Net::new(2);
    let (a, _b) = net.rc_pair(0, 1, &RcOpts::default());
    let pd2 = net.vf(1).alloc_pd().unwrap();
    let other = net.buf_in(1, pd2, 64, Access::LOCAL_WRITE | Access::REMOTE_WRITE);
    net.post_send(
        &a,
        SendWr::new(
            1,
            SendOp::Write {
                remote_addr: other.addr,
                rkey: other.key,
            },
        )
        .inline(&[1]),
    );
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::RemAccessErr);
    assert_eq!(net.contents(&other), vec![0; 64]);
    let _ = MemKey(0);
}
