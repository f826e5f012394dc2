//! IB transport packets as typed values.
//!
//! A [`Packet`] carries exactly the IBTA headers RoCEv2 puts on the wire (BTH and the extended
//! transport headers), plus the source and destination GIDs the network layer would carry. The
//! fabric turns it into bytes (RoCEv2) or moves it as it is (the in-process switch).

use crate::memory::SharedMemory;
use crate::types::{Gid, MemKey, Msn, Psn, Qpn};
use std::fmt;

/// A BTH opcode: the transport (upper 3 bits) and the operation (lower 5 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

#[allow(missing_docs)]
impl Opcode {
    pub const RC_SEND_FIRST: Opcode = Opcode(0x00);
    pub const RC_SEND_MIDDLE: Opcode = Opcode(0x01);
    pub const RC_SEND_LAST: Opcode = Opcode(0x02);
    pub const RC_SEND_LAST_IMM: Opcode = Opcode(0x03);
    pub const RC_SEND_ONLY: Opcode = Opcode(0x04);
    pub const RC_SEND_ONLY_IMM: Opcode = Opcode(0x05);
    pub const RC_WRITE_FIRST: Opcode = Opcode(0x06);
    pub const RC_WRITE_MIDDLE: Opcode = Opcode(0x07);
    pub const RC_WRITE_LAST: Opcode = Opcode(0x08);
    pub const RC_WRITE_LAST_IMM: Opcode = Opcode(0x09);
    pub const RC_WRITE_ONLY: Opcode = Opcode(0x0a);
    pub const RC_WRITE_ONLY_IMM: Opcode = Opcode(0x0b);
    pub const RC_READ_REQUEST: Opcode = Opcode(0x0c);
    pub const RC_READ_RESP_FIRST: Opcode = Opcode(0x0d);
    pub const RC_READ_RESP_MIDDLE: Opcode = Opcode(0x0e);
    pub const RC_READ_RESP_LAST: Opcode = Opcode(0x0f);
    pub const RC_READ_RESP_ONLY: Opcode = Opcode(0x10);
    pub const RC_ACK: Opcode = Opcode(0x11);
    pub const RC_ATOMIC_ACK: Opcode = Opcode(0x12);
    pub const RC_CMP_SWAP: Opcode = Opcode(0x13);
    pub const RC_FETCH_ADD: Opcode = Opcode(0x14);
    pub const RC_SEND_LAST_INV: Opcode = Opcode(0x16);
    pub const RC_SEND_ONLY_INV: Opcode = Opcode(0x17);
    /// FLUSH (IBTA 1.5): FETH + RETH, no payload; answered by a zero-length READ RESPONSE ONLY.
    pub const RC_FLUSH: Opcode = Opcode(0x1c);
    /// ATOMIC WRITE (IBTA 1.5): RETH + 8 bytes; answered by a zero-length READ RESPONSE ONLY.
    pub const RC_ATOMIC_WRITE: Opcode = Opcode(0x1d);
    pub const UC_SEND_FIRST: Opcode = Opcode(0x20);
    pub const UC_SEND_MIDDLE: Opcode = Opcode(0x21);
    pub const UC_SEND_LAST: Opcode = Opcode(0x22);
    pub const UC_SEND_LAST_IMM: Opcode = Opcode(0x23);
    pub const UC_SEND_ONLY: Opcode = Opcode(0x24);
    pub const UC_SEND_ONLY_IMM: Opcode = Opcode(0x25);
    pub const UC_WRITE_FIRST: Opcode = Opcode(0x26);
    pub const UC_WRITE_MIDDLE: Opcode = Opcode(0x27);
    pub const UC_WRITE_LAST: Opcode = Opcode(0x28);
    pub const UC_WRITE_LAST_IMM: Opcode = Opcode(0x29);
    pub const UC_WRITE_ONLY: Opcode = Opcode(0x2a);
    pub const UC_WRITE_ONLY_IMM: Opcode = Opcode(0x2b);
    pub const UD_SEND_ONLY: Opcode = Opcode(0x64);
    pub const UD_SEND_ONLY_IMM: Opcode = Opcode(0x65);

    /// True for the RC transport (0x00..=0x1f).
    pub fn is_rc(self) -> bool {
        self.0 < 0x20
    }
    pub fn is_ud(self) -> bool {
        self.0 == 0x64 || self.0 == 0x65
    }
    /// True for the UC opcodes vhca implements (SEND and RDMA WRITE, 0x20..=0x2b).
    pub fn is_uc(self) -> bool {
        matches!(self.0, 0x20..=0x2b)
    }

    /// The RC opcode with the same operation: a UC SEND/WRITE opcode (0x20..=0x2b) differs
    /// from its RC twin only in the transport bits (IBTA table 38). Every other opcode is
    /// returned as it is.
    pub const fn base(self) -> Opcode {
        match self.0 {
            0x20..=0x2b => Opcode(self.0 - 0x20),
            _ => self,
        }
    }

    /// The UC opcode with the same operation as this RC SEND/WRITE opcode (`None` for RC
    /// opcodes UC does not have: READ, atomics, ACKs, SEND_WITH_INVALIDATE).
    pub const fn to_uc(self) -> Option<Opcode> {
        match self.0 {
            0x00..=0x0b => Some(Opcode(self.0 + 0x20)),
            _ => None,
        }
    }

    /// The extended headers this opcode carries, per IBTA table 38. `None` for opcodes vhca
    /// does not implement (RD, XRC, CNP, FLUSH, ...).
    pub fn layout(self) -> Option<Layout> {
        LAYOUTS[self.0 as usize]
    }

    const fn compute_layout(self) -> Option<Layout> {
        use Opcode as O;
        #[allow(clippy::too_many_arguments)]
        const fn l(
            reth: bool,
            aeth: bool,
            atomic: bool,
            atomic_ack: bool,
            imm: bool,
            ieth: bool,
            deth: bool,
            payload: bool,
        ) -> Layout {
            Layout {
                feth: false,
                reth,
                aeth,
                atomic,
                atomic_ack,
                imm,
                ieth,
                deth,
                payload,
            }
        }
        Some(match self.base() {
            O::RC_SEND_FIRST | O::RC_SEND_MIDDLE | O::RC_SEND_LAST | O::RC_SEND_ONLY => {
                l(false, false, false, false, false, false, false, true)
            }
            O::RC_SEND_LAST_IMM | O::RC_SEND_ONLY_IMM => {
                l(false, false, false, false, true, false, false, true)
            }
            O::RC_WRITE_FIRST | O::RC_WRITE_ONLY => {
                l(true, false, false, false, false, false, false, true)
            }
            O::RC_WRITE_MIDDLE | O::RC_WRITE_LAST => {
                l(false, false, false, false, false, false, false, true)
            }
            O::RC_WRITE_LAST_IMM => l(false, false, false, false, true, false, false, true),
            O::RC_WRITE_ONLY_IMM => l(true, false, false, false, true, false, false, true),
            O::RC_READ_REQUEST => l(true, false, false, false, false, false, false, false),
            O::RC_READ_RESP_FIRST | O::RC_READ_RESP_LAST | O::RC_READ_RESP_ONLY => {
                l(false, true, false, false, false, false, false, true)
            }
            O::RC_READ_RESP_MIDDLE => l(false, false, false, false, false, false, false, true),
            O::RC_ACK => l(false, true, false, false, false, false, false, false),
            O::RC_ATOMIC_ACK => l(false, true, false, true, false, false, false, false),
            O::RC_CMP_SWAP | O::RC_FETCH_ADD => {
                l(false, false, true, false, false, false, false, false)
            }
            O::RC_SEND_LAST_INV | O::RC_SEND_ONLY_INV => {
                l(false, false, false, false, false, true, false, true)
            }
            O::RC_FLUSH => Layout {
                feth: true,
                ..l(true, false, false, false, false, false, false, false)
            },
            O::RC_ATOMIC_WRITE => l(true, false, false, false, false, false, false, true),
            O::UD_SEND_ONLY => l(false, false, false, false, false, false, true, true),
            O::UD_SEND_ONLY_IMM => l(false, false, false, false, true, false, true, true),
            _ => return None,
        })
    }

    /// Length in bytes of the headers after the BTH.
    pub fn ext_header_len(self) -> Option<usize> {
        match EXT_LENS[self.0 as usize] {
            u8::MAX => None,
            n => Some(n as usize),
        }
    }

    /// First packet of a request message (or the only one).
    pub fn is_first(self) -> bool {
        matches!(
            self.base(),
            Opcode::RC_SEND_FIRST
                | Opcode::RC_SEND_ONLY
                | Opcode::RC_SEND_ONLY_IMM
                | Opcode::RC_SEND_ONLY_INV
                | Opcode::RC_WRITE_FIRST
                | Opcode::RC_WRITE_ONLY
                | Opcode::RC_WRITE_ONLY_IMM
        )
    }

    /// Last packet of a request message (or the only one).
    pub fn is_last(self) -> bool {
        matches!(
            self.base(),
            Opcode::RC_SEND_LAST
                | Opcode::RC_SEND_LAST_IMM
                | Opcode::RC_SEND_LAST_INV
                | Opcode::RC_SEND_ONLY
                | Opcode::RC_SEND_ONLY_IMM
                | Opcode::RC_SEND_ONLY_INV
                | Opcode::RC_WRITE_LAST
                | Opcode::RC_WRITE_LAST_IMM
                | Opcode::RC_WRITE_ONLY
                | Opcode::RC_WRITE_ONLY_IMM
        )
    }

    pub fn is_send(self) -> bool {
        matches!(self.base().0, 0x00..=0x05 | 0x16 | 0x17)
    }

    pub fn is_write(self) -> bool {
        matches!(self.base().0, 0x06..=0x0b)
    }

    pub fn is_read_response(self) -> bool {
        matches!(self.0, 0x0d..=0x10)
    }

    pub fn is_atomic(self) -> bool {
        self == Opcode::RC_CMP_SWAP || self == Opcode::RC_FETCH_ADD
    }

    /// ATOMIC WRITE and FLUSH: single-packet requests that take a responder resource like a
    /// READ and are answered by a zero-length READ RESPONSE ONLY.
    pub fn is_flush_or_atomic_write(self) -> bool {
        self == Opcode::RC_FLUSH || self == Opcode::RC_ATOMIC_WRITE
    }

    /// Packets a responder sends (ACKs, READ responses, atomic ACKs) rather than a requester.
    pub fn is_response(self) -> bool {
        matches!(self.0, 0x0d..=0x12)
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "SEND_FIRST",
            0x01 => "SEND_MIDDLE",
            0x02 => "SEND_LAST",
            0x03 => "SEND_LAST_WITH_IMMEDIATE",
            0x04 => "SEND_ONLY",
            0x05 => "SEND_ONLY_WITH_IMMEDIATE",
            0x06 => "RDMA_WRITE_FIRST",
            0x07 => "RDMA_WRITE_MIDDLE",
            0x08 => "RDMA_WRITE_LAST",
            0x09 => "RDMA_WRITE_LAST_WITH_IMMEDIATE",
            0x0a => "RDMA_WRITE_ONLY",
            0x0b => "RDMA_WRITE_ONLY_WITH_IMMEDIATE",
            0x0c => "RDMA_READ_REQUEST",
            0x0d => "RDMA_READ_RESPONSE_FIRST",
            0x0e => "RDMA_READ_RESPONSE_MIDDLE",
            0x0f => "RDMA_READ_RESPONSE_LAST",
            0x10 => "RDMA_READ_RESPONSE_ONLY",
            0x11 => "ACKNOWLEDGE",
            0x12 => "ATOMIC_ACKNOWLEDGE",
            0x13 => "COMPARE_SWAP",
            0x14 => "FETCH_ADD",
            0x16 => "SEND_LAST_WITH_INVALIDATE",
            0x17 => "SEND_ONLY_WITH_INVALIDATE",
            0x1c => "FLUSH",
            0x1d => "ATOMIC_WRITE",
            0x20 => "UC_SEND_FIRST",
            0x21 => "UC_SEND_MIDDLE",
            0x22 => "UC_SEND_LAST",
            0x23 => "UC_SEND_LAST_WITH_IMMEDIATE",
            0x24 => "UC_SEND_ONLY",
            0x25 => "UC_SEND_ONLY_WITH_IMMEDIATE",
            0x26 => "UC_RDMA_WRITE_FIRST",
            0x27 => "UC_RDMA_WRITE_MIDDLE",
            0x28 => "UC_RDMA_WRITE_LAST",
            0x29 => "UC_RDMA_WRITE_LAST_WITH_IMMEDIATE",
            0x2a => "UC_RDMA_WRITE_ONLY",
            0x2b => "UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE",
            0x64 => "UD_SEND_ONLY",
            0x65 => "UD_SEND_ONLY_WITH_IMMEDIATE",
            _ => "UNKNOWN",
        }
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#04x})", self.name(), self.0)
    }
}

/// Layouts of all 256 opcodes, computed at compile time: the per-packet lookup is an index.
static LAYOUTS: [Option<Layout>; 256] = {
    let mut t = [None; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = Opcode(i as u8).compute_layout();
        i += 1;
    }
    t
};

/// Extended header length per opcode (`u8::MAX`: not implemented), for the per-packet byte
/// counters.
static EXT_LENS: [u8; 256] = {
    let mut t = [u8::MAX; 256];
    let mut i = 0;
    while i < 256 {
        if let Some(l) = LAYOUTS[i] {
            t[i] = l.ext_len() as u8;
        }
        i += 1;
    }
    t
};

/// Which extended transport headers follow the BTH, in wire order
/// (DETH, FETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, IETH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// FLUSH extended transport header (FLUSH only).
    pub feth: bool,
    pub reth: bool,
    pub aeth: bool,
    pub atomic: bool,
    pub atomic_ack: bool,
    pub imm: bool,
    pub ieth: bool,
    pub deth: bool,
    pub payload: bool,
}

impl Layout {
    pub const fn ext_len(&self) -> usize {
        (self.deth as usize) * Deth::LEN
            + (self.feth as usize) * Feth::LEN
            + (self.reth as usize) * Reth::LEN
            + (self.atomic as usize) * AtomicEth::LEN
            + (self.aeth as usize) * Aeth::LEN
            + (self.atomic_ack as usize) * AtomicAckEth::LEN
            + (self.imm as usize) * 4
            + (self.ieth as usize) * 4
    }
}

/// Base transport header (12 bytes on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bth {
    pub opcode: Opcode,
    /// Solicited event.
    pub se: bool,
    /// Migration request bit (APM); vhca always sends 0.
    pub mig: bool,
    /// Pad bytes after the payload to a multiple of 4 (0..=3).
    pub pad: u8,
    /// Transport header version; must be 0.
    pub tver: u8,
    pub pkey: u16,
    pub fecn: bool,
    pub becn: bool,
    pub dest_qp: Qpn,
    pub ack_req: bool,
    pub psn: Psn,
}

impl Bth {
    pub const LEN: usize = 12;
    pub const DEFAULT_PKEY: u16 = 0xffff;

    pub fn new(opcode: Opcode, dest_qp: Qpn, psn: Psn) -> Bth {
        Bth {
            opcode,
            se: false,
            mig: false,
            pad: 0,
            tver: 0,
            pkey: Self::DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qp,
            ack_req: false,
            psn,
        }
    }
}

/// RDMA extended transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reth {
    pub va: u64,
    pub rkey: MemKey,
    pub len: u32,
}

impl Reth {
    pub const LEN: usize = 16;
}

/// AETH syndrome: ACK, RNR NAK or NAK, per IBTA 9.7.5.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syndrome {
    /// ACK with a credit count (rxe always sends 0x1f, "invalid credits").
    Ack {
        credits: u8,
    },
    /// Receiver not ready; the 5-bit RNR timer code says how long to wait.
    RnrNak {
        timer: u8,
    },
    Nak(NakCode),
    /// A reserved encoding: kept so that decoding never fails.
    Reserved(u8),
}

/// NAK codes (syndrome 011x_xxxx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NakCode {
    PsnSequenceError,
    InvalidRequest,
    RemoteAccessError,
    RemoteOperationalError,
    InvalidRdRequest,
    Other(u8),
}

impl Syndrome {
    pub const ACK_UNLIMITED: Syndrome = Syndrome::Ack { credits: 0x1f };

    pub fn from_byte(b: u8) -> Syndrome {
        match b >> 5 {
            0b000 => Syndrome::Ack { credits: b & 0x1f },
            0b001 => Syndrome::RnrNak { timer: b & 0x1f },
            0b011 => Syndrome::Nak(match b & 0x1f {
                0 => NakCode::PsnSequenceError,
                1 => NakCode::InvalidRequest,
                2 => NakCode::RemoteAccessError,
                3 => NakCode::RemoteOperationalError,
                4 => NakCode::InvalidRdRequest,
                c => NakCode::Other(c),
            }),
            _ => Syndrome::Reserved(b),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Syndrome::Ack { credits } => credits & 0x1f,
            Syndrome::RnrNak { timer } => 0x20 | (timer & 0x1f),
            Syndrome::Nak(c) => {
                0x60 | match c {
                    NakCode::PsnSequenceError => 0,
                    NakCode::InvalidRequest => 1,
                    NakCode::RemoteAccessError => 2,
                    NakCode::RemoteOperationalError => 3,
                    NakCode::InvalidRdRequest => 4,
                    NakCode::Other(c) => c & 0x1f,
                }
            }
            Syndrome::Reserved(b) => b,
        }
    }
}

/// FLUSH extended transport header (IBTA 1.5 §9.3.x, rxe's `rxe_feth`): what the FLUSH asks
/// for. Raw fields as received; the responder validates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feth {
    /// Placement type, 4 bits: [`Feth::GLOBAL`] and/or [`Feth::PERSISTENT`].
    pub placement: u8,
    /// Selectivity level, 2 bits: [`Feth::RANGE`] (the RETH's range) or [`Feth::MR`] (the
    /// whole region the R_Key names).
    pub selectivity: u8,
}

impl Feth {
    pub const LEN: usize = 4;
    /// Placement type bit: make prior writes globally visible (`IB_FLUSH_GLOBAL`).
    pub const GLOBAL: u8 = 1;
    /// Placement type bit: make prior writes persistent (`IB_FLUSH_PERSISTENT`).
    pub const PERSISTENT: u8 = 2;
    /// Selectivity level: the range in the RETH (`IB_FLUSH_RANGE`).
    pub const RANGE: u8 = 0;
    /// Selectivity level: the whole memory region (`IB_FLUSH_MR`).
    pub const MR: u8 = 1;
}

/// ACK extended transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aeth {
    pub syndrome: Syndrome,
    pub msn: Msn,
}

impl Aeth {
    pub const LEN: usize = 4;
}

/// Atomic extended transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicEth {
    pub va: u64,
    pub rkey: MemKey,
    /// Swap value (CMP_SWAP) or addend (FETCH_ADD).
    pub swap_add: u64,
    /// Compare value (CMP_SWAP only).
    pub compare: u64,
}

impl AtomicEth {
    pub const LEN: usize = 28;
}

/// Atomic acknowledge extended transport header: the original remote value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicAckEth {
    pub orig: u64,
}

impl AtomicAckEth {
    pub const LEN: usize = 8;
}

/// Datagram extended transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deth {
    pub qkey: u32,
    pub src_qp: Qpn,
}

impl Deth {
    pub const LEN: usize = 8;
}

/// Extended transport headers present in one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtHeaders {
    pub feth: Option<Feth>,
    pub reth: Option<Reth>,
    pub aeth: Option<Aeth>,
    pub atomic: Option<AtomicEth>,
    pub atomic_ack: Option<AtomicAckEth>,
    /// Immediate data exactly as verbs carries it (`ibv_send_wr.imm_data`, a `__be32`): the
    /// u32 holds the four bytes in memory order on the (little-endian) host, and they go on
    /// the wire in that order (`to_le_bytes`), so rxe and vhca peers see the same value.
    pub imm: Option<u32>,
    /// The R_Key to invalidate (SEND_WITH_INV).
    pub ieth: Option<MemKey>,
    pub deth: Option<Deth>,
}

/// Guest-physical pieces of one packet's payload: almost always one or two, so kept inline.
pub type Segments = smallvec::SmallVec<[Segment; 2]>;

/// One contiguous piece of a payload in the sender's guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub gpa: u64,
    pub len: u32,
}

/// Packet payload: owned bytes, or a gather list over the sender's guest memory.
///
/// A gather list is what a NIC's DMA engine holds: the bytes are read when the packet is put on
/// the wire (serialized) or delivered, not when it is built. This keeps the in-process data path
/// at one copy (sender memory → receiver memory) and the UDP path at one copy into the socket.
#[derive(Clone)]
pub enum Payload {
    Bytes(Vec<u8>),
    Gather {
        mem: SharedMemory,
        segs: Segments,
        len: u32,
    },
}

impl Payload {
    pub fn empty() -> Payload {
        Payload::Bytes(Vec::new())
    }

    pub fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Gather { len, .. } => *len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as owned bytes (reads guest memory for a gather list).
    ///
    /// A gather segment that has become unreadable (memory gone, hostile address) yields zeros
    /// for its bytes: the packet is already committed and a NIC would put whatever its DMA read
    /// returned on the wire.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Gather { mem, segs, len } => {
                let mut out = vec![0u8; *len as usize];
                let mut off = 0usize;
                for s in segs {
                    // Segments beyond `len` (a hand-built or corrupted payload) are ignored
                    // rather than indexed past the buffer.
                    let end = (off + s.len as usize).min(out.len());
                    if let Some(dst) = out.get_mut(off..end) {
                        let _ = mem.read(s.gpa, dst);
                    }
                    off = end;
                }
                out
            }
        }
    }

    /// Replaces a gather list by the bytes it refers to now.
    pub fn materialize(&mut self) {
        if let Payload::Gather { .. } = self {
            *self = Payload::Bytes(self.to_vec());
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Payload::Gather { segs, len, .. } => write!(f, "Gather({len} in {})", segs.len()),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.to_vec() == other.to_vec()
    }
}

/// A transport packet with the network addressing RoCEv2 would carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub src_gid: Gid,
    pub dst_gid: Gid,
    /// UDP source port (RoCEv2 entropy); the in-process fabric ignores it.
    pub src_port: u16,
    pub bth: Bth,
    pub ext: ExtHeaders,
    pub payload: Payload,
}

impl Packet {
    /// Checks that the extended headers present match the opcode's layout and that the payload
    /// is allowed, so the device can rely on them. Returns `false` for malformed packets.
    pub fn is_well_formed(&self) -> bool {
        let Some(l) = self.bth.opcode.layout() else {
            return false;
        };
        let e = &self.ext;
        l.reth == e.reth.is_some()
            && l.feth == e.feth.is_some()
            && l.aeth == e.aeth.is_some()
            && l.atomic == e.atomic.is_some()
            && l.atomic_ack == e.atomic_ack.is_some()
            && l.imm == e.imm.is_some()
            && l.ieth == e.ieth.is_some()
            && l.deth == e.deth.is_some()
            && (l.payload || self.payload.is_empty())
            && self.bth.tver == 0
    }

    /// Size on a RoCEv2 wire without the IP/UDP/Ethernet headers: BTH, extension headers,
    /// payload, pad, ICRC.
    /// (Unimplemented opcodes count as having no extended headers: such packets are dropped
    /// as malformed, and this only feeds byte counters.)
    pub fn transport_len(&self) -> usize {
        let ext = self.bth.opcode.ext_header_len().unwrap_or(0);
        let pl = self.payload.len();
        Bth::LEN + ext + pl + ((4 - pl % 4) % 4) + 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syndrome_round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(Syndrome::from_byte(b).to_byte(), b, "byte {b:#x}");
        }
        assert_eq!(Syndrome::from_byte(0x1f), Syndrome::ACK_UNLIMITED);
        assert_eq!(Syndrome::from_byte(0x2c), Syndrome::RnrNak { timer: 12 });
        assert_eq!(
            Syndrome::from_byte(0x60),
            Syndrome::Nak(NakCode::PsnSequenceError)
        );
    }

    #[test]
    fn a_gather_list_longer_than_its_length_does_not_panic() {
        let mem = crate::memory::VecMemory::shared(64);
        mem.write(0, b"abcdefgh").unwrap();
        let p = Payload::Gather {
            mem,
            segs: [Segment { gpa: 0, len: 4 }, Segment { gpa: 4, len: 100 }]
                .into_iter()
                .collect(),
            len: 6,
        };
        assert_eq!(p.to_vec(), b"abcdef");
    }

    #[test]
    fn layouts_have_ibta_sizes() {
        assert_eq!(Opcode::RC_WRITE_ONLY_IMM.ext_header_len(), Some(20));
        assert_eq!(Opcode::RC_CMP_SWAP.ext_header_len(), Some(28));
        assert_eq!(Opcode::RC_ATOMIC_ACK.ext_header_len(), Some(12));
        assert_eq!(Opcode::UD_SEND_ONLY_IMM.ext_header_len(), Some(12));
        assert_eq!(Opcode::RC_READ_RESP_MIDDLE.ext_header_len(), Some(0));
        // UC: the RC layouts under the UC opcodes; no READ, atomics or ACKs.
        assert_eq!(Opcode::UC_WRITE_ONLY_IMM.ext_header_len(), Some(20));
        assert_eq!(Opcode::UC_SEND_LAST_IMM.ext_header_len(), Some(4));
        assert_eq!(Opcode::UC_SEND_MIDDLE.ext_header_len(), Some(0));
        // IBTA 1.5: FLUSH is FETH + RETH, ATOMIC WRITE a RETH (and 8 bytes of payload).
        assert_eq!(Opcode::RC_FLUSH.ext_header_len(), Some(20));
        assert_eq!(Opcode::RC_ATOMIC_WRITE.ext_header_len(), Some(16));
        assert!(!Opcode::RC_FLUSH.layout().unwrap().payload);
        assert!(Opcode::RC_ATOMIC_WRITE.layout().unwrap().payload);
        assert_eq!(Opcode::RC_FLUSH.to_uc(), None);
        assert_eq!(Opcode(0x2c).layout(), None);
        assert_eq!(Opcode(0x31).layout(), None);
        assert_eq!(Opcode(0x40).layout(), None);
        assert!(Opcode::UC_SEND_FIRST.is_first() && !Opcode::UC_SEND_FIRST.is_last());
        assert!(Opcode::UC_WRITE_ONLY.is_write() && Opcode::UC_SEND_ONLY.is_send());
        assert_eq!(Opcode::RC_WRITE_LAST.to_uc(), Some(Opcode::UC_WRITE_LAST));
        assert_eq!(Opcode::RC_READ_REQUEST.to_uc(), None);
    }
}
