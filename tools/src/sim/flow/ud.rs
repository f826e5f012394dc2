//! UD groups: members send datagrams to each other; every delivered datagram is checked,
//! and losses are allowed (UD is unreliable).

use super::*;

pub struct UdMember {
    pub(super) q: QpEnd,
    pub(super) key: MemKey,
    pub(super) send_buf: u64,
    pub(super) rq_bufs: Vec<u64>,
    pub(super) rq_posted: HashMap<u64, usize>,
    pub(super) ahs: Vec<AhHandle>,
    pub(super) ops_left: usize,
    pub(super) inflight: usize,
    pub(super) next_wr: u64,
}

pub struct UdGroup {
    pub(super) plan: UdPlan,
    pub(super) members: Vec<UdMember>,
    /// id → (source member, destination member, length).
    pub(super) sent: HashMap<u64, (usize, usize, u32)>,
    pub(super) bad_ids: HashSet<u64>,
    pub(super) next_id: u64,
    pub(super) send_done: usize,
}

pub(super) const UD_QKEY: u32 = 0x1111_2222;
pub(super) const UD_MAX: u32 = 4096;
pub(super) use vhca_device::qp::ud::{GSI_QKEY, MAD_LEN};

pub(super) fn post_ud_recv(w: &mut World, m: &mut UdMember, i: usize) -> VerbsResult<()> {
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

impl UdGroup {
    pub(super) fn post(&mut self, w: &mut World, rng: &mut ChaCha8Rng, c: &mut Checker) {
        let n = self.members.len();
        for i in 0..n {
            while self.members[i].ops_left > 0
                && self.members[i].inflight < 4
                && w.has_vf(self.members[i].q.vf)
            {
                let dst = rng.gen_range(0..n);
                let id = self.next_id;
                self.next_id += 1;
                let gsi = self.plan.gsi;
                let len = rng.gen_range(0..=if gsi { MAD_LEN } else { UD_MAX });
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
                if bad && gsi {
                    // QP1 sends the GSI Q_Key whatever the WR says: delivered as usual.
                    c.injected(format!("QP1 datagram {id} posted with a wrong Q_Key"));
                } else if bad {
                    self.bad_ids.insert(id);
                    c.injected(format!("ud datagram {id} with a wrong Q_Key"));
                }
                self.sent.insert(id, (i, dst, len));
                m.ops_left -= 1;
                m.inflight += 1;
            }
        }
    }

    pub(super) fn on_completion(
        &mut self,
        w: &mut World,
        c: &mut Checker,
        i: usize,
        wc: &WorkCompletion,
    ) {
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
                    c.done(
                        if self.plan.gsi { "GSI_RECV" } else { "UD_RECV" },
                        len as u64,
                    );
                }
            }
        }
        let m = &mut self.members[i];
        if let Err(e) = post_ud_recv(w, m, buf_i) {
            c.violation(format!("ud post_recv: {e}"));
        }
    }
}
