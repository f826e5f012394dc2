//! The client's data phase: `window` iterations in flight; each posts the seven RC requests
//! (all signaled), and once all seven completed sends its datagram; an iteration is complete
//! when the server's answer to that datagram arrived. The answer is also the server's word
//! that it checked the iteration's SENDs and WRITEs and refilled the READ slot, so the next
//! iteration that uses the same slots is only posted after it.

use super::pattern::{
    check, check_datagram, datagram_iter, fill_datagram, imm, pattern, Atomics, CmpSwap, FetchAdd,
    Op, ATOMICS_START, RC_OPS,
};
use super::proto::{Inbox, Welcome};
use super::report::Tally;
use super::setup::{post_recv, ClientLayout, Res, Wr, GRH, UD_QKEY};
use super::{Fault, OpcodesError, Run, Watch};
use crate::interop::endpoint::{Endpoint, Hook, Progress};
use crate::interop::side_channel::Chan;
use std::time::{Duration, Instant};
use vhca_device::{
    AhHandle, Gid, MemKey, Qpn, SendFlags, SendOp, SendWr, Sge, UdDest, WcOpcode, WcStatus,
    WorkCompletion,
};

/// How long the client waits for the answer to a datagram before it sends the datagram
/// again: UD loses what a migration's blackout drops, and nothing else would resend it.
const UD_RESEND: Duration = Duration::from_millis(250);

/// The server as the client targets it.
pub(super) struct Peer {
    pub ah: AhHandle,
    pub gid: Gid,
    pub ud_qpn: Qpn,
    pub rkey: MemKey,
    pub welcome: Welcome,
}

/// An iteration in flight.
struct Slot {
    iter: u64,
    /// RC completions still due.
    rc_left: usize,
    /// The datagram went out (at `sent_at`) and its send has not completed yet.
    ud_in_flight: bool,
    requested: bool,
    sent_at: Instant,
    answered: bool,
    cas: CmpSwap,
    faa: FetchAdd,
}

struct Client<'a> {
    r: &'a Res,
    lay: &'a ClientLayout,
    peer: &'a Peer,
    run: &'a Run,
    slots: Vec<Option<Slot>>,
    /// Next iteration to post; iterations below `done` are complete.
    next: u64,
    done: u64,
    /// RC completions seen: the next one must be of iteration rc_seen / 7.
    rc_seen: u64,
    model: Atomics,
    t: Tally,
}

/// Runs the data phase; the [`Tally`] of what it sent and checked.
#[allow(clippy::too_many_arguments)]
pub(super) fn data_phase<V: Endpoint>(
    node: &mut V,
    r: &Res,
    lay: &ClientLayout,
    peer: &Peer,
    run: &Run,
    chan: &mut Chan,
    inbox: &mut Inbox,
    hook: Hook<'_, V>,
) -> Result<Tally, OpcodesError> {
    let mut c = Client {
        r,
        lay,
        peer,
        run,
        slots: (0..run.window).map(|_| None).collect(),
        next: 0,
        done: 0,
        rc_seen: 0,
        model: ATOMICS_START,
        t: Tally::new(),
    };
    let mut watch = Watch::new(run.timeout);
    let mut wcs = Vec::with_capacity(64);
    while c.done < run.iters {
        c.post_due(node)?;
        wcs.clear();
        node.poll_cq(r.cq, 64, &mut wcs)?;
        if !wcs.is_empty() {
            watch.progress();
        }
        for wc in &wcs {
            c.completion(node, wc)?;
        }
        c.resend(node)?;
        if c.advance() {
            let p = Progress {
                done: Some(c.done),
                total: run.iters,
            };
            hook(node, p).map_err(OpcodesError::Hook)?;
            // The hook may have taken a while (a migration's blackout): not the peer stalling.
            watch.progress();
        }
        if let Some(m) = watch.side_channel(chan, inbox)? {
            return Err(OpcodesError::Protocol(format!(
                "the server sent {} during the data phase",
                m.kind()
            )));
        }
        watch.check(c.done, run.iters, || c.waiting())?;
    }
    c.t.seconds = c.t.start.elapsed().as_secs_f64();
    Ok(c.t)
}

impl Client<'_> {
    fn slot(&mut self, iter: u64) -> Option<&mut Slot> {
        let w = self.run.window as u64;
        self.slots[(iter % w) as usize]
            .as_mut()
            .filter(|s| s.iter == iter)
    }

    fn check_status(&self, wc: &WorkCompletion, iter: u64, op: Op) -> Result<(), OpcodesError> {
        if wc.status != WcStatus::Success {
            return Err(OpcodesError::Completion {
                iter,
                op,
                status: wc.status,
            });
        }
        Ok(())
    }

    /// Posts iterations while the window has room.
    fn post_due<V: Endpoint>(&mut self, node: &mut V) -> Result<(), OpcodesError> {
        while self.next < self.run.iters && self.next < self.done + self.run.window as u64 {
            self.post(node, self.next)?;
            self.next += 1;
        }
        Ok(())
    }

    fn post<V: Endpoint>(&mut self, node: &mut V, i: u64) -> Result<(), OpcodesError> {
        let (base, size, w) = (self.r.buf, self.run.size, &self.peer.welcome);
        let s = i % self.run.window as u64;
        let slot_off = s * size as u64;
        // The data of the four requests that carry it, and what the server must get.
        for (k, op) in RC_OPS[..4].iter().enumerate() {
            let mut data = pattern(*op, i, size as usize);
            self.t.to_server.add(*op, i, &data);
            if matches!(op, Op::SendWithImm | Op::RdmaWriteWithImm) {
                self.t.to_server.add_word(*op, i, imm(*op, i) as u64);
            }
            if self.run.fault == Some(Fault::CorruptSend { iteration: i }) && *op == Op::Send {
                data[size as usize / 2] ^= 0x01;
            }
            node.write_buf(self.lay.src[k].at(base, s), &data)?;
        }
        let cas = self.model.cmp_swap(i);
        let faa = self.model.fetch_add(i);
        // The atomics' result words hold something they must not return, so an atomic that
        // leaves them alone is caught.
        let res = self.lay.atomic.at(base, s);
        let mut poison = (!cas.original).to_le_bytes().to_vec();
        poison.extend_from_slice(&(!faa.original).to_le_bytes());
        node.write_buf(res, &poison)?;
        let sge = |addr, len| Sge {
            addr,
            len,
            lkey: self.r.key,
        };
        let rkey = self.peer.rkey;
        let ops = [
            (SendOp::Send, sge(self.lay.src[0].at(base, s), size)),
            (
                SendOp::SendWithImm {
                    imm: imm(Op::SendWithImm, i),
                },
                sge(self.lay.src[1].at(base, s), size),
            ),
            (
                SendOp::Write {
                    remote_addr: w.write_addr + slot_off,
                    rkey,
                },
                sge(self.lay.src[2].at(base, s), size),
            ),
            (
                SendOp::WriteWithImm {
                    remote_addr: w.write_imm_addr + slot_off,
                    rkey,
                    imm: imm(Op::RdmaWriteWithImm, i),
                },
                sge(self.lay.src[3].at(base, s), size),
            ),
            (
                SendOp::Read {
                    remote_addr: w.read_addr + slot_off,
                    rkey,
                },
                sge(self.lay.read.at(base, s), size),
            ),
            (
                SendOp::CmpSwap {
                    remote_addr: w.atomic_addr,
                    rkey,
                    compare: cas.compare,
                    swap: cas.swap,
                },
                sge(res, 8),
            ),
            (
                SendOp::FetchAdd {
                    remote_addr: w.atomic_addr + 8,
                    rkey,
                    add: faa.add,
                },
                sge(res + 8, 8),
            ),
        ];
        self.slots[s as usize] = Some(Slot {
            iter: i,
            rc_left: RC_OPS.len(),
            ud_in_flight: false,
            requested: false,
            sent_at: Instant::now(),
            answered: false,
            cas,
            faa,
        });
        for (op, (send_op, sge)) in RC_OPS.into_iter().zip(ops) {
            let wr = SendWr::new(Wr::Rc { iter: i, op }.encode(), send_op)
                .flags(SendFlags::SIGNALED)
                .sge(sge);
            node.post_send(self.r.rc, &wr)?;
        }
        Ok(())
    }

    fn completion<V: Endpoint>(
        &mut self,
        node: &mut V,
        wc: &WorkCompletion,
    ) -> Result<(), OpcodesError> {
        match Wr::decode(wc.wr_id) {
            Some(Wr::Rc { iter, op }) => self.rc_done(node, wc, iter, op),
            Some(Wr::UdSend(iter)) => {
                self.check_status(wc, iter, Op::UdSend)?;
                if let Some(s) = self.slot(iter) {
                    s.ud_in_flight = false;
                }
                Ok(())
            }
            Some(Wr::UdRecv(n)) => self.answer(node, wc, n),
            _ => Err(OpcodesError::Protocol(format!(
                "a completion for a work request this side did not post: {wc:?}"
            ))),
        }
    }

    fn rc_done<V: Endpoint>(
        &mut self,
        node: &mut V,
        wc: &WorkCompletion,
        iter: u64,
        op: Op,
    ) -> Result<(), OpcodesError> {
        self.check_status(wc, iter, op)?;
        let k = self.rc_seen;
        let (due_iter, due_op) = (k / 7, RC_OPS[(k % 7) as usize]);
        let fail = |what: String| OpcodesError::Check { iter, op, what };
        if (iter, op) != (due_iter, due_op) {
            return Err(fail(format!(
                "completed out of order: iteration {due_iter}'s {due_op} was due"
            )));
        }
        let want = match op {
            Op::Send | Op::SendWithImm => WcOpcode::Send,
            Op::RdmaWrite | Op::RdmaWriteWithImm => WcOpcode::RdmaWrite,
            Op::RdmaRead => WcOpcode::RdmaRead,
            Op::CmpSwap => WcOpcode::CmpSwap,
            _ => WcOpcode::FetchAdd,
        };
        if wc.opcode != want {
            return Err(fail(format!("completion opcode {:?}", wc.opcode)));
        }
        let (base, size) = (self.r.buf, self.run.size);
        let s = iter % self.run.window as u64;
        let slot = self
            .slot(iter)
            .ok_or_else(|| fail("completed after its iteration".into()))?;
        let (cas, faa) = (slot.cas, slot.faa);
        let len = match op {
            Op::RdmaRead => {
                let got = node.read_buf(self.lay.read.at(base, s), size as usize)?;
                check(op, iter, &got).map_err(|m| fail(m.to_string()))?;
                self.t.from_server.add(op, iter, &got);
                size as u64
            }
            Op::CmpSwap | Op::FetchAdd => {
                let at = self.lay.atomic.at(base, s) + if op == Op::FetchAdd { 8 } else { 0 };
                let b = node.read_buf(at, 8)?;
                let got = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                let want = if op == Op::CmpSwap {
                    cas.original
                } else {
                    faa.original
                };
                if got != want {
                    return Err(fail(format!(
                        "returned 0x{got:016x}, the counter held 0x{want:016x}"
                    )));
                }
                self.t.from_server.add_word(op, iter, got);
                8
            }
            _ => size as u64,
        };
        self.t.count(op, len);
        self.rc_seen += 1;
        let slot = self
            .slot(iter)
            .ok_or_else(|| fail("completed after its iteration".into()))?;
        slot.rc_left -= 1;
        if slot.rc_left == 0 {
            self.send_datagram(node, iter)?;
        }
        Ok(())
    }

    /// Sends (or resends) iteration `iter`'s datagram.
    fn send_datagram<V: Endpoint>(&mut self, node: &mut V, iter: u64) -> Result<(), OpcodesError> {
        let s = iter % self.run.window as u64;
        let at = self.lay.ud_send.at(self.r.buf, s);
        let ud_len = self.run.ud_len;
        let first = !self.slot(iter).is_some_and(|s| s.requested);
        if first {
            let mut d = vec![0u8; ud_len as usize];
            fill_datagram(Op::UdSend, iter, &mut d);
            node.write_buf(at, &d)?;
            self.t.to_server.add(Op::UdSend, iter, &d);
            self.t.count(Op::UdSend, ud_len as u64);
        } else {
            self.t.ud_retransmits += 1;
        }
        let wr = SendWr::new(Wr::UdSend(iter).encode(), SendOp::Send)
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
        if let Some(s) = self.slot(iter) {
            s.requested = true;
            s.ud_in_flight = true;
            s.sent_at = Instant::now();
        }
        Ok(())
    }

    /// A datagram from the server arrived in UD receive buffer `n`.
    fn answer<V: Endpoint>(
        &mut self,
        node: &mut V,
        wc: &WorkCompletion,
        n: u64,
    ) -> Result<(), OpcodesError> {
        let op = Op::UdReply;
        // Until the datagram says which iteration it answers, errors name the oldest one
        // waiting.
        self.check_status(wc, self.done, op)?;
        let ud_len = self.run.ud_len;
        let fail = |iter, what: String| OpcodesError::Check { iter, op, what };
        if wc.byte_len as u64 != GRH + ud_len as u64 || !wc.grh {
            return Err(fail(
                self.done,
                format!(
                    "{} bytes, GRH {}: expected {} B after a GRH",
                    wc.byte_len, wc.grh, ud_len
                ),
            ));
        }
        if wc.src_qp != self.peer.ud_qpn || wc.src_gid != self.peer.gid {
            return Err(fail(
                self.done,
                format!(
                    "from QP 0x{:x} at {}, not the server's",
                    wc.src_qp.0, wc.src_gid
                ),
            ));
        }
        let at = self.lay.ud_recv.at(self.r.buf, n);
        let d = node.read_buf(at + GRH, ud_len as usize)?;
        let iter = datagram_iter(&d).unwrap_or(u64::MAX);
        if iter >= self.next {
            return Err(fail(
                self.done,
                format!("an answer for iteration {iter}, which was not asked yet"),
            ));
        }
        check_datagram(op, iter, &d).map_err(|m| fail(iter, m.to_string()))?;
        if wc.imm != Some(imm(op, iter)) {
            return Err(fail(iter, format!("immediate {:x?}", wc.imm)));
        }
        let fresh = match self.slot(iter) {
            Some(s) if !s.answered => {
                s.answered = true;
                true
            }
            _ => false,
        };
        if fresh {
            self.t.count(op, ud_len as u64);
            self.t.from_server.add(op, iter, &d);
            self.t.from_server.add_word(op, iter, imm(op, iter) as u64);
        } else {
            // The answer to a resend whose first answer came too, or came late.
            self.t.ud_duplicates += 1;
        }
        post_recv(
            node,
            self.r,
            self.r.ud,
            Wr::UdRecv(n),
            at,
            GRH + ud_len as u64,
        )
    }

    /// Resends the datagrams whose answers are late.
    fn resend<V: Endpoint>(&mut self, node: &mut V) -> Result<(), OpcodesError> {
        let late: Vec<u64> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| {
                s.requested && !s.answered && !s.ud_in_flight && s.sent_at.elapsed() >= UD_RESEND
            })
            .map(|s| s.iter)
            .collect();
        for i in late {
            self.send_datagram(node, i)?;
        }
        Ok(())
    }

    /// Moves `done` over the complete iterations; whether it moved.
    fn advance(&mut self) -> bool {
        let before = self.done;
        while let Some(s) = self.slot(self.done) {
            if s.rc_left > 0 || !s.answered || s.ud_in_flight {
                break;
            }
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
        let w = self.run.window as u64;
        match &self.slots[(self.done % w) as usize] {
            Some(s) if s.iter == self.done && s.rc_left > 0 => {
                let k = RC_OPS.len() - s.rc_left;
                format!(
                    "iteration {}: {k} of 7 RC requests completed, {} not",
                    s.iter, RC_OPS[k]
                )
            }
            Some(s) if s.iter == self.done => format!(
                "iteration {}: the server's answer to its datagram ({} resends so far)",
                s.iter, self.t.ud_retransmits
            ),
            _ => format!("iteration {}: not posted", self.done),
        }
    }
}
