//! Checkpoints: exact round trips mid-traffic, old versions stay loadable, hostile blobs are
//! errors.

use vhca_device::checkpoint::{self, codec, CheckpointError, HEADER_LEN};
use vhca_device::memory::VecMemory;
use vhca_device::*;

/// A VF with one object of every kind and an RC QP with work in every queue, built by hand
/// (deterministic: the golden fixtures are made from it).
fn busy_vf() -> Vf {
    let pf = Pf::new(0, 1);
    let mut vf = Vf::new(pf.default_identity(0), VecMemory::shared(1 << 16));
    let pd = vf.alloc_pd().unwrap();
    let key = vf
        .reg_mr(
            pd,
            0x1000,
            0x4000,
            Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
        )
        .unwrap();
    let cq = vf.create_cq(64).unwrap();
    let srq = vf.create_srq(pd, 16, 2).unwrap();
    vf.post_srq_recv(
        srq,
        RecvWr {
            wr_id: 9,
            sgl: vec![Sge {
                addr: 0x1000,
                len: 64,
                lkey: key,
            }],
        },
    )
    .unwrap();
    vf.modify_srq(srq, 4).unwrap();
    let ah = vf
        .create_ah(
            pd,
            AhAttr {
                dgid: Gid::from_ipv4([10, 0, 0, 9]),
                ..Default::default()
            },
        )
        .unwrap();
    let _ = ah;
    let qpn = vf
        .create_qp(QpInitAttr {
            qp_type: QpType::Rc,
            pd,
            send_cq: cq,
            recv_cq: cq,
            srq: None,
            cap: QpCap::default(),
            sq_sig_all: false,
        })
        .unwrap();
    let mut a = QpAttr {
        qp_state: QpState::Init,
        qp_access_flags: Access::REMOTE_WRITE,
        ..Default::default()
    };
    use QpAttrMask as M;
    vf.modify_qp(
        qpn,
        &a,
        M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS,
    )
    .unwrap();
    a.qp_state = QpState::Rtr;
    a.dest_qp_num = Qpn(0x42);
    a.rq_psn = Psn(0xfffff0);
    a.ah_attr = AhAttr {
        dgid: Gid::from_ipv4([10, 0, 0, 9]),
        ..Default::default()
    };
    vf.modify_qp(
        qpn,
        &a,
        M::STATE
            | M::AV
            | M::PATH_MTU
            | M::DEST_QPN
            | M::RQ_PSN
            | M::MAX_DEST_RD_ATOMIC
            | M::MIN_RNR_TIMER,
    )
    .unwrap();
    a.qp_state = QpState::Rts;
    a.sq_psn = Psn(0x123456);
    vf.modify_qp(
        qpn,
        &a,
        M::STATE | M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC,
    )
    .unwrap();
    vf.post_recv(
        qpn,
        RecvWr {
            wr_id: 1,
            sgl: vec![Sge {
                addr: 0x2000,
                len: 128,
                lkey: key,
            }],
        },
    )
    .unwrap();
    for i in 0..3 {
        vf.post_send(
            qpn,
            &SendWr::new(
                10 + i,
                SendOp::Write {
                    remote_addr: 0x9000,
                    rkey: MemKey(0x101),
                },
            )
            .sge(Sge {
                addr: 0x1000,
                len: 3000,
                lkey: key,
            }),
        )
        .unwrap();
    }
    // Put some of it on the wire: PSNs assigned, a retransmit timer armed.
    for _ in 0..5 {
        let _ = vf.poll_transmit(Nanos(1_000));
    }
    vf
}

fn json_of(vf: &Vf, now: Nanos) -> serde_json::Value {
    serde_json::to_value(checkpoint::state_of(vf, now)).unwrap()
}

#[test]
fn save_and_load_round_trip_exactly_in_both_codecs() {
    let vf = busy_vf();
    let before = json_of(&vf, Nanos(5_000));
    for codec in checkpoint::codec::all().iter().copied() {
        let blob = checkpoint::save(&vf, Nanos(5_000), codec);
        // Restored on a host whose clock reads something else entirely.
        let back = checkpoint::load(&blob, VecMemory::shared(1 << 16), Nanos(9_000_000)).unwrap();
        assert_eq!(json_of(&back, Nanos(9_000_000)), before, "{codec:?}");
    }
}

#[test]
fn a_restored_vf_keeps_its_identity_numbers_and_keeps_working() {
    let mut vf = busy_vf();
    let blob = checkpoint::save(&vf, Nanos(5_000), codec::BINARY);
    let mut back = checkpoint::load(&blob, VecMemory::shared(1 << 16), Nanos(5_000)).unwrap();
    assert_eq!(back.identity(), vf.identity());
    let (qa, _) = vf.query_qp(Qpn(17)).unwrap();
    let (qb, _) = back.query_qp(Qpn(17)).unwrap();
    assert_eq!(qa, qb, "QPN, PSNs and attributes survive");
    // New objects get numbers that do not collide with restored ones.
    let pd = back.alloc_pd().unwrap();
    assert_ne!(pd, PdHandle(1));
    // The restored requester goes on sending exactly what the original would.
    let mut a = Vec::new();
    let mut b = Vec::new();
    while let Some(p) = vf.poll_transmit(Nanos(6_000)) {
        a.push((p.bth.opcode, p.bth.psn, p.payload.len()));
    }
    while let Some(p) = back.poll_transmit(Nanos(6_000)) {
        b.push((p.bth.opcode, p.bth.psn, p.payload.len()));
    }
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn resume_resends_outstanding_requests_and_prompts_the_peer() {
    let vf = busy_vf();
    let blob = checkpoint::save(&vf, Nanos(5_000), codec::BINARY);
    let mut back = checkpoint::load(&blob, VecMemory::shared(1 << 16), Nanos(0)).unwrap();
    back.resume(Nanos(0));
    let mut pkts = Vec::new();
    while let Some(p) = back.poll_transmit(Nanos(0)) {
        pkts.push(p);
    }
    let prompt: Vec<_> = pkts
        .iter()
        .filter(|p| p.bth.opcode == packet::Opcode::RC_ACK)
        .map(|p| (p.ext.aeth.unwrap().syndrome, p.bth.psn))
        .collect();
    assert_eq!(
        prompt,
        vec![
            (packet::Syndrome::ACK_UNLIMITED, Psn(0xffffef)),
            (
                packet::Syndrome::Nak(packet::NakCode::PsnSequenceError),
                Psn(0xfffff0)
            )
        ],
        "an ACK of the last PSN received, then a NAK naming the expected one"
    );
    assert_eq!(
        pkts.iter()
            .find(|p| p.bth.opcode.is_write())
            .unwrap()
            .bth
            .psn,
        Psn(0x123456),
        "requests resent from the oldest unacknowledged PSN"
    );
    assert_eq!(back.poll_async_event(), Some(AsyncEvent::PortActive));
}

#[test]
fn bad_blobs_are_clear_errors() {
    let blob = checkpoint::save(&busy_vf(), Nanos(0), codec::BINARY);
    let mem = || VecMemory::shared(1 << 16);
    assert_eq!(
        checkpoint::load(&blob[..10], mem(), Nanos(0)).err(),
        Some(CheckpointError::Truncated("header"))
    );
    assert_eq!(
        checkpoint::load(&blob[..blob.len() - 1], mem(), Nanos(0)).err(),
        Some(CheckpointError::Truncated("sections"))
    );
    assert_eq!(
        checkpoint::load(&blob[..HEADER_LEN + 3], mem(), Nanos(0)).err(),
        Some(CheckpointError::Truncated("section table"))
    );
    let mut b = blob.clone();
    b[0] = b'X';
    assert_eq!(
        checkpoint::load(&b, mem(), Nanos(0)).err(),
        Some(CheckpointError::BadMagic)
    );
    let mut b = blob.clone();
    b[4] = 9;
    assert_eq!(
        checkpoint::load(&b, mem(), Nanos(0)).err(),
        Some(CheckpointError::UnknownVersion(9))
    );
    // A bit flipped in the section table, and one in the last section.
    for at in [HEADER_LEN + 3, blob.len() - 1] {
        let mut b = blob.clone();
        b[at] ^= 0x40;
        assert_eq!(
            checkpoint::load(&b, mem(), Nanos(0)).err(),
            Some(CheckpointError::Checksum),
            "byte {at}"
        );
    }
    // Every single-byte corruption and every truncation is an error or a valid VF, never a panic.
    for i in 0..blob.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = blob.clone();
            b[i] ^= x;
            let _ = checkpoint::load(&b, mem(), Nanos(0));
        }
        let _ = checkpoint::load(&blob[..i], mem(), Nanos(0));
    }
}

#[test]
fn hostile_but_well_formed_states_are_refused() {
    let vf = busy_vf();
    let good = checkpoint::state_of(&vf, Nanos(0));
    let mem = || VecMemory::shared(1 << 16);
    let lim = VfLimits::default();
    let mut s = good.clone();
    s.qps[0].init.send_cq = CqHandle(77);
    assert!(matches!(
        checkpoint::restore(s, mem(), Nanos(0), &lim),
        Err(CheckpointError::Invalid(_))
    ));
    let mut s = good.clone();
    s.qps[0].req.next = 99;
    assert!(checkpoint::restore(s, mem(), Nanos(0), &lim).is_err());
    let mut s = good.clone();
    s.qps[0].req.sq[0].npkts = 1_000_000;
    assert!(checkpoint::restore(s, mem(), Nanos(0), &lim).is_err());
    let mut s = good.clone();
    s.qps[0].attr.sq_psn = Psn(1 << 24);
    assert!(checkpoint::restore(s, mem(), Nanos(0), &lim).is_err());
    let mut s = good.clone();
    s.mrs.push(s.mrs[0].clone());
    assert!(
        checkpoint::restore(s, mem(), Nanos(0), &lim).is_err(),
        "an MR number used twice"
    );
    let mut s = good.clone();
    s.qps.push(s.qps[0].clone());
    assert!(
        checkpoint::restore(s, mem(), Nanos(0), &lim).is_err(),
        "a QPN used twice"
    );
    assert!(checkpoint::restore(good, mem(), Nanos(0), &lim).is_ok());
}

/// Golden fixtures: blobs written by earlier versions must keep loading. Regenerate (only when
/// the format version changes, into a new file) with `VHCA_WRITE_FIXTURES=1`.
#[test]
fn golden_fixtures_of_every_version_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    if std::env::var_os("VHCA_WRITE_FIXTURES").is_some() {
        let vf = busy_vf();
        std::fs::write(
            dir.join("checkpoint-v1.bin"),
            checkpoint::save(&vf, Nanos(5_000), codec::BINARY),
        )
        .unwrap();
        std::fs::write(
            dir.join("checkpoint-v1.json"),
            checkpoint::save(&vf, Nanos(5_000), codec::JSON),
        )
        .unwrap();
    }
    for name in ["checkpoint-v1.bin", "checkpoint-v1.json"] {
        let blob = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        let vf = checkpoint::load(&blob, VecMemory::shared(1 << 16), Nanos(0))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(vf.gid(), Gid::from_ipv4([10, 200, 0, 1]));
        assert_eq!(vf.query_qp(Qpn(17)).unwrap().0.dest_qp_num, Qpn(0x42));
        assert_eq!(checkpoint::header(&blob).unwrap().version, 1);
    }
}

#[test]
fn an_idle_qp_costs_few_bytes() {
    // Issue 11's target: at most 128 bytes of state per idle connected RC QP in the migration
    // codec (binary); the QPs fill whole QP sections, so the table's share is counted too.
    let pf = Pf::new(0, 1);
    let mut vf = Vf::new(pf.default_identity(0), VecMemory::shared(1 << 16));
    let pd = vf.alloc_pd().unwrap();
    let cq = vf.create_cq(64).unwrap();
    let empty = checkpoint::save(&vf, Nanos(0), codec::BINARY).len();
    let n = 1024;
    for i in 0..n {
        let q = vf
            .create_qp(QpInitAttr {
                qp_type: QpType::Rc,
                pd,
                send_cq: cq,
                recv_cq: cq,
                srq: None,
                cap: QpCap::default(),
                sq_sig_all: false,
            })
            .unwrap();
        let mut a = QpAttr {
            qp_state: QpState::Init,
            ..Default::default()
        };
        use QpAttrMask as M;
        vf.modify_qp(q, &a, M::STATE | M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS)
            .unwrap();
        a.qp_state = QpState::Rtr;
        a.dest_qp_num = Qpn(1000 + i);
        a.ah_attr = AhAttr {
            dgid: Gid::from_ipv4([10, 0, 0, 9]),
            ..Default::default()
        };
        vf.modify_qp(
            q,
            &a,
            M::STATE
                | M::AV
                | M::PATH_MTU
                | M::DEST_QPN
                | M::RQ_PSN
                | M::MAX_DEST_RD_ATOMIC
                | M::MIN_RNR_TIMER,
        )
        .unwrap();
        a.qp_state = QpState::Rts;
        vf.modify_qp(
            q,
            &a,
            M::STATE | M::SQ_PSN | M::TIMEOUT | M::RETRY_CNT | M::RNR_RETRY | M::MAX_QP_RD_ATOMIC,
        )
        .unwrap();
    }
    let per_qp = (checkpoint::save(&vf, Nanos(0), codec::BINARY).len() - empty) / n as usize;
    eprintln!("checkpoint: {per_qp} bytes per idle RC QP");
    assert!(per_qp <= 128, "{per_qp} bytes per idle QP");
}

mod wire {
    //! The v1 wire structs against bytes the pre-refactor code (serde on the live types)
    //! wrote: `checkpoint-v1-variants.{bin,json}` hold a state with every enum variant and
    //! optional field of the format set. Regenerate only with `VHCA_WRITE_WIRE_FIXTURES=1`, and
    //! only into a new file: these bytes are the format.
    use super::*;
    use vhca_device::checkpoint::{
        ArmStateV2 as Arm, CountersStateV2 as CountersW, InMessageStateV2 as InMessageW,
        MrMapStateV2 as MrMapW, MrStateV2 as MrW, OutgoingStateV2 as OutgoingW,
        RdAtomicResourceStateV2 as ResourceW, SendWqeStateV2 as SendWqeW,
    };

    /// `busy_vf`'s state with every variant added by hand (still a state `validate` accepts).
    pub fn every_variant() -> checkpoint::VfStateV2 {
        let mut s = checkpoint::state_of(&busy_vf(), Nanos(5_000));
        let kb = s.identity.key_byte;
        s.mrs.push((
            2,
            MrW {
                pd: PdHandle(1),
                iova: 0x10_0800,
                len: 0x2000,
                access: Access::LOCAL_WRITE | Access::REMOTE_ATOMIC,
                key: MemKey::from_parts(2, kb),
                map: MrMapW::Pages {
                    page_shift: 12,
                    pages: vec![0x3000, 0x5000, 0x4000],
                },
                valid: false,
            },
        ));
        let wc = WorkCompletion {
            wr_id: 0xdead_beef,
            status: WcStatus::RemAccessErr,
            opcode: WcOpcode::RecvRdmaWithImm,
            qpn: Qpn(17),
            byte_len: 77,
            imm: Some(0x1234_5678),
            invalidated_rkey: Some(MemKey(0x203)),
            src_qp: Qpn(0x42),
            src_gid: Gid::from_ipv4([10, 0, 0, 9]),
            grh: true,
            solicited: true,
        };
        s.cqs[0].1.entries.push(wc);
        s.cqs[0].1.armed = Some(Arm::Solicited);
        let mut cq2 = s.cqs[0].1.clone();
        cq2.capacity = 4;
        cq2.armed = Some(Arm::Next);
        cq2.overflowed = true;
        s.cqs.push((2, cq2));
        s.events.async_events = vec![
            AsyncEvent::QpFatal(Qpn(17)),
            AsyncEvent::QpReqErr(Qpn(18)),
            AsyncEvent::QpAccessErr(Qpn(17)),
            AsyncEvent::QpLastWqeReached(Qpn(18)),
            AsyncEvent::SqDrained(Qpn(17)),
            AsyncEvent::CqErr(CqHandle(2)),
            AsyncEvent::SrqLimitReached(SrqHandle(1)),
            AsyncEvent::PortActive,
        ];
        s.events.cq_events = vec![CqHandle(1), CqHandle(2)];
        s.counters = CountersW {
            tx_packets: 1,
            tx_bytes: 2,
            rx_packets: 3,
            rx_bytes: 4,
            retransmits: 5,
            retry_timeouts: 6,
            rnr_naks_sent: 7,
            rnr_naks_received: 8,
            seq_naks_sent: 9,
            seq_naks_received: 10,
            duplicate_requests: 11,
            out_of_sequence: 12,
            implied_naks: 13,
            rx_dropped: 14,
            qkey_violations: 15,
            ud_no_recv: 16,
            completions: 17,
            error_completions: u64::MAX,
        };
        let q = &mut s.qps[0];
        q.attr.max_dest_rd_atomic = 4;
        q.req.rnr_until = Some(Nanos(123_456));
        q.req.retrying_from = Some(Psn(0x123457));
        q.req.since_ack_req = 3;
        q.req.halted = true;
        q.req.drained_notified = true;
        q.req.sq.push(SendWqeW {
            wr_id: 40,
            op: SendOp::SendWithImm { imm: 0xabcd },
            flags: SendFlags::INLINE | SendFlags::SOLICITED | SendFlags::SIGNALED,
            signaled: true,
            sgl: vec![],
            inline: Some(vec![1, 2, 3]),
            len: 3,
            ud: Some(UdDest {
                ah: AhHandle(1),
                remote_qpn: Qpn(0x99),
                remote_qkey: 0x1111_2222,
            }),
            started: true,
            first_psn: Psn(0x123459),
            npkts: 1,
            resp_pkts: 0,
            done: Some(WcStatus::WrFlushErr),
        });
        for (i, op) in [
            SendOp::Send,
            SendOp::SendWithInv {
                rkey: MemKey(0x301),
            },
            SendOp::WriteWithImm {
                remote_addr: 0x8000,
                rkey: MemKey(0x101),
                imm: 5,
            },
            SendOp::Read {
                remote_addr: 0x8000,
                rkey: MemKey(0x101),
            },
            SendOp::CmpSwap {
                remote_addr: 0x8008,
                rkey: MemKey(0x101),
                compare: 1,
                swap: 2,
            },
            SendOp::FetchAdd {
                remote_addr: 0x8010,
                rkey: MemKey(0x101),
                add: 3,
            },
            SendOp::LocalInv { key: MemKey(0x201) },
        ]
        .into_iter()
        .enumerate()
        {
            q.req.sq.push(SendWqeW {
                wr_id: 50 + i as u64,
                op,
                flags: SendFlags::FENCE,
                signaled: false,
                sgl: vec![],
                inline: None,
                len: 0,
                ud: None,
                started: false,
                first_psn: Psn(0),
                npkts: 0,
                resp_pkts: 0,
                done: None,
            });
        }
        q.resp.nak_sent = true;
        q.resp.current = Some(InMessageW::Write {
            va: 0x1000,
            rkey: MemKey(0x101),
            len: 100,
            offset: 50,
        });
        q.resp.resources = [
            ResourceW::Read {
                psn: Psn(0xfffff1),
                npkts: 3,
            },
            ResourceW::Atomic {
                psn: Psn(0xfffff4),
                orig: u64::MAX - 1,
            },
        ]
        .into();
        q.resp.out = [
            OutgoingW::Ack {
                psn: Psn(0xffffee),
                syndrome: 0x1f,
                msn: Msn(7),
            },
            OutgoingW::AtomicAck {
                psn: Psn(0xfffff4),
                orig: 9,
                msn: Msn(8),
            },
            OutgoingW::Read {
                psn: Psn(0xfffff1),
                va: 0x1100,
                rkey: MemKey(0x101),
                left: 4000,
                first: true,
                msn: Msn(6),
            },
        ]
        .into();
        let mut q2 = s.qps[0].clone();
        q2.qpn = Qpn(18);
        q2.rq.clear();
        q2.req.deadline = None;
        q2.req.rnr_until = None;
        q2.req.retrying_from = None;
        q2.resp.current = Some(InMessageW::Send {
            wqe: RecvWr {
                wr_id: 3,
                sgl: vec![Sge {
                    addr: 0x2000,
                    len: 128,
                    lkey: MemKey(0x101),
                }],
            },
            offset: 64,
        });
        s.qps.push(q2);
        let _ = MrW::clone;
        s
    }

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// The v1 fixtures are frozen: the v1 wire structs decode them and encode them back byte
    /// for byte; and what they hold, upgraded, is exactly the v2 state built by hand today.
    #[test]
    fn the_v1_variants_fixture_is_frozen_and_upgrades_to_the_same_state() {
        let s = every_variant();
        checkpoint::validate(&s, &VfLimits::default()).unwrap();
        for (codec, name) in [
            (codec::BINARY, "checkpoint-v1-variants.bin"),
            (codec::JSON, "checkpoint-v1-variants.json"),
        ] {
            let old =
                std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (h, v1) = checkpoint::decode_v1(&old).unwrap();
            assert_eq!(h.codec, codec);
            assert!(
                checkpoint::encode_v1(&v1, codec).unwrap() == old,
                "{name}: v1 re-encoding changed"
            );
            assert!(checkpoint::VfStateV2::from(v1) == s, "{name}: upgrade");
            assert!(
                checkpoint::decode(&old).unwrap().1 == s,
                "{name}: read as v2"
            );
        }
    }

    /// The v2 golden fixtures: `every_variant()` in every codec, byte for byte; and a load and
    /// a save of those bytes (wire → live → wire) gives them back. Regenerate (a new version
    /// only) with `VHCA_WRITE_WIRE_FIXTURES=1`.
    #[test]
    fn every_variant_encodes_as_the_v2_fixtures() {
        let s = every_variant();
        for c in checkpoint::codec::all().iter().copied() {
            let name = format!("checkpoint-v2-variants.{}", c.name());
            let blob = checkpoint::encode(&s, c);
            if std::env::var_os("VHCA_WRITE_WIRE_FIXTURES").is_some() {
                std::fs::write(fixtures().join(&name), &blob).unwrap();
            }
            let old =
                std::fs::read(fixtures().join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(blob == old, "{name}: the v2 encoding changed");
            let vf = checkpoint::load(&old, VecMemory::shared(1 << 16), Nanos(5_000)).unwrap();
            assert!(
                checkpoint::save(&vf, Nanos(5_000), c) == old,
                "{name}: load then save is not byte-exact"
            );
        }
    }

    /// The v1 golden fixtures hold what `busy_vf` saves today, upgraded.
    #[test]
    fn busy_vf_is_what_the_v1_golden_fixtures_hold() {
        let now = checkpoint::state_of(&busy_vf(), Nanos(5_000));
        for name in ["checkpoint-v1.bin", "checkpoint-v1.json"] {
            let old = std::fs::read(fixtures().join(name)).unwrap();
            assert!(checkpoint::decode(&old).unwrap().1 == now, "{name}");
        }
    }
}
