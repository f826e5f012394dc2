//! What every byte of a run must be: the data of each operation is a function of the
//! operation and the iteration number, so either side can check any byte it sees without
//! being told what to expect; the atomics follow a model both sides run; checksums let the
//! two sides compare at the end what each saw.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The operations of one iteration, in the order the client posts the RC ones, and the two
/// UD datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Send,
    SendWithImm,
    RdmaWrite,
    RdmaWriteWithImm,
    RdmaRead,
    CmpSwap,
    FetchAdd,
    /// The client's datagram (a UD SEND).
    UdSend,
    /// The server's answer (a UD SEND_WITH_IMM).
    UdReply,
}

/// The RC work requests of an iteration, in posting order. The receives they consume at the
/// server (SEND, SEND_WITH_IMM, RDMA_WRITE_WITH_IMM) complete in this order too: RC delivers
/// in order, which is what lets the server tell which iteration a receive belongs to.
pub const RC_OPS: [Op; 7] = [
    Op::Send,
    Op::SendWithImm,
    Op::RdmaWrite,
    Op::RdmaWriteWithImm,
    Op::RdmaRead,
    Op::CmpSwap,
    Op::FetchAdd,
];

/// Every operation, as reports list them.
pub const ALL_OPS: [Op; 9] = [
    Op::Send,
    Op::SendWithImm,
    Op::RdmaWrite,
    Op::RdmaWriteWithImm,
    Op::RdmaRead,
    Op::CmpSwap,
    Op::FetchAdd,
    Op::UdSend,
    Op::UdReply,
];

/// The RC operations that consume a receive at the server, in order.
pub const RECV_OPS: [Op; 3] = [Op::Send, Op::SendWithImm, Op::RdmaWriteWithImm];

impl Op {
    /// The IBTA name, as error messages and reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Send => "SEND",
            Op::SendWithImm => "SEND_WITH_IMM",
            Op::RdmaWrite => "RDMA_WRITE",
            Op::RdmaWriteWithImm => "RDMA_WRITE_WITH_IMM",
            Op::RdmaRead => "RDMA_READ",
            Op::CmpSwap => "ATOMIC_CMP_AND_SWP",
            Op::FetchAdd => "ATOMIC_FETCH_AND_ADD",
            Op::UdSend => "UD SEND",
            Op::UdReply => "UD SEND_WITH_IMM (reply)",
        }
    }

    /// A small number per operation, mixed into its data and its work request IDs.
    pub fn tag(self) -> u64 {
        self as u64
    }

    /// From [`Op::tag`].
    pub fn from_tag(t: u64) -> Option<Op> {
        ALL_OPS.into_iter().find(|o| o.tag() == t)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SplitMix64: a cheap bijective mixer, so that nearby (operation, iteration, word) triples
/// give unrelated bytes and a byte from another iteration or offset never passes for this one
/// by accident.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed(op: Op, iter: u64) -> u64 {
    mix(iter.wrapping_mul(16) ^ op.tag() ^ 0x5648_4341_0000_0000)
}

/// Fills `buf` with the data of `op` in iteration `iter`.
pub fn fill(op: Op, iter: u64, buf: &mut [u8]) {
    let s = seed(op, iter);
    for (k, chunk) in buf.chunks_mut(8).enumerate() {
        let w = mix(s ^ k as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// The data of `op` in iteration `iter`, `len` bytes.
pub fn pattern(op: Op, iter: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(op, iter, &mut v);
    v
}

/// The immediate data `op` carries in iteration `iter` (for the operations that carry one).
pub fn imm(op: Op, iter: u64) -> u32 {
    (seed(op, iter) >> 16) as u32
}

/// How data differed from what it should have been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Bytes that differ.
    pub bad: usize,
    /// Bytes compared.
    pub len: usize,
    /// The first differing byte: offset, what was there, what should have been.
    pub first: (usize, u8, u8),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (at, got, want) = self.first;
        write!(
            f,
            "{} of {} bytes differ, the first at offset {at}: 0x{got:02x}, expected 0x{want:02x}",
            self.bad, self.len
        )
    }
}

/// Compares `got` with `want` (same length).
fn compare(got: &[u8], want: &[u8]) -> Result<(), Mismatch> {
    let mut bad = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w);
    let Some((at, (&g, &w))) = bad.next() else {
        return Ok(());
    };
    Err(Mismatch {
        bad: 1 + bad.count(),
        len: got.len(),
        first: (at, g, w),
    })
}

/// Checks that `got` is the data of `op` in iteration `iter`.
pub fn check(op: Op, iter: u64, got: &[u8]) -> Result<(), Mismatch> {
    compare(got, &pattern(op, iter, got.len()))
}

/// Bytes at the start of a UD datagram that carry its iteration number (little-endian): a
/// datagram can arrive twice or out of order (the client resends one whose answer is late),
/// so unlike the RC receives its iteration cannot be inferred from the order.
pub const UD_HEADER: usize = 8;

/// Fills a UD datagram of `op` for iteration `iter`: the iteration number, then the data.
pub fn fill_datagram(op: Op, iter: u64, buf: &mut [u8]) {
    let n = UD_HEADER.min(buf.len());
    buf[..n].copy_from_slice(&iter.to_le_bytes()[..n]);
    fill(op, iter, &mut buf[n..]);
}

/// The iteration a UD datagram says it belongs to; `None` when it is too short to say.
pub fn datagram_iter(buf: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(..UD_HEADER)?.try_into().ok()?))
}

/// Checks a UD datagram of `op` for iteration `iter` (header and data).
pub fn check_datagram(op: Op, iter: u64, got: &[u8]) -> Result<(), Mismatch> {
    let mut want = vec![0u8; got.len()];
    fill_datagram(op, iter, &mut want);
    compare(got, &want)
}

/// The server's two 8-byte counters and what the client's atomics do to them. Both sides run
/// the model: the client to know what each atomic must return, the server to know the
/// counters' final values. Atomics on one QP execute in order, so the model holds however
/// many iterations are in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Atomics {
    /// The ATOMIC_CMP_AND_SWP target's value.
    pub cas: u64,
    /// The ATOMIC_FETCH_AND_ADD target's value.
    pub faa: u64,
}

/// The values the counters start at.
pub const ATOMICS_START: Atomics = Atomics {
    cas: 0x0123_4567_89ab_cdef,
    faa: 0xfedc_ba98_7654_3210,
};

/// One ATOMIC_CMP_AND_SWP: what to post, and what it must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmpSwap {
    pub compare: u64,
    pub swap: u64,
    /// The original value it returns (whether or not it swapped).
    pub original: u64,
}

/// One ATOMIC_FETCH_AND_ADD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchAdd {
    pub add: u64,
    pub original: u64,
}

impl Atomics {
    /// Iteration `iter`'s CMP_AND_SWP, applied to the model. Every fourth one compares with
    /// a wrong value, so the "compare failed, nothing swapped" path is checked too.
    pub fn cmp_swap(&mut self, iter: u64) -> CmpSwap {
        let original = self.cas;
        let swap = mix(iter ^ 0xc5c5_0000_0000_0000);
        let compare = if iter % 4 == 3 { !original } else { original };
        if compare == original {
            self.cas = swap;
        }
        CmpSwap {
            compare,
            swap,
            original,
        }
    }

    /// Iteration `iter`'s FETCH_AND_ADD, applied to the model.
    pub fn fetch_add(&mut self, iter: u64) -> FetchAdd {
        let original = self.faa;
        let add = mix(iter ^ 0xfaaf_0000_0000_0000) | 1;
        self.faa = original.wrapping_add(add);
        FetchAdd { add, original }
    }

    /// The counters after `iters` iterations from [`ATOMICS_START`].
    pub fn after(iters: u64) -> Atomics {
        let mut a = ATOMICS_START;
        for i in 0..iters {
            a.cmp_swap(i);
            a.fetch_add(i);
        }
        a
    }
}

/// An order-independent checksum of items (operation, iteration, bytes): each side adds
/// what it saw, each item once, in whatever order it saw it (UD datagrams can arrive out of
/// order), and the two sums must be equal at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum(pub u64);

impl Checksum {
    pub fn add(&mut self, op: Op, iter: u64, bytes: &[u8]) {
        // FNV-1a over the bytes, seeded by the item, then mixed so that sums of items do not
        // cancel in simple ways.
        let mut h = seed(op, iter) ^ 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = self.0.wrapping_add(mix(h ^ bytes.len() as u64));
    }

    /// An item with an immediate value or an atomic's returned value.
    pub fn add_word(&mut self, op: Op, iter: u64, w: u64) {
        self.add(op, iter, &w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_by_operation_and_iteration() {
        let a = pattern(Op::Send, 7, 4096);
        assert_eq!(a, pattern(Op::Send, 7, 4096));
        assert_ne!(a, pattern(Op::Send, 8, 4096));
        assert_ne!(a, pattern(Op::SendWithImm, 7, 4096));
        // A shorter message is the start of a longer one (the same data at any size).
        assert_eq!(&a[..13], &pattern(Op::Send, 7, 13)[..]);
        assert_ne!(imm(Op::SendWithImm, 1), imm(Op::SendWithImm, 2));
        for op in ALL_OPS {
            assert_eq!(Op::from_tag(op.tag()), Some(op));
        }
        assert_eq!(Op::from_tag(99), None);
    }

    #[test]
    fn a_corrupted_buffer_fails_the_check_and_says_where() {
        let mut buf = pattern(Op::RdmaWrite, 41, 4096);
        assert_eq!(check(Op::RdmaWrite, 41, &buf), Ok(()));
        // The right data of another iteration (a write that landed twice, or late) fails.
        assert!(check(Op::RdmaWrite, 40, &buf).is_err());
        buf[100] ^= 0x10;
        buf[3000] ^= 0xff;
        let m = check(Op::RdmaWrite, 41, &buf).unwrap_err();
        assert_eq!((m.bad, m.len, m.first.0), (2, 4096, 100));
        assert_eq!(m.first.1 ^ m.first.2, 0x10);
        assert!(m
            .to_string()
            .contains("2 of 4096 bytes differ, the first at offset 100"));
        // One bit anywhere, a zeroed buffer, a truncated copy.
        let good = pattern(Op::RdmaRead, 5, 1024);
        for at in [0, 1, 511, 1023] {
            let mut b = good.clone();
            b[at] ^= 1;
            assert_eq!(check(Op::RdmaRead, 5, &b).unwrap_err().first.0, at);
        }
        assert!(check(Op::RdmaRead, 5, &[0u8; 1024]).is_err());
    }

    #[test]
    fn datagrams_carry_their_iteration() {
        let mut d = vec![0u8; 100];
        fill_datagram(Op::UdSend, 123_456, &mut d);
        assert_eq!(datagram_iter(&d), Some(123_456));
        assert_eq!(check_datagram(Op::UdSend, 123_456, &d), Ok(()));
        assert!(check_datagram(Op::UdReply, 123_456, &d).is_err());
        d[50] ^= 4;
        assert_eq!(
            check_datagram(Op::UdSend, 123_456, &d).unwrap_err().first.0,
            50
        );
        assert_eq!(datagram_iter(&d[..7]), None);
    }

    #[test]
    fn the_atomics_model_swaps_three_times_in_four_and_always_adds() {
        let mut m = ATOMICS_START;
        let c0 = m.cmp_swap(0);
        assert_eq!(
            (c0.original, c0.compare),
            (ATOMICS_START.cas, ATOMICS_START.cas)
        );
        assert_eq!(m.cas, c0.swap);
        m.cmp_swap(1);
        let v = m.cmp_swap(2).swap;
        let c3 = m.cmp_swap(3);
        assert_ne!(c3.compare, c3.original);
        assert_eq!(m.cas, v, "a failed compare leaves the counter");
        let f = m.fetch_add(0);
        assert_eq!(m.faa, ATOMICS_START.faa.wrapping_add(f.add));
        assert_ne!(Atomics::after(10), Atomics::after(11));
    }

    #[test]
    fn checksums_ignore_order_but_not_content() {
        let (a, b) = (pattern(Op::Send, 1, 64), pattern(Op::Send, 2, 64));
        let mut x = Checksum::default();
        x.add(Op::Send, 1, &a);
        x.add(Op::Send, 2, &b);
        let mut y = Checksum::default();
        y.add(Op::Send, 2, &b);
        y.add(Op::Send, 1, &a);
        assert_eq!(x, y);
        let mut z = Checksum::default();
        z.add(Op::Send, 1, &b);
        z.add(Op::Send, 2, &a);
        assert_ne!(x, z);
    }
}
