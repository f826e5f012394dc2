//! Doorbell records (driver → device, doorbell queue) and event records (device → driver,
//! event queue). Both are 16 bytes; a doorbell buffer may hold several records.

use super::codec::{DecodeError, Reader, Writer};

pub const DOORBELL_SIZE: usize = 16;
pub const EVENT_SIZE: usize = 16;

/// What a doorbell rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// New send WQEs up to (not including) free-running index `pi`.
    Sq { qpn: u32, pi: u32 },
    /// New receive WQEs up to `pi`.
    Rq { qpn: u32, pi: u32 },
    /// New SRQ WQEs up to `pi`.
    Srq { srqn: u32, pi: u32 },
    /// The driver consumed CQEs up to `ci`: those slots may be written again.
    CqConsumed { cqn: u32, ci: u32 },
    /// Arm the CQ for the next completion (or the next solicited one).
    CqArm { cqn: u32, solicited: bool },
}

impl Doorbell {
    pub fn encode(&self) -> [u8; DOORBELL_SIZE] {
        let (kind, flags, handle, index) = match *self {
            Doorbell::Sq { qpn, pi } => (1u8, 0u8, qpn, pi),
            Doorbell::Rq { qpn, pi } => (2, 0, qpn, pi),
            Doorbell::Srq { srqn, pi } => (3, 0, srqn, pi),
            Doorbell::CqConsumed { cqn, ci } => (4, 0, cqn, ci),
            Doorbell::CqArm { cqn, solicited } => (5, solicited as u8, cqn, 0),
        };
        let mut w = Writer::new();
        w.u8(kind).u8(flags).u16(0).u32(handle).u32(index).u32(0);
        let mut out = [0u8; DOORBELL_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Doorbell, DecodeError> {
        let mut r = Reader::new(b);
        let kind = r.u8()?;
        let flags = r.u8()?;
        r.skip(2)?;
        let handle = r.u32()?;
        let index = r.u32()?;
        Ok(match kind {
            1 => Doorbell::Sq {
                qpn: handle,
                pi: index,
            },
            2 => Doorbell::Rq {
                qpn: handle,
                pi: index,
            },
            3 => Doorbell::Srq {
                srqn: handle,
                pi: index,
            },
            4 => Doorbell::CqConsumed {
                cqn: handle,
                ci: index,
            },
            5 => Doorbell::CqArm {
                cqn: handle,
                solicited: flags & 1 != 0,
            },
            _ => return Err(DecodeError::Invalid("doorbell kind")),
        })
    }

    /// Every record of a doorbell buffer; a trailing partial record is an error.
    pub fn decode_all(b: &[u8]) -> Result<Vec<Doorbell>, DecodeError> {
        if b.len() % DOORBELL_SIZE != 0 {
            return Err(DecodeError::Invalid("doorbell buffer length"));
        }
        b.chunks(DOORBELL_SIZE).map(Doorbell::decode).collect()
    }
}

/// Asynchronous event codes carried in an [`Event::Async`].
pub mod async_code {
    pub const QP_FATAL: u8 = 1;
    pub const QP_REQ_ERR: u8 = 2;
    pub const QP_ACCESS_ERR: u8 = 3;
    pub const QP_LAST_WQE_REACHED: u8 = 4;
    pub const SQ_DRAINED: u8 = 5;
    pub const CQ_ERR: u8 = 6;
    pub const SRQ_LIMIT_REACHED: u8 = 7;
    pub const PORT_ACTIVE: u8 = 8;
}

/// What the device tells the driver on the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An armed CQ got a completion (`ibv_get_cq_event`).
    Completion { cqn: u32 },
    /// An asynchronous event about `handle` (a QPN, CQN or SRQN; 0 for the port).
    Async { code: u8, handle: u32 },
}

impl Event {
    pub fn from_device(ev: &vhca_device::AsyncEvent) -> Event {
        use vhca_device::AsyncEvent as A;
        let (code, handle) = match *ev {
            A::QpFatal(q) => (async_code::QP_FATAL, q.0),
            A::QpReqErr(q) => (async_code::QP_REQ_ERR, q.0),
            A::QpAccessErr(q) => (async_code::QP_ACCESS_ERR, q.0),
            A::QpLastWqeReached(q) => (async_code::QP_LAST_WQE_REACHED, q.0),
            A::SqDrained(q) => (async_code::SQ_DRAINED, q.0),
            A::CqErr(c) => (async_code::CQ_ERR, c.0),
            A::SrqLimitReached(s) => (async_code::SRQ_LIMIT_REACHED, s.0),
            A::PortActive => (async_code::PORT_ACTIVE, 0),
        };
        Event::Async { code, handle }
    }

    pub fn encode(&self) -> [u8; EVENT_SIZE] {
        let (kind, code, handle) = match *self {
            Event::Completion { cqn } => (1u8, 0u8, cqn),
            Event::Async { code, handle } => (2, code, handle),
        };
        let mut w = Writer::new();
        w.u8(kind).u8(code).u16(0).u32(handle).u64(0);
        let mut out = [0u8; EVENT_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader::new(b);
        let kind = r.u8()?;
        let code = r.u8()?;
        r.skip(2)?;
        let handle = r.u32()?;
        match kind {
            1 => Ok(Event::Completion { cqn: handle }),
            2 => Ok(Event::Async { code, handle }),
            _ => Err(DecodeError::Invalid("event kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doorbells_and_events_round_trip() {
        let dbs = [
            Doorbell::Sq { qpn: 17, pi: 5 },
            Doorbell::Rq {
                qpn: 18,
                pi: u32::MAX,
            },
            Doorbell::Srq { srqn: 1, pi: 2 },
            Doorbell::CqConsumed { cqn: 3, ci: 9 },
            Doorbell::CqArm {
                cqn: 3,
                solicited: true,
            },
        ];
        let buf: Vec<u8> = dbs.iter().flat_map(|d| d.encode()).collect();
        assert_eq!(Doorbell::decode_all(&buf).unwrap(), dbs);
        assert!(Doorbell::decode_all(&buf[..20]).is_err());
        assert!(Doorbell::decode(&[9; 16]).is_err());
        for e in [
            Event::Completion { cqn: 4 },
            Event::Async {
                code: async_code::CQ_ERR,
                handle: 4,
            },
        ] {
            assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        }
    }
}
