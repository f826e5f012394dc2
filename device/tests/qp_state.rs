//! QP state transitions through `Vf::modify_qp`, query_qp, SQD drain and UD SQE recovery.

mod common;
use common::*;
use vhca_device::{
    Access, AhAttr, AsyncEvent, Gid, Mtu, Psn, QpAttr, QpAttrMask as M, QpState, QpType, Qpn,
    SendOp, SendWr, VecMemory, VerbsError, Vf, VfIdentity, WcStatus,
};

fn events(net: &mut Net, node: usize) -> Vec<AsyncEvent> {
    std::iter::from_fn(|| net.vf(node).poll_async_event()).collect()
}

const INIT_MASK: M = M::STATE
    .union(M::PKEY_INDEX)
    .union(M::PORT)
    .union(M::ACCESS_FLAGS);

fn init_attr() -> QpAttr {
    QpAttr {
        qp_state: QpState::Init,
        qp_access_flags: Access::REMOTE_WRITE,
        ..QpAttr::default()
    }
}

#[test]
fn rc_transitions_need_exactly_their_attributes() {
    let mut net = Net::new(2);
    let opts = RcOpts::default();
    let a = net.create_qp(0, QpType::Rc, &opts, None);
    let b = net.create_qp(1, QpType::Rc, &opts, None);
    // RESET → INIT: missing ACCESS_FLAGS, extra QKEY.
    assert!(matches!(
        net.modify(&a, &init_attr(), INIT_MASK - M::ACCESS_FLAGS),
        Err(VerbsError::Invalid(_))
    ));
    assert!(matches!(
        net.modify(&a, &init_attr(), INIT_MASK | M::QKEY),
        Err(VerbsError::Invalid(_))
    ));
    assert_eq!(
        net.state(&a),
        QpState::Reset,
        "a refused modify changes nothing"
    );
    // Skipping states is not a transition.
    let rts = Net::rts_attr(1, &opts);
    assert!(matches!(
        net.modify(&a, &rts, Net::RTS_MASK),
        Err(VerbsError::BadState(_))
    ));
    net.modify(&a, &init_attr(), INIT_MASK).unwrap();
    // INIT → INIT with optional attributes only.
    net.modify(
        &a,
        &QpAttr {
            qp_access_flags: Access::REMOTE_READ,
            ..QpAttr::default()
        },
        M::ACCESS_FLAGS,
    )
    .unwrap();
    assert_eq!(
        net.vf(0).query_qp(a.qpn).unwrap().0.qp_access_flags,
        Access::REMOTE_READ
    );
    // INIT → RTR: each required bit missing in turn.
    let rtr = net.rtr_attr(&b, 5, &opts);
    for bit in [
        M::AV,
        M::PATH_MTU,
        M::DEST_QPN,
        M::RQ_PSN,
        M::MAX_DEST_RD_ATOMIC,
        M::MIN_RNR_TIMER,
    ] {
        assert!(
            net.modify(&a, &rtr, Net::RTR_MASK - bit).is_err(),
            "{bit:?} missing"
        );
    }
    assert!(
        net.modify(&a, &rtr, Net::RTR_MASK | M::SQ_PSN).is_err(),
        "SQ_PSN belongs to RTS"
    );
    assert!(net.modify(&a, &rtr, Net::RTR_MASK | M::TIMEOUT).is_err());
    assert!(
        net.modify(
            &a,
            &QpAttr {
                cur_qp_state: QpState::Rtr,
                ..rtr
            },
            Net::RTR_MASK | M::CUR_STATE
        )
        .is_err(),
        "cur_qp_state mismatch"
    );
    net.modify(&a, &rtr, Net::RTR_MASK).unwrap();
    assert_eq!(net.state(&a), QpState::Rtr);
    // RTR → RTS: each required bit missing in turn.
    for bit in [
        M::SQ_PSN,
        M::TIMEOUT,
        M::RETRY_CNT,
        M::RNR_RETRY,
        M::MAX_QP_RD_ATOMIC,
    ] {
        assert!(
            net.modify(&a, &rts, Net::RTS_MASK - bit).is_err(),
            "{bit:?} missing"
        );
    }
    assert!(net.modify(&a, &rts, Net::RTS_MASK | M::DEST_QPN).is_err());
    net.modify(&a, &rts, Net::RTS_MASK).unwrap();
    assert_eq!(net.state(&a), QpState::Rts);
    // RTS → RTS may change MIN_RNR_TIMER but not the path MTU.
    net.modify(
        &a,
        &QpAttr {
            min_rnr_timer: 3,
            ..rts
        },
        M::MIN_RNR_TIMER,
    )
    .unwrap();
    assert!(net.modify(&a, &rts, M::PATH_MTU).is_err());
    assert_eq!(net.vf(0).query_qp(a.qpn).unwrap().0.min_rnr_timer, 3);
    // Back to RTR is not allowed; ERR and RESET always are.
    assert!(net
        .modify(
            &a,
            &QpAttr {
                qp_state: QpState::Rtr,
                ..rtr
            },
            M::STATE
        )
        .is_err());
    net.modify(
        &a,
        &QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        },
        M::STATE,
    )
    .unwrap();
    assert_eq!(net.state(&a), QpState::Err);
    assert!(net.modify(&a, &rts, Net::RTS_MASK).is_err(), "ERR → RTS");
    net.modify(
        &a,
        &QpAttr {
            qp_state: QpState::Reset,
            ..QpAttr::default()
        },
        M::STATE,
    )
    .unwrap();
    assert_eq!(net.state(&a), QpState::Reset);
}

#[test]
fn bad_attribute_values_are_refused() {
    // A VF whose port runs at 1024.
    let mut id = VfIdentity::new(vhca_device::Mac([2, 0, 0, 0, 0, 1]), [10, 0, 0, 1]);
    id.port_mtu = Mtu::Mtu1024;
    let mut vf = Vf::new(id, VecMemory::shared(1 << 16));
    let pd = vf.alloc_pd().unwrap();
    let cq = vf.create_cq(16).unwrap();
    let qpn = vf
        .create_qp(vhca_device::QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: Default::default(),
            sq_sig_all: false,
        })
        .unwrap();
    assert!(vf
        .modify_qp(
            qpn,
            &QpAttr {
                port_num: 2,
                ..init_attr()
            },
            INIT_MASK
        )
        .is_err());
    assert!(vf
        .modify_qp(
            qpn,
            &QpAttr {
                pkey_index: 1,
                ..init_attr()
            },
            INIT_MASK
        )
        .is_err());
    vf.modify_qp(qpn, &init_attr(), INIT_MASK).unwrap();
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        ah_attr: AhAttr {
            dgid: Gid::from_ipv4([10, 0, 0, 2]),
            ..AhAttr::default()
        },
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: Qpn(20),
        rq_psn: Psn(0),
        ..QpAttr::default()
    };
    let bad_rtr = [
        (
            "path_mtu above the port MTU",
            QpAttr {
                path_mtu: Mtu::Mtu2048,
                ..rtr
            },
        ),
        (
            "dest_qp_num 0",
            QpAttr {
                dest_qp_num: Qpn(0),
                ..rtr
            },
        ),
        (
            "dest_qp_num over 24 bits",
            QpAttr {
                dest_qp_num: Qpn(1 << 24),
                ..rtr
            },
        ),
        (
            "zero GID",
            QpAttr {
                ah_attr: AhAttr::default(),
                ..rtr
            },
        ),
        (
            "rq_psn over 24 bits",
            QpAttr {
                rq_psn: Psn(1 << 24),
                ..rtr
            },
        ),
        (
            "min_rnr_timer 32",
            QpAttr {
                min_rnr_timer: 32,
                ..rtr
            },
        ),
        (
            "max_dest_rd_atomic 129",
            QpAttr {
                max_dest_rd_atomic: 129,
                ..rtr
            },
        ),
    ];
    for (name, attr) in bad_rtr {
        assert!(
            matches!(
                vf.modify_qp(qpn, &attr, Net::RTR_MASK),
                Err(VerbsError::Invalid(_))
            ),
            "{name}"
        );
        assert_eq!(vf.qp(qpn).unwrap().state(), QpState::Init, "{name}");
    }
    vf.modify_qp(qpn, &rtr, Net::RTR_MASK).unwrap();
    let rts = Net::rts_attr(0, &RcOpts::default());
    let bad_rts = [
        (
            "retry_cnt 8",
            QpAttr {
                retry_cnt: 8,
                ..rts
            },
        ),
        (
            "rnr_retry 8",
            QpAttr {
                rnr_retry: 8,
                ..rts
            },
        ),
        ("timeout 32", QpAttr { timeout: 32, ..rts }),
        (
            "sq_psn over 24 bits",
            QpAttr {
                sq_psn: Psn(1 << 24),
                ..rts
            },
        ),
        (
            "max_rd_atomic 129",
            QpAttr {
                max_rd_atomic: 129,
                ..rts
            },
        ),
    ];
    for (name, attr) in bad_rts {
        assert!(
            matches!(
                vf.modify_qp(qpn, &attr, Net::RTS_MASK),
                Err(VerbsError::Invalid(_))
            ),
            "{name}"
        );
        assert_eq!(vf.qp(qpn).unwrap().state(), QpState::Rtr, "{name}");
    }
    // A refused modify must not leave half-applied attributes behind.
    assert_eq!(
        vf.query_qp(qpn).unwrap().0.retry_cnt,
        QpAttr::default().retry_cnt
    );
    vf.modify_qp(
        qpn,
        &QpAttr {
            retry_cnt: 7,
            ..rts
        },
        Net::RTS_MASK,
    )
    .unwrap();
    assert!(
        vf.modify_qp(Qpn(999), &rts, Net::RTS_MASK).is_err(),
        "unknown QP"
    );
}

#[test]
fn query_qp_reports_what_was_set_and_the_live_psns() {
    let mut net = Net::new(2);
    let opts = RcOpts {
        mtu: Mtu::Mtu2048,
        timeout: 9,
        retry_cnt: 5,
        rnr_retry: 3,
        min_rnr_timer: 7,
        max_rd_atomic: 4,
        max_dest_rd_atomic: 8,
        ..RcOpts::default()
    };
    let a = net.create_qp(0, QpType::Rc, &opts, None);
    let b = net.create_qp(1, QpType::Rc, &opts, None);
    let (attr, init) = net.vf(0).query_qp(a.qpn).unwrap();
    assert_eq!(
        (attr.qp_state, init.qp_type, init.cap),
        (QpState::Reset, QpType::Rc, opts.cap)
    );
    net.rc_init(&a, opts.access);
    net.rc_init(&b, opts.access);
    net.rc_rtr(&a, &b, 0x42, &opts);
    let (attr, _) = net.vf(0).query_qp(a.qpn).unwrap();
    assert_eq!(attr.qp_state, QpState::Rtr);
    assert_eq!(attr.rq_psn, Psn(0x42));
    assert_eq!(attr.sq_psn, Psn(0), "no send PSN has been set yet in RTR");
    assert_eq!(
        (
            attr.path_mtu,
            attr.dest_qp_num,
            attr.min_rnr_timer,
            attr.max_dest_rd_atomic
        ),
        (Mtu::Mtu2048, b.qpn, 7, 8)
    );
    assert_eq!(attr.ah_attr.dgid, net.gid(1));
    net.rc_rtr(&b, &a, 0x77, &opts);
    net.rc_rts(&a, 0x77, &opts);
    net.rc_rts(&b, 0x42, &opts);
    let (attr, _) = net.vf(0).query_qp(a.qpn).unwrap();
    assert_eq!(
        (attr.qp_state, attr.cur_qp_state),
        (QpState::Rts, QpState::Rts)
    );
    assert_eq!(
        (
            attr.sq_psn,
            attr.timeout,
            attr.retry_cnt,
            attr.rnr_retry,
            attr.max_rd_atomic
        ),
        (Psn(0x77), 9, 5, 3, 4)
    );
    net.post_recv(&b, 1, vec![]);
    net.post_send(&a, SendWr::new(1, SendOp::Send));
    net.run();
    assert_eq!(net.vf(0).query_qp(a.qpn).unwrap().0.sq_psn, Psn(0x78));
    assert_eq!(net.vf(1).query_qp(b.qpn).unwrap().0.rq_psn, Psn(0x78));
    assert!(net.vf(0).query_qp(Qpn(4242)).is_err());
}

#[test]
fn sqd_drains_outstanding_work_then_raises_sq_drained() {
    let mut net = Net::new(2);
    let opts = RcOpts::default();
    let (a, b) = net.rc_pair(0, 1, &opts);
    let remote = net.rbuf(1, 64);
    // Hold the ACKs back for the first round.
    for i in 0..3 {
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
    net.step();
    assert_eq!(net.log.len(), 3);
    let sqd = QpAttr {
        qp_state: QpState::Sqd,
        en_sqd_async_notify: true,
        ..QpAttr::default()
    };
    net.modify(&a, &sqd, M::STATE | M::EN_SQD_ASYNC_NOTIFY)
        .unwrap();
    assert_eq!(net.state(&a), QpState::Sqd);
    assert_eq!(
        events(&mut net, 0),
        vec![],
        "three WRITEs are still unacknowledged"
    );
    assert!(net.vf(0).query_qp(a.qpn).unwrap().0.sq_draining);
    // Posted in SQD: queued, not started.
    net.post_send(
        &a,
        SendWr::new(
            3,
            SendOp::Write {
                remote_addr: remote.addr,
                rkey: remote.key,
            },
        )
        .inline(&[3]),
    );
    net.run();
    assert_eq!(
        net.send_wcs(&a).iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(events(&mut net, 0), vec![AsyncEvent::SqDrained(a.qpn)]);
    assert!(!net.vf(0).query_qp(a.qpn).unwrap().0.sq_draining);
    assert_eq!(
        net.log.iter().filter(|s| s.from == 0).count(),
        3,
        "nothing new started in SQD"
    );
    // The responder side keeps working in SQD.
    net.post_recv(&a, 1, vec![]);
    net.post_send(&b, SendWr::new(1, SendOp::Send));
    net.run();
    assert_eq!(one(net.recv_wcs(&a)).status, WcStatus::Success);
    // SQD → RTS resumes.
    net.modify(
        &a,
        &QpAttr {
            qp_state: QpState::Rts,
            ..QpAttr::default()
        },
        M::STATE,
    )
    .unwrap();
    net.run();
    assert_eq!(one(net.send_wcs(&a)).wr_id, 3);
    assert_eq!(net.read(1, remote.addr, 1), vec![3]);
    // SQD on an idle QP drains at once; without EN_SQD_ASYNC_NOTIFY no event.
    net.modify(&a, &sqd, M::STATE | M::EN_SQD_ASYNC_NOTIFY)
        .unwrap();
    assert_eq!(events(&mut net, 0), vec![AsyncEvent::SqDrained(a.qpn)]);
    net.modify(
        &a,
        &QpAttr {
            qp_state: QpState::Rts,
            ..QpAttr::default()
        },
        M::STATE,
    )
    .unwrap();
    net.modify(
        &a,
        &QpAttr {
            qp_state: QpState::Sqd,
            ..QpAttr::default()
        },
        M::STATE,
    )
    .unwrap();
    // en_sqd_async_notify was set before and stays set unless changed.
    assert_eq!(events(&mut net, 0), vec![AsyncEvent::SqDrained(a.qpn)]);
}

#[test]
fn ud_sqe_back_to_rts() {
    let mut net = Net::new(2);
    let a = net.ud_qp(0, 7, None);
    let b = net.ud_qp(1, 7, None);
    let dest = net.ud_dest(&a, &b, 7);
    let big = net.rbuf(0, 5000);
    net.post_send(&a, SendWr::new(1, SendOp::Send).sge(big.sge()).ud(dest));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::LocLenErr);
    assert_eq!(net.state(&a), QpState::Sqe);
    // Posting in SQE flushes.
    net.post_send(&a, SendWr::new(2, SendOp::Send).ud(dest));
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::WrFlushErr);
    // The receive side still works in SQE.
    let rbuf = net.rbuf(0, 100);
    net.post_recv(&a, 1, vec![rbuf.sge()]);
    let back = net.ud_dest(&b, &a, 7);
    net.post_send(&b, SendWr::new(1, SendOp::Send).inline(b"hi").ud(back));
    net.run();
    assert_eq!(one(net.recv_wcs(&a)).byte_len, 42);
    net.modify(
        &a,
        &QpAttr {
            qp_state: QpState::Rts,
            ..QpAttr::default()
        },
        M::STATE,
    )
    .unwrap();
    assert_eq!(net.state(&a), QpState::Rts);
    let dst = net.rbuf(1, 100);
    net.post_recv(&b, 5, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(3, SendOp::Send).inline(b"again").ud(dest));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).byte_len, 45);
}

#[test]
fn posting_needs_the_right_state() {
    let mut net = Net::new(2);
    let opts = RcOpts::default();
    let a = net.create_qp(0, QpType::Rc, &opts, None);
    let b = net.create_qp(1, QpType::Rc, &opts, None);
    let wr = SendWr::new(1, SendOp::Send);
    let rwr = vhca_device::RecvWr {
        wr_id: 1,
        sgl: vec![],
    };
    assert!(matches!(
        net.vf(0).post_send(a.qpn, &wr),
        Err(VerbsError::BadState(_))
    ));
    assert!(matches!(
        net.vf(0).post_recv(a.qpn, rwr.clone()),
        Err(VerbsError::BadState(_))
    ));
    net.rc_init(&a, opts.access);
    net.vf(0).post_recv(a.qpn, rwr.clone()).unwrap();
    assert!(net.vf(0).post_send(a.qpn, &wr).is_err());
    net.rc_init(&b, opts.access);
    net.rc_rtr(&a, &b, 0, &opts);
    assert!(net.vf(0).post_send(a.qpn, &wr).is_err());
    // Queue depth is enforced.
    let mut small = opts.clone();
    small.cap.max_send_wr = 2;
    small.cap.max_recv_wr = 1;
    let (c, _d) = net.rc_pair(0, 1, &small);
    net.vf(0).post_recv(c.qpn, rwr.clone()).unwrap();
    assert_eq!(net.vf(0).post_recv(c.qpn, rwr), Err(VerbsError::QueueFull));
    net.vf(0).post_send(c.qpn, &wr).unwrap();
    net.vf(0).post_send(c.qpn, &wr).unwrap();
    assert_eq!(net.vf(0).post_send(c.qpn, &wr), Err(VerbsError::QueueFull));
    // Too many SGEs.
    let mut wr = SendWr::new(1, SendOp::Send);
    wr.sgl = vec![Default::default(); 9];
    assert!(net.vf(1).post_send(_d.qpn, &wr).is_err());
}

#[test]
fn reset_and_reconnect_reuses_a_qp() {
    let mut net = Net::new(2);
    let opts = RcOpts::default();
    let (a, b) = net.rc_pair(0, 1, &opts);
    net.post_recv(&b, 1, vec![]);
    net.post_send(&a, SendWr::new(1, SendOp::Send));
    net.run();
    assert_eq!(net.send_wcs(&a).len(), 1);
    assert_eq!(net.recv_wcs(&b).len(), 1);
    for ep in [&a, &b] {
        net.modify(
            ep,
            &QpAttr {
                qp_state: QpState::Reset,
                ..QpAttr::default()
            },
            M::STATE,
        )
        .unwrap();
    }
    let opts2 = RcOpts {
        psn_a: 0xabc,
        psn_b: 0xdef,
        mtu: Mtu::Mtu256,
        ..opts
    };
    net.connect(&a, &b, &opts2);
    let dst = net.rbuf(1, 600);
    let src = net.rbuf(0, 600);
    net.fill(&src, &pattern(600, 3));
    net.post_recv(&b, 2, vec![dst.sge()]);
    net.post_send(&a, SendWr::new(2, SendOp::Send).sge(src.sge()));
    net.run();
    assert_eq!(one(net.send_wcs(&a)).status, WcStatus::Success);
    assert_eq!(one(net.recv_wcs(&b)).wr_id, 2);
    assert_eq!(net.contents(&dst), pattern(600, 3));
    assert_eq!(
        net.log.iter().rev().find(|s| s.from == 0).unwrap().psn(),
        0xabc + 2
    );
}
