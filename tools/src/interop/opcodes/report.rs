//! What a side counted, the summary the two sides exchange at the end and compare, and the
//! report it prints.

use super::pattern::{Checksum, Op};
use super::OpcodesError;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Operations of each kind a side counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpCounts {
    pub send: u64,
    pub send_with_imm: u64,
    pub rdma_write: u64,
    pub rdma_write_with_imm: u64,
    pub rdma_read: u64,
    pub atomic_cmp_and_swp: u64,
    pub atomic_fetch_and_add: u64,
    /// The client's datagrams (each iteration's once, resends not counted).
    pub ud_send: u64,
    /// The server's answers (each iteration's once).
    pub ud_reply: u64,
}

impl OpCounts {
    fn slot(&mut self, op: Op) -> &mut u64 {
        match op {
            Op::Send => &mut self.send,
            Op::SendWithImm => &mut self.send_with_imm,
            Op::RdmaWrite => &mut self.rdma_write,
            Op::RdmaWriteWithImm => &mut self.rdma_write_with_imm,
            Op::RdmaRead => &mut self.rdma_read,
            Op::CmpSwap => &mut self.atomic_cmp_and_swp,
            Op::FetchAdd => &mut self.atomic_fetch_and_add,
            Op::UdSend => &mut self.ud_send,
            Op::UdReply => &mut self.ud_reply,
        }
    }

    pub fn get(&self, op: Op) -> u64 {
        *self.clone().slot(op)
    }
}

/// The longest time between two consecutive completed iterations.
#[derive(Clone, Copy, Debug)]
pub struct Gaps {
    last: Option<Instant>,
    pub longest: Duration,
    /// Iterations complete when the longest gap began.
    pub longest_after: u64,
}

impl Gaps {
    fn new() -> Gaps {
        Gaps {
            last: None,
            longest: Duration::ZERO,
            longest_after: 0,
        }
    }

    /// The count of completed iterations moved on from `before`.
    pub fn advanced(&mut self, before: u64) {
        let now = Instant::now();
        if let Some(l) = self.last {
            let gap = now - l;
            if gap > self.longest {
                self.longest = gap;
                self.longest_after = before;
            }
        }
        self.last = Some(now);
    }
}

/// What a side counted during its data phase.
#[derive(Clone, Debug)]
pub struct Tally {
    pub ops: OpCounts,
    /// Payload bytes of the counted operations (8 per atomic).
    pub bytes: u64,
    /// Over the data that went to the server: SEND/WRITE payloads and immediates, the
    /// client's datagrams.
    pub to_server: Checksum,
    /// Over the data that came back: READ data, the atomics' original values, the answers.
    pub from_server: Checksum,
    pub ud_retransmits: u64,
    pub ud_duplicates: u64,
    pub gaps: Gaps,
    pub start: Instant,
    pub seconds: f64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            ops: OpCounts::default(),
            bytes: 0,
            to_server: Checksum::default(),
            from_server: Checksum::default(),
            ud_retransmits: 0,
            ud_duplicates: 0,
            gaps: Gaps::new(),
            start: Instant::now(),
            seconds: 0.0,
        }
    }

    /// One operation of `len` payload bytes.
    pub fn count(&mut self, op: Op, len: u64) {
        *self.ops.slot(op) += 1;
        self.bytes += len;
    }

    pub fn summary(&self, iterations: u64, atomics: Option<[u64; 2]>) -> Summary {
        Summary {
            iterations,
            bytes: self.bytes,
            ops: self.ops,
            checksum_to_server: self.to_server.0,
            checksum_from_server: self.from_server.0,
            seconds: self.seconds,
            longest_gap_us: self.gaps.longest.as_micros() as u64,
            ud_retransmits: self.ud_retransmits,
            ud_duplicates: self.ud_duplicates,
            atomics,
        }
    }
}

/// What each side tells the other at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub iterations: u64,
    pub bytes: u64,
    pub ops: OpCounts,
    pub checksum_to_server: u64,
    pub checksum_from_server: u64,
    pub seconds: f64,
    pub longest_gap_us: u64,
    pub ud_retransmits: u64,
    pub ud_duplicates: u64,
    /// The server's counters at the end (CMP_AND_SWP's, FETCH_AND_ADD's); `None` from the
    /// client.
    pub atomics: Option<[u64; 2]>,
}

/// Checks that the two sides saw the same run: iterations, bytes, every count, both
/// checksums. (Timings and retransmissions are each side's own.)
pub fn agree(mine: &Summary, theirs: &Summary) -> Result<(), OpcodesError> {
    let mut diff = Vec::new();
    let mut cmp = |what: &str, a: u64, b: u64| {
        if a != b {
            diff.push(format!("{what}: this side {a:#x}, the peer {b:#x}"));
        }
    };
    cmp("iterations", mine.iterations, theirs.iterations);
    cmp("bytes", mine.bytes, theirs.bytes);
    for op in super::pattern::ALL_OPS {
        cmp(op.name(), mine.ops.get(op), theirs.ops.get(op));
    }
    cmp(
        "checksum to the server",
        mine.checksum_to_server,
        theirs.checksum_to_server,
    );
    cmp(
        "checksum from the server",
        mine.checksum_from_server,
        theirs.checksum_from_server,
    );
    if diff.is_empty() {
        Ok(())
    } else {
        Err(OpcodesError::Disagree(diff.join("; ")))
    }
}

/// One side's QPs, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct QpInfo {
    pub rc_qpn: u32,
    pub rc_psn: u32,
    pub ud_qpn: u32,
    pub gid: String,
}

/// What a run prints (`--json`: this object).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub role: &'static str,
    /// Bytes of each RC message, and of each datagram.
    pub size: u32,
    pub ud_size: u32,
    pub iterations: u64,
    pub window: u32,
    pub mtu: u32,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_sec: f64,
    pub iterations_per_sec: f64,
    pub ops: OpCounts,
    pub checksum_to_server: u64,
    pub checksum_from_server: u64,
    /// The longest time between two consecutive completed iterations: the stall a live
    /// migration of either side causes.
    pub longest_gap_us: u64,
    pub longest_gap_after_iteration: u64,
    pub mean_gap_us: f64,
    pub ud_retransmits: u64,
    pub ud_duplicates: u64,
    pub local: QpInfo,
    pub remote: QpInfo,
    /// The peer's summary, which agreed with this side's.
    pub peer: Summary,
}

const MB: f64 = (1 << 20) as f64;
const RULE: &str =
    "---------------------------------------------------------------------------------------";

impl Report {
    pub fn new(
        role: &'static str,
        t: &Tally,
        shape: (u32, u32, u32, u32),
        iterations: u64,
        local: QpInfo,
        remote: QpInfo,
        peer: Summary,
    ) -> Report {
        let (size, ud_size, window, mtu) = shape;
        let s = t.seconds.max(1e-9);
        Report {
            role,
            size,
            ud_size,
            iterations,
            window,
            mtu,
            bytes: t.bytes,
            seconds: t.seconds,
            mb_per_sec: t.bytes as f64 / s / MB,
            iterations_per_sec: iterations as f64 / s,
            ops: t.ops,
            checksum_to_server: t.to_server.0,
            checksum_from_server: t.from_server.0,
            longest_gap_us: t.gaps.longest.as_micros() as u64,
            longest_gap_after_iteration: t.gaps.longest_after,
            mean_gap_us: s * 1e6 / iterations.max(1) as f64,
            ud_retransmits: t.ud_retransmits,
            ud_duplicates: t.ud_duplicates,
            local,
            remote,
            peer,
        }
    }

    /// The text report, perftest-like.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let qp = |q: &QpInfo| {
            format!(
                "RC QPN 0x{:06x} PSN 0x{:06x}, UD QPN 0x{:06x}, GID {}",
                q.rc_qpn, q.rc_psn, q.ud_qpn, q.gid
            )
        };
        let _ = writeln!(o, "{RULE}");
        let _ = writeln!(
            o,
            "                 vhca opcodes: every RC opcode and UD, every byte checked"
        );
        let _ = writeln!(
            o,
            " {} | {} iterations | {} B messages | {} B datagrams | MTU {} | window {}",
            self.role, self.iterations, self.size, self.ud_size, self.mtu, self.window
        );
        let _ = writeln!(o, " local  {}", qp(&self.local));
        let _ = writeln!(o, " remote {}", qp(&self.remote));
        let _ = writeln!(o, "{RULE}");
        let _ = writeln!(
            o,
            " {:<26} {:>12} {:>14}   #checked by",
            "#opcode", "#count", "#bytes"
        );
        for op in super::pattern::ALL_OPS {
            let n = self.ops.get(op);
            let per = match op {
                Op::CmpSwap | Op::FetchAdd => 8,
                Op::UdSend | Op::UdReply => self.ud_size as u64,
                _ => self.size as u64,
            };
            let by = match op {
                Op::Send | Op::SendWithImm | Op::RdmaWrite | Op::RdmaWriteWithImm => "server",
                Op::UdSend => "server",
                _ => "client",
            };
            let _ = writeln!(o, " {:<26} {:>12} {:>14}   {by}", op.name(), n, n * per);
        }
        let _ = writeln!(o, "{RULE}");
        let _ = writeln!(
            o,
            " {} iterations, {} bytes in {:.3} s: {:.2} MB/sec, {:.1} iterations/sec",
            self.iterations, self.bytes, self.seconds, self.mb_per_sec, self.iterations_per_sec
        );
        let _ = writeln!(
            o,
            " longest gap between iterations: {} usec (after iteration {}), mean {:.1} usec",
            self.longest_gap_us, self.longest_gap_after_iteration, self.mean_gap_us
        );
        let _ = writeln!(
            o,
            " UD resends {}, duplicates {}; the peer's longest gap {} usec",
            self.ud_retransmits, self.ud_duplicates, self.peer.longest_gap_us
        );
        let _ = writeln!(
            o,
            " checksums: to the server 0x{:016x}, from the server 0x{:016x}: both sides agree",
            self.checksum_to_server, self.checksum_from_server
        );
        let _ = writeln!(o, "{RULE}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_that_differ_are_named() {
        let mut t = Tally::new();
        t.count(Op::Send, 4096);
        t.to_server.add(Op::Send, 0, b"x");
        let a = t.summary(1, None);
        assert!(agree(&a, &a.clone()).is_ok());
        let mut b = a.clone();
        b.ops.send = 2;
        b.checksum_to_server ^= 1;
        b.seconds = 9.0;
        let e = agree(&a, &b).unwrap_err().to_string();
        assert!(e.contains("SEND: this side 0x1, the peer 0x2"), "{e}");
        assert!(e.contains("checksum to the server"), "{e}");
        assert!(!e.contains("seconds"), "{e}");
    }
}
