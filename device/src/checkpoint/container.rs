//! The v2 container: a header, a table of typed sections, then the sections.
//!
//! ```text
//! header (16 bytes, little-endian)
//!   0  magic "VHCA"            4  version (u16) = 2     6  codec (u8)   7  flags (u8, bit 0: delta)
//!   8  section count (u32)     12 CRC-32 of the section table (u32)
//! section table: count × 16 bytes
//!   0  kind (u16)   2  reserved (u16) = 0   4  items (u32)   8  length (u32)   12 CRC-32 (u32)
//! sections: their payloads, in table order, back to back; the blob ends with the last one
//! ```
//!
//! Each section is one value encoded by the blob's codec, with its own length and checksum, so
//! a tool reads the identity (or counts objects from `items`) without decoding 16,384 QPs, and a
//! destination can check and decode each section as soon as its bytes have arrived. QPs come
//! in sections of at most [`QPS_PER_SECTION`].

use super::codec::{self, Codec, WireRef, WireType};
use super::v2::*;
use super::windows::{FastRegStateV2, MwStateV2};
use super::{CheckpointError, MAGIC};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const VERSION: u16 = 2;
pub const HEADER_LEN: usize = 16;
pub const ENTRY_LEN: usize = 16;
/// Flag bit 0: the blob is a delta against a base (it carries a `Base` section).
pub const FLAG_DELTA: u8 = 1;
/// The most sections a blob may have: 64 QP sections cover a VF's 65,536 QPs; the rest is
/// room, and a hostile count beyond it is refused before the table is read.
pub const MAX_SECTIONS: u32 = 4096;
pub const QPS_PER_SECTION: usize = 1024;

/// What a section holds. The numbers are the format; a new kind is a new version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[repr(u16)]
pub enum SectionKind {
    /// `IdentityStateV2`. Exactly one, the first section.
    Identity = 1,
    /// `BaseStateV2`: the base a delta applies to. Exactly one in a delta, none otherwise.
    Base = 2,
    /// `[u32]`: PD numbers.
    Pds = 3,
    /// `[(u32, MrStateV2)]`.
    Mrs = 4,
    /// `[(u32, CqStateV2)]`.
    Cqs = 5,
    /// `[(u32, SrqStateV2)]`.
    Srqs = 6,
    /// `[(u32, AhStateV2)]`.
    Ahs = 7,
    /// `[QpStateV2]`, at most [`QPS_PER_SECTION`] per section; may repeat.
    Qps = 8,
    /// `EventsStateV2`. Exactly one.
    Events = 9,
    /// `CountersStateV2`. Exactly one.
    Counters = 10,
    /// `RemovedStateV2`: objects of the base a delta deletes. At most one, in a delta only.
    Removed = 11,
    /// `[(u32, MwStateV2)]`: memory windows. In a delta, the complete list.
    Mws = 12,
    /// `[(u32, FastRegStateV2)]`: which MRs are fast-register MRs. In a delta, the complete
    /// list.
    FastRegMrs = 13,
}

impl SectionKind {
    pub const ALL: [SectionKind; 13] = [
        SectionKind::Identity,
        SectionKind::Base,
        SectionKind::Pds,
        SectionKind::Mrs,
        SectionKind::Cqs,
        SectionKind::Srqs,
        SectionKind::Ahs,
        SectionKind::Qps,
        SectionKind::Events,
        SectionKind::Counters,
        SectionKind::Removed,
        SectionKind::Mws,
        SectionKind::FastRegMrs,
    ];

    fn from_u16(k: u16) -> Option<SectionKind> {
        SectionKind::ALL.iter().copied().find(|s| *s as u16 == k)
    }

    /// The name `vhca state stats` prints.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Identity => "identity",
            SectionKind::Base => "base",
            SectionKind::Pds => "pds",
            SectionKind::Mrs => "mrs",
            SectionKind::Cqs => "cqs",
            SectionKind::Srqs => "srqs",
            SectionKind::Ahs => "ahs",
            SectionKind::Qps => "qps",
            SectionKind::Events => "events",
            SectionKind::Counters => "counters",
            SectionKind::Removed => "removed",
            SectionKind::Mws => "mws",
            SectionKind::FastRegMrs => "fast_reg_mrs",
        }
    }
}

/// A checkpoint relative to a base: the identity, events and counters as they are now, the
/// objects that are new or changed since the base (in `changed`'s tables), and those deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeltaV2 {
    pub base: BaseStateV2,
    pub changed: VfStateV2,
    pub removed: RemovedStateV2,
}

/// What a v2 blob holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum CheckpointV2 {
    Full(VfStateV2),
    Delta(DeltaV2),
}

/// One entry of the section table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SectionInfo {
    pub kind: SectionKind,
    /// Objects in the section (1 for a single value).
    pub items: u32,
    /// Where its payload starts in the blob.
    pub offset: usize,
    pub len: u32,
    pub crc32: u32,
}

/// A v2 blob's header and section table, checked: magic, version, codec, flags, the table's
/// checksum, every kind known, every length within the blob, the blob's end exactly after
/// the last section. The sections themselves are not read.
pub struct Table {
    pub codec: &'static dyn Codec,
    pub delta: bool,
    pub sections: Vec<SectionInfo>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn bad<T>(what: impl Into<String>) -> Result<T, CheckpointError> {
    Err(CheckpointError::Section(what.into()))
}

impl Table {
    pub fn parse(blob: &[u8]) -> Result<Table, CheckpointError> {
        let (t, end) = Table::parse_head(blob)?;
        match blob.len().cmp(&end) {
            std::cmp::Ordering::Less => Err(CheckpointError::Truncated("sections")),
            std::cmp::Ordering::Greater => {
                bad(format!("{} bytes after the last section", blob.len() - end))
            }
            std::cmp::Ordering::Equal => Ok(t),
        }
    }

    /// The header and table at the front of `blob` (which may hold only them), and where the
    /// last section ends.
    fn parse_head(blob: &[u8]) -> Result<(Table, usize), CheckpointError> {
        let h = blob
            .get(..HEADER_LEN)
            .ok_or(CheckpointError::Truncated("header"))?;
        if h[..4] != MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        if le16(h, 4) != VERSION {
            return Err(CheckpointError::UnknownVersion(le16(h, 4)));
        }
        let codec = codec::by_id(h[6]).ok_or(CheckpointError::UnknownCodec(h[6]))?;
        if h[7] & !FLAG_DELTA != 0 {
            return bad(format!("unknown flags {:#04x}", h[7]));
        }
        let count = le32(h, 8);
        if count > MAX_SECTIONS {
            return bad(format!("{count} sections (at most {MAX_SECTIONS})"));
        }
        let table_len = count as usize * ENTRY_LEN;
        let table = blob
            .get(HEADER_LEN..HEADER_LEN + table_len)
            .ok_or(CheckpointError::Truncated("section table"))?;
        if crc32fast::hash(table) != le32(h, 12) {
            return Err(CheckpointError::Checksum);
        }
        // Bounded by MAX_SECTIONS.
        let mut sections = Vec::with_capacity(count as usize);
        let mut offset = HEADER_LEN + table_len;
        for e in table.chunks_exact(ENTRY_LEN) {
            let Some(kind) = SectionKind::from_u16(le16(e, 0)) else {
                return bad(format!("unknown section kind {}", le16(e, 0)));
            };
            if le16(e, 2) != 0 {
                return bad(format!("{} section: reserved field set", kind.name()));
            }
            let len = le32(e, 8);
            if len as usize > codec::MAX_SECTION_LEN {
                return bad(format!("{} section of {len} bytes", kind.name()));
            }
            sections.push(SectionInfo {
                kind,
                items: le32(e, 4),
                offset,
                len,
                crc32: le32(e, 12),
            });
            offset = offset.saturating_add(len as usize);
        }
        let t = Table {
            codec,
            delta: h[7] & FLAG_DELTA != 0,
            sections,
        };
        Ok((t, offset))
    }

    /// The payload of section `s`, its checksum checked.
    pub fn payload<'b>(
        &self,
        blob: &'b [u8],
        s: &SectionInfo,
    ) -> Result<&'b [u8], CheckpointError> {
        let p = blob
            .get(s.offset..s.offset + s.len as usize)
            .ok_or(CheckpointError::Truncated("section"))?;
        if crc32fast::hash(p) != s.crc32 {
            return Err(CheckpointError::Checksum);
        }
        Ok(p)
    }

    /// The payload length of every section, for a header's summary.
    pub fn payload_len(&self) -> u64 {
        self.sections.iter().map(|s| s.len as u64).sum()
    }
}

/// Writes sections one after another, then the header and table in front of them.
struct Writer {
    codec: &'static dyn Codec,
    entries: Vec<(SectionKind, u32, Vec<u8>)>,
}

impl Writer {
    fn put(
        &mut self,
        kind: SectionKind,
        items: usize,
        v: WireRef<'_>,
    ) -> Result<(), CheckpointError> {
        let bytes = codec::encode_wire(self.codec, v)?;
        if bytes.len() > codec::MAX_SECTION_LEN {
            return Err(CheckpointError::Encode(format!(
                "{} section too large",
                kind.name()
            )));
        }
        // `items` counts objects of one VF, whose limits are u32.
        self.entries
            .push((kind, u32::try_from(items).unwrap_or(u32::MAX), bytes));
        Ok(())
    }

    fn objects(&mut self, s: &VfStateV2) -> Result<(), CheckpointError> {
        if !s.pds.is_empty() {
            self.put(SectionKind::Pds, s.pds.len(), WireRef::Numbers(&s.pds))?;
        }
        if !s.mrs.is_empty() {
            self.put(SectionKind::Mrs, s.mrs.len(), WireRef::Mrs(&s.mrs))?;
        }
        if !s.cqs.is_empty() {
            self.put(SectionKind::Cqs, s.cqs.len(), WireRef::Cqs(&s.cqs))?;
        }
        if !s.srqs.is_empty() {
            self.put(SectionKind::Srqs, s.srqs.len(), WireRef::Srqs(&s.srqs))?;
        }
        if !s.ahs.is_empty() {
            self.put(SectionKind::Ahs, s.ahs.len(), WireRef::Ahs(&s.ahs))?;
        }
        for chunk in s.qps.chunks(QPS_PER_SECTION) {
            self.put(SectionKind::Qps, chunk.len(), WireRef::Qps(chunk))?;
        }
        if !s.mws.is_empty() {
            self.put(SectionKind::Mws, s.mws.len(), WireRef::Mws(&s.mws))?;
        }
        if !s.fast_reg_mrs.is_empty() {
            let f = &s.fast_reg_mrs;
            self.put(SectionKind::FastRegMrs, f.len(), WireRef::FastRegMrs(f))?;
        }
        self.put(SectionKind::Events, 1, s.events.wire_ref())?;
        self.put(SectionKind::Counters, 1, s.counters.wire_ref())
    }

    fn finish(self, delta: bool) -> Vec<u8> {
        let parts: Vec<(SectionKind, u32, &[u8])> = self
            .entries
            .iter()
            .map(|(k, n, b)| (*k, *n, b.as_slice()))
            .collect();
        assemble(self.codec, delta, &parts)
    }
}

/// A v2 blob of already-encoded sections `(kind, items, payload)`, in this order, with the
/// header, table and checksums they need. What every save ends with; tests use it to build
/// blobs a save never would (hostile ones) that still get past the checksums.
pub fn assemble(codec: &dyn Codec, delta: bool, sections: &[(SectionKind, u32, &[u8])]) -> Vec<u8> {
    let body: usize = sections.iter().map(|e| e.2.len()).sum();
    let mut table = Vec::with_capacity(sections.len() * ENTRY_LEN);
    for (kind, items, bytes) in sections {
        table.extend_from_slice(&(*kind as u16).to_le_bytes());
        table.extend_from_slice(&0u16.to_le_bytes());
        table.extend_from_slice(&items.to_le_bytes());
        table.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        table.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER_LEN + table.len() + body);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(codec.id());
    out.push(if delta { FLAG_DELTA } else { 0 });
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
    out.extend_from_slice(&table);
    for (_, _, bytes) in sections {
        out.extend_from_slice(bytes);
    }
    out
}

/// A section taken out of a blob: `(kind, items, payload)`.
pub type OwnedSection = (SectionKind, u32, Vec<u8>);

/// Every section of a v2 blob as `(kind, items, payload)`, checksums checked: with
/// [`assemble`], a blob taken apart and put back together.
pub fn sections(blob: &[u8]) -> Result<(Table, Vec<OwnedSection>), CheckpointError> {
    let t = Table::parse(blob)?;
    let mut out = Vec::with_capacity(t.sections.len());
    for s in &t.sections {
        out.push((s.kind, s.items, t.payload(blob, s)?.to_vec()));
    }
    Ok((t, out))
}

/// Encodes a full v2 checkpoint.
pub fn encode_full(s: &VfStateV2, codec: &'static dyn Codec) -> Result<Vec<u8>, CheckpointError> {
    let mut w = Writer {
        codec,
        entries: Vec::new(),
    };
    w.put(SectionKind::Identity, 1, s.identity.wire_ref())?;
    w.objects(s)?;
    Ok(w.finish(false))
}

/// Encodes a v2 delta checkpoint.
pub fn encode_delta(d: &DeltaV2, codec: &'static dyn Codec) -> Result<Vec<u8>, CheckpointError> {
    let mut w = Writer {
        codec,
        entries: Vec::new(),
    };
    w.put(SectionKind::Identity, 1, d.changed.identity.wire_ref())?;
    w.put(SectionKind::Base, 1, d.base.wire_ref())?;
    w.objects(&d.changed)?;
    if !d.removed.is_empty() {
        w.put(
            SectionKind::Removed,
            d.removed.count(),
            d.removed.wire_ref(),
        )?;
    }
    Ok(w.finish(true))
}

/// Encodes a v2 checkpoint, full or delta.
pub fn encode(c: &CheckpointV2, codec: &'static dyn Codec) -> Result<Vec<u8>, CheckpointError> {
    match c {
        CheckpointV2::Full(s) => encode_full(s, codec),
        CheckpointV2::Delta(d) => encode_delta(d, codec),
    }
}

/// Reads only the identity section (the first), whatever else the blob holds.
pub fn read_identity(blob: &[u8]) -> Result<IdentityStateV2, CheckpointError> {
    let t = Table::parse(blob)?;
    match t.sections.first() {
        Some(s) if s.kind == SectionKind::Identity => {
            codec::decode_value(t.codec, t.payload(blob, s)?)
        }
        _ => bad("the first section is not the identity"),
    }
}

fn one<T>(_: &T) -> usize {
    1
}

/// Collects decoded sections into a checkpoint, enforcing which sections may appear how often.
#[derive(Default)]
struct Assembler {
    identity: Option<IdentityStateV2>,
    base: Option<BaseStateV2>,
    removed: Option<RemovedStateV2>,
    events: Option<EventsStateV2>,
    counters: Option<CountersStateV2>,
    seen: [bool; 14],
    taken: usize,
    pds: Vec<u32>,
    mrs: Vec<(u32, MrStateV2)>,
    cqs: Vec<(u32, CqStateV2)>,
    srqs: Vec<(u32, SrqStateV2)>,
    ahs: Vec<(u32, AhStateV2)>,
    qps: Vec<QpStateV2>,
    mws: Vec<(u32, MwStateV2)>,
    fast_reg_mrs: Vec<(u32, FastRegStateV2)>,
}

impl Assembler {
    /// Checks and decodes section `s` (its payload `p`, checksum already checked).
    fn take(
        &mut self,
        codec: &dyn Codec,
        s: &SectionInfo,
        p: &[u8],
    ) -> Result<(), CheckpointError> {
        if (self.taken == 0) != (s.kind == SectionKind::Identity) {
            return bad("the identity must be the first section, and only it");
        }
        self.taken += 1;
        let k = s.kind as usize;
        if self.seen[k] && s.kind != SectionKind::Qps {
            return bad(format!("two {} sections", s.kind.name()));
        }
        self.seen[k] = true;
        match s.kind {
            SectionKind::Identity => self.identity = Some(section(codec, s, p, one)?),
            SectionKind::Base => self.base = Some(section(codec, s, p, one)?),
            SectionKind::Removed => {
                self.removed = Some(section(codec, s, p, RemovedStateV2::count)?);
            }
            SectionKind::Pds => self.pds = section(codec, s, p, Vec::len)?,
            SectionKind::Mrs => self.mrs = section(codec, s, p, Vec::len)?,
            SectionKind::Cqs => self.cqs = section(codec, s, p, Vec::len)?,
            SectionKind::Srqs => self.srqs = section(codec, s, p, Vec::len)?,
            SectionKind::Ahs => self.ahs = section(codec, s, p, Vec::len)?,
            SectionKind::Qps => {
                let chunk: Vec<QpStateV2> = section(codec, s, p, Vec::len)?;
                if chunk.len() > QPS_PER_SECTION {
                    return bad(format!("a QP section of {} QPs", chunk.len()));
                }
                self.qps.extend(chunk);
            }
            SectionKind::Events => self.events = Some(section(codec, s, p, one)?),
            SectionKind::Counters => self.counters = Some(section(codec, s, p, one)?),
            SectionKind::Mws => self.mws = section(codec, s, p, Vec::len)?,
            SectionKind::FastRegMrs => self.fast_reg_mrs = section(codec, s, p, Vec::len)?,
        }
        Ok(())
    }

    fn finish(self, delta: bool) -> Result<CheckpointV2, CheckpointError> {
        let (Some(identity), Some(events), Some(counters)) =
            (self.identity, self.events, self.counters)
        else {
            return bad("a checkpoint needs its identity, events and counters sections");
        };
        let state = VfStateV2 {
            identity,
            pds: self.pds,
            mrs: self.mrs,
            cqs: self.cqs,
            srqs: self.srqs,
            ahs: self.ahs,
            qps: self.qps,
            events,
            counters,
            mws: self.mws,
            fast_reg_mrs: self.fast_reg_mrs,
        };
        match (delta, self.base) {
            (false, None) if self.removed.is_none() => Ok(CheckpointV2::Full(state)),
            (true, Some(base)) => Ok(CheckpointV2::Delta(DeltaV2 {
                base,
                changed: state,
                removed: self.removed.unwrap_or_default(),
            })),
            _ => bad("base and removed sections belong to deltas, and every delta has a base"),
        }
    }
}

/// Decodes one section into `T`, checking that it holds `items` objects as its entry says.
fn section<T: codec::WireType>(
    codec: &dyn Codec,
    s: &SectionInfo,
    p: &[u8],
    count: impl Fn(&T) -> usize,
) -> Result<T, CheckpointError> {
    let v: T = codec::decode_value(codec, p)?;
    if count(&v) as u64 != s.items as u64 {
        return bad(format!(
            "{} section says {} items and holds {}",
            s.kind.name(),
            s.items,
            count(&v)
        ));
    }
    Ok(v)
}

/// Decodes a whole v2 blob: every section checked and decoded, the rules on which sections
/// appear how often enforced. The contents are not yet judged (`validate` does that).
pub fn decode(blob: &[u8]) -> Result<(Table, CheckpointV2), CheckpointError> {
    let t = Table::parse(blob)?;
    let mut a = Assembler::default();
    for s in &t.sections {
        a.take(t.codec, s, t.payload(blob, s)?)?;
    }
    let c = a.finish(t.delta)?;
    Ok((t, c))
}

/// A v2 blob decoded while it arrives: bytes are pushed as they come; once the header and
/// table are in, each section is checked and decoded as soon as its last byte is, so decoding
/// overlaps the transfer instead of following it. Each section is decoded once; the result is
/// what [`decode`] gives for the whole blob, and so are the errors.
#[derive(Default)]
pub struct Incremental {
    buf: Vec<u8>,
    /// The table, and where the last section ends, once they have arrived.
    head: Option<(Table, usize)>,
    done: usize,
    parts: Assembler,
}

impl Incremental {
    pub fn new() -> Incremental {
        Incremental::default()
    }

    /// Takes more bytes; returns how many sections are now checked and decoded. After an
    /// error the blob is refused; pushing more does not change that.
    pub fn push(&mut self, bytes: &[u8]) -> Result<usize, CheckpointError> {
        // Grows with what actually arrived, never with what the header claims.
        self.buf.extend_from_slice(bytes);
        if self.head.is_none() {
            if self.buf.len() < HEADER_LEN {
                return Ok(0);
            }
            let count = le32(&self.buf, 8);
            if count > MAX_SECTIONS {
                return bad(format!("{count} sections (at most {MAX_SECTIONS})"));
            }
            if self.buf.len() < HEADER_LEN + count as usize * ENTRY_LEN {
                return Ok(0);
            }
            self.head = Some(Table::parse_head(&self.buf)?);
        }
        let Some((t, end)) = &self.head else {
            return Ok(0);
        };
        if self.buf.len() > *end {
            return bad(format!(
                "{} bytes after the last section",
                self.buf.len() - end
            ));
        }
        while let Some(s) = t.sections.get(self.done) {
            if self.buf.len() < s.offset + s.len as usize {
                break;
            }
            self.parts.take(t.codec, s, t.payload(&self.buf, s)?)?;
            self.done += 1;
        }
        Ok(self.done)
    }

    /// Every byte has arrived: the checkpoint.
    pub fn finish(self) -> Result<(Table, CheckpointV2), CheckpointError> {
        let Some((t, end)) = self.head else {
            return Err(CheckpointError::Truncated(if self.buf.len() < HEADER_LEN {
                "header"
            } else {
                "section table"
            }));
        };
        if self.buf.len() < end {
            return Err(CheckpointError::Truncated("sections"));
        }
        let c = self.parts.finish(t.delta)?;
        Ok((t, c))
    }
}
