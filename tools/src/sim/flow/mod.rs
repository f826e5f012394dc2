//! The simulator's traffic: RC and UC connections and UD groups, each posting its workload and
//! checking every completion against the model of what must have happened.

mod kind;
mod local_keys;
mod rc;
mod remote_keys;
mod uc;
mod ud;

use kind::*;
pub use rc::RcConn;
use rc::*;
use uc::build_uc;
pub use uc::UcConn;
use ud::*;
pub use ud::{UdGroup, UdMember};

use crate::sim::check::{pattern, Checker};
use crate::sim::plan::{Plan, RcPlan, UcPlan, UdPlan};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use vhca_device::*;
use vhca_fabric::conn::{activate_ud, connect, connect_uc, create_qp, QpEnd, RcParams};
use vhca_fabric::{VfAddr, World};

/// Splits `len` bytes at `addr` into 1–4 SGEs.
pub(super) fn split_sgl(
    rng: &mut ChaCha8Rng,
    addr: u64,
    len: u32,
    lkey: MemKey,
    max_sge: usize,
) -> Vec<Sge> {
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

pub enum Flow {
    Rc(Box<RcConn>),
    Ud(Box<UdGroup>),
    Uc(Box<UcConn>),
}

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
            // FLUSH needs FLUSH_GLOBAL on the QP and on the MR it names.
            access: if rp.all_ops {
                RcParams::default().access | Access::FLUSH_GLOBAL
            } else {
                RcParams::default().access
            },
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
            // After the rest, so that a plan without local keys lays memory out as before.
            let region = if rp.local_keys {
                Some(local_keys::KeyRegion::alloc(w, v, peer_depth)?)
            } else {
                None
            };
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
                fast_reg: None,
                window: None,
                region,
                remote_users: [0; 2],
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
            budget_may_run_out: w.switch.faults().drop >= rc::RETRY_BUDGET_LOSS,
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
            let (ty, qkey) = if up.gsi {
                (QpType::Gsi, GSI_QKEY)
            } else {
                (QpType::Ud, UD_QKEY)
            };
            let q = create_qp(w, v, pd, cq, ty, cap, None)?;
            activate_ud(w, q, qkey, Psn::new(rng.gen()))?;
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
    for (i, up) in plan.uc.iter().enumerate() {
        flows.push(Flow::Uc(Box::new(build_uc(w, &vfs, i, up, rng)?)));
    }
    Ok(flows)
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
            Flow::Uc(u) => u.post(w, rng, c),
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
            Flow::Uc(u) => {
                for (side, e) in u.cqs().into_iter().enumerate() {
                    wcs.clear();
                    if !w.has_vf(e.vf) {
                        continue;
                    }
                    let _ = w.vf_mut(e.vf).poll_cq(e.cq, 64, wcs);
                    seen += wcs.len();
                    for wc in wcs.iter() {
                        c.saw(wc);
                        u.on_completion(w, c, side, wc);
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
            Flow::Uc(u) => u.relocate(old, new),
        }
    }

    /// The two VFs an RC connection joins, in a canonical order.
    pub fn vf_pair(&self) -> Option<(VfAddr, VfAddr)> {
        match self {
            Flow::Rc(r) => {
                let (a, b) = (r.ends[0].q.vf, r.ends[1].q.vf);
                Some((a.min(b), a.max(b)))
            }
            Flow::Ud(_) | Flow::Uc(_) => None,
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
            Flow::Uc(u) => u.finished(),
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
            Flow::Uc(u) => u.describe(w),
        }
    }

    pub fn final_checks(&self, w: &World, c: &mut Checker) {
        if let Flow::Uc(u) = self {
            u.final_checks(w, c);
        }
        if let Flow::Rc(r) = self {
            if r.broken.is_some() {
                return;
            }
            for s in 0..2 {
                let e = &r.ends[s];
                if !w.has_vf(e.q.vf) {
                    // A migration that never finished is a violation already on record.
                    continue;
                }
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

pub(super) fn describe_qp(w: &World, q: &QpEnd) -> String {
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
