//! The server's data phase: it checks every RC message as its receive completes (RC delivers
//! in order, so the k-th receive is iteration k / 3's SEND, SEND_WITH_IMM or
//! RDMA_WRITE_WITH_IMM, and the WRITE_WITH_IMM's arrival means both WRITEs of the iteration
//! have landed), checks every datagram, and answers an iteration's datagram once it checked
//! the iteration's messages, after refilling the READ slot for the iteration `window` later.
//! It runs until the client's summary arrives, answering resent datagrams meanwhile.

use super::pattern::{
    check, check_datagram, datagram_iter, fill, fill_datagram, imm, Atomics, Op, ATOMICS_START,
    RECV_OPS,
};
use super::proto::{Inbox, Msg};
use super::report::{Summary, Tally};
use super::setup::{post_recv, Res, ServerLayout, Wr, GRH, UD_QKEY};
use super::{Fault, OpcodesError, Run, Watch};
use crate::interop::endpoint::{Endpoint, Hook, Progress};
use crate::interop::side_channel::Chan;
use vhca_device::{
    AhHandle, Gid, Qpn, SendFlags, SendOp, SendWr, Sge, UdDest, WcOpcode, WcStatus, WorkCompletion,
};

/// The client as the server sees it.
pub(super) struct Peer {
    pub ah: AhHandle,
    pub gid: Gid,
    pub ud_qpn: Qpn,
}

#[derive(Clone, Copy)]
struct Slot {
    iter: u64,
    requested: bool,
    answered: bool,
}

struct Server<'a> {
    r: &'a Res,
    lay: &'a ServerLayout,
    peer: &'a Peer,
    run: &'a Run,
    slots: Vec<Option<Slot>>,
    /// Iterations below `done` are answered.
    done: u64,
    /// RC receives checked: iterations below rc_seen / 3 have all three.
    rc_seen: u64,
    /// Reply buffers with a datagram in flight.
    busy: Vec<bool>,
    model: Atomics,
    t: Tally,
}

/// Writes the data iteration `iter`'s RDMA_READ must return into its READ slot, and counts
/// it as served.
pub(super) fn fill_read<V: Endpoint>(
    node: &mut V,
    r: &Res,
    lay: &ServerLayout,
    run: &Run,
    t: &mut Tally,
    iter: u64,
) -> Result<(), OpcodesError> {
    let mut d = vec![0u8; run.size as usize];
    fill(Op::RdmaRead, iter, &mut d);
    t.from_server.add(Op::RdmaRead, iter, &d);
    if run.fault == Some(Fault::CorruptRead { iteration: iter }) {
        d[run.size as usize - 1] ^= 0x80;
    }
    node.write_buf(lay.read.at(r.buf, iter), &d)?;
    Ok(())
}

/// Runs the data phase until the client's summary; this side's tally and the client's
/// summary. `t` holds what the set-up counted (the first READ slots' data).
#[allow(clippy::too_many_arguments)]
pub(super) fn data_phase<V: Endpoint>(
    node: &mut V,
    r: &Res,
    lay: &ServerLayout,
    peer: &Peer,
    run: &Run,
    t: Tally,
    chan: &mut Chan,
    inbox: &mut Inbox,
    hook: Hook<'_, V>,
) -> Result<(Tally, Summary), OpcodesError> {
    let mut s = Server {
        r,
        lay,
        peer,
        run,
        slots: vec![None; run.window as usize],
        done: 0,
        rc_seen: 0,
        busy: vec![false; lay.ud_send.count as usize],
        model: ATOMICS_START,
        t,
    };
    s.t.start = std::time::Instant::now();
    let mut watch = Watch::new(run.timeout);
    let mut wcs = Vec::with_capacity(64);
    let theirs = loop {
        wcs.clear();
        node.poll_cq(r.cq, 64, &mut wcs)?;
        if !wcs.is_empty() {
            watch.progress();
        }
        for wc in &wcs {
            s.completion(node, wc)?;
        }
        s.answer_due(node)?;
        if s.advance() {
            let p = Progress {
                done: Some(s.done),
                total: run.iters,
            };
            hook(node, p).map_err(OpcodesError::Hook)?;
            watch.progress();
        }
        match watch.side_channel(chan, inbox)? {
            Some(Msg::Summary(sum)) => break sum,
            Some(m) => {
                return Err(OpcodesError::Protocol(format!(
                    "the client sent {} during the data phase",
                    m.kind()
                )))
            }
            None => {}
        }
        // Once every iteration is answered, the wait is for the client's summary.
        watch.check(s.done, run.iters, || s.waiting())?;
    };
    if s.done != run.iters || s.rc_seen != 3 * run.iters {
        return Err(OpcodesError::Protocol(format!(
            "the client finished, but this side answered {} of {} iterations and checked {} of {} RC messages",
            s.done,
            run.iters,
            s.rc_seen,
            3 * run.iters
        )));
    }
    s.t.seconds = s.t.start.elapsed().as_secs_f64();
    Ok((s.t, theirs))
}

impl Server<'_> {
    fn slot(&mut self, iter: u64) -> Option<&mut Slot> {
        let w = self.run.window as u64;
        self.slots[(iter % w) as usize]
            .as_mut()
            .filter(|s| s.iter == iter)
    }

    fn completion<V: Endpoint>(
        &mut self,
        node: &mut V,
        wc: &WorkCompletion,
    ) -> Result<(), OpcodesError> {
        match Wr::decode(wc.wr_id) {
            Some(Wr::RcRecv(n)) => self.message(node, wc, n),
            Some(Wr::UdRecv(n)) => self.datagram(node, wc, n),
            Some(Wr::UdSend(b)) => {
                if wc.status != WcStatus::Success {
                    return Err(OpcodesError::Completion {
                        iter: self.done,
                        op: Op::UdReply,
                        status: wc.status,
                    });
                }
                if let Some(x) = self.busy.get_mut(b as usize) {
                    *x = false;
                }
                Ok(())
            }
            _ => Err(OpcodesError::Protocol(format!(
                "a completion for a work request this side did not post: {wc:?}"
            ))),
        }
    }

    /// An RC message completed into receive buffer `n`.
    fn message<V: Endpoint>(
        &mut self,
        node: &mut V,
        wc: &WorkCompletion,
        n: u64,
    ) -> Result<(), OpcodesError> {
        let k = self.rc_seen;
        let (iter, op) = (k / 3, RECV_OPS[(k % 3) as usize]);
        if wc.status != WcStatus::Success {
            return Err(OpcodesError::Completion {
                iter,
                op,
                status: wc.status,
            });
        }
        let fail = |op, what: String| OpcodesError::Check { iter, op, what };
        if iter >= self.run.iters {
            return Err(fail(
                op,
                "more messages than the client's iterations".into(),
            ));
        }
        let (want_opcode, want_imm) = match op {
            Op::Send => (WcOpcode::Recv, None),
            _ if op == Op::SendWithImm => (WcOpcode::Recv, Some(imm(op, iter))),
            _ => (WcOpcode::RecvRdmaWithImm, Some(imm(op, iter))),
        };
        let size = self.run.size;
        if wc.opcode != want_opcode || wc.imm != want_imm || wc.byte_len != size {
            return Err(fail(
                op,
                format!(
                    "completion {:?} of {} B with immediate {:x?}: expected {:?} of {size} B with {:x?}",
                    wc.opcode, wc.byte_len, wc.imm, want_opcode, want_imm
                ),
            ));
        }
        let base = self.r.buf;
        // What to check: the message itself, or for WRITE_WITH_IMM both WRITEs' slots.
        let areas: Vec<(Op, u64)> = if op == Op::RdmaWriteWithImm {
            vec![
                (Op::RdmaWrite, self.lay.write.at(base, iter)),
                (op, self.lay.write_imm.at(base, iter)),
            ]
        } else {
            vec![(op, self.lay.rc_recv.at(base, n))]
        };
        for (o, at) in areas {
            let got = node.read_buf(at, size as usize)?;
            check(o, iter, &got).map_err(|m| fail(o, m.to_string()))?;
            self.t.to_server.add(o, iter, &got);
            self.t.count(o, size as u64);
        }
        if let Some(v) = want_imm {
            self.t.to_server.add_word(op, iter, v as u64);
        }
        if op == Op::RdmaWriteWithImm {
            // The iteration's atomics execute after its WRITEs (one QP, in order); what they
            // return is the model's, whose final values the counters are checked against.
            let (c, f) = (self.model.cmp_swap(iter), self.model.fetch_add(iter));
            self.t.from_server.add_word(Op::CmpSwap, iter, c.original);
            self.t.from_server.add_word(Op::FetchAdd, iter, f.original);
        }
        self.rc_seen += 1;
        let at = self.lay.rc_recv.at(base, n);
        post_recv(node, self.r, self.r.rc, Wr::RcRecv(n), at, size as u64)
    }

    /// A datagram from the client arrived in UD receive buffer `n`.
    fn datagram<V: Endpoint>(
        &mut self,
        node: &mut V,
        wc: &WorkCompletion,
        n: u64,
    ) -> Result<(), OpcodesError> {
        let op = Op::UdSend;
        if wc.status != WcStatus::Success {
            return Err(OpcodesError::Completion {
                iter: self.done,
                op,
                status: wc.status,
            });
        }
        let ud_len = self.run.ud_len;
        let fail = |iter, what: String| OpcodesError::Check { iter, op, what };
        if wc.byte_len as u64 != GRH + ud_len as u64 || !wc.grh {
            return Err(fail(
                self.done,
                format!(
                    "{} bytes, GRH {}: expected {ud_len} B after a GRH",
                    wc.byte_len, wc.grh
                ),
            ));
        }
        if wc.src_qp != self.peer.ud_qpn || wc.src_gid != self.peer.gid {
            return Err(fail(
                self.done,
                format!(
                    "from QP 0x{:x} at {}, not the client's",
                    wc.src_qp.0, wc.src_gid
                ),
            ));
        }
        let at = self.lay.ud_recv.at(self.r.buf, n);
        let d = node.read_buf(at + GRH, ud_len as usize)?;
        let iter = datagram_iter(&d).unwrap_or(u64::MAX);
        // The client sends an iteration's datagram only once the iteration was posted, and
        // posts at most `window` past the oldest one unanswered.
        if iter >= self.run.iters || iter >= self.done + self.run.window as u64 {
            return Err(fail(
                self.done,
                format!("a datagram for iteration {iter}, outside the window"),
            ));
        }
        check_datagram(op, iter, &d).map_err(|m| fail(iter, m.to_string()))?;
        post_recv(
            node,
            self.r,
            self.r.ud,
            Wr::UdRecv(n),
            at,
            GRH + ud_len as u64,
        )?;
        if iter < self.done {
            // Its answer was lost or late: answer again (if a buffer is free; otherwise the
            // client asks again).
            self.t.ud_duplicates += 1;
            return self.send_answer(node, iter).map(|_| ());
        }
        let w = self.run.window as usize;
        let slot = self.slots[iter as usize % w].get_or_insert(Slot {
            iter,
            requested: false,
            answered: false,
        });
        if slot.iter != iter {
            return Err(fail(
                iter,
                format!("its slot still holds iteration {}", slot.iter),
            ));
        }
        if slot.requested {
            self.t.ud_duplicates += 1;
            if slot.answered {
                self.send_answer(node, iter)?;
            }
            return Ok(());
        }
        slot.requested = true;
        self.t.count(op, ud_len as u64);
        self.t.to_server.add(op, iter, &d);
        // The client sends the datagram only after the iteration's READ and atomics
        // completed: count them as served.
        self.t.count(Op::RdmaRead, self.run.size as u64);
        self.t.count(Op::CmpSwap, 8);
        self.t.count(Op::FetchAdd, 8);
        Ok(())
    }

    /// Answers the iterations whose datagram came and whose messages are checked.
    fn answer_due<V: Endpoint>(&mut self, node: &mut V) -> Result<(), OpcodesError> {
        let checked = self.rc_seen / 3;
        for i in self.done..(self.done + self.run.window as u64).min(checked) {
            let due = self.slot(i).is_some_and(|s| s.requested && !s.answered);
            if !due {
                continue;
            }
            if self.busy.iter().all(|b| *b) {
                break;
            }
            // The READ slot is free again: the client read it before it sent the datagram,
            // and posts the iteration that reads it next only after this answer, so the
            // slot is refilled first.
            let later = i + self.run.window as u64;
            if later < self.run.iters {
                fill_read(node, self.r, self.lay, self.run, &mut self.t, later)?;
            }
            if self.run.fault != Some(Fault::LoseAnswer { iteration: i }) {
                self.send_answer(node, i)?;
            }
            let ud_len = self.run.ud_len;
            let mut d = vec![0u8; ud_len as usize];
            fill_datagram(Op::UdReply, i, &mut d);
            self.t.count(Op::UdReply, ud_len as u64);
            self.t.from_server.add(Op::UdReply, i, &d);
            self.t
                .from_server
                .add_word(Op::UdReply, i, imm(Op::UdReply, i) as u64);
            if let Some(s) = self.slot(i) {
                s.answered = true;
            }
        }
        Ok(())
    }

    /// Sends iteration `iter`'s answer from a free buffer; `false` when none is free.
    fn send_answer<V: Endpoint>(&mut self, node: &mut V, iter: u64) -> Result<bool, OpcodesError> {
        let Some(b) = self.busy.iter().position(|x| !x) else {
            return Ok(false);
        };
        let ud_len = self.run.ud_len;
        let at = self.lay.ud_send.at(self.r.buf, b as u64);
        let mut d = vec![0u8; ud_len as usize];
        fill_datagram(Op::UdReply, iter, &mut d);
        node.write_buf(at, &d)?;
        let wr = SendWr::new(
            Wr::UdSend(b as u64).encode(),
            SendOp::SendWithImm {
                imm: imm(Op::UdReply, iter),
            },
        )
        .flags(SendFlags::SIGNALED)
        .sge(Sge {
            addr: at,
            len: ud_len,
            lkey: self.r.key,
        })
        .ud(UdDest {
            ah: self.peer.ah,
            remote_qpn: self.peer.ud_qpn,
            remote_qkey: UD_QKEY,
        });
        node.post_send(self.r.ud, &wr)?;
        self.busy[b] = true;
        Ok(true)
    }

    /// Moves `done` over the answered iterations; whether it moved.
    fn advance(&mut self) -> bool {
        let before = self.done;
        while self.slot(self.done).is_some_and(|s| s.answered) {
            let i = (self.done % self.run.window as u64) as usize;
            self.slots[i] = None;
            self.done += 1;
        }
        if self.done > before {
            self.t.gaps.advanced(before);
        }
        self.done > before
    }

    /// What the oldest iteration waits for, for a stall's message.
    fn waiting(&self) -> String {
        let i = self.done;
        if i >= self.run.iters {
            return "the client's summary".into();
        }
        let got = self.rc_seen.saturating_sub(3 * i).min(3);
        let asked = self.slots[(i % self.run.window as u64) as usize]
            .is_some_and(|s| s.iter == i && s.requested);
        if got < 3 {
            format!(
                "iteration {i}: {got} of its 3 RC messages arrived, {} not",
                RECV_OPS[got as usize]
            )
        } else if !asked {
            format!("iteration {i}: the client's datagram")
        } else {
            format!("iteration {i}: a free buffer to answer from")
        }
    }
}
