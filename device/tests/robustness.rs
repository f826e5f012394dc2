//! Hostile input never panics the device: random packets against live QPs, and random
//! sequences of verbs commands with random arguments.

mod common;
use common::*;
use proptest::prelude::*;
use vhca_device::packet::{
    Aeth, AtomicAckEth, AtomicEth, Bth, Deth, ExtHeaders, Feth, Opcode, Packet, Payload, Reth,
    Syndrome,
};
use vhca_device::{
    Access, AhAttr, AhHandle, CqHandle, Gid, MemKey, Msn, Mtu, Nanos, PdHandle, Psn, QpAttr,
    QpAttrMask, QpCap, QpInitAttr, QpState, QpType, Qpn, RecvWr, SendFlags, SendOp, SendWr, Sge,
    SrqHandle, UdDest,
};

/// Opcodes worth hitting: every one vhca implements, plus some it does not.
fn opcode() -> impl Strategy<Value = Opcode> {
    prop_oneof![
        8 => (0u8..=0x17).prop_map(Opcode),
        2 => prop_oneof![Just(0x64u8), Just(0x65)].prop_map(Opcode),
        1 => any::<u8>().prop_map(Opcode),
    ]
}

/// A value that is sometimes one of `good`, sometimes anything.
fn near<T: Clone + std::fmt::Debug + 'static>(
    good: Vec<T>,
    any: BoxedStrategy<T>,
) -> BoxedStrategy<T> {
    if good.is_empty() {
        return any;
    }
    prop_oneof![3 => proptest::sample::select(good), 1 => any].boxed()
}

#[derive(Clone, Debug)]
struct Live {
    gid: Gid,
    peer_gid: Gid,
    qpns: Vec<u32>,
    psns: Vec<u32>,
    keys: Vec<u32>,
    addrs: Vec<u64>,
}

fn packet(l: Live) -> impl Strategy<Value = Packet> {
    let bth = (
        opcode(),
        any::<(bool, bool, bool)>(),
        0u8..4,
        prop_oneof![9 => Just(0u8), 1 => 0u8..16],
        prop_oneof![9 => Just(0xffffu16), 1 => any::<u16>()],
        near(l.qpns.clone(), (0u32..1 << 24).boxed()),
        near(l.psns.clone(), (0u32..1 << 24).boxed()),
    );
    let va = near(l.addrs.clone(), any::<u64>().boxed());
    let key = near(l.keys.clone(), any::<u32>().boxed());
    let len = prop_oneof![0u32..10_000, any::<u32>()];
    let reth = (va.clone(), key.clone(), len).prop_map(|(va, k, len)| Reth {
        va,
        rkey: MemKey(k),
        len,
    });
    let aeth = (any::<u8>(), 0u32..1 << 24).prop_map(|(s, m)| Aeth {
        syndrome: Syndrome::from_byte(s),
        msn: Msn(m),
    });
    let atomic =
        (va, key.clone(), any::<u64>(), any::<u64>()).prop_map(|(va, k, s, c)| AtomicEth {
            va,
            rkey: MemKey(k),
            swap_add: s,
            compare: c,
        });
    let deth = (any::<u32>(), 0u32..1 << 24).prop_map(|(q, s)| Deth {
        qkey: q,
        src_qp: Qpn(s),
    });
    let ext = (
        proptest::bool::weighted(0.85), // follow the opcode's layout (mostly) or pick headers at random
        proptest::option::of(reth),
        proptest::option::of(aeth),
        proptest::option::of(atomic),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(key),
        proptest::option::of(deth),
    );
    let payload_len = prop_oneof![4 => 0usize..300, 2 => 0usize..4200, 1 => Just(256usize), 1 => Just(1024usize), 1 => Just(4096usize)];
    let gids = prop_oneof![9 => Just(l.peer_gid), 1 => any::<[u8; 16]>().prop_map(Gid)];
    let dst = prop_oneof![19 => Just(l.gid), 1 => any::<[u8; 16]>().prop_map(Gid)];
    (bth, ext, payload_len, any::<u8>(), gids, dst).prop_map(
        move |(
            (op, (se, mig, ack_req), pad, tver, pkey, qpn, psn),
            (follow, reth, aeth, atomic, aack, imm, ieth, deth),
            plen,
            fill,
            src,
            dst,
        )| {
            let mut ext = ExtHeaders {
                reth,
                aeth,
                atomic,
                atomic_ack: aack.map(|orig| AtomicAckEth { orig }),
                imm,
                ieth: ieth.map(MemKey),
                deth,
                // A FETH from the FLUSH opcode's own arm below: random bits of its two fields.
                feth: None,
            };
            if follow {
                if let Some(layout) = op.layout() {
                    // Keep generated headers where the layout has them, fill missing ones.
                    let pick = |want: bool, v: bool| want && v;
                    if !pick(layout.reth, ext.reth.is_some()) {
                        ext.reth = layout.reth.then_some(Reth {
                            va: 0x1000,
                            rkey: MemKey(0x101),
                            len: plen as u32,
                        });
                    }
                    if !pick(layout.aeth, ext.aeth.is_some()) {
                        ext.aeth = layout.aeth.then_some(Aeth {
                            syndrome: Syndrome::ACK_UNLIMITED,
                            msn: Msn(0),
                        });
                    }
                    if !pick(layout.atomic, ext.atomic.is_some()) {
                        ext.atomic = layout.atomic.then_some(AtomicEth {
                            va: 0x1000,
                            rkey: MemKey(0x101),
                            swap_add: 1,
                            compare: 0,
                        });
                    }
                    if !pick(layout.atomic_ack, ext.atomic_ack.is_some()) {
                        ext.atomic_ack = layout.atomic_ack.then_some(AtomicAckEth { orig: 0 });
                    }
                    if !pick(layout.imm, ext.imm.is_some()) {
                        ext.imm = layout.imm.then_some(0);
                    }
                    if !pick(layout.ieth, ext.ieth.is_some()) {
                        ext.ieth = layout.ieth.then_some(MemKey(0x101));
                    }
                    if layout.feth {
                        ext.feth = Some(Feth {
                            placement: (psn & 0xf) as u8,
                            selectivity: ((psn >> 4) & 3) as u8,
                        });
                    }
                    if !pick(layout.deth, ext.deth.is_some()) {
                        ext.deth = layout.deth.then_some(Deth {
                            qkey: 0x11,
                            src_qp: Qpn(17),
                        });
                    }
                }
            }
            let plen = if follow && op.layout().is_some_and(|l| !l.payload) {
                0
            } else {
                plen
            };
            let mut bth = Bth::new(op, Qpn(qpn), Psn(psn));
            bth.se = se;
            bth.mig = mig;
            bth.ack_req = ack_req;
            bth.pad = pad;
            bth.tver = tver;
            bth.pkey = pkey;
            Packet {
                src_gid: src,
                dst_gid: dst,
                src_port: 0xc000,
                bth,
                ext,
                payload: Payload::Bytes(vec![fill; plen]),
            }
        },
    )
}

/// Two VFs with an RC pair (send and receive work queued and some in flight) and UD QPs.
fn live_net(mtu: Mtu) -> (Net, Live, Ep, Ep) {
    let mut net = Net::new(2);
    let opts = RcOpts {
        mtu,
        timeout: 8,
        retry_cnt: 3,
        rnr_retry: 2,
        max_rd_atomic: 4,
        max_dest_rd_atomic: 4,
        ..RcOpts::default()
    };
    let (a, b) = net.rc_pair(0, 1, &opts);
    let ua = net.ud_qp(0, 0x11, None);
    let ub = net.ud_qp(1, 0x11, None);
    let ba = net.rbuf(0, 64 * 1024);
    let bb = net.rbuf(1, 64 * 1024);
    for i in 0..4u32 {
        net.post_recv(&a, i as u64, vec![ba.sge_at(8192 * i, 8192)]);
        net.post_recv(&b, i as u64, vec![bb.sge_at(8192 * i, 8192)]);
        net.post_recv(&ub, i as u64, vec![bb.sge_at(40000 + 4200 * i, 4200)]);
    }
    net.post_send(&b, SendWr::new(1, SendOp::Send).sge(bb.sge_at(0, 5000)));
    net.post_send(
        &b,
        SendWr::new(
            2,
            SendOp::Read {
                remote_addr: ba.addr,
                rkey: ba.key,
            },
        )
        .sge(bb.sge_at(0, 3000)),
    );
    net.post_send(
        &b,
        SendWr::new(
            3,
            SendOp::FetchAdd {
                remote_addr: ba.addr,
                rkey: ba.key,
                add: 1,
            },
        )
        .sge(bb.sge_at(0, 8)),
    );
    net.post_send(
        &b,
        SendWr::new(
            4,
            SendOp::Write {
                remote_addr: ba.addr,
                rkey: ba.key,
            },
        )
        .sge(bb.sge_at(0, 3000)),
    );
    let dest = net.ud_dest(&ub, &ua, 0x11);
    net.post_send(
        &ub,
        SendWr::new(5, SendOp::Send).sge(bb.sge_at(0, 100)).ud(dest),
    );
    // Put b's requests on the wire, but do not deliver a's answers yet.
    net.set_hook(|_| vec![]);
    net.step();
    net.clear_hook();
    let live = Live {
        gid: net.gid(1),
        peer_gid: net.gid(0),
        qpns: vec![b.qpn.0, ub.qpn.0, 0, 1, 99],
        psns: vec![
            opts.psn_a,
            opts.psn_a,
            opts.psn_a,
            opts.psn_a + 1,
            opts.psn_a.wrapping_sub(1),
            opts.psn_b,
            opts.psn_b + 1,
            opts.psn_b + 3,
            opts.psn_b + 5,
            opts.psn_b + 6,
        ],
        keys: vec![bb.key.0, ba.key.0, 0],
        addrs: vec![bb.addr, bb.addr + 64 * 1024 - 8, ba.addr, 0],
    };
    (net, live, a, b)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_packets_never_panic(
        mtu in proptest::sample::select(Mtu::ALL.to_vec()),
        pkts in Just(()).prop_flat_map(|_| {
            let (net, live, _, _) = live_net(Mtu::Mtu256);
            drop(net);
            proptest::collection::vec(packet(live), 1..24)
        }),
    ) {
        let (mut net, _live, a, b) = live_net(mtu);
        for (i, p) in pkts.into_iter().enumerate() {
            let now = net.now;
            net.vf(1).handle_packet(now, &p);
            if i % 4 == 3 {
                net.step();
            }
        }
        net.run_for(2_000_000_000);
        // The device still answers verbs afterwards.
        let _ = net.vf(1).query_qp(b.qpn).unwrap();
        let _ = net.send_wcs(&b);
        let _ = net.recv_wcs(&a);
    }
}

// ---- random verbs -----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Cmd {
    AllocPd,
    DeallocPd(u32),
    RegMr {
        pd: u32,
        addr: u64,
        len: u64,
        access: u32,
    },
    DeregMr(u32),
    CreateCq(u32),
    ResizeCq(u32, u32),
    DestroyCq(u32),
    Notify(u32, bool),
    CreateSrq {
        pd: u32,
        max_wr: u32,
        max_sge: u32,
    },
    ModifySrq(u32, u32),
    PostSrqRecv(u32, Vec<(u64, u32, u32)>),
    DestroySrq(u32),
    CreateAh(u32, [u8; 16]),
    DestroyAh(u32),
    CreateQp {
        ud: bool,
        pd: u32,
        scq: u32,
        rcq: u32,
        srq: Option<u32>,
        cap: (u32, u32, u32, u32, u32),
    },
    ModifyQp {
        qp: u32,
        state: u8,
        mask: u32,
        vals: (u8, u8, u8, u8, u32, u32, u8, u32),
    },
    PostSend {
        qp: u32,
        op: u8,
        addr: u64,
        key: u32,
        sgl: Vec<(u64, u32, u32)>,
        flags: u32,
        inline: Vec<u8>,
        ah: Option<(u32, u32, u32)>,
    },
    PostRecv(u32, Vec<(u64, u32, u32)>),
    PollCq(u32),
    DestroyQp(u32),
    Pump,
    Time(u64),
    /// Reset the RC pair and connect it again with this MTU index and these PSNs.
    Reconnect(usize, u32),
}

/// A handle: mostly one that exists (handles start at 1, QPNs at 17), sometimes anything.
fn small() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..5, 4 => 17u32..22, 1 => Just(0u32), 1 => any::<u32>()]
}

fn key() -> impl Strategy<Value = u32> {
    // 0x101: the first MR each VF registers (the live buffers), valid on both VFs.
    prop_oneof![4 => Just(0x101u32), 3 => (1u32..8, 1u32..12).prop_map(|(i, k)| (i << 8) | k), 1 => any::<u32>()]
}

fn addr() -> impl Strategy<Value = u64> {
    // The live buffers sit at 0x1000..0x11000.
    prop_oneof![4 => 0x1000u64..0x11000, 2 => 0u64..0x20000, 1 => any::<u64>()]
}

fn sgl() -> impl Strategy<Value = Vec<(u64, u32, u32)>> {
    proptest::collection::vec(
        (
            addr(),
            prop_oneof![4 => 0u32..5000, 1 => any::<u32>()],
            key(),
        ),
        0..4,
    )
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        1 => Just(Cmd::AllocPd),
        1 => small().prop_map(Cmd::DeallocPd),
        3 => (small(), addr(), prop_oneof![0u64..70_000, any::<u64>()], 0u32..16).prop_map(|(pd, addr, len, access)| Cmd::RegMr { pd, addr, len, access }),
        1 => key().prop_map(Cmd::DeregMr),
        1 => prop_oneof![1u32..64, any::<u32>()].prop_map(Cmd::CreateCq),
        1 => (small(), any::<u32>()).prop_map(|(c, n)| Cmd::ResizeCq(c, n % 100)),
        1 => small().prop_map(Cmd::DestroyCq),
        1 => (small(), any::<bool>()).prop_map(|(c, s)| Cmd::Notify(c, s)),
        1 => (small(), 0u32..40, 0u32..40).prop_map(|(pd, max_wr, max_sge)| Cmd::CreateSrq { pd, max_wr, max_sge }),
        1 => (small(), 0u32..40).prop_map(|(s, l)| Cmd::ModifySrq(s, l)),
        1 => (small(), sgl()).prop_map(|(s, g)| Cmd::PostSrqRecv(s, g)),
        1 => small().prop_map(Cmd::DestroySrq),
        1 => (small(), any::<[u8; 16]>()).prop_map(|(pd, g)| Cmd::CreateAh(pd, g)),
        1 => small().prop_map(Cmd::DestroyAh),
        2 => (any::<bool>(), small(), small(), small(), proptest::option::of(small()), (0u32..40, 0u32..40, 0u32..40, 0u32..40, 0u32..300))
            .prop_map(|(ud, pd, scq, rcq, srq, cap)| Cmd::CreateQp { ud, pd, scq, rcq, srq, cap }),
        4 => (small(), 0u8..7, any::<u32>(), any::<(u8, u8, u8, u8, u32, u32, u8, u32)>()).prop_map(|(qp, state, mask, vals)| Cmd::ModifyQp { qp, state, mask, vals }),
        4 => (small(), 0u8..9, addr(), key(), sgl(), 0u32..16, proptest::collection::vec(any::<u8>(), 0..40), proptest::option::of((small(), small(), any::<u32>())))
            .prop_map(|(qp, op, addr, key, sgl, flags, inline, ah)| Cmd::PostSend { qp, op, addr, key, sgl, flags, inline, ah }),
        2 => (small(), sgl()).prop_map(|(q, g)| Cmd::PostRecv(q, g)),
        1 => small().prop_map(Cmd::PollCq),
        1 => small().prop_map(Cmd::DestroyQp),
        3 => Just(Cmd::Pump),
        1 => (0u64..1 << 34).prop_map(Cmd::Time),
        1 => (0usize..5, any::<u32>()).prop_map(|(m, p)| Cmd::Reconnect(m, p)),
    ]
}

/// The RC pair `live_net` connects: QPN 17 on both VFs (the first QP each creates).
fn pair_eps(net: &Net) -> (Ep, Ep) {
    let ep = |node: usize| Ep {
        node,
        qpn: Qpn(17),
        pd: net.nodes[node].pd,
        scq: CqHandle(1),
        rcq: CqHandle(2),
    };
    (ep(0), ep(1))
}

fn sges(v: &[(u64, u32, u32)]) -> Vec<Sge> {
    v.iter()
        .map(|&(addr, len, k)| Sge {
            addr,
            len,
            lkey: MemKey(k),
        })
        .collect()
}

fn state_of(n: u8) -> QpState {
    [
        QpState::Reset,
        QpState::Init,
        QpState::Rtr,
        QpState::Rts,
        QpState::Sqd,
        QpState::Sqe,
        QpState::Err,
    ][n as usize % 7]
}

fn apply(net: &mut Net, node: usize, c: &Cmd) {
    let peer_gid = net.gid(1 - node);
    let now = net.now;
    let vf = net.vf(node);
    match c.clone() {
        Cmd::AllocPd => {
            let _ = vf.alloc_pd();
        }
        Cmd::DeallocPd(p) => {
            let _ = vf.dealloc_pd(PdHandle(p));
        }
        Cmd::RegMr {
            pd,
            addr,
            len,
            access,
        } => {
            let _ = vf.reg_mr(PdHandle(pd), addr, len, Access::from_bits_truncate(access));
        }
        Cmd::DeregMr(k) => {
            let _ = vf.dereg_mr(MemKey(k));
        }
        Cmd::CreateCq(n) => {
            let _ = vf.create_cq(n);
        }
        Cmd::ResizeCq(c, n) => {
            let _ = vf.resize_cq(CqHandle(c), n);
        }
        Cmd::DestroyCq(c) => {
            let _ = vf.destroy_cq(CqHandle(c));
        }
        Cmd::Notify(c, s) => {
            let _ = vf.req_notify_cq(CqHandle(c), s);
        }
        Cmd::CreateSrq {
            pd,
            max_wr,
            max_sge,
        } => {
            let _ = vf.create_srq(PdHandle(pd), max_wr, max_sge);
        }
        Cmd::ModifySrq(s, l) => {
            let _ = vf.modify_srq(SrqHandle(s), l);
        }
        Cmd::PostSrqRecv(s, g) => {
            let _ = vf.post_srq_recv(
                SrqHandle(s),
                RecvWr {
                    wr_id: 1,
                    sgl: sges(&g),
                },
            );
        }
        Cmd::DestroySrq(s) => {
            let _ = vf.destroy_srq(SrqHandle(s));
        }
        Cmd::CreateAh(pd, g) => {
            let dgid = if g[0] & 1 == 0 { peer_gid } else { Gid(g) };
            let _ = vf.create_ah(
                PdHandle(pd),
                AhAttr {
                    dgid,
                    ..AhAttr::default()
                },
            );
        }
        Cmd::DestroyAh(a) => {
            let _ = vf.destroy_ah(AhHandle(a));
        }
        Cmd::CreateQp {
            ud,
            pd,
            scq,
            rcq,
            srq,
            cap,
        } => {
            let _ = vf.create_qp(QpInitAttr {
                qp_type: if ud { QpType::Ud } else { QpType::Rc },
                pd: PdHandle(pd),
                send_cq: CqHandle(scq),
                recv_cq: CqHandle(rcq),
                srq: srq.map(SrqHandle),
                cap: QpCap {
                    max_send_wr: cap.0,
                    max_recv_wr: cap.1,
                    max_send_sge: cap.2,
                    max_recv_sge: cap.3,
                    max_inline_data: cap.4,
                },
                sq_sig_all: cap.4 % 2 == 0,
            });
        }
        Cmd::ModifyQp {
            qp,
            state,
            mask,
            vals,
        } => {
            let (mtu, timeout, retry, rnr, psn, dqp, rd, qkey) = vals;
            let attr = QpAttr {
                qp_state: state_of(state),
                cur_qp_state: state_of(state.wrapping_add(mtu)),
                en_sqd_async_notify: mtu & 1 == 1,
                qp_access_flags: Access::from_bits_truncate(qkey),
                qkey,
                ah_attr: AhAttr {
                    dgid: if timeout & 1 == 0 {
                        peer_gid
                    } else {
                        Gid([timeout; 16])
                    },
                    ..AhAttr::default()
                },
                path_mtu: Mtu::ALL[mtu as usize % 5],
                timeout: timeout % 40,
                retry_cnt: retry % 10,
                rnr_retry: rnr % 10,
                min_rnr_timer: rnr % 35,
                rq_psn: Psn(psn & 0x1ff_ffff),
                sq_psn: Psn(psn.rotate_left(7) & 0x1ff_ffff),
                max_rd_atomic: rd,
                max_dest_rd_atomic: rd.wrapping_mul(3),
                dest_qp_num: Qpn(if dqp % 3 == 0 { 17 + dqp % 4 } else { dqp }),
                port_num: 1 + (mtu % 8 == 0) as u8,
                ..QpAttr::default()
            };
            // Mostly masks a transition could take, sometimes anything.
            let m = if mask % 4 == 0 {
                mask
            } else {
                mask & 0x1f_ffff & !(1 << 14) & !(1 << 18) & !(1 << 19)
            };
            let _ = vf.modify_qp(Qpn(qp), &attr, QpAttrMask::from_bits_truncate(m));
        }
        Cmd::PostSend {
            qp,
            op,
            addr,
            key,
            sgl,
            flags,
            inline,
            ah,
        } => {
            let rkey = MemKey(key);
            let op = match op {
                0 => SendOp::Send,
                1 => SendOp::SendWithImm { imm: key },
                2 => SendOp::SendWithInv { rkey },
                3 => SendOp::Write {
                    remote_addr: addr,
                    rkey,
                },
                4 => SendOp::WriteWithImm {
                    remote_addr: addr,
                    rkey,
                    imm: 1,
                },
                5 => SendOp::Read {
                    remote_addr: addr,
                    rkey,
                },
                6 => SendOp::CmpSwap {
                    remote_addr: addr,
                    rkey,
                    compare: 0,
                    swap: addr,
                },
                7 => SendOp::FetchAdd {
                    remote_addr: addr,
                    rkey,
                    add: 1,
                },
                _ => SendOp::LocalInv { key: rkey },
            };
            let mut wr = SendWr::new(qp as u64, op).flags(SendFlags::from_bits_truncate(flags));
            wr.sgl = sges(&sgl);
            wr.inline_data = inline;
            wr.ud = ah.map(|(a, q, k)| UdDest {
                ah: AhHandle(a),
                remote_qpn: Qpn(q),
                remote_qkey: k,
            });
            let _ = vf.post_send(Qpn(qp), &wr);
        }
        Cmd::PostRecv(q, g) => {
            let _ = vf.post_recv(
                Qpn(q),
                RecvWr {
                    wr_id: 2,
                    sgl: sges(&g),
                },
            );
        }
        Cmd::PollCq(c) => {
            let mut out = Vec::new();
            let _ = vf.poll_cq(CqHandle(c), 16, &mut out);
            let _ = vf.poll_cq_event();
            let _ = vf.poll_async_event();
        }
        Cmd::DestroyQp(q) => {
            let _ = vf.destroy_qp(Qpn(q));
        }
        Cmd::Pump => {
            let _ = vf.poll_timeout();
            net.step();
        }
        Cmd::Reconnect(m, p) => {
            let opts = RcOpts {
                mtu: Mtu::ALL[m],
                psn_a: p & 0xff_ffff,
                psn_b: p.rotate_left(9) & 0xff_ffff,
                timeout: 8,
                retry_cnt: 2,
                rnr_retry: 1,
                ..RcOpts::default()
            };
            let reset = QpAttr {
                qp_state: QpState::Reset,
                ..QpAttr::default()
            };
            let (a, b) = pair_eps(net);
            if net.modify(&a, &reset, QpAttrMask::STATE).is_ok()
                && net.modify(&b, &reset, QpAttrMask::STATE).is_ok()
            {
                net.connect(&a, &b, &opts);
            }
        }
        Cmd::Time(d) => {
            net.now = Nanos(now.0 + d);
            let now = net.now;
            net.vf(0).handle_timeout(now);
            net.vf(1).handle_timeout(now);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_verbs_never_panic(cmds in proptest::collection::vec((0usize..2, cmd()), 1..80)) {
        // Start with live objects on both VFs (an RC pair, UD QPs, MRs, an SRQ) so that the
        // random commands act on real state and real traffic flows.
        let (mut net, _, _, _) = live_net(Mtu::Mtu1024);
        for n in 0..2 {
            let pd = net.nodes[n].pd;
            let srq = net.vf(n).create_srq(pd, 16, 2).unwrap();
            net.vf(n).modify_srq(srq, 4).unwrap();
        }
        for (node, c) in &cmds {
            apply(&mut net, *node, c);
        }
        net.run_for(10_000_000_000);
    }
}

#[test]
fn hostile_page_list_mr_is_refused_not_a_panic() {
    use vhca_device::mr::MrMap;
    let mut net = Net::new(1);
    let pd = net.nodes[0].pd;
    let vf = net.vf(0);
    for shift in [0u8, 6, 63, 64, 200] {
        let _ = vf.reg_mr_mapped(
            pd,
            0x1000,
            0x2000,
            Access::LOCAL_WRITE,
            MrMap::Pages {
                page_shift: shift,
                pages: vec![0x1000, 0x2000, 0x3000],
            },
        );
    }
    let r = vf.reg_mr_mapped(
        pd,
        0x1000,
        0x2000,
        Access::LOCAL_WRITE,
        MrMap::Pages {
            page_shift: 12,
            pages: vec![u64::MAX - 10, 0x2000, 0x3000],
        },
    );
    assert!(r.is_err());
    let r = vf.reg_mr_mapped(
        pd,
        0x1000,
        0x2000,
        Access::LOCAL_WRITE,
        MrMap::Pages {
            page_shift: 12,
            pages: vec![0x1000],
        },
    );
    assert!(r.is_err(), "too few pages for the length");
    let ok = vf.reg_mr_mapped(
        pd,
        0x1800,
        0x2000,
        Access::LOCAL_WRITE,
        MrMap::Pages {
            page_shift: 12,
            pages: vec![0x5000, 0x3000, 0x8000],
        },
    );
    assert!(ok.is_ok());
    let _ = (Gid::default(), Opcode(0));
}
