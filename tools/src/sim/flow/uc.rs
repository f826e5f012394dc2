//! UC connections: both ends send SEND, SEND_WITH_IMM, RDMA WRITE and WRITE_WITH_IMM over a
//! faulty fabric. Losses are allowed (UC does not retransmit); what must hold is that a message
//! is delivered at most once, whole, with its own bytes, and that every send completes
//! successfully once transmitted.

use super::*;

/// Receive buffers (and WRITE target slots) each end keeps.
const RQ_SLOTS: usize = 8;
const TARGETS: usize = 8;
/// Send WQEs in flight per end (each owns a send buffer until its completion).
const DEPTH: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send,
    SendImm,
    Write,
    WriteImm,
}

pub struct UcEnd {
    q: QpEnd,
    key: MemKey,
    send_bufs: Vec<u64>,
    /// Send buffer index → the WQE using it.
    send_busy: Vec<Option<u64>>,
    targets: Vec<u64>,
    rq_bufs: Vec<u64>,
    rq_posted: HashMap<u64, usize>,
    ops_left: usize,
    next_wr: u64,
}

/// A message sent: who sent it, what it was, and where a WRITE went.
#[derive(Clone, Copy, Debug)]
struct Sent {
    from: usize,
    kind: Kind,
    len: u32,
    target: usize,
}

pub struct UcConn {
    index: usize,
    plan: UcPlan,
    ends: [UcEnd; 2],
    sent: HashMap<u64, Sent>,
    delivered: HashSet<u64>,
    /// (receiving side, target slot) → the last message posted to write there.
    last_writer: HashMap<(usize, usize), u64>,
    next_id: u64,
}

/// Creates and connects a UC pair with its buffers, receives posted.
pub fn build_uc(
    w: &mut World,
    vfs: &[VfAddr],
    index: usize,
    up: &UcPlan,
    rng: &mut ChaCha8Rng,
) -> VerbsResult<UcConn> {
    let access = Access::LOCAL_WRITE | Access::REMOTE_WRITE;
    let mk = |w: &mut World, v: VfAddr, side: usize| -> VerbsResult<UcEnd> {
        let vf = w.vf_mut(v);
        let pd = vf.alloc_pd()?;
        let cq = vf.create_cq(256)?;
        let cap = QpCap {
            max_send_wr: DEPTH as u32,
            max_recv_wr: RQ_SLOTS as u32,
            max_send_sge: 4,
            max_recv_sge: 4,
            max_inline_data: 64,
        };
        let q = create_qp(w, v, pd, cq, QpType::Uc, cap, None)?;
        let m = up.max_size as u64;
        let n = DEPTH + TARGETS + RQ_SLOTS;
        let base = w.alloc(v, m * n as u64)?;
        let key = w.vf_mut(v).reg_mr(pd, base, m * n as u64, access)?;
        let at = |i: usize| base + i as u64 * m;
        Ok(UcEnd {
            q,
            key,
            send_bufs: (0..DEPTH).map(at).collect(),
            send_busy: vec![None; DEPTH],
            targets: (DEPTH..DEPTH + TARGETS).map(at).collect(),
            rq_bufs: (DEPTH + TARGETS..n).map(at).collect(),
            rq_posted: HashMap::new(),
            ops_left: up.ops[side],
            next_wr: ((index as u64) << 40) | ((side as u64) << 39) | (1 << 38),
        })
    };
    let a = mk(w, vfs[up.a], 0)?;
    let b = mk(w, vfs[up.b], 1)?;
    let pa = Psn::new(rng.gen());
    let pb = Psn::new(rng.gen());
    connect_uc(w, a.q, b.q, pa, pb, up.mtu, access)?;
    connect_uc(w, b.q, a.q, pb, pa, up.mtu, access)?;
    let mut conn = UcConn {
        index,
        plan: up.clone(),
        ends: [a, b],
        sent: HashMap::new(),
        delivered: HashSet::new(),
        last_writer: HashMap::new(),
        next_id: 1,
    };
    for side in 0..2 {
        for i in 0..RQ_SLOTS {
            conn.post_recv(w, side, i)?;
        }
    }
    Ok(conn)
}

impl UcConn {
    pub(super) fn relocate(&mut self, old: VfAddr, new: VfAddr) {
        for e in self.ends.iter_mut() {
            if e.q.vf == old {
                e.q.vf = new;
            }
        }
    }

    fn post_recv(&mut self, w: &mut World, side: usize, i: usize) -> VerbsResult<()> {
        let e = &mut self.ends[side];
        e.next_wr += 1;
        let sge = Sge {
            addr: e.rq_bufs[i],
            len: self.plan.max_size,
            lkey: e.key,
        };
        w.vf_mut(e.q.vf).post_recv(
            e.q.qpn,
            RecvWr {
                wr_id: e.next_wr,
                sgl: vec![sge],
            },
        )?;
        e.rq_posted.insert(e.next_wr, i);
        Ok(())
    }

    pub(super) fn post(&mut self, w: &mut World, rng: &mut ChaCha8Rng, c: &mut Checker) {
        if !self.ends.iter().all(|e| w.has_vf(e.q.vf)) {
            return;
        }
        for side in 0..2 {
            while self.ends[side].ops_left > 0 {
                let Some(slot) = self.ends[side].send_busy.iter().position(|b| b.is_none()) else {
                    break;
                };
                let id = self.next_id;
                self.next_id += 1;
                let kind = match rng.gen_range(0..4) {
                    0 => Kind::Send,
                    1 => Kind::SendImm,
                    2 => Kind::Write,
                    _ => Kind::WriteImm,
                };
                let mut len = Plan::size_of(rng, self.plan.max_size);
                if kind == Kind::Send {
                    // A plain SEND names its message in its first 8 bytes.
                    len = len.max(8);
                }
                let target = rng.gen_range(0..TARGETS);
                let mut data = pattern(id, len as usize);
                if kind == Kind::Send {
                    data[..8].copy_from_slice(&id.to_le_bytes());
                }
                let peer_target = self.ends[1 - side].targets[target];
                let peer_rkey = self.ends[1 - side].key;
                let e = &mut self.ends[side];
                let op = match kind {
                    Kind::Send => SendOp::Send,
                    Kind::SendImm => SendOp::SendWithImm { imm: id as u32 },
                    Kind::Write => SendOp::Write {
                        remote_addr: peer_target,
                        rkey: peer_rkey,
                    },
                    Kind::WriteImm => SendOp::WriteWithImm {
                        remote_addr: peer_target,
                        rkey: peer_rkey,
                        imm: id as u32,
                    },
                };
                e.next_wr += 1;
                let buf = e.send_bufs[slot];
                if w.write(e.q.vf, buf, &data).is_err() {
                    c.violation(format!("uc{}: send buffer not writable", self.index));
                    e.ops_left = 0;
                    break;
                }
                let sgl = split_sgl(rng, buf, len, e.key, 4);
                let mut wr = SendWr::new(e.next_wr, op).flags(SendFlags::SIGNALED);
                wr.sgl = sgl;
                if let Err(err) = w.vf_mut(e.q.vf).post_send(e.q.qpn, &wr) {
                    c.violation(format!("uc{} post_send: {err}", self.index));
                    e.ops_left = 0;
                    break;
                }
                e.send_busy[slot] = Some(e.next_wr);
                e.ops_left -= 1;
                self.sent.insert(
                    id,
                    Sent {
                        from: side,
                        kind,
                        len,
                        target,
                    },
                );
                if matches!(kind, Kind::Write | Kind::WriteImm) {
                    self.last_writer.insert((1 - side, target), id);
                }
            }
        }
    }

    pub(super) fn on_completion(
        &mut self,
        w: &mut World,
        c: &mut Checker,
        side: usize,
        wc: &WorkCompletion,
    ) {
        let name = format!("uc{} side {side}", self.index);
        if matches!(wc.opcode, WcOpcode::Send | WcOpcode::RdmaWrite) {
            let e = &mut self.ends[side];
            match e.send_busy.iter().position(|b| *b == Some(wc.wr_id)) {
                Some(i) => e.send_busy[i] = None,
                None => c.violation(format!("{name}: send completion for unknown wr {wc:?}")),
            }
            if wc.status != WcStatus::Success {
                c.violation(format!("{name}: send failed: {wc:?}"));
                e.ops_left = 0;
            }
            return;
        }
        let Some(buf_i) = self.ends[side].rq_posted.remove(&wc.wr_id) else {
            c.violation(format!("{name}: receive completion for unknown wr {wc:?}"));
            return;
        };
        if wc.status != WcStatus::Success {
            c.violation(format!("{name}: receive failed: {wc:?}"));
            return;
        }
        let e = &self.ends[side];
        let id = match (wc.opcode, wc.imm) {
            (_, Some(imm)) => imm as u64,
            (WcOpcode::Recv, None) if wc.byte_len >= 8 => {
                let b = w.read(e.q.vf, e.rq_bufs[buf_i], 8).unwrap_or_default();
                u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
            }
            _ => 0,
        };
        self.check_delivery(w, c, side, buf_i, id, wc);
        if let Err(err) = self.post_recv(w, side, buf_i) {
            c.violation(format!("{name}: post_recv: {err}"));
        }
    }

    fn check_delivery(
        &mut self,
        w: &World,
        c: &mut Checker,
        side: usize,
        buf_i: usize,
        id: u64,
        wc: &WorkCompletion,
    ) {
        let name = format!("uc{} side {side}", self.index);
        let Some(s) = self.sent.get(&id).copied() else {
            c.violation(format!("{name}: received message {id} nobody sent: {wc:?}"));
            return;
        };
        if !self.delivered.insert(id) {
            c.violation(format!("{name}: message {id} delivered twice"));
            return;
        }
        let kind_ok = match wc.opcode {
            WcOpcode::Recv => matches!(s.kind, Kind::Send | Kind::SendImm),
            WcOpcode::RecvRdmaWithImm => s.kind == Kind::WriteImm,
            _ => false,
        };
        if s.from == side || !kind_ok || wc.byte_len != s.len {
            c.violation(format!(
                "{name}: message {id} ({s:?}) completed as {wc:?}: not what was sent"
            ));
            return;
        }
        let e = &self.ends[side];
        let (addr, check) = if s.kind == Kind::WriteImm {
            // A later WRITE to the same slot may have overwritten it: then nothing to compare.
            let last = self.last_writer.get(&(side, s.target)) == Some(&id);
            (e.targets[s.target], last)
        } else {
            (e.rq_bufs[buf_i], true)
        };
        if check {
            let mut want = pattern(id, s.len as usize);
            if s.kind == Kind::Send {
                want[..8].copy_from_slice(&id.to_le_bytes());
            }
            let got = w.read(e.q.vf, addr, s.len as usize).unwrap_or_default();
            if got != want {
                c.violation(format!(
                    "{name}: message {id} ({s:?}) delivered with wrong data"
                ));
            }
        }
        let op = match s.kind {
            Kind::WriteImm => "UC_WRITE_WITH_IMM",
            _ => "UC_SEND",
        };
        c.done(op, s.len as u64);
    }

    pub(super) fn finished(&self) -> bool {
        self.ends
            .iter()
            .all(|e| e.ops_left == 0 && e.send_busy.iter().all(|b| b.is_none()))
    }

    pub(super) fn final_checks(&self, w: &World, c: &mut Checker) {
        for (s, e) in self.ends.iter().enumerate() {
            if let Some(q) = w
                .has_vf(e.q.vf)
                .then(|| w.vf(e.q.vf))
                .and_then(|v| v.qp(e.q.qpn))
            {
                if q.state() != QpState::Rts {
                    c.violation(format!(
                        "uc{} side {s}: QP ended in {:?}",
                        self.index,
                        q.state()
                    ));
                }
            }
        }
    }

    pub(super) fn describe(&self, w: &World) -> String {
        let e = |s: usize| {
            let en = &self.ends[s];
            format!(
                "{} left={} busy={:?}",
                describe_qp(w, &en.q),
                en.ops_left,
                en.send_busy
            )
        };
        format!("uc{} [{} | {}]", self.index, e(0), e(1))
    }

    pub(super) fn cqs(&self) -> [QpEnd; 2] {
        [self.ends[0].q, self.ends[1].q]
    }
}
