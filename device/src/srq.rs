//! Shared receive queues with the limit event.

use crate::types::PdHandle;
use crate::verbs::RecvWr;
use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Srq {
    pub pd: PdHandle,
    pub max_wr: u32,
    pub max_sge: u32,
    pub queue: VecDeque<RecvWr>,
    /// Armed limit: when fewer WQEs remain, raise SRQ_LIMIT_REACHED once. 0 = disarmed.
    pub limit: u32,
}

impl Srq {
    /// Takes the next receive WQE; the flag says the limit event fires now.
    pub fn take(&mut self) -> (Option<RecvWr>, bool) {
        let wr = self.queue.pop_front();
        let fire = wr.is_some() && self.limit > 0 && (self.queue.len() as u32) < self.limit;
        if fire {
            self.limit = 0;
        }
        (wr, fire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_fires_once_below_threshold() {
        let mut s = Srq {
            pd: PdHandle(1),
            max_wr: 8,
            max_sge: 1,
            queue: (0..3)
                .map(|i| RecvWr {
                    wr_id: i,
                    sgl: vec![],
                })
                .collect(),
            limit: 2,
        };
        assert!(!s.take().1, "2 left: not below 2");
        assert!(s.take().1, "1 left");
        assert!(!s.take().1, "disarmed");
        assert_eq!(s.take(), (None, false));
    }
}
