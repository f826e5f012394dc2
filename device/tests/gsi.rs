//! The GSI QP (QP1): fixed number, one per VF, GSI Q_Key only, 256-byte MADs, and carried
//! by a checkpoint.

mod common;
use common::*;
use vhca_device::checkpoint::{self, codec};
use vhca_device::packet::Opcode as O;
use vhca_device::qp::ud::{GSI_QKEY, MAD_LEN};
use vhca_device::{
    Nanos, Psn, QpAttr, QpAttrMask as M, QpState, QpType, Qpn, SendOp, SendWr, UdDest, VecMemory,
    VerbsError, WcStatus,
};

/// The GSI QP of `node`, in RTS the way the kernel's MAD layer brings it up (no port named).
fn gsi_qp(net: &mut Net, node: usize) -> Ep {
    let ep = net.create_qp(node, QpType::Gsi, &RcOpts::default(), None);
    assert_eq!(ep.qpn, Qpn(1), "the GSI QP is QP1");
    let init = QpAttr {
        qp_state: QpState::Init,
        qkey: GSI_QKEY,
        ..QpAttr::default()
    };
    net.modify(&ep, &init, M::STATE | M::PKEY_INDEX | M::QKEY)
        .unwrap();
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        ..QpAttr::default()
    };
    net.modify(&ep, &rtr, M::STATE).unwrap();
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: Psn(7),
        ..QpAttr::default()
    };
    net.modify(&ep, &rts, M::STATE | M::SQ_PSN).unwrap();
    ep
}

#[test]
fn the_gsi_qp_is_qp1_and_a_vf_has_one() {
    let mut net = Net::new(1);
    let first = net.create_qp(0, QpType::Gsi, &RcOpts::default(), None);
    assert_eq!(first.qpn, Qpn(1));
    let ud = net.ud_qp(0, 5, None);
    assert!(ud.qpn.0 >= 17, "ordinary QPs keep their range");
    let init = first_init(&net, &first);
    assert!(matches!(
        net.vf(0).create_qp(init),
        Err(VerbsError::Invalid(_))
    ));
    net.vf(0).destroy_qp(Qpn(1)).unwrap();
    // QP1 is never handed out to an ordinary QP, even once free.
    for _ in 0..3 {
        let q = net.ud_qp(0, 5, None);
        assert_ne!(q.qpn, Qpn(1));
    }
    assert_eq!(net.vf(0).create_qp(init).unwrap(), Qpn(1));
}

fn first_init(net: &Net, ep: &Ep) -> vhca_device::QpInitAttr {
    net.vf_ref(ep.node).qp(ep.qpn).unwrap().init
}

#[test]
fn a_mad_goes_qp1_to_qp1_with_the_gsi_qkey_whatever_the_wr_says() {
    let mut net = Net::new(2);
    let a = gsi_qp(&mut net, 0);
    let b = gsi_qp(&mut net, 1);
    // The WR names another Q_Key; QP1 still sends the GSI one.
    let dest = net.ud_dest(&a, &b, 0x1234);
    let src = net.rbuf(0, MAD_LEN);
    let dst = net.rbuf(1, 40 + MAD_LEN);
    net.fill(&src, &pattern(MAD_LEN as usize, 3));
    net.post_recv(&b, 9, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(src.sge()).ud(dest));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    let r = one(net.recv_wcs(&b));
    assert_eq!(
        (r.wr_id, r.status, r.byte_len, r.src_qp, r.grh),
        (9, WcStatus::Success, 40 + MAD_LEN, Qpn(1), true)
    );
    assert_eq!(r.qpn, Qpn(1));
    assert_eq!(&net.contents(&dst)[40..], &pattern(MAD_LEN as usize, 3)[..]);
    let pkt = &net.log[0].pkt;
    assert_eq!(pkt.bth.opcode, O::UD_SEND_ONLY);
    assert_eq!(pkt.bth.dest_qp, Qpn(1));
    assert_eq!(pkt.bth.pkey, 0xffff);
    let deth = pkt.ext.deth.unwrap();
    assert_eq!((deth.qkey, deth.src_qp), (GSI_QKEY, Qpn(1)));
}

#[test]
fn qp1_accepts_only_the_gsi_qkey() {
    let mut net = Net::new(2);
    // An ordinary UD QP whose own Q_Key is not the GSI one sends to QP1.
    let a = net.ud_qp(0, 0x1111, None);
    let b = gsi_qp(&mut net, 1);
    let dst = net.rbuf(1, 40 + MAD_LEN);
    net.post_recv(&b, 1, vec![dst.sge()]);
    let wrong = net.ud_dest(&a, &b, 0x1111);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"bad").ud(wrong));
    net.run();
    assert!(net.recv_wcs(&b).is_empty());
    assert_eq!(net.vf(1).counters().qkey_violations, 1);
    // The receive is still there for a MAD with the right Q_Key (a Q_Key with the high bit
    // set means "the sender's own", so the sender's own must be the GSI one).
    let g = net.ud_qp(0, GSI_QKEY, None);
    let right = net.ud_dest(&g, &b, GSI_QKEY);
    net.post_send(&g, SendWr::new(2, SendOp::Send).inline(b"ok").ud(right));
    net.run();
    let r = one(net.recv_wcs(&b));
    assert_eq!((r.wr_id, r.byte_len, r.src_qp), (1, 42, g.qpn));
}

#[test]
fn nothing_larger_than_a_mad_is_sent_or_accepted() {
    let mut net = Net::new(2);
    let a = gsi_qp(&mut net, 0);
    let big = net.rbuf(0, MAD_LEN + 4);
    let c = UdDest {
        ah: net.ah(0, 1),
        remote_qpn: Qpn(1),
        remote_qkey: GSI_QKEY,
    };
    let wr = SendWr::new(1, SendOp::Send).sge(big.sge()).ud(c);
    assert!(matches!(
        net.vf(0).post_send(a.qpn, &wr),
        Err(VerbsError::Invalid(_))
    ));
    // A UD QP may send 300 bytes with the GSI Q_Key to QP1: QP1 drops it and counts it.
    let u = net.ud_qp(0, GSI_QKEY, None);
    let b = gsi_qp(&mut net, 1);
    let dst = net.rbuf(1, 1000);
    net.post_recv(&b, 1, vec![dst.sge()]);
    let dest = net.ud_dest(&u, &b, GSI_QKEY);
    let src = net.rbuf(0, 300);
    net.post_send(&u, SendWr::new(2, SendOp::Send).sge(src.sge()).ud(dest));
    let dropped = net.vf(1).counters().rx_dropped;
    net.run();
    assert!(net.recv_wcs(&b).is_empty());
    assert_eq!(net.vf(1).counters().rx_dropped, dropped + 1);
}

#[test]
fn a_checkpoint_carries_qp1_and_refuses_a_hostile_one() {
    let mut net = Net::new(2);
    let a = gsi_qp(&mut net, 0);
    let b = gsi_qp(&mut net, 1);
    let blob = checkpoint::save(net.vf_ref(1), Nanos(0), codec::BINARY);
    let mem = net.vf_ref(1).memory().clone();
    let back = checkpoint::load(&blob, mem, Nanos(0)).unwrap();
    let (pf, slot) = (net.nodes[1].pf, net.nodes[1].vf);
    net.pfs[pf].destroy_vf(slot).unwrap();
    net.pfs[pf].insert_vf(slot, back).unwrap();
    let q = net.vf_ref(1).qp(Qpn(1)).unwrap();
    assert_eq!((q.qp_type(), q.state()), (QpType::Gsi, QpState::Rts));
    // Still one per VF, and still receiving.
    let init = first_init(&net, &b);
    assert!(net.vf(1).create_qp(init).is_err());
    let dst = net.rbuf(1, 40 + MAD_LEN);
    net.post_recv(&b, 4, vec![dst.sge()]);
    let dest = net.ud_dest(&a, &b, 0);
    net.post_send(&a, SendWr::new(1, SendOp::Send).inline(b"mad").ud(dest));
    net.run();
    assert_eq!(one(net.recv_wcs(&b)).byte_len, 43);

    // QP1 that is not a GSI QP, and a GSI QP that is not QP1, are refused.
    let lim = net.vf_ref(1).identity().limits;
    let good = checkpoint::state_of(net.vf_ref(1), Nanos(0));
    let mut s = good.clone();
    s.qps[0].init.qp_type = QpType::Ud;
    assert!(checkpoint::restore(s, VecMemory::shared(1 << 16), Nanos(0), &lim).is_err());
    let mut s = good.clone();
    s.qps[0].qpn = Qpn(17);
    assert!(checkpoint::restore(s, VecMemory::shared(1 << 16), Nanos(0), &lim).is_err());
    let mut s = good;
    let dup = s.qps[0].clone();
    s.qps.push(dup);
    assert!(checkpoint::restore(s, VecMemory::shared(1 << 16), Nanos(0), &lim).is_err());
}
