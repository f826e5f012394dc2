//! The simulator's traffic: RC connections and UD groups, each posting its workload and
//! checking every completion against the model of what must have happened.

use crate::sim::check::{pattern, Checker};
use crate::sim::plan::{Plan, RcPlan, UdPlan};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use vhca_device::*;
use vhca_fabric::conn::{activate_ud, connect, create_qp, QpEnd, RcParams};
use vhca_fabric::{VfAddr, World};

/// Splits `len` bytes at `addr` into 1–4 SGEs.
fn split_sgl(rng: &mut ChaCha8Rng, addr: u64, len: u32, lkey: MemKey, max_sge: usize) -> Vec<Sge> {
    let n = rng.gen_range(1..=max_sge.max(1)).min(len.max(1) as usize);
    let mut cuts: Vec<u32> = (1..n).map(|_| rng.gen_range(0..=len)).collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(n);
    let mut prev = 0;
    for c in cuts.into_iter().chain(std::iter::once(len)) {
        out.push(Sge {
            addr: addr + prev as u64,
            len: c - prev,
            lkey,
        });
        prev = c;
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send,
    SendImm,
    SendInv,
    Write,
    WriteImm,
    Read,
    CmpSwap,
    FetchAdd,
    LocalInv,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Send => "SEND",
            Kind::SendImm => "SEND_WITH_IMM",
            Kind::SendInv => "SEND_WITH_INV",
            Kind::Write => "RDMA_WRITE",
            Kind::WriteImm => "RDMA_WRITE_WITH_IMM",
            Kind::Read => "RDMA_READ",
            Kind::CmpSwap => "ATOMIC_CMP_AND_SWP",
            Kind::FetchAdd => "ATOMIC_FETCH_AND_ADD",
            Kind::LocalInv => "LOCAL_INV",
        }
    }
}

const KINDS: [Kind; 9] = [
    Kind::Send,
    Kind::SendImm,
    Kind::SendInv,
    Kind::Write,
    Kind::WriteImm,
    Kind::Read,
    Kind::CmpSwap,
    Kind::FetchAdd,
    Kind::LocalInv,
];

#[derive(Debug)]
struct Posted {
    wr_id: u64,
    kind: Kind,
    slot: Option<usize>,
    len: u32,
    /// WRITE: where the data must land in the peer. READ: the local slot.
    check_at: u64,
    /// Atomics: the original value the responder must return.
    expect_orig: u64,
    /// LOCAL_INV: the key that must be invalid afterwards.
    key: Option<MemKey>,
    /// Seeds the bytes of the message (see `pattern`).
    id: u64,
    /// Uses a bad rkey on purpose.
    bad: bool,
}

#[derive(Debug)]
struct ExpectedRecv {
    id: u64,
    len: u32,
    imm: Option<u32>,
    with_imm_write: bool,
    inv: Option<MemKey>,
}

struct End {
    q: QpEnd,
    key: MemKey,
    slots: Vec<u64>,
    slot_busy: Vec<bool>,
    /// Regions in this end's memory that the peer's WRITEs/READs of slot i use.
    targets: Vec<u64>,
    atomic_word: u64,
    /// Model of `atomic_word`, advanced in post order of the peer's atomics.
    atomic_model: u64,
    rq_bufs: Vec<u64>,
    rq_free: Vec<usize>,
    rq_posted: HashMap<u64, usize>,
    ops_left: usize,
    posted_count: usize,
    posted: VecDeque<Posted>,
    expected: VecDeque<ExpectedRecv>,
    next_wr: u64,
    /// A send completion of this side already failed (the QP is in ERR).
    failed: bool,
}

pub struct RcConn {
    index: usize,
    plan: RcPlan,
    ends: [End; 2],
    /// A failure was injected on purpose (bad rkey) or the link was cut: errors are allowed.
    broken: Option<String>,
    cut: bool,
}

pub struct UdMember {
    q: QpEnd,
    key: MemKey,
    send_buf: u64,
    rq_bufs: Vec<u64>,
    rq_posted: HashMap<u64, usize>,
    ahs: Vec<AhHandle>,
    ops_left: usize,
    inflight: usize,
    next_wr: u64,
}

pub struct UdGroup {
    plan: UdPlan,
    members: Vec<UdMember>,
    /// id → (source member, destination member, length).
    sent: HashMap<u64, (usize, usize, u32)>,
    bad_ids: HashSet<u64>,
    next_id: u64,
    send_done: usize,
}

pub enum Flow {
    Rc(Box<RcConn>),
    Ud(Box<UdGroup>),
}

const UD_QKEY: u32 = 0x1111_2222;
const UD_MAX: u32 = 4096;

/// Creates every VF, connection and UD QP of the plan.
pub fn build(w: &mut World, plan: &Plan, rng: &mut ChaCha8Rng) -> VerbsResult<Vec<Flow>> {
    let mut vfs: Vec<VfAddr> = Vec::new();
    let pf_ids: Vec<usize> = plan.pfs.iter().map(|&n| w.add_pf(n + 2)).collect();
    for &(p, _) in &plan.vfs {
        vfs.push(w.add_vf(pf_ids[p])?);
    }
    let mut flows = Vec::new();
    for (i, rp) in plan.rc.iter().enumerate() {
        let params = RcParams {
            mtu: rp.mtu,
            timeout: rp.timeout,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: rng.gen_range(1..=14),
            max_rd_atomic: rp.max_rd_atomic,
            ..RcParams::default()
        };
        let mk = |w: &mut World, v: VfAddr, side: usize| -> VerbsResult<End> {
            let vf = w.vf_mut(v);
            let pd = vf.alloc_pd()?;
            let cq = vf.create_cq(1024)?;
            let cap = QpCap {
                max_send_wr: 64,
                max_recv_wr: 64,
                max_send_sge: 4,
                max_recv_sge: 4,
                max_inline_data: 128,
            };
            let q = create_qp(w, v, pd, cq, QpType::Rc, cap, None)?;
            let depth = rp.depth[side];
            let peer_depth = rp.depth[1 - side];
            let m = rp.max_size as u64;
            let total = m * (depth + peer_depth + rp.rq_slots[side]) as u64 + 64;
            let base = w.alloc(v, total)?;
            let key = w.vf_mut(v).reg_mr(pd, base, total, params.access)?;
            let slots: Vec<u64> = (0..depth).map(|i| base + i as u64 * m).collect();
            let tb = base + depth as u64 * m;
            let targets: Vec<u64> = (0..peer_depth).map(|i| tb + i as u64 * m).collect();
            let rb = tb + peer_depth as u64 * m;
            let rq_bufs: Vec<u64> = (0..rp.rq_slots[side]).map(|i| rb + i as u64 * m).collect();
            let atomic_word = rb + rp.rq_slots[side] as u64 * m;
            Ok(End {
                q,
                key,
                slot_busy: vec![false; slots.len()],
                slots,
                targets,
                atomic_word,
                atomic_model: 0,
                rq_free: (0..rq_bufs.len()).collect(),
                rq_bufs,
                rq_posted: HashMap::new(),
                ops_left: rp.ops[side],
                posted_count: 0,
                posted: VecDeque::new(),
                expected: VecDeque::new(),
                next_wr: ((i as u64) << 40) | ((side as u64) << 39),
                failed: false,
            })
        };
        let a = mk(w, vfs[rp.a], 0)?;
        let b = mk(w, vfs[rp.b], 1)?;
        let pa = Psn::new(rng.gen());
        let pb = Psn::new(rng.gen());
        connect(w, a.q, b.q, pa, pb, &params)?;
        connect(w, b.q, a.q, pb, pa, &params)?;
        let mut conn = RcConn {
            index: i,
            plan: rp.clone(),
            ends: [a, b],
            broken: None,
            cut: false,
        };
        for side in 0..2 {
            conn.fill_recvs(w, side);
        }
        flows.push(Flow::Rc(Box::new(conn)));
    }
    for up in &plan.ud {
        let mut members = Vec::new();
        for &vi in &up.members {
            let v = vfs[vi];
            let vf = w.vf_mut(v);
            let pd = vf.alloc_pd()?;
            let cq = vf.create_cq(512)?;
            let cap = QpCap {
                max_send_wr: 16,
                max_recv_wr: 64,
                max_send_sge: 2,
                max_recv_sge: 2,
                max_inline_data: 64,
            };
            let q = create_qp(w, v, pd, cq, QpType::Ud, cap, None)?;
            activate_ud(w, q, UD_QKEY, Psn::new(rng.gen()))?;
            let total = UD_MAX as u64 * 2 + 16 * (UD_MAX as u64 + 40);
            let base = w.alloc(v, total)?;
            let key = w.vf_mut(v).reg_mr(pd, base, total, Access::LOCAL_WRITE)?;
            let rq_bufs = (0..16)
                .map(|i| base + UD_MAX as u64 * 2 + i * (UD_MAX as u64 + 40))
                .collect();
            members.push(UdMember {
                q,
                key,
                send_buf: base,
                rq_bufs,
                rq_posted: HashMap::new(),
                ahs: Vec::new(),
                ops_left: up.ops,
                inflight: 0,
                next_wr: 0,
            });
        }
        let gids: Vec<Gid> = members.iter().map(|m| w.gid(m.q.vf)).collect();
        for m in members.iter_mut() {
            for g in &gids {
                let ah = w.vf_mut(m.q.vf).create_ah(
                    m.q.pd,
                    AhAttr {
                        dgid: *g,
                        hop_limit: 64,
                        ..Default::default()
                    },
                )?;
                m.ahs.push(ah);
            }
            for i in 0..m.rq_bufs.len() {
                post_ud_recv(w, m, i)?;
            }
        }
        flows.push(Flow::Ud(Box::new(UdGroup {
            plan: up.clone(),
            members,
            sent: HashMap::new(),
            bad_ids: HashSet::new(),
            next_id: 1,
            send_done: 0,
        })));
    }
    Ok(flows)
}

fn post_ud_recv(w: &mut World, m: &mut UdMember, i: usize) -> VerbsResult<()> {
    m.next_wr += 1;
    let wr_id = m.next_wr;
    let buf = m.rq_bufs[i];
    let total = UD_MAX + 40;
    // Sometimes the GRH area is its own SGE, as ibv_ud_pingpong-style programs do.
    let sgl = if i % 2 == 0 {
        vec![
            Sge {
                addr: buf,
                len: 40,
                lkey: m.key,
            },
            Sge {
                addr: buf + 40,
                len: total - 40,
                lkey: m.key,
            },
        ]
    } else {
        vec![Sge {
            addr: buf,
            len: total,
            lkey: m.key,
        }]
    };
    w.vf_mut(m.q.vf).post_recv(m.q.qpn, RecvWr { wr_id, sgl })?;
    m.rq_posted.insert(wr_id, i);
    Ok(())
}

impl Flow {
    pub fn post_ready(&mut self, w: &mut World, rng: &mut ChaCha8Rng, c: &mut Checker) {
        match self {
            Flow::Rc(r) => {
                // Nothing is posted while either end is in a migration's blackout: its
                // application is paused with its VM.
                if r.ends.iter().all(|e| w.has_vf(e.q.vf)) {
                    for side in 0..2 {
                        r.post(w, rng, c, side);
                    }
                }
            }
            Flow::Ud(u) => u.post(w, rng, c),
        }
    }

    /// Takes every completion of this flow's CQs and checks it; returns how many there were.
    pub fn poll(&mut self, w: &mut World, wcs: &mut Vec<WorkCompletion>, c: &mut Checker) -> usize {
        let mut seen = 0;
        match self {
            Flow::Rc(r) => {
                for side in 0..2 {
                    wcs.clear();
                    let e = &r.ends[side].q;
                    if !w.has_vf(e.vf) {
                        continue;
                    }
                    let _ = w.vf_mut(e.vf).poll_cq(e.cq, 64, wcs);
                    seen += wcs.len();
                    for wc in wcs.iter() {
                        c.saw(wc);
                        r.on_completion(w, c, side, wc);
                    }
                }
            }
            Flow::Ud(u) => {
                for i in 0..u.members.len() {
                    wcs.clear();
                    let e = &u.members[i].q;
                    if !w.has_vf(e.vf) {
                        continue;
                    }
                    let _ = w.vf_mut(e.vf).poll_cq(e.cq, 64, wcs);
                    seen += wcs.len();
                    for wc in wcs.iter() {
                        c.saw(wc);
                        u.on_completion(w, c, i, wc);
                    }
                }
            }
        }
        seen
    }

    /// A VF moved (migration): every end on `old` is now on `new`.
    pub fn relocate(&mut self, old: VfAddr, new: VfAddr) {
        match self {
            Flow::Rc(r) => {
                for e in r.ends.iter_mut() {
                    if e.q.vf == old {
                        e.q.vf = new;
                    }
                }
            }
            Flow::Ud(u) => {
                for m in u.members.iter_mut() {
                    if m.q.vf == old {
                        m.q.vf = new;
                    }
                }
            }
        }
    }

    /// The two VFs an RC connection joins, in a canonical order.
    pub fn vf_pair(&self) -> Option<(VfAddr, VfAddr)> {
        match self {
            Flow::Rc(r) => {
                let (a, b) = (r.ends[0].q.vf, r.ends[1].q.vf);
                Some((a.min(b), a.max(b)))
            }
            Flow::Ud(_) => None,
        }
    }

    pub fn cut(&mut self, w: &mut World, c: &mut Checker) {
        if let Flow::Rc(r) = self {
            if r.cut {
                return;
            }
            let ga = w.gid(r.ends[0].q.vf);
            let gb = w.gid(r.ends[1].q.vf);
            w.switch.cut(ga, gb);
            w.switch.cut(gb, ga);
            c.injected(format!(
                "link cut between {} and {} at {} (rc{})",
                r.ends[0].q.vf, r.ends[1].q.vf, w.now, r.index
            ));
            r.cut = true;
            r.broken.get_or_insert_with(|| "link cut".into());
            for e in r.ends.iter_mut() {
                e.ops_left = 0;
            }
        }
    }

    pub fn finished(&self) -> bool {
        match self {
            Flow::Rc(r) => r.ends.iter().all(|e| {
                e.ops_left == 0
                    && e.posted.is_empty()
                    && (r.broken.is_some() || e.expected.is_empty())
            }),
            Flow::Ud(u) => u.members.iter().all(|m| m.ops_left == 0 && m.inflight == 0),
        }
    }

    pub fn describe(&self, w: &World) -> String {
        match self {
            Flow::Rc(r) => {
                let e = |s: usize| {
                    let en = &r.ends[s];
                    let st = w
                        .has_vf(en.q.vf)
                        .then(|| w.vf(en.q.vf))
                        .and_then(|v| v.qp(en.q.qpn))
                        .map(|q| {
                            format!(
                                "{:?} una={} psn={} epsn={} rq={}",
                                q.state(),
                                q.req.una,
                                q.req.psn,
                                q.resp.epsn,
                                q.rq.len()
                            )
                        });
                    format!(
                        "{} qp{} left={} posted={} busy={:?} expected={} recvs_free={} recvs_posted={} {:?}",
                        en.q.vf,
                        en.q.qpn.0,
                        en.ops_left,
                        en.posted.len(),
                        en.slot_busy,
                        en.expected.len(),
                        en.rq_free.len(),
                        en.rq_posted.len(),
                        st
                    )
                };
                format!("rc{} broken={:?} [{} | {}]", r.index, r.broken, e(0), e(1))
            }
            Flow::Ud(_) => "ud".into(),
        }
    }

    pub fn final_checks(&self, w: &World, c: &mut Checker) {
        if let Flow::Rc(r) = self {
            if r.broken.is_some() {
                return;
            }
            for s in 0..2 {
                let e = &r.ends[s];
                if let Ok(b) = w.read(e.q.vf, e.atomic_word, 8) {
                    let v = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                    if v != e.atomic_model {
                        c.violation(format!(
                            "rc{} side {s}: atomic word {v:#x}, model {:#x}",
                            r.index, e.atomic_model
                        ));
                    }
                }
                if let Some(q) = w.vf(e.q.vf).qp(e.q.qpn) {
                    if q.state() != QpState::Rts {
                        c.violation(format!(
                            "rc{} side {s}: QP ended in {:?} with no injected cause",
                            r.index,
                            q.state()
                        ));
                    }
                }
            }
        }
    }
}

impl RcConn {
    fn fill_recvs(&mut self, w: &mut World, side: usize) {
        let e = &mut self.ends[side];
        let m = self.plan.max_size;
        while let Some(i) = e.rq_free.pop() {
            e.next_wr += 1;
            let wr_id = e.next_wr | (1 << 38);
            let buf = e.rq_bufs[i];
            let sgl = if m >= 3 {
                vec![
                    Sge {
                        addr: buf,
                        len: m / 3,
                        lkey: e.key,
                    },
                    Sge {
                        addr: buf + (m / 3) as u64,
                        len: m - m / 3,
                        lkey: e.key,
                    },
                ]
            } else {
                vec![Sge {
                    addr: buf,
                    len: m,
                    lkey: e.key,
                }]
            };
            if w.vf_mut(e.q.vf)
                .post_recv(e.q.qpn, RecvWr { wr_id, sgl })
                .is_err()
            {
                e.rq_free.push(i);
                return;
            }
            e.rq_posted.insert(wr_id, i);
        }
    }

    fn post(&mut self, w: &mut World, rng: &mut ChaCha8Rng, c: &mut Checker, side: usize) {
        if self.broken.is_some() {
            return;
        }
        loop {
            let me = &self.ends[side];
            if me.ops_left == 0 {
                return;
            }

            let Some(slot) = me.slot_busy.iter().position(|b| !b) else {
                return;
            };
            let kind = KINDS[rng.gen_range(0..KINDS.len())];
            let op_index = me.posted_count;
            let bad = self.plan.bad_rkey_at == Some((side, op_index));
            let kind = if bad { Kind::Write } else { kind };
            // A zero-length WRITE does not check its rkey (IBTA), so the bad one carries data.
            let len_floor = if bad { 1 } else { 0 };
            let id = rng.gen::<u64>() >> 8;
            let max = self.plan.max_size;
            let len = match kind {
                Kind::CmpSwap | Kind::FetchAdd => 8,
                Kind::LocalInv => 0,
                _ => {
                    if rng.gen_range(0..100) < 95 {
                        crate::sim::plan::Plan::size_of(rng, max)
                    } else {
                        0
                    }
                }
            }
            .max(len_floor);
            let (mine, peer) = if side == 0 {
                let (a, b) = self.ends.split_at_mut(1);
                (&mut a[0], &mut b[0])
            } else {
                let (a, b) = self.ends.split_at_mut(1);
                (&mut b[0], &mut a[0])
            };
            mine.next_wr += 1;
            let wr_id = mine.next_wr;
            let local = mine.slots[slot];
            let data = pattern(id, len as usize);
            let mut posted = Posted {
                wr_id,
                kind,
                slot: Some(slot),
                len,
                check_at: 0,
                expect_orig: 0,
                key: None,
                bad,
                id,
            };
            let sgl = split_sgl(rng, local, len, mine.key, 4);
            let target = peer.targets[slot];
            let imm = rng.gen::<u32>();
            let mut flags = SendFlags::SIGNALED;
            if rng.gen_bool(0.2) {
                flags |= SendFlags::FENCE;
            }
            if rng.gen_bool(0.3) {
                flags |= SendFlags::SOLICITED;
            }
            let inline = len <= 128
                && matches!(
                    kind,
                    Kind::Send | Kind::SendImm | Kind::Write | Kind::WriteImm
                )
                && rng.gen_bool(0.3);
            let op = match kind {
                Kind::Send => SendOp::Send,
                Kind::SendImm => SendOp::SendWithImm { imm },
                Kind::SendInv => {
                    // The peer's application registers a buffer whose key the SEND invalidates.
                    let key = match w.vf_mut(peer.q.vf).reg_mr(
                        peer.q.pd,
                        peer.targets[slot],
                        64,
                        Access::LOCAL_WRITE | Access::REMOTE_READ,
                    ) {
                        Ok(k) => k,
                        Err(e) => {
                            c.violation(format!("reg_mr for SEND_WITH_INV: {e}"));
                            return;
                        }
                    };
                    SendOp::SendWithInv { rkey: key }
                }
                Kind::Write => SendOp::Write {
                    remote_addr: target,
                    rkey: if bad { MemKey(0x00de_ad77) } else { peer.key },
                },
                Kind::WriteImm => SendOp::WriteWithImm {
                    remote_addr: target,
                    rkey: peer.key,
                    imm,
                },
                Kind::Read => SendOp::Read {
                    remote_addr: target,
                    rkey: peer.key,
                },
                Kind::CmpSwap => {
                    let compare = if rng.gen_bool(0.5) {
                        peer.atomic_model
                    } else {
                        rng.gen()
                    };
                    let swap = rng.gen();
                    posted.expect_orig = peer.atomic_model;
                    if peer.atomic_model == compare {
                        peer.atomic_model = swap;
                    }
                    SendOp::CmpSwap {
                        remote_addr: peer.atomic_word,
                        rkey: peer.key,
                        compare,
                        swap,
                    }
                }
                Kind::FetchAdd => {
                    let add = rng.gen::<u64>() >> rng.gen_range(0..64);
                    posted.expect_orig = peer.atomic_model;
                    peer.atomic_model = peer.atomic_model.wrapping_add(add);
                    SendOp::FetchAdd {
                        remote_addr: peer.atomic_word,
                        rkey: peer.key,
                        add,
                    }
                }
                Kind::LocalInv => {
                    let key =
                        match w
                            .vf_mut(mine.q.vf)
                            .reg_mr(mine.q.pd, local, 64, Access::LOCAL_WRITE)
                        {
                            Ok(k) => k,
                            Err(e) => {
                                c.violation(format!("reg_mr for LOCAL_INV: {e}"));
                                return;
                            }
                        };
                    posted.key = Some(key);
                    SendOp::LocalInv { key }
                }
            };
            match kind {
                Kind::Send | Kind::SendImm | Kind::SendInv | Kind::Write | Kind::WriteImm => {
                    let _ = w.write(mine.q.vf, local, &data);
                }
                Kind::Read => {
                    // The peer application prepares what will be read.
                    let _ = w.write(peer.q.vf, target, &data);
                    posted.check_at = local;
                }
                _ => {}
            }
            if matches!(kind, Kind::Write | Kind::WriteImm) {
                posted.check_at = target;
            }
            let mut wr = SendWr::new(wr_id, op).flags(flags);
            if inline {
                wr = wr.inline(&data);
            } else {
                wr.sgl = sgl;
            }
            if let Err(e) = w.vf_mut(mine.q.vf).post_send(mine.q.qpn, &wr) {
                c.violation(format!(
                    "rc{} post_send {kind:?} len {len}: {e}",
                    self.index
                ));
                mine.ops_left = 0;
                return;
            }
            if bad {
                c.injected(format!(
                    "rc{} side {side}: RDMA WRITE with a bad rkey (op {op_index})",
                    self.index
                ));
                // From here on both QPs may see errors: the responder goes to ERR and flushes.
                self.broken = Some("bad rkey injected".into());
            }
            match kind {
                Kind::Send | Kind::SendImm | Kind::SendInv | Kind::WriteImm if !bad => {
                    peer.expected.push_back(ExpectedRecv {
                        id,
                        len,
                        imm: matches!(kind, Kind::SendImm | Kind::WriteImm).then_some(imm),
                        with_imm_write: kind == Kind::WriteImm,
                        inv: if let SendOp::SendWithInv { rkey } = op {
                            Some(rkey)
                        } else {
                            None
                        },
                    })
                }
                _ => {}
            }
            mine.slot_busy[slot] = true;
            mine.ops_left -= 1;
            mine.posted_count += 1;
            mine.posted.push_back(posted);
        }
    }

    fn on_completion(&mut self, w: &mut World, c: &mut Checker, side: usize, wc: &WorkCompletion) {
        let idx = self.index;
        if matches!(wc.opcode, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm)
            && wc.wr_id & (1 << 38) != 0
        {
            self.on_recv(w, c, side, wc);
            return;
        }
        let (mine, peer) = if side == 0 {
            let (a, b) = self.ends.split_at_mut(1);
            (&mut a[0], &mut b[0])
        } else {
            let (a, b) = self.ends.split_at_mut(1);
            (&mut b[0], &mut a[0])
        };
        let Some(p) = mine.posted.pop_front() else {
            c.violation(format!(
                "rc{idx} side {side}: completion {wc:?} for nothing posted"
            ));
            return;
        };
        if let Some(s) = p.slot {
            mine.slot_busy[s] = false;
        }
        if p.wr_id != wc.wr_id {
            c.violation(format!(
                "rc{idx} side {side}: completion out of order: got wr {:#x}, expected {:#x} ({:?})",
                wc.wr_id, p.wr_id, p.kind
            ));
            return;
        }
        if wc.status != WcStatus::Success {
            // The bad WRITE itself must fail with the access error (or run out of retries when
            // the NAK was lost and the responder, now in ERR, stays silent); anything else may
            // fail only once something was injected on this connection.
            let explained = if self.cut || mine.failed {
                // A link cut explains anything; after a first failure the rest is flushed.
                true
            } else if p.bad {
                matches!(wc.status, WcStatus::RemAccessErr | WcStatus::RetryExcErr)
            } else {
                self.broken.is_some()
            };
            self.broken
                .get_or_insert_with(|| format!("{:?}", wc.status));
            mine.failed = true;
            if !explained {
                c.violation(format!(
                    "rc{idx} side {side}: {:?} failed with {:?} and nothing was injected ({}; peer {})",
                    p.kind,
                    wc.status,
                    describe_qp(w, &mine.q),
                    describe_qp(w, &peer.q)
                ));
            }
            mine.ops_left = 0;
            peer.ops_left = 0;
            return;
        }
        if p.bad {
            c.violation(format!(
                "rc{idx} side {side}: a WRITE with a bad rkey succeeded"
            ));
            return;
        }
        let id = p.id;
        match p.kind {
            Kind::Write | Kind::WriteImm => {
                let got = w
                    .read(peer.q.vf, p.check_at, p.len as usize)
                    .unwrap_or_default();
                if got != pattern(id, p.len as usize) {
                    c.violation(format!(
                        "rc{idx} side {side}: RDMA WRITE of {} bytes landed wrong",
                        p.len
                    ));
                }
            }
            Kind::Read => {
                let got = w
                    .read(mine.q.vf, p.check_at, p.len as usize)
                    .unwrap_or_default();
                if got != pattern(id, p.len as usize) {
                    c.violation(format!(
                        "rc{idx} side {side}: RDMA READ of {} bytes returned wrong data",
                        p.len
                    ));
                }
            }
            Kind::CmpSwap | Kind::FetchAdd => {
                let s = p.slot.map(|s| mine.slots[s]).unwrap_or(0);
                let got = w.read(mine.q.vf, s, 8).unwrap_or_default();
                if got != p.expect_orig.to_le_bytes() {
                    c.violation(format!(
                        "rc{idx} side {side}: {:?} returned {got:x?}, model says {:#x}",
                        p.kind, p.expect_orig
                    ));
                }
            }
            Kind::LocalInv => {
                if let Some(k) = p.key {
                    if w.vf(mine.q.vf).mr(k).is_some_and(|m| m.valid) {
                        c.violation(format!("rc{idx} side {side}: LOCAL_INV left the MR valid"));
                    }
                    let _ = w.vf_mut(mine.q.vf).dereg_mr(k);
                }
            }
            _ => {}
        }
        if wc.opcode != expected_wc_opcode(p.kind) {
            c.violation(format!(
                "rc{idx} side {side}: completion opcode {:?} for {:?}",
                wc.opcode, p.kind
            ));
        }
        c.done(p.kind.name(), p.len as u64);
    }

    fn on_recv(&mut self, w: &mut World, c: &mut Checker, side: usize, wc: &WorkCompletion) {
        let idx = self.index;
        let e = &mut self.ends[side];
        let Some(buf_i) = e.rq_posted.remove(&wc.wr_id) else {
            c.violation(format!(
                "rc{idx} side {side}: receive completion for unknown wr {:#x}",
                wc.wr_id
            ));
            return;
        };
        e.rq_free.push(buf_i);
        if wc.status != WcStatus::Success {
            if self.broken.is_none() {
                c.violation(format!(
                    "rc{idx} side {side}: receive failed with {:?} and nothing was injected",
                    wc.status
                ));
            }
            return;
        }
        let Some(x) = e.expected.pop_front() else {
            c.violation(format!(
                "rc{idx} side {side}: a receive completed ({} bytes) but nothing was sent",
                wc.byte_len
            ));
            return;
        };
        let want_op = if x.with_imm_write {
            WcOpcode::RecvRdmaWithImm
        } else {
            WcOpcode::Recv
        };
        if wc.opcode != want_op
            || wc.byte_len != x.len
            || wc.imm != x.imm
            || wc.invalidated_rkey != x.inv
        {
            c.violation(format!(
                "rc{idx} side {side}: receive {wc:?} does not match the next message sent ({x:?})"
            ));
        } else if !x.with_imm_write {
            let got = w
                .read(e.q.vf, e.rq_bufs[buf_i], x.len as usize)
                .unwrap_or_default();
            if got != pattern(x.id, x.len as usize) {
                c.violation(format!(
                    "rc{idx} side {side}: SEND of {} bytes arrived with wrong data",
                    x.len
                ));
            }
        }
        if let Some(k) = x.inv {
            if w.vf(e.q.vf).mr(k).is_some_and(|m| m.valid) {
                c.violation(format!(
                    "rc{idx} side {side}: SEND_WITH_INV left the MR valid"
                ));
            }
            let _ = w.vf_mut(e.q.vf).dereg_mr(k);
        }
        c.done(
            if x.with_imm_write {
                "RECV_RDMA_WITH_IMM"
            } else {
                "RECV"
            },
            x.len as u64,
        );
        // Keep receives posted even after an injected failure: sends queued before the bad
        // one must still find buffers, or they would wait on RNR forever.
        self.fill_recvs(w, side);
    }
}

fn expected_wc_opcode(k: Kind) -> WcOpcode {
    match k {
        Kind::Send | Kind::SendImm | Kind::SendInv => WcOpcode::Send,
        Kind::Write | Kind::WriteImm => WcOpcode::RdmaWrite,
        Kind::Read => WcOpcode::RdmaRead,
        Kind::CmpSwap => WcOpcode::CmpSwap,
        Kind::FetchAdd => WcOpcode::FetchAdd,
        Kind::LocalInv => WcOpcode::LocalInv,
    }
}

fn describe_qp(w: &World, q: &QpEnd) -> String {
    if !w.has_vf(q.vf) {
        return format!("{} (in flight)", q.vf);
    }
    let vf = w.vf(q.vf);
    let c = vf.counters();
    let st = vf
        .qp(q.qpn)
        .map(|x| (x.state(), x.resp.epsn, x.resp.current.is_some()));
    format!(
        "{} qp {} {st:?} retransmits={} timeouts={} rnr={} dropped={}",
        q.vf, q.qpn.0, c.retransmits, c.retry_timeouts, c.rnr_naks_received, c.rx_dropped
    )
}

impl UdGroup {
    fn post(&mut self, w: &mut World, rng: &mut ChaCha8Rng, c: &mut Checker) {
        let n = self.members.len();
        for i in 0..n {
            while self.members[i].ops_left > 0
                && self.members[i].inflight < 4
                && w.has_vf(self.members[i].q.vf)
            {
                let dst = rng.gen_range(0..n);
                let id = self.next_id;
                self.next_id += 1;
                let len = rng.gen_range(0..=UD_MAX);
                let bad = self.plan.bad_qkey_every.is_some_and(|k| id % k as u64 == 0);
                let dst_qpn = self.members[dst].q.qpn;
                let m = &mut self.members[i];
                let data = pattern(id, len as usize);
                m.next_wr += 1;
                let op = SendOp::SendWithImm { imm: id as u32 };
                let dest = UdDest {
                    ah: m.ahs[dst],
                    remote_qpn: dst_qpn,
                    remote_qkey: if bad { UD_QKEY ^ 1 } else { UD_QKEY },
                };
                // One send buffer per member: keep one UD send in flight per buffer by copying
                // the payload inline when small, else waiting for completion.
                let mut wr = SendWr::new(m.next_wr, op).ud(dest);
                if len <= 64 {
                    wr = wr.inline(&data);
                } else if m.inflight > 0 {
                    self.next_id -= 1;
                    break;
                } else {
                    let _ = w.write(m.q.vf, m.send_buf, &data);
                    wr.sgl = vec![Sge {
                        addr: m.send_buf,
                        len,
                        lkey: m.key,
                    }];
                }
                if let Err(e) = w.vf_mut(m.q.vf).post_send(m.q.qpn, &wr) {
                    c.violation(format!("ud post_send: {e}"));
                    m.ops_left = 0;
                    break;
                }
                if bad {
                    self.bad_ids.insert(id);
                    c.injected(format!("ud datagram {id} with a wrong Q_Key"));
                }
                self.sent.insert(id, (i, dst, len));
                m.ops_left -= 1;
                m.inflight += 1;
            }
        }
    }

    fn on_completion(&mut self, w: &mut World, c: &mut Checker, i: usize, wc: &WorkCompletion) {
        if wc.opcode == WcOpcode::Send {
            self.members[i].inflight -= 1;
            self.send_done += 1;
            if wc.status != WcStatus::Success {
                c.violation(format!("ud send failed: {wc:?}"));
            }
            return;
        }
        let m = &mut self.members[i];
        let Some(buf_i) = m.rq_posted.remove(&wc.wr_id) else {
            c.violation(format!("ud receive completion for unknown wr {}", wc.wr_id));
            return;
        };
        if wc.status != WcStatus::Success {
            c.violation(format!("ud receive failed: {wc:?}"));
            return;
        }
        let id = wc.imm.unwrap_or(0) as u64;
        match self.sent.get(&id) {
            None => c.violation(format!("ud: received datagram {id} that nobody sent")),
            Some(&(src, dst, len)) => {
                if self.bad_ids.contains(&id) {
                    c.violation(format!(
                        "ud: datagram {id} with a wrong Q_Key was delivered"
                    ));
                }
                let srcq = self.members[src].q;
                let m = &self.members[i];
                if dst != i
                    || wc.src_qp != srcq.qpn
                    || wc.src_gid != w.gid(srcq.vf)
                    || !wc.grh
                    || wc.byte_len != len + 40
                {
                    c.violation(format!(
                        "ud: datagram {id} completion {wc:?} does not match what was sent"
                    ));
                } else {
                    let got = w
                        .read(m.q.vf, m.rq_bufs[buf_i] + 40, len as usize)
                        .unwrap_or_default();
                    if got != pattern(id, len as usize) {
                        c.violation(format!(
                            "ud: datagram {id} of {len} bytes arrived with wrong data"
                        ));
                    }
                    c.done("UD_RECV", len as u64);
                }
            }
        }
        let m = &mut self.members[i];
        if let Err(e) = post_ud_recv(w, m, buf_i) {
            c.violation(format!("ud post_recv: {e}"));
        }
    }
}
