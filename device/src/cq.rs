//! Completion queues: a bounded FIFO of work completions with arm-for-notification.

use crate::verbs::WorkCompletion;
use std::collections::VecDeque;

/// What a completion must be for an armed CQ to notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// Any next completion (`ibv_req_notify_cq(cq, 0)`).
    Next,
    /// A solicited receive completion or any error completion (`ibv_req_notify_cq(cq, 1)`).
    Solicited,
}

/// The outcome of adding a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// Stored, and the CQ was armed for it: raise a completion event.
    Notify,
    /// The CQ is full: it is now in error and the completion is lost.
    Overflow,
    /// The CQ was already in error.
    Dropped,
}

#[derive(Clone, Debug)]
pub struct Cq {
    pub capacity: u32,
    pub entries: VecDeque<WorkCompletion>,
    pub armed: Option<Arm>,
    /// Overran once: IBTA makes the CQ unusable (async CQ error).
    pub overflowed: bool,
}

impl Cq {
    pub fn new(capacity: u32) -> Cq {
        Cq {
            capacity,
            entries: VecDeque::new(),
            armed: None,
            overflowed: false,
        }
    }

    pub fn push(&mut self, wc: WorkCompletion) -> Pushed {
        if self.overflowed {
            return Pushed::Dropped;
        }
        if self.entries.len() as u32 >= self.capacity {
            self.overflowed = true;
            return Pushed::Overflow;
        }
        let notify = match self.armed {
            Some(Arm::Next) => true,
            Some(Arm::Solicited) => wc.solicited || !wc.is_ok(),
            None => false,
        };
        self.entries.push_back(wc);
        if notify {
            self.armed = None;
            Pushed::Notify
        } else {
            Pushed::Stored
        }
    }

    pub fn poll(&mut self, max: usize, out: &mut Vec<WorkCompletion>) -> usize {
        let n = max.min(self.entries.len());
        out.extend(self.entries.drain(..n));
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Qpn;
    use crate::verbs::{WcOpcode, WcStatus};

    fn wc(solicited: bool, status: WcStatus) -> WorkCompletion {
        WorkCompletion {
            wr_id: 1,
            status,
            opcode: WcOpcode::Recv,
            qpn: Qpn(17),
            byte_len: 0,
            imm: None,
            invalidated_rkey: None,
            src_qp: Qpn(0),
            src_gid: Default::default(),
            grh: false,
            solicited,
        }
    }

    #[test]
    fn arm_next_notifies_once() {
        let mut cq = Cq::new(4);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Stored);
        cq.armed = Some(Arm::Next);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Notify);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Stored);
    }

    #[test]
    fn arm_solicited_waits_for_solicited_or_error() {
        let mut cq = Cq::new(8);
        cq.armed = Some(Arm::Solicited);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Stored);
        assert_eq!(cq.push(wc(true, WcStatus::Success)), Pushed::Notify);
        cq.armed = Some(Arm::Solicited);
        assert_eq!(cq.push(wc(false, WcStatus::RemOpErr)), Pushed::Notify);
    }

    #[test]
    fn overflow_puts_the_cq_in_error() {
        let mut cq = Cq::new(1);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Stored);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Overflow);
        let mut out = Vec::new();
        assert_eq!(cq.poll(10, &mut out), 1);
        assert_eq!(cq.push(wc(false, WcStatus::Success)), Pushed::Dropped);
    }
}
