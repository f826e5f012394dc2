//! Device state for live migration over vhost-user (docs/migration.md).
//!
//! The state a source VF writes on `SET_DEVICE_STATE_FD(SAVE)` and a destination reads on
//! `SET_DEVICE_STATE_FD(LOAD)`: a small header (magic, version, length, checksum) then a
//! versioned serde struct, postcard-encoded, that wraps the VF checkpoint blob
//! (docs/checkpoint-format.md) with the vhost-level state around it ([`PortStateV1`]).

use crate::port::state::PortStateV1;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vhca_device::checkpoint::CheckpointError;
use vhca_device::VfLimits;

pub const MAGIC: [u8; 4] = *b"VHDS";
/// The device-state version this build writes and reads.
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 18;
/// The ceiling of [`max_state_len`]: no load reads more than this, whatever the limits.
pub const MAX_STATE: usize = 1 << 30;

/// Version 1 of a VF's device state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceStateV1 {
    /// Virtio features the driver acked on the source (the destination must see the same).
    pub acked_features: u64,
    /// The source's clock when the state was taken (for the timeline; timers are relative).
    pub saved_at_ns: u64,
    pub port: PortStateV1,
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("device state truncated: {0}")]
    Truncated(&'static str),
    #[error("not a vhca device state (bad magic)")]
    BadMagic,
    #[error("device state version {0} is not supported by this build (supported: {VERSION})")]
    UnknownVersion(u16),
    #[error("device state of {0} bytes or more is larger than this VF's limits allow ({1} bytes)")]
    TooLarge(u64, u64),
    #[error("device state transfer timed out after {0:?}")]
    TimedOut(std::time::Duration),
    #[error("device state transfer cancelled: the process is stopping")]
    Stopped,
    #[error("device state is corrupted (checksum mismatch)")]
    Checksum,
    #[error("device state does not decode: {0}")]
    Decode(String),
    #[error("VF checkpoint refused: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("device state transfer I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

/// FNV-1a, 64 bits: catches accidental corruption of the wrapper (the checkpoint inside has
/// its own CRC).
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub fn encode(s: &DeviceStateV1) -> Vec<u8> {
    // Plain data into a Vec cannot fail; an empty payload would fail to load.
    let payload = postcard::to_stdvec(s).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

pub fn decode(b: &[u8]) -> Result<DeviceStateV1, StateError> {
    if b.len() < HEADER_LEN {
        return Err(StateError::Truncated("header"));
    }
    if b[..4] != MAGIC {
        return Err(StateError::BadMagic);
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(StateError::UnknownVersion(version));
    }
    let len = u32::from_le_bytes([b[6], b[7], b[8], b[9]]) as usize;
    let mut ck = [0u8; 8];
    ck.copy_from_slice(&b[10..18]);
    let payload = &b[HEADER_LEN..];
    if payload.len() < len {
        return Err(StateError::Truncated("payload"));
    }
    if payload.len() > len {
        return Err(StateError::Decode(format!(
            "{} bytes after the payload",
            payload.len() - len
        )));
    }
    if checksum(payload) != u64::from_le_bytes(ck) {
        return Err(StateError::Checksum);
    }
    postcard::from_bytes(payload).map_err(|e| StateError::Decode(e.to_string()))
}

// Worst-case encoded sizes (postcard: a u32 takes at most 5 bytes, a u64 10) of the parts a
// state is made of, rounded up generously: `max_state_len` is an upper bound, not an estimate.
/// A work completion (wr_id, status, opcode, QPN, length, immediate, invalidated key,
/// source QP and GID, flags).
const WC_MAX: u64 = 64;
/// A scatter/gather element (address, length, key).
const SGE_MAX: u64 = 24;
/// A WQE without its SGEs and inline data (ids, opcode, flags, remote address and key,
/// immediate, atomic operands, UD address vector, progress PSNs and offsets).
const WQE_MAX: u64 = 256;
/// A QP without its queues: creation and current attributes, address vector, requester and
/// responder scalars, and its vhost ring state.
const QP_MAX: u64 = 4096;
/// One READ/atomic responder resource, or one response still owed.
const RESOURCE_MAX: u64 = 64;
/// A CQ, SRQ or MR without its entries; an AH; a PD.
const OBJECT_MAX: u64 = 256;
/// One page of an MR's page list.
const PAGE_ENTRY_MAX: u64 = 10;
/// Header, identity, limits, counters, key byte: everything a state has once.
const FIXED_MAX: u64 = 64 * 1024;

/// An upper bound of the encoded size of the device state of a VF within `l`: every object
/// table full, every queue full, every WQE with every SGE and the most inline data
/// (docs/migration.md, "Load size cap"). Capped at [`MAX_STATE`]. A load reads at most this.
pub fn max_state_len(l: &VfLimits) -> usize {
    let m = |a: u64, b: u64| a.saturating_mul(b);
    let (wr, sge) = (u64::from(l.max_qp_wr), u64::from(l.max_sge));
    let send_wqe = WQE_MAX + m(sge, SGE_MAX) + u64::from(l.max_inline_data);
    let recv_wqe = WQE_MAX + m(sge, SGE_MAX);
    let rd_atom = u64::from(l.max_qp_rd_atom.max(l.max_qp_init_rd_atom));
    let qp = QP_MAX
        .saturating_add(m(wr, send_wqe))
        .saturating_add(m(wr, recv_wqe))
        .saturating_add(m(2 * rd_atom, RESOURCE_MAX));
    // Unpolled completions in the VF, completions injected or pending in the vhost layer.
    let cq = OBJECT_MAX.saturating_add(m(u64::from(l.max_cqe), 3 * WC_MAX));
    let srq = OBJECT_MAX.saturating_add(m(u64::from(l.max_srq_wr), recv_wqe));
    let mr = OBJECT_MAX.saturating_add(m((l.max_mr_size >> 12) + 2, PAGE_ENTRY_MAX));
    // Async and CQ events the VF holds, one per object at most, and the eventq backlog.
    let objects = u64::from(l.max_qp) + u64::from(l.max_cq) + u64::from(l.max_srq);
    let events = m(objects, 32).saturating_add(m(
        crate::port::MAX_PENDING_EVENTS as u64,
        crate::protocol::doorbell::EVENT_SIZE as u64 + 8,
    ));
    let total = [
        m(u64::from(l.max_qp), qp),
        m(u64::from(l.max_cq), cq),
        m(u64::from(l.max_srq), srq),
        m(u64::from(l.max_mr), mr),
        m(u64::from(l.max_pd), 16),
        m(u64::from(l.max_ah), OBJECT_MAX),
        events,
        FIXED_MAX,
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add);
    total.min(MAX_STATE as u64) as usize
}

/// Reads one state through `read` (which returns 0 at the end of the stream, and may fail
/// with a timeout): the header first, refused at once if it is not a state's or announces
/// more than `cap` bytes; then exactly the announced payload, the buffer growing only as
/// bytes arrive; then the end of the stream (a byte more is refused without reading on).
pub fn read_framed(
    mut read: impl FnMut(&mut [u8]) -> Result<usize, StateError>,
    cap: usize,
) -> Result<Vec<u8>, StateError> {
    let mut fill = |buf: &mut [u8], what: &'static str| -> Result<(), StateError> {
        let mut got = 0;
        while got < buf.len() {
            match read(&mut buf[got..])? {
                0 => return Err(StateError::Truncated(what)),
                n => got += n,
            }
        }
        Ok(())
    };
    let mut header = [0u8; HEADER_LEN];
    fill(&mut header[..4], "header")?;
    if header[..4] != MAGIC {
        return Err(StateError::BadMagic);
    }
    fill(&mut header[4..], "header")?;
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(StateError::UnknownVersion(version));
    }
    let len = u32::from_le_bytes([header[6], header[7], header[8], header[9]]) as usize;
    if HEADER_LEN + len > cap {
        return Err(StateError::TooLarge((HEADER_LEN + len) as u64, cap as u64));
    }
    // Grown by what arrived, never by what the header claims.
    const CHUNK: usize = 64 * 1024;
    let mut out = header.to_vec();
    while out.len() < HEADER_LEN + len {
        let start = out.len();
        let want = (HEADER_LEN + len - start).min(CHUNK);
        out.resize(start + want, 0);
        let n = read(&mut out[start..])?;
        out.truncate(start + n);
        if n == 0 {
            return Err(StateError::Truncated("payload"));
        }
    }
    let mut extra = [0u8; 1];
    if read(&mut extra)? != 0 {
        return Err(StateError::Decode("bytes after the payload".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceStateV1 {
        DeviceStateV1 {
            acked_features: 7,
            saved_at_ns: 9,
            port: PortStateV1 {
                checkpoint: vec![1, 2, 3],
                qps: vec![],
                srqs: vec![],
                cqs: vec![],
                events: vec![],
                pending_wcs: vec![],
            },
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let b = encode(&sample());
        assert_eq!(decode(&b).unwrap(), sample());
        assert!(matches!(decode(&b[..10]), Err(StateError::Truncated(_))));
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(StateError::Truncated(_))
        ));
        let mut c = b.clone();
        *c.last_mut().unwrap() ^= 0xff;
        assert!(matches!(decode(&c), Err(StateError::Checksum)));
        let mut v = b.clone();
        v[4] = 9;
        assert!(matches!(decode(&v), Err(StateError::UnknownVersion(9))));
        let mut m = b;
        m[0] = b'X';
        assert!(matches!(decode(&m), Err(StateError::BadMagic)));
    }

    /// `read` over a byte source, counting what was asked for.
    fn source(
        mut bytes: impl Iterator<Item = u8>,
    ) -> impl FnMut(&mut [u8]) -> Result<usize, StateError> {
        move |buf| {
            let mut n = 0;
            for b in buf.iter_mut() {
                match bytes.next() {
                    Some(x) => *b = x,
                    None => break,
                }
                n += 1;
            }
            Ok(n)
        }
    }

    #[test]
    fn framed_reads_take_exactly_one_state() {
        let b = encode(&sample());
        assert_eq!(
            read_framed(source(b.clone().into_iter()), 1 << 20).unwrap(),
            b
        );
        // Endless zeros (/dev/zero): refused at the magic, after 4 bytes.
        let mut asked = 0usize;
        let mut zeros = source(std::iter::repeat(0));
        let r = read_framed(
            |buf| {
                asked += buf.len();
                zeros(buf)
            },
            MAX_STATE,
        );
        assert!(matches!(r, Err(StateError::BadMagic)), "{r:?}");
        assert_eq!(asked, 4);
        // A header announcing more than the cap: refused before the payload.
        assert!(matches!(
            read_framed(source(b.clone().into_iter()), b.len() - 1),
            Err(StateError::TooLarge(..))
        ));
        // A valid state followed by endless bytes: refused at the first extra byte.
        let endless = b.clone().into_iter().chain(std::iter::repeat(7));
        assert!(matches!(
            read_framed(source(endless), 1 << 20),
            Err(StateError::Decode(_))
        ));
        assert!(matches!(
            read_framed(source(b[..b.len() - 1].iter().copied()), 1 << 20),
            Err(StateError::Truncated(_))
        ));
    }

    #[test]
    fn the_cap_follows_the_limits() {
        let small = VfLimits {
            max_qp: 16,
            max_qp_wr: 64,
            max_sge: 4,
            max_inline_data: 64,
            max_cq: 16,
            max_cqe: 256,
            max_mr: 16,
            max_mr_size: 1 << 20,
            max_pd: 16,
            max_srq: 4,
            max_srq_wr: 64,
            max_ah: 16,
            max_qp_rd_atom: 4,
            max_qp_init_rd_atom: 4,
            max_msg_sz: 1 << 20,
        };
        let cap = max_state_len(&small);
        assert!(cap > 64 * 1024 && cap < 8 << 20, "{cap}");
        let more = VfLimits {
            max_qp: 32,
            ..small
        };
        assert!(max_state_len(&more) > cap);
        assert_eq!(max_state_len(&VfLimits::default()), MAX_STATE);
        let huge = VfLimits {
            max_qp: u32::MAX,
            max_qp_wr: u32::MAX,
            max_mr_size: u64::MAX,
            ..small
        };
        assert_eq!(max_state_len(&huge), MAX_STATE);
    }
}
