//! RC connections: each end posts every opcode with random sizes and SGLs, and every
//! completion and byte is checked against what the peer must have done.

use super::local_keys::{self, KeyRegion, LocalKey};
use super::remote_keys::{self, Via};
use super::*;

#[derive(Debug)]
pub(super) struct Posted {
    pub(super) wr_id: u64,
    pub(super) kind: Kind,
    pub(super) slot: Option<usize>,
    pub(super) len: u32,
    /// WRITE: where the data must land in the peer. READ: the local slot.
    pub(super) check_at: u64,
    /// Atomics: the original value the responder must return.
    pub(super) expect_orig: u64,
    /// LOCAL_INV: the key that must be invalid afterwards.
    pub(super) key: Option<MemKey>,
    /// FastReg and Window: the completion opcode the op posted must have, and the key that
    /// must then be valid (REG_MR, BIND_MW) or not (LOCAL_INV).
    pub(super) local: Option<(WcOpcode, MemKey)>,
    /// Seeds the bytes of the message (see `pattern`).
    pub(super) id: u64,
    /// Uses a bad rkey on purpose (or, through `via`, one the peer's model says is refused).
    pub(super) bad: bool,
    /// Goes through the peer's fast-register MR or window (`remote_keys.rs`).
    pub(super) via: Option<Via>,
}

#[derive(Debug)]
pub(super) struct ExpectedRecv {
    pub(super) id: u64,
    pub(super) len: u32,
    pub(super) imm: Option<u32>,
    pub(super) with_imm_write: bool,
    pub(super) inv: Option<MemKey>,
    /// `inv` names this side's fast-register MR or window, not a buffer registered for it.
    pub(super) inv_of: Option<Kind>,
}

pub(super) struct End {
    pub(super) q: QpEnd,
    pub(super) key: MemKey,
    pub(super) slots: Vec<u64>,
    pub(super) slot_busy: Vec<bool>,
    /// Regions in this end's memory that the peer's WRITEs/READs of slot i use.
    pub(super) targets: Vec<u64>,
    pub(super) atomic_word: u64,
    /// Model of `atomic_word`, advanced in post order of the peer's atomics.
    pub(super) atomic_model: u64,
    pub(super) rq_bufs: Vec<u64>,
    pub(super) rq_free: Vec<usize>,
    pub(super) rq_posted: HashMap<u64, usize>,
    pub(super) ops_left: usize,
    pub(super) posted_count: usize,
    pub(super) posted: VecDeque<Posted>,
    pub(super) expected: VecDeque<ExpectedRecv>,
    pub(super) next_wr: u64,
    /// A send completion of this side already failed (the QP is in ERR).
    pub(super) failed: bool,
    /// This side's fast-register MR and type 2 window, once drawn.
    pub(super) fast_reg: Option<LocalKey>,
    pub(super) window: Option<LocalKey>,
    /// Where they live (`RcPlan::local_keys` only).
    pub(super) region: Option<KeyRegion>,
    /// The peer's requests in flight naming the fast-register MR, the window
    /// (`remote_keys::user_index`): this side changes neither key while they are.
    pub(super) remote_users: [usize; 2],
}

pub struct RcConn {
    pub(super) index: usize,
    pub(super) plan: RcPlan,
    pub(super) ends: [End; 2],
    /// A failure was injected on purpose (bad rkey) or the link was cut: errors are allowed.
    pub(super) broken: Option<String>,
    pub(super) cut: bool,
    /// The fabric drops so many packets that a requester may run out of its `retry_cnt` (7,
    /// the IBTA's most) honestly: see [`RETRY_BUDGET_LOSS`].
    pub(super) budget_may_run_out: bool,
}

/// From this drop rate on, `RETRY_EXC_ERR` is an outcome the IBTA allows rather than a bug. A
/// READ of 1 MiB at MTU 256 takes hundreds of attempts under loss (each gap re-requests the
/// rest); an attempt makes no progress when its request or first response is lost or
/// reordered (about one in five at 10% drop, 3% reorder), and eight such attempts in a row end
/// the QP: about 1 in 400,000 attempts, so a few seeds in a thousand at `--faults heavy`. rxe
/// would retry forever (it treats 7 as infinite); vhca keeps the IBTA's budget
/// (docs/transport.md). At `--faults light` (1%) the same run is about 1 in 10^13 attempts, and
/// the error stays a violation there.
pub(super) const RETRY_BUDGET_LOSS: f64 = 0.05;

impl RcConn {
    pub(super) fn fill_recvs(&mut self, w: &mut World, side: usize) {
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

    pub(super) fn post(
        &mut self,
        w: &mut World,
        rng: &mut ChaCha8Rng,
        c: &mut Checker,
        side: usize,
    ) {
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
            // The opcodes this plan draws, classic ones first in their old order, so a plan
            // without the newer ones draws exactly as it did before they existed.
            let mut pool = [Kind::Send; KINDS.len()];
            let mut n = 0;
            for k in KINDS {
                let newer_op = matches!(k, Kind::AtomicWrite | Kind::Flush);
                let local_key = matches!(k, Kind::FastReg | Kind::Window);
                if (!newer_op || self.plan.all_ops) && (!local_key || self.plan.local_keys) {
                    pool[n] = k;
                    n += 1;
                }
            }
            let kind = match pool[rng.gen_range(0..n)] {
                // The peer's requests naming the object must meet the key they were drawn for.
                k @ (Kind::FastReg | Kind::Window)
                    if me.remote_users[remote_keys::user_index(k)] > 0 =>
                {
                    Kind::Send
                }
                k => k,
            };
            let op_index = me.posted_count;
            let bad = self.plan.bad_rkey_at == Some((side, op_index));
            let kind = if bad { Kind::Write } else { kind };
            // A zero-length WRITE does not check its rkey (IBTA), so the bad one carries data.
            let len_floor = if bad { 1 } else { 0 };
            let id = rng.gen::<u64>() >> 8;
            let max = self.plan.max_size;
            let len = match kind {
                Kind::CmpSwap | Kind::FetchAdd | Kind::AtomicWrite => 8,
                Kind::LocalInv | Kind::FastReg | Kind::Window => 0,
                _ => {
                    if rng.gen_range(0..100) < 95 {
                        crate::sim::plan::Plan::size_of(rng, max)
                    } else {
                        0
                    }
                }
            }
            .max(len_floor);
            let mut via = if self.plan.local_keys && !bad {
                let errors = self.plan.remote_key_errors;
                remote_keys::draw(rng, kind, &self.ends[1 - side], slot, errors)
            } else {
                None
            };
            let len = via.map_or(len, |v| v.len);
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
                local: None,
                bad: bad || via.is_some_and(|v| v.refused.is_some()),
                via: None,
                id,
            };
            let sgl = split_sgl(rng, local, len, mine.key, 4);
            let target = peer.targets[slot];
            // Where the peer's bytes are: through a key, in its key region.
            let data_at = via.map_or(target, |v| v.phys);
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
                _ if via.is_some() => {
                    let v = via.as_mut().expect("checked");
                    remote_keys::op(rng, w, peer.q.vf, kind, v, &mut posted)
                }
                Kind::Send => SendOp::Send,
                Kind::SendImm => SendOp::SendWithImm { imm },
                Kind::SendInv if self.plan.local_keys => match remote_keys::draw_inv(rng, peer) {
                    Some(v) => {
                        via = Some(v);
                        SendOp::SendWithInv { rkey: v.rkey }
                    }
                    None => match reg_for_inv(w, peer, slot) {
                        Ok(rkey) => SendOp::SendWithInv { rkey },
                        Err(e) => {
                            c.violation(format!("reg_mr for SEND_WITH_INV: {e}"));
                            return;
                        }
                    },
                },
                Kind::SendInv => match reg_for_inv(w, peer, slot) {
                    Ok(rkey) => SendOp::SendWithInv { rkey },
                    Err(e) => {
                        c.violation(format!("reg_mr for SEND_WITH_INV: {e}"));
                        return;
                    }
                },
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
                Kind::AtomicWrite => {
                    // Into the word the peer's atomics use: the CMP_SWAP/FETCH_ADD that run
                    // after it must see its value, so the model checks it took effect once and
                    // in PSN order among them.
                    let value = rng.gen();
                    peer.atomic_model = value;
                    SendOp::AtomicWrite {
                        remote_addr: peer.atomic_word,
                        rkey: peer.key,
                        value,
                    }
                }
                Kind::Flush => SendOp::Flush {
                    remote_addr: target,
                    rkey: peer.key,
                    len,
                    placement: FlushPlacement::GLOBAL,
                    level: if rng.gen_bool(0.5) {
                        FlushLevel::Range
                    } else {
                        FlushLevel::Mr
                    },
                },
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
                Kind::FastReg | Kind::Window => {
                    let state = if kind == Kind::FastReg {
                        mine.fast_reg
                    } else {
                        mine.window
                    };
                    let region = mine.region;
                    let Some((op, next)) = local_keys::next_op(w, c, kind, state, &mine.q, region)
                    else {
                        return;
                    };
                    posted.local = Some((op.wc_opcode(), next.key));
                    if kind == Kind::FastReg {
                        mine.fast_reg = Some(next);
                    } else {
                        mine.window = Some(next);
                    }
                    op
                }
            };
            match kind {
                Kind::Send | Kind::SendImm | Kind::SendInv | Kind::Write | Kind::WriteImm => {
                    let _ = w.write(mine.q.vf, local, &data);
                }
                Kind::Read => {
                    // The peer application prepares what will be read.
                    let _ = w.write(peer.q.vf, data_at, &data);
                    posted.check_at = local;
                }
                _ => {}
            }
            if matches!(kind, Kind::Write | Kind::WriteImm) {
                posted.check_at = data_at;
            }
            let mut wr = SendWr::new(wr_id, op).flags(flags);
            if inline {
                wr = wr.inline(&data);
            } else if !matches!(kind, Kind::AtomicWrite | Kind::Flush) {
                // ATOMIC WRITE carries its value in the WR and FLUSH moves no data.
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
            if let Some(v) = via {
                peer.remote_users[remote_keys::user_index(v.obj)] += 1;
                if kind == Kind::SendInv {
                    remote_keys::invalidated(peer, v.obj);
                }
                if let Some(why) = v.refused {
                    c.injected(format!(
                        "rc{} side {side}: {} through the peer's {} with {why} (op {op_index})",
                        self.index,
                        kind.name(),
                        v.obj.name()
                    ));
                    self.broken = Some(format!("{} with {why}", v.obj.name()));
                }
            }
            posted.via = via;
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
                        inv_of: via.map(|v| v.obj),
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

    pub(super) fn on_completion(
        &mut self,
        w: &mut World,
        c: &mut Checker,
        side: usize,
        wc: &WorkCompletion,
    ) {
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
        if let Some(v) = p.via {
            let u = &mut peer.remote_users[remote_keys::user_index(v.obj)];
            *u = u.saturating_sub(1);
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
            } else if wc.status == WcStatus::RetryExcErr && self.budget_may_run_out {
                c.injected(format!(
                    "rc{idx} side {side}: {:?} ran out of its retry budget under the fabric's loss ({})",
                    p.kind,
                    describe_qp(w, &mine.q)
                ));
                true
            } else {
                self.broken.is_some()
            };
            if p.bad && p.via.is_some() && wc.status == WcStatus::RemAccessErr && !mine.failed {
                c.remote_keys.refused += 1;
            }
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
                "rc{idx} side {side}: {} with a bad rkey succeeded ({:?})",
                p.kind.name(),
                p.via
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
            Kind::FastReg | Kind::Window => {
                // Later local WRs of this side may have run already (and changed the key
                // byte); the state is checked when none is pending.
                let later = mine.posted.iter().any(|q| q.kind == p.kind);
                let what = format!("rc{idx} side {side}");
                local_keys::check_done(w, c, &what, &mine.q, &p, later, wc);
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
        if let Some(v) = p.via.filter(|_| p.kind != Kind::SendInv) {
            let what = format!("rc{idx} side {side}");
            remote_keys::check_done(w, c, &what, peer.q.vf, &v);
        }
        if !matches!(p.kind, Kind::FastReg | Kind::Window)
            && wc.opcode != expected_wc_opcode(p.kind)
        {
            c.violation(format!(
                "rc{idx} side {side}: completion opcode {:?} for {:?}",
                wc.opcode, p.kind
            ));
        }
        c.done(p.kind.name(), p.len as u64);
    }

    pub(super) fn on_recv(
        &mut self,
        w: &mut World,
        c: &mut Checker,
        side: usize,
        wc: &WorkCompletion,
    ) {
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
        if let (Some(k), Some(obj)) = (x.inv, x.inv_of) {
            let what = format!("rc{idx} side {side}");
            remote_keys::check_invalidated(w, c, &what, &e.q, obj, k);
        } else if let Some(k) = x.inv {
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

/// The peer's application registers a buffer whose key the SEND_WITH_INV invalidates.
fn reg_for_inv(w: &mut World, peer: &End, slot: usize) -> VerbsResult<MemKey> {
    w.vf_mut(peer.q.vf).reg_mr(
        peer.q.pd,
        peer.targets[slot],
        64,
        Access::LOCAL_WRITE | Access::REMOTE_READ,
    )
}
