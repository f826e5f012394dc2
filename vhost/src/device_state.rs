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

pub const MAGIC: [u8; 4] = *b"VHDS";
/// The device-state version this build writes and reads.
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 18;
/// A state larger than this is refused before it is read whole.
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
    #[error("device state of {0} bytes is larger than allowed")]
    TooLarge(u64),
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

/// Reads a whole state from a pipe, refusing more than [`MAX_STATE`] bytes.
pub fn read_all(r: impl std::io::Read) -> Result<Vec<u8>, StateError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let n = r.take(MAX_STATE as u64 + 1).read_to_end(&mut out)?;
    if n > MAX_STATE {
        return Err(StateError::TooLarge(n as u64));
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
}
