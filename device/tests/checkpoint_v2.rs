//! Format v2 over generated VF states: every codec round-trips them, a delta applied to its
//! base is the full checkpoint, and hostile v2 blobs (huge numbers and lengths, dangling
//! references, truncated sections, bad checksums, a delta against the wrong base) are refused
//! by `validate` and by the load path alike.
//!
//! The states come from random workloads on two VFs: RC and UC pairs and UD QPs created and
//! destroyed, MRs registered and deregistered, SENDs, WRITEs, READs and atomics posted, the
//! network pumped a random number of rounds (so snapshots land mid-message, with packets and
//! responses outstanding), timers fired. Snapshots are taken of VF 0 along the way.

mod common;

use common::*;
use proptest::prelude::*;
use vhca_device::checkpoint::container::{assemble, sections, SectionKind};
use vhca_device::checkpoint::{self, codec, CheckpointError, CheckpointV2, Codec, VfStateV2};
use vhca_device::*;

/// One step of a workload.
#[derive(Clone, Debug)]
enum Op {
    /// A new RC pair between VF 0 and VF 1.
    Pair,
    /// A new UD QP on VF 0.
    Ud,
    /// A new UC pair between VF 0 and VF 1 (READs and atomics on it are refused at post).
    UcPair,
    /// A new MR on VF 0 of this many bytes.
    Mr(u32),
    /// Destroys VF 0's k-th QP (modulo how many), after moving it to ERR.
    DestroyQp(usize),
    /// Deregisters VF 0's k-th MR registered here.
    Dereg(usize),
    /// A WRITE of this many bytes on the k-th pair (from VF 0 or VF 1, by k).
    Write(usize, u32),
    /// A SEND on the k-th pair, with a receive posted at the other end.
    Send(usize, u32),
    /// A READ on the k-th pair.
    Read(usize, u32),
    /// A FETCH_ADD on the k-th pair, from VF 0.
    FetchAdd(usize),
    /// This many rounds of the packet pump (0..): packets in flight stay in flight.
    Pump(u8),
    /// Time moves on to the next timer (retransmissions, RNR waits).
    Timer,
    /// Completions polled on VF 0.
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Pair),
        1 => Just(Op::Ud),
        1 => Just(Op::UcPair),
        1 => (1u32..20_000).prop_map(Op::Mr),
        1 => any::<usize>().prop_map(Op::DestroyQp),
        1 => any::<usize>().prop_map(Op::Dereg),
        3 => (any::<usize>(), 1u32..6_000).prop_map(|(k, n)| Op::Write(k, n)),
        2 => (any::<usize>(), 1u32..3_000).prop_map(|(k, n)| Op::Send(k, n)),
        2 => (any::<usize>(), 1u32..6_000).prop_map(|(k, n)| Op::Read(k, n)),
        1 => any::<usize>().prop_map(Op::FetchAdd),
        3 => (0u8..4).prop_map(Op::Pump),
        1 => Just(Op::Timer),
        1 => Just(Op::Poll),
    ]
}

/// A workload in progress: the network, its RC pairs (VF 0 end, VF 1 end) and buffers.
struct Load {
    net: Net,
    pairs: Vec<(Ep, Ep, Buf, Buf)>,
    mrs: Vec<MemKey>,
    wr: u64,
}

impl Load {
    fn new() -> Load {
        Load {
            net: Net::new(2),
            pairs: Vec::new(),
            mrs: Vec::new(),
            wr: 0,
        }
    }

    fn apply(&mut self, op: &Op) {
        let net = &mut self.net;
        self.wr += 1;
        let wr = self.wr;
        match *op {
            Op::Pair if self.pairs.len() < 6 => {
                let opts = RcOpts {
                    psn_a: 0xff_fff0 - self.pairs.len() as u32,
                    ..Default::default()
                };
                let (a, b) = net.rc_pair(0, 1, &opts);
                let la = net.rbuf(0, 8192);
                let lb = net.rbuf(1, 8192);
                self.pairs.push((a, b, la, lb));
            }
            Op::UcPair if self.pairs.len() < 6 => {
                let opts = RcOpts {
                    psn_a: 0xff_fff8 - self.pairs.len() as u32,
                    ..Default::default()
                };
                let (a, b) = net.uc_pair(0, 1, &opts);
                let la = net.rbuf(0, 8192);
                let lb = net.rbuf(1, 8192);
                self.pairs.push((a, b, la, lb));
            }
            Op::Ud if net.vf_ref(0).qps().count() < 16 => {
                net.ud_qp(0, 0x1111, None);
            }
            Op::Mr(len) if self.mrs.len() < 8 => {
                let b = net.buf(0, len, Access::LOCAL_WRITE | Access::REMOTE_READ);
                self.mrs.push(b.key);
            }
            Op::DestroyQp(k) => {
                let qpns: Vec<Qpn> = net.vf_ref(0).qps().map(|q| q.qpn).collect();
                if let Some(&q) = qpns.get(k % qpns.len().max(1)) {
                    let err = QpAttr {
                        qp_state: QpState::Err,
                        ..Default::default()
                    };
                    let vf = net.vf(0);
                    let _ = vf.modify_qp(q, &err, QpAttrMask::STATE);
                    let _ = vf.destroy_qp(q);
                    self.pairs.retain(|p| p.0.qpn != q);
                }
            }
            Op::Dereg(k) if !self.mrs.is_empty() => {
                let key = self.mrs.remove(k % self.mrs.len());
                let _ = net.vf(0).dereg_mr(key);
            }
            Op::Write(k, n) | Op::Send(k, n) | Op::Read(k, n) if !self.pairs.is_empty() => {
                let (a, b, la, lb) = &self.pairs[k % self.pairs.len()];
                // Every other request goes from VF 1 to VF 0, so VF 0 is a responder too
                // (READ responses and ACKs owed, messages half received).
                let (from, to, a, b, la, lb) = if (k / 7) % 2 == 0 {
                    (0, 1, a, b, la, lb)
                } else {
                    (1, 0, b, a, lb, la)
                };
                let n = n.min(la.len);
                let sge = Sge {
                    addr: la.addr,
                    len: n,
                    lkey: la.key,
                };
                let sop = match *op {
                    Op::Write(..) => SendOp::Write {
                        remote_addr: lb.addr,
                        rkey: lb.key,
                    },
                    Op::Read(..) => SendOp::Read {
                        remote_addr: lb.addr,
                        rkey: lb.key,
                    },
                    _ => {
                        let r = Sge {
                            addr: lb.addr,
                            len: lb.len,
                            lkey: lb.key,
                        };
                        let _ = net.vf(to).post_recv(
                            b.qpn,
                            RecvWr {
                                wr_id: wr,
                                sgl: vec![r],
                            },
                        );
                        SendOp::Send
                    }
                };
                let mut w = SendWr::new(wr, sop);
                w.flags = SendFlags::SIGNALED;
                w.sgl = vec![sge];
                let _ = net.vf(from).post_send(a.qpn, &w);
            }
            Op::FetchAdd(k) if !self.pairs.is_empty() => {
                let (a, _, la, lb) = &self.pairs[k % self.pairs.len()];
                let mut w = SendWr::new(
                    wr,
                    SendOp::FetchAdd {
                        remote_addr: lb.addr,
                        rkey: lb.key,
                        add: wr,
                    },
                );
                w.flags = SendFlags::SIGNALED;
                w.sgl = vec![Sge {
                    addr: la.addr,
                    len: 8,
                    lkey: la.key,
                }];
                let _ = net.vf(0).post_send(a.qpn, &w);
            }
            Op::Pump(n) => {
                for _ in 0..n {
                    net.step();
                }
            }
            Op::Timer => {
                if let Some(t) = net.next_timeout() {
                    net.now = net.now.max(t);
                    for i in 0..2 {
                        let now = net.now;
                        net.vf(i).handle_timeout(now);
                    }
                }
            }
            Op::Poll => {
                let cqs: Vec<CqHandle> = self.pairs.iter().map(|p| p.0.scq).collect();
                for cq in cqs {
                    net.poll(0, cq);
                }
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> VfStateV2 {
        checkpoint::state_of(self.net.vf_ref(0), self.net.now)
    }
}

/// Runs `ops`, taking a snapshot of VF 0 after each of the marked steps (and at the end).
fn snapshots(ops: &[(Op, bool)]) -> Vec<VfStateV2> {
    let mut l = Load::new();
    let mut out = vec![l.snapshot()];
    for (op, snap) in ops {
        l.apply(op);
        if *snap {
            out.push(l.snapshot());
        }
    }
    out.push(l.snapshot());
    out
}

fn workload() -> impl Strategy<Value = Vec<(Op, bool)>> {
    proptest::collection::vec((op(), proptest::bool::weighted(0.2)), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every codec decodes what it encoded, for every snapshot; and a full checkpoint loads
    /// into a VF that saves the same state again.
    #[test]
    fn every_codec_round_trips_generated_states(ops in workload()) {
        for s in snapshots(&ops) {
            for c in codec::all().iter().copied() {
                let blob = checkpoint::encode(&s, c);
                let (h, back) = checkpoint::decode(&blob).unwrap();
                prop_assert_eq!(h.codec.name(), c.name());
                prop_assert!(back == s, "codec {}", c.name());
            }
            checkpoint::validate(&s, &VfLimits::default()).unwrap();
            let vf = checkpoint::restore(s.clone(), VecMemory::shared(MEM_SIZE), Nanos(0), &VfLimits::default()).unwrap();
            prop_assert!(checkpoint::state_of(&vf, Nanos(0)) == s);
        }
    }

    /// A delta applied to its base equals the full checkpoint, between any two snapshots of a
    /// workload (in either order: a delta may also go back), in memory and through every
    /// codec's blobs.
    #[test]
    fn a_delta_applied_to_its_base_is_the_full_checkpoint(
        ops in workload(),
        pick in proptest::collection::vec((any::<usize>(), any::<usize>()), 1..4),
    ) {
        let snaps = snapshots(&ops);
        for (i, j) in pick {
            let base = &snaps[i % snaps.len()];
            let cur = &snaps[j % snaps.len()];
            let d = checkpoint::delta(base, cur).unwrap();
            prop_assert!(checkpoint::apply(base, d.clone()).unwrap() == *cur);
            // A kept base (its digest computed once) makes and takes the same delta.
            let kept = checkpoint::Base::new(base.clone()).unwrap();
            prop_assert!(kept.digest() == checkpoint::digest(base).unwrap());
            prop_assert!(kept.delta(cur) == d);
            prop_assert!(kept.apply(d.clone()).unwrap() == *cur);
            for c in codec::all().iter().copied() {
                let blob = checkpoint::save_delta(base, cur, c).unwrap();
                prop_assert!(checkpoint::decode_delta(base, &blob).unwrap() == *cur, "codec {}", c.name());
                // A delta is no full checkpoint: the load path refuses it without its base.
                prop_assert_eq!(checkpoint::decode(&blob).err(), Some(CheckpointError::DeltaNeedsBase));
            }
            // Against itself a state changes nothing but the always-sent sections.
            let same = checkpoint::delta(cur, cur).unwrap();
            prop_assert!(same.changed.qps.is_empty() && same.changed.mrs.is_empty() && same.removed.is_empty());
        }
    }
}

/// A busy state: two RC pairs mid-WRITE, a UD QP, a UC pair mid-SEND, MRs.
fn busy() -> VfStateV2 {
    let ops = [
        (Op::Pair, false),
        (Op::Pair, false),
        (Op::Ud, false),
        (Op::UcPair, false),
        (Op::Send(8, 3000), false),
        (Op::Mr(5000), false),
        (Op::Write(0, 5000), false),
        (Op::Read(1, 3000), false),
        (Op::Pump(1), false),
    ];
    let s = snapshots(&ops).pop().unwrap();
    assert!(s.qps.len() >= 3 && s.qps.iter().any(|q| !q.req.sq.is_empty()));
    s
}

/// `validate` and a load, on one blob: the same verdict, the same error.
fn refused(blob: &[u8]) -> CheckpointError {
    let lim = VfLimits::default();
    let v = checkpoint::decode(blob).and_then(|(_, s)| checkpoint::validate(&s, &lim));
    let l = checkpoint::load_with_limits(blob, VecMemory::shared(MEM_SIZE), Nanos(0), &lim);
    let e = v.expect_err("validate accepted a hostile blob");
    assert_eq!(
        l.err(),
        Some(e.clone()),
        "the load path disagrees with validate"
    );
    e
}

fn parts_of(blob: &[u8]) -> Vec<(SectionKind, u32, Vec<u8>)> {
    sections(blob).unwrap().1
}

fn rebuild(c: &dyn Codec, delta: bool, parts: &[(SectionKind, u32, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(SectionKind, u32, &[u8])> = parts
        .iter()
        .map(|(k, n, b)| (*k, *n, b.as_slice()))
        .collect();
    assemble(c, delta, &refs)
}

#[test]
fn hostile_v2_blobs_are_refused_by_validate_and_load() {
    let s = busy();
    for c in codec::all().iter().copied() {
        let good = checkpoint::encode(&s, c);
        // Huge numbers: a QPN past 24 bits, a CQ number of four billion, a limit above policy.
        let mut h = s.clone();
        h.qps[0].qpn = Qpn(u32::MAX);
        assert!(matches!(
            refused(&checkpoint::encode(&h, c)),
            CheckpointError::Invalid(_)
        ));
        let mut h = s.clone();
        h.cqs[0].0 = 4_000_000_000;
        assert!(matches!(
            refused(&checkpoint::encode(&h, c)),
            CheckpointError::Invalid(_)
        ));
        let mut h = s.clone();
        h.identity.limits.max_qp = u32::MAX;
        assert!(matches!(
            refused(&checkpoint::encode(&h, c)),
            CheckpointError::Invalid(_)
        ));
        // Dangling references: a QP on a CQ that does not exist, an MR of a missing PD.
        let mut h = s.clone();
        h.qps[0].init.send_cq = CqHandle(999);
        assert!(matches!(
            refused(&checkpoint::encode(&h, c)),
            CheckpointError::Invalid(_)
        ));
        let mut h = s.clone();
        h.pds.clear();
        assert!(matches!(
            refused(&checkpoint::encode(&h, c)),
            CheckpointError::Invalid(_)
        ));
        // Truncated: every length short of the whole blob.
        for n in 0..good.len() {
            let e = refused(&good[..n]);
            assert!(
                matches!(e, CheckpointError::Truncated(_) | CheckpointError::BadMagic),
                "{} bytes of {}: {e:?}",
                n,
                good.len()
            );
        }
        // A section shortened, its checksum and the table made to match: a decode error.
        let mut parts = parts_of(&good);
        let q = parts.iter_mut().find(|p| p.0 == SectionKind::Qps).unwrap();
        q.2.truncate(q.2.len() / 2);
        assert!(matches!(
            refused(&rebuild(c, false, &parts)),
            CheckpointError::Decode(_)
        ));
        // Bad checksums: of a section, of the table.
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0x20;
        assert_eq!(refused(&b), CheckpointError::Checksum);
        let mut b = good.clone();
        b[checkpoint::container::HEADER_LEN + 4] ^= 1;
        assert_eq!(refused(&b), CheckpointError::Checksum);
        // Huge lengths: a section claiming 4 GiB, a section count of four billion.
        let mut b = good.clone();
        b[checkpoint::container::HEADER_LEN + 8..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let table_len = parts_of(&good).len() * checkpoint::container::ENTRY_LEN;
        let crc = crc32fast::hash(&b[16..16 + table_len]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(refused(&b), CheckpointError::Section(_)));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(refused(&b), CheckpointError::Section(_)));
        // A section's item count that lies.
        let mut parts = parts_of(&good);
        parts
            .iter_mut()
            .find(|p| p.0 == SectionKind::Qps)
            .unwrap()
            .1 += 1;
        assert!(matches!(
            refused(&rebuild(c, false, &parts)),
            CheckpointError::Section(_)
        ));
        // Sections out of the rules: the identity twice, or missing, or not first; counters
        // missing; a base section in a full checkpoint.
        let parts = parts_of(&good);
        let mut twice = parts.clone();
        twice.insert(1, parts[0].clone());
        assert!(matches!(
            refused(&rebuild(c, false, &twice)),
            CheckpointError::Section(_)
        ));
        assert!(matches!(
            refused(&rebuild(c, false, &parts[1..])),
            CheckpointError::Section(_)
        ));
        let no_counters: Vec<_> = parts
            .iter()
            .filter(|p| p.0 != SectionKind::Counters)
            .cloned()
            .collect();
        assert!(matches!(
            refused(&rebuild(c, false, &no_counters)),
            CheckpointError::Section(_)
        ));
        let mut with_base = parts.clone();
        let base = codec::encode_value(c, &checkpoint::BaseStateV2 { digest: [0; 32] }).unwrap();
        with_base.insert(1, (SectionKind::Base, 1, base));
        assert!(matches!(
            refused(&rebuild(c, false, &with_base)),
            CheckpointError::Section(_)
        ));
        // A QP section of more QPs than a section may hold.
        let many: Vec<_> =
            std::iter::repeat_n(s.qps[0].clone(), checkpoint::container::QPS_PER_SECTION + 1)
                .collect();
        let mut parts = parts_of(&good);
        let q = parts.iter_mut().find(|p| p.0 == SectionKind::Qps).unwrap();
        *q = (
            SectionKind::Qps,
            many.len() as u32,
            codec::encode_value(c, &many).unwrap(),
        );
        assert!(matches!(
            refused(&rebuild(c, false, &parts)),
            CheckpointError::Section(_)
        ));
    }
}

#[test]
fn a_delta_against_the_wrong_base_or_a_hostile_delta_is_refused() {
    let base = busy();
    let mut l = Load::new();
    for op in [Op::Pair, Op::Mr(100)] {
        l.apply(&op);
    }
    let other = l.snapshot();
    let mut cur = base.clone();
    cur.qps[0].req.psn = Psn((cur.qps[0].req.psn.0 + 1) & Psn::MASK);
    cur.qps.pop();
    for c in codec::all().iter().copied() {
        let blob = checkpoint::save_delta(&base, &cur, c).unwrap();
        assert!(checkpoint::decode_delta(&base, &blob).unwrap() == cur);
        // Another VF's state, or this one a moment later, is not its base.
        assert_eq!(
            checkpoint::decode_delta(&other, &blob).err(),
            Some(CheckpointError::WrongBase)
        );
        assert_eq!(
            checkpoint::decode_delta(&cur, &blob).err(),
            Some(CheckpointError::WrongBase)
        );
        let kept_other = checkpoint::Base::new(other.clone()).unwrap();
        assert_eq!(
            checkpoint::decode_delta_onto(&kept_other, &blob).err(),
            Some(CheckpointError::WrongBase)
        );
        let kept = checkpoint::Base::new(base.clone()).unwrap();
        assert!(checkpoint::decode_delta_onto(&kept, &blob).unwrap() == cur);
        assert_eq!(checkpoint::save_delta_from(&kept, &cur, c).unwrap(), blob);
        // A full checkpoint is no delta; a delta is no full checkpoint.
        let full = checkpoint::encode(&cur, c);
        assert_eq!(
            checkpoint::decode_delta(&base, &full).err(),
            Some(CheckpointError::NotADelta)
        );
        assert_eq!(refused(&blob), CheckpointError::DeltaNeedsBase);
        // The delta flag without a base section, or a base section without the flag.
        let parts = parts_of(&blob);
        assert!(matches!(
            checkpoint::decode_delta(&base, &rebuild(c, false, &parts)).err(),
            Some(CheckpointError::Section(_))
        ));
        let no_base: Vec<_> = parts
            .iter()
            .filter(|p| p.0 != SectionKind::Base)
            .cloned()
            .collect();
        assert!(matches!(
            checkpoint::decode_delta(&base, &rebuild(c, true, &no_base)).err(),
            Some(CheckpointError::Section(_))
        ));
        // Removing what the base does not have, or removing and changing the same QP.
        let mut d = checkpoint::delta(&base, &cur).unwrap();
        d.removed.qps.push(0xabcd);
        let e = checkpoint::apply(&base, d).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Invalid(ref m) if m.contains("not in the base")),
            "{e:?}"
        );
        let mut d = checkpoint::delta(&base, &cur).unwrap();
        let q = d.changed.qps[0].qpn.0;
        d.removed.qps.push(q);
        let e = checkpoint::apply(&base, d).unwrap_err();
        assert!(
            matches!(e, CheckpointError::Invalid(ref m) if m.contains("both removed and changed")),
            "{e:?}"
        );
        // A delta whose result is hostile is refused by the checks of the full state.
        let mut bad = cur.clone();
        bad.qps[0].init.recv_cq = CqHandle(4242);
        let blob = checkpoint::save_delta(&base, &bad, c).unwrap();
        let s = checkpoint::decode_delta(&base, &blob).unwrap();
        assert!(checkpoint::validate(&s, &VfLimits::default()).is_err());
    }
    // Decoded deltas are what they say.
    let blob = checkpoint::save_delta(&base, &cur, codec::BINARY).unwrap();
    match checkpoint::decode_any(&blob).unwrap().1 {
        CheckpointV2::Delta(d) => {
            assert_eq!(d.removed.qps.len(), 1);
            assert_eq!(d.changed.qps.len(), 1, "only the QP whose PSN moved");
            assert_eq!(d.base.digest, checkpoint::digest(&base).unwrap());
        }
        CheckpointV2::Full(_) => panic!("a delta decoded as a full checkpoint"),
    }
}

#[test]
fn the_identity_reads_without_decoding_the_qps() {
    let s = busy();
    for c in codec::all().iter().copied() {
        let mut blob = checkpoint::encode(&s, c);
        // Ruin every QP section's bytes (not the table): the identity still reads.
        let t = checkpoint::container::Table::parse(&blob).unwrap();
        for q in t.sections.iter().filter(|x| x.kind == SectionKind::Qps) {
            for b in &mut blob[q.offset..q.offset + q.len as usize] {
                *b = 0xff;
            }
        }
        assert_eq!(
            checkpoint::container::read_identity(&blob).unwrap(),
            s.identity
        );
        assert_eq!(
            checkpoint::decode(&blob).err(),
            Some(CheckpointError::Checksum)
        );
    }
}

/// The workloads reach the states that make the properties worth checking: WQEs mid-flight,
/// responses owed, objects destroyed between snapshots (deltas that remove).
#[test]
fn the_generated_workloads_reach_interesting_states() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config::default());
    let (mut mid_flight, mut owed, mut removals, mut mrs_removed) = (0, 0, 0, 0);
    for _ in 0..32 {
        let ops = workload().new_tree(&mut runner).unwrap().current();
        let snaps = snapshots(&ops);
        for s in &snaps {
            mid_flight += s
                .qps
                .iter()
                .filter(|q| q.req.sq.iter().any(|w| w.started && w.done.is_none()))
                .count();
            owed += s
                .qps
                .iter()
                .filter(|q| !q.resp.out.is_empty() || q.resp.current.is_some())
                .count();
        }
        for w in snaps.windows(2) {
            let d = checkpoint::delta(&w[0], &w[1]).unwrap();
            removals += d.removed.qps.len();
            mrs_removed += d.removed.mrs.len();
        }
    }
    assert!(mid_flight > 0, "no snapshot with a WQE in flight");
    assert!(removals > 0, "no delta removed a QP");
    assert!(mrs_removed > 0, "no delta removed an MR");
    assert!(
        owed > 0,
        "no snapshot with a response owed or a message half received"
    );
    eprintln!("{mid_flight} QPs mid-flight, {owed} owing responses, {removals} QP and {mrs_removed} MR removals");
}

/// A destination decodes each section as soon as its bytes are in: after every chunk, exactly
/// the sections that have fully arrived are decoded, and the end result is the whole blob's.
#[test]
fn sections_decode_while_the_blob_arrives() {
    use checkpoint::container::{Incremental, Table};
    let mut s = busy();
    let q = s.qps[0].clone();
    s.qps = (0..2500)
        .map(|i| {
            let mut q = q.clone();
            q.qpn = Qpn(17 + i);
            q
        })
        .collect();
    for c in codec::all().iter().copied() {
        let blob = checkpoint::encode(&s, c);
        let t = Table::parse(&blob).unwrap();
        assert_eq!(
            t.sections
                .iter()
                .filter(|x| x.kind == SectionKind::Qps)
                .count(),
            3,
            "2,500 QPs in sections of 1,024"
        );
        let mut inc = Incremental::new();
        let mut at = 0;
        let mut seen_partial = false;
        for chunk in blob.chunks(997) {
            at += chunk.len();
            let done = inc.push(chunk).unwrap();
            let complete = t
                .sections
                .iter()
                .filter(|x| x.offset + x.len as usize <= at)
                .count();
            assert_eq!(
                done,
                complete,
                "{} after {at} of {} bytes",
                c.name(),
                blob.len()
            );
            seen_partial |= done > 0 && done < t.sections.len();
        }
        assert!(
            seen_partial,
            "{}: no section was decoded before the end",
            c.name()
        );
        let (_, got) = inc.finish().unwrap();
        assert!(got == checkpoint::decode_any(&blob).unwrap().1);
        // Refusals are the whole blob's: a bad checksum as soon as its section is in, a
        // truncation at the end, bytes past the last section.
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut inc = Incremental::new();
        assert_eq!(inc.push(&bad).err(), Some(CheckpointError::Checksum));
        let mut inc = Incremental::new();
        inc.push(&blob[..blob.len() - 1]).unwrap();
        assert_eq!(
            inc.finish().err(),
            Some(CheckpointError::Truncated("sections"))
        );
        let mut inc = Incremental::new();
        inc.push(&blob).unwrap();
        assert!(matches!(inc.push(&[0]), Err(CheckpointError::Section(_))));
    }
}
