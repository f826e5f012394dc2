//! What the simulator records while it checks: violations, injected faults, totals.

use serde::Serialize;
use std::collections::BTreeMap;
use vhca_device::WorkCompletion;
use vhca_fabric::world::fnv;

/// Violations found and what was injected on purpose (the only allowed causes of errors).
#[derive(Debug, Default)]
pub struct Checker {
    pub violations: Vec<String>,
    pub injected: Vec<String>,
    pub ops_completed: u64,
    pub bytes: u64,
    /// FNV over every completion seen, in order: part of the trace hash.
    pub completion_hash: u64,
    /// Completions seen, by status.
    pub by_status: BTreeMap<String, u64>,
    /// Operations checked, by opcode.
    pub by_op: BTreeMap<&'static str, u64>,
    pub remote_keys: RemoteKeyCounts,
}

/// The peer's requests through a side's fast-register MR or type 2 window, checked.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RemoteKeyCounts {
    /// WRITEs, READs and atomics through a valid fast-register MR key that succeeded, their
    /// bytes checked.
    pub through_fast_reg: u64,
    /// The same through a bound window.
    pub through_window: u64,
    /// Requests with a stale key or a range outside that failed with REMOTE_ACCESS_ERROR, as
    /// the model said.
    pub refused: u64,
    /// SEND_WITH_INVs that invalidated one, the receive completion naming its key.
    pub invalidated_by_send: u64,
}

impl RemoteKeyCounts {
    pub fn total(&self) -> u64 {
        self.through_fast_reg + self.through_window + self.refused + self.invalidated_by_send
    }
}

impl Checker {
    pub fn violation(&mut self, what: String) {
        // One broken invariant tends to cascade; the first few say what happened.
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    pub fn injected(&mut self, what: String) {
        self.injected.push(what);
    }

    pub fn saw(&mut self, wc: &WorkCompletion) {
        *self
            .by_status
            .entry(format!("{:?}", wc.status))
            .or_default() += 1;
        let mut h = fnv(self.completion_hash, wc.wr_id);
        h = fnv(
            h,
            wc.status.code() as u64 | (wc.byte_len as u64) << 8 | (wc.qpn.0 as u64) << 40,
        );
        self.completion_hash = h;
    }

    pub fn done(&mut self, op: &'static str, bytes: u64) {
        self.ops_completed += 1;
        self.bytes += bytes;
        *self.by_op.entry(op).or_default() += 1;
    }
}

/// Deterministic contents for message `id`: every message's bytes differ from every other's.
pub fn pattern(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&b[..n]);
    }
    out
}
