//! Checkpoints: a VF's whole state as a versioned, self-describing blob.
//!
//! Two formats (docs/checkpoint-format.md): **v2**, what this build writes, a sectioned
//! container (`container.rs`) of the v2 wire structs (`v2.rs`), full or a delta against a base
//! (`delta.rs`); and **v1**, read only, a 16-byte header and one payload of the v1 wire
//! structs (`v1.rs`), upgraded to v2 as it is read (`upgrade.rs`). Either is encoded by one of
//! the codecs in `codec/`.
//!
//! A blob is untrusted input: it may be truncated, corrupted or hostile. Loading checks the
//! header, the checksums, then every object and every cross-reference before a single one is
//! put into a VF (`load.rs`), so a bad blob is an error value, never a panic or a half-built
//! VF.

pub mod codec;
pub mod container;
pub mod delta;
mod load;
mod upgrade;
pub mod v1;
pub mod v2;
pub mod windows;

pub use codec::Codec;
pub use container::{CheckpointV2, DeltaV2, SectionInfo, SectionKind};
pub use delta::{apply, delta, digest, Base};
pub use load::LoadCtx;
pub use v1::*;
pub use v2::*;
pub use v2::{BaseStateV2, RemovedStateV2};
pub use windows::{FastRegStateV2, MwBindingStateV2, MwStateV2};

use crate::memory::{SharedMemory, VecMemory};
use crate::qp::{ud::GSI_QPN, Qp};
use crate::resources::Pd;
use crate::table;
use crate::types::{Nanos, PdHandle, Qpn};
use crate::verbs::{QpType, VfLimits};
use crate::vf::{Vf, FIRST_QPN};
use thiserror::Error;

pub const MAGIC: [u8; 4] = *b"VHCA";
/// The v1 header's length (v2's is the same 16 bytes, followed by its section table).
pub const HEADER_LEN: usize = 16;
/// The format version this build writes. Every older version it can read is listed in
/// [`SUPPORTED_VERSIONS`] and has a golden fixture in tests.
pub const CURRENT_VERSION: u16 = container::VERSION;
pub const SUPPORTED_VERSIONS: [u16; 2] = [1, 2];
/// Upper bound on a v1 payload, far above any real VF, so a hostile length cannot make a
/// reader allocate gigabytes.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// What a blob's header (and, in v2, its section table) says, before any object is decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub version: u16,
    pub codec: &'static dyn Codec,
    /// A delta against a base (v2 only).
    pub delta: bool,
    /// Bytes after the header (v1: the payload; v2: the table and the sections).
    pub payload_len: u64,
    /// v2's section table; empty for v1.
    pub sections: Vec<SectionInfo>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint truncated: {0}")]
    Truncated(&'static str),
    #[error("not a vhca checkpoint (bad magic)")]
    BadMagic,
    #[error("checkpoint format version {0} is not supported by this build (supported: 1, 2)")]
    UnknownVersion(u16),
    #[error("unknown checkpoint codec {0}")]
    UnknownCodec(u8),
    #[error("checkpoint payload is corrupted (CRC mismatch)")]
    Checksum,
    #[error("checkpoint payload does not decode: {0}")]
    Decode(String),
    #[error("checkpoint does not encode: {0}")]
    Encode(String),
    #[error("checkpoint sections: {0}")]
    Section(String),
    #[error("checkpoint is inconsistent: {0}")]
    Invalid(String),
    #[error("a delta checkpoint needs its base (this one is a delta)")]
    DeltaNeedsBase,
    #[error("not a delta checkpoint")]
    NotADelta,
    #[error("the delta was made against another base (its base digest does not match)")]
    WrongBase,
}

fn invalid<T>(what: impl Into<String>) -> Result<T, CheckpointError> {
    Err(CheckpointError::Invalid(what.into()))
}

fn rebase(t: Option<Nanos>, now: Nanos, forward: bool) -> Option<Nanos> {
    t.map(|t| {
        if forward {
            now.saturating_add(t.0)
        } else {
            Nanos(t.0.saturating_sub(now.0))
        }
    })
}

/// The state of `vf` at `now`, as the v2 wire structs (QP timers as time remaining).
pub fn state_of(vf: &Vf, now: Nanos) -> VfStateV2 {
    let res = &vf.res;
    VfStateV2 {
        identity: IdentityStateV2::of(&vf.identity, vf.key_byte),
        pds: res.pds.iter().map(|(i, _)| i).collect(),
        mrs: res.mrs.iter().map(|(i, m)| (i, m.into())).collect(),
        cqs: res.cqs.iter().map(|(i, c)| (i, c.into())).collect(),
        srqs: res.srqs.iter().map(|(i, s)| (i, s.into())).collect(),
        ahs: res.ahs.iter().map(|(i, a)| (i, a.into())).collect(),
        qps: vf
            .qps
            .iter()
            .map(|(_, q)| {
                let mut q = QpStateV2::from(q);
                q.req.deadline = rebase(q.req.deadline, now, false);
                q.req.rnr_until = rebase(q.req.rnr_until, now, false);
                q
            })
            .collect(),
        events: EventsStateV2 {
            async_events: res.async_events.iter().copied().collect(),
            cq_events: res.cq_events.iter().copied().collect(),
        },
        counters: (&res.counters).into(),
        mws: res.mws.iter().map(|(i, w)| (i, w.into())).collect(),
        fast_reg_mrs: res
            .mrs
            .iter()
            .filter_map(|(i, m)| {
                m.fast_reg
                    .map(|max_num_sg| (i, FastRegStateV2 { max_num_sg }))
            })
            .collect(),
    }
}

/// Encodes a state into a full v2 blob. The wire structs are plain data and every codec of
/// this build encodes them; should one fail, the blob is empty, and an empty blob never loads.
pub fn encode(state: &VfStateV2, codec: &'static dyn Codec) -> Vec<u8> {
    container::encode_full(state, codec).unwrap_or_default()
}

/// Saves `vf` at `now` as a full v2 blob.
pub fn save(vf: &Vf, now: Nanos, codec: &'static dyn Codec) -> Vec<u8> {
    encode(&state_of(vf, now), codec)
}

/// The format version of a blob (after checking its magic).
fn version_of(blob: &[u8]) -> Result<u16, CheckpointError> {
    let h = blob
        .get(..HEADER_LEN)
        .ok_or(CheckpointError::Truncated("header"))?;
    if h[..4] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    Ok(u16::from_le_bytes([h[4], h[5]]))
}

/// A v1 header: magic, version 1, codec (0 binary, 1 JSON), reserved, payload length, CRC-32.
fn header_v1(blob: &[u8]) -> Result<(Header, u32), CheckpointError> {
    let h = blob
        .get(..HEADER_LEN)
        .ok_or(CheckpointError::Truncated("header"))?;
    let codec = match h[6] {
        0 => codec::BINARY,
        1 => codec::JSON,
        c => return Err(CheckpointError::UnknownCodec(c)),
    };
    let payload_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let crc32 = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    Ok((
        Header {
            version: 1,
            codec,
            delta: false,
            payload_len: payload_len.into(),
            sections: Vec::new(),
        },
        crc32,
    ))
}

/// Reads and checks a blob's header, and in v2 its section table (not the sections).
pub fn header(blob: &[u8]) -> Result<Header, CheckpointError> {
    match version_of(blob)? {
        1 => header_v1(blob).map(|h| h.0),
        container::VERSION => {
            let t = container::Table::parse(blob)?;
            Ok(Header {
                version: container::VERSION,
                codec: t.codec,
                delta: t.delta,
                payload_len: (blob.len() - HEADER_LEN) as u64,
                sections: t.sections,
            })
        }
        v => Err(CheckpointError::UnknownVersion(v)),
    }
}

/// Decodes a v1 blob into its header and v1 state, checking the checksum (not the contents).
pub fn decode_v1(blob: &[u8]) -> Result<(Header, VfStateV1), CheckpointError> {
    match version_of(blob)? {
        1 => {}
        v => return Err(CheckpointError::UnknownVersion(v)),
    }
    let (h, crc) = header_v1(blob)?;
    let len = h.payload_len as usize;
    if len > MAX_PAYLOAD {
        return Err(CheckpointError::Decode(format!(
            "payload length {len} is implausible"
        )));
    }
    let payload = blob
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(CheckpointError::Truncated("payload"))?;
    if blob.len() != HEADER_LEN + len {
        return Err(CheckpointError::Decode(
            "trailing bytes after the payload".into(),
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err(CheckpointError::Checksum);
    }
    let state = codec::decode_value(h.codec, payload)?;
    Ok((h, state))
}

/// Encodes a v1 state as a v1 blob. This build never saves v1; this is for the golden
/// fixtures and the tests that prove v1 blobs still load.
pub fn encode_v1(state: &VfStateV1, codec: &'static dyn Codec) -> Result<Vec<u8>, CheckpointError> {
    let byte = match codec.id() {
        0 | 1 => codec.id(),
        c => return Err(CheckpointError::UnknownCodec(c)),
    };
    let payload = codec::encode_value(codec, state)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(byte);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes any blob this build reads: v1 (upgraded to v2 as it is read) or v2, full or delta.
/// The checksums are checked, the contents not yet (`validate`).
pub fn decode_any(blob: &[u8]) -> Result<(Header, CheckpointV2), CheckpointError> {
    match version_of(blob)? {
        1 => {
            let (h, s) = decode_v1(blob)?;
            Ok((h, CheckpointV2::Full(s.into())))
        }
        container::VERSION => {
            let (t, c) = container::decode(blob)?;
            let h = Header {
                version: container::VERSION,
                codec: t.codec,
                delta: t.delta,
                payload_len: (blob.len() - HEADER_LEN) as u64,
                sections: t.sections,
            };
            Ok((h, c))
        }
        v => Err(CheckpointError::UnknownVersion(v)),
    }
}

/// Decodes a full checkpoint (v1 or v2); a delta is refused, it needs its base.
pub fn decode(blob: &[u8]) -> Result<(Header, VfStateV2), CheckpointError> {
    match decode_any(blob)? {
        (h, CheckpointV2::Full(s)) => Ok((h, s)),
        (_, CheckpointV2::Delta(_)) => Err(CheckpointError::DeltaNeedsBase),
    }
}

/// Decodes a delta blob and applies it to `base`, the state it was made against.
pub fn decode_delta(base: &VfStateV2, blob: &[u8]) -> Result<VfStateV2, CheckpointError> {
    match decode_any(blob)? {
        (_, CheckpointV2::Delta(d)) => apply(base, d),
        (_, CheckpointV2::Full(_)) => Err(CheckpointError::NotADelta),
    }
}

/// [`decode_delta`] onto a kept [`Base`] (its digest not recomputed).
pub fn decode_delta_onto(base: &Base, blob: &[u8]) -> Result<VfStateV2, CheckpointError> {
    match decode_any(blob)? {
        (_, CheckpointV2::Delta(d)) => base.apply(d),
        (_, CheckpointV2::Full(_)) => Err(CheckpointError::NotADelta),
    }
}

/// [`save_delta`] against a kept [`Base`].
pub fn save_delta_from(
    base: &Base,
    cur: &VfStateV2,
    codec: &'static dyn Codec,
) -> Result<Vec<u8>, CheckpointError> {
    container::encode_delta(&base.delta(cur), codec)
}

/// A delta blob of `cur` against `base`.
pub fn save_delta(
    base: &VfStateV2,
    cur: &VfStateV2,
    codec: &'static dyn Codec,
) -> Result<Vec<u8>, CheckpointError> {
    container::encode_delta(&delta(base, cur)?, codec)
}

/// Every limit of `own` (a blob's) within `dest` (the destination's policy), field by field:
/// a blob may not grant its VF more than the destination allows its own VFs.
fn limits_within(own: &VfLimits, dest: &VfLimits) -> Result<(), CheckpointError> {
    let fields: [(&str, u64, u64); 15] = [
        ("max_qp", own.max_qp.into(), dest.max_qp.into()),
        ("max_qp_wr", own.max_qp_wr.into(), dest.max_qp_wr.into()),
        ("max_sge", own.max_sge.into(), dest.max_sge.into()),
        (
            "max_inline_data",
            own.max_inline_data.into(),
            dest.max_inline_data.into(),
        ),
        ("max_cq", own.max_cq.into(), dest.max_cq.into()),
        ("max_cqe", own.max_cqe.into(), dest.max_cqe.into()),
        ("max_mr", own.max_mr.into(), dest.max_mr.into()),
        ("max_mr_size", own.max_mr_size, dest.max_mr_size),
        ("max_pd", own.max_pd.into(), dest.max_pd.into()),
        ("max_srq", own.max_srq.into(), dest.max_srq.into()),
        ("max_srq_wr", own.max_srq_wr.into(), dest.max_srq_wr.into()),
        ("max_ah", own.max_ah.into(), dest.max_ah.into()),
        (
            "max_qp_rd_atom",
            own.max_qp_rd_atom.into(),
            dest.max_qp_rd_atom.into(),
        ),
        (
            "max_qp_init_rd_atom",
            own.max_qp_init_rd_atom.into(),
            dest.max_qp_init_rd_atom.into(),
        ),
        ("max_msg_sz", own.max_msg_sz.into(), dest.max_msg_sz.into()),
    ];
    for (name, own, dest) in fields {
        if own > dest {
            return invalid(format!(
                "limit {name} {own} is above the destination's {dest}"
            ));
        }
    }
    Ok(())
}

/// The sorted numbers of one kind of object, each checked to lie in the range its table may
/// hold (`table::numbers`) and to be used once.
fn numbers_of(
    what: &str,
    nums: impl Iterator<Item = u32>,
    first: u32,
    limit: u32,
) -> Result<Vec<u32>, CheckpointError> {
    let range = table::numbers(first, limit);
    // Bounded by the payload: one entry per object the blob decoded into.
    let mut v: Vec<u32> = nums.collect();
    if v.len() as u64 > limit as u64 {
        return invalid(format!("{} {what}s, the VF's limit is {limit}", v.len()));
    }
    if let Some(n) = v.iter().find(|n| !range.contains(&(**n as u64))) {
        return invalid(format!(
            "{what} number {n} is outside {}..{} (the VF's limit is {limit})",
            range.start, range.end
        ));
    }
    v.sort_unstable();
    if let Some(w) = v.windows(2).find(|w| w[0] == w[1]) {
        return invalid(format!("{what} number {} used twice", w[0]));
    }
    Ok(v)
}

/// Whether a state would restore on a destination whose policy is `dest`: the destination's
/// own checks and then a real restore into a scratch VF, so `validate` accepts exactly what
/// [`restore`] (and [`load_with_limits`]) accept, with the same error.
pub fn validate(s: &VfStateV2, dest: &VfLimits) -> Result<(), CheckpointError> {
    // A restore never touches guest memory and its outcome does not depend on `now`: objects
    // keep their guest-physical addresses until the data path reaches them.
    restore(s.clone(), VecMemory::shared(0), Nanos(0), dest).map(drop)
}

/// Builds a VF from a state, its clock now at `now`, on a destination whose policy is `dest`
/// (the limits it allows its own VFs). Everything is checked before the VF is built: the
/// state's limits against `dest`, then every number and count against the state's limits (so
/// no number in a blob makes a table grow beyond what the limits allow), then each object as
/// it converts from its wire struct (`TryFrom`, `load.rs`: sizes, contents, references).
pub fn restore(
    s: VfStateV2,
    mem: SharedMemory,
    now: Nanos,
    dest: &VfLimits,
) -> Result<Vf, CheckpointError> {
    let l: &VfLimits = &s.identity.limits;
    limits_within(l, dest)?;
    let pds = numbers_of("PD", s.pds.iter().copied(), 1, l.max_pd)?;
    let cqs = numbers_of("CQ", s.cqs.iter().map(|c| c.0), 1, l.max_cq)?;
    let srqs = numbers_of("SRQ", s.srqs.iter().map(|c| c.0), 1, l.max_srq)?;
    numbers_of("MR", s.mrs.iter().map(|c| c.0), 1, l.max_mr)?;
    numbers_of("AH", s.ahs.iter().map(|c| c.0), 1, l.max_ah)?;
    numbers_of("MW", s.mws.iter().map(|c| c.0), 1, crate::vf::mw_limit(l))?;
    numbers_of(
        "fast-register MR",
        s.fast_reg_mrs.iter().map(|c| c.0),
        1,
        l.max_mr,
    )?;
    // QP1 is the GSI QP and nothing else; every other QP has an ordinary number.
    let gsi = GSI_QPN;
    if let Some(q) = s
        .qps
        .iter()
        .find(|q| (q.qpn.0 == gsi) != (q.qp_type() == QpType::Gsi))
    {
        return invalid(format!(
            "QP {} of type {:?}: QP{gsi} is exactly the GSI QP",
            q.qpn.0,
            q.qp_type()
        ));
    }
    if s.qps.iter().filter(|q| q.qpn.0 == gsi).count() > 1 {
        return invalid(format!("QP number {gsi} used twice"));
    }
    if s.qps.len() as u64 > l.max_qp as u64 {
        return invalid(format!(
            "{} QPs, the VF's limit is {}",
            s.qps.len(),
            l.max_qp
        ));
    }
    let qpns = numbers_of(
        "QP",
        s.qps.iter().map(|q| q.qpn.0).filter(|n| *n != gsi),
        FIRST_QPN,
        l.max_qp,
    )?;
    if let Some(n) = qpns.last().filter(|n| **n > Qpn::MASK) {
        return invalid(format!("QP number {n} is beyond 24 bits"));
    }
    let mut srq_pds: Vec<(u32, PdHandle)> = s.srqs.iter().map(|(i, q)| (*i, q.pd)).collect();
    srq_pds.sort_unstable();
    let cx = LoadCtx {
        limits: l,
        pds: &pds,
        cqs: &cqs,
        srqs: &srqs,
        srq_pds,
        port_mtu: s.identity.port_mtu.bytes(),
    };
    // Each object checked as it converts, kinds in this order (the first error wins). A UD
    // send WQE may name an AH destroyed after it was posted (it completes with an error when
    // it is sent), so AH references are not checked; SRQ ones are.
    // Windows first: their checks read the MRs and QPs as the state has them.
    let mut mws = Vec::with_capacity(s.mws.len());
    if !s.mws.is_empty() {
        let look = windows::Lookup::new(&pds, &s.mrs, &s.qps);
        for (i, w) in &s.mws {
            mws.push((*i, windows::check_mw(*i, w, &look)?));
        }
    }
    let mut mrs = Vec::with_capacity(s.mrs.len());
    for (i, m) in s.mrs {
        mrs.push((i, crate::mr::Mr::try_from((i, m, &cx))?));
    }
    let mut cqs_live = Vec::with_capacity(s.cqs.len());
    for (i, c) in s.cqs {
        cqs_live.push((i, crate::cq::Cq::try_from((i, c, &cx))?));
    }
    let mut srqs_live = Vec::with_capacity(s.srqs.len());
    for (i, q) in s.srqs {
        srqs_live.push((i, crate::srq::Srq::try_from((i, q, &cx))?));
    }
    let mut ahs = Vec::with_capacity(s.ahs.len());
    for (i, a) in s.ahs {
        ahs.push((i, crate::resources::Ah::try_from((i, a, &cx))?));
    }
    // Bounded by the payload (one per QP decoded), and the numbers were bounded by max_qp.
    let mut qps = Vec::with_capacity(s.qps.len());
    for q in s.qps {
        qps.push(Qp::try_from((q, &cx))?);
    }
    // Ascending numbers, the order `state_of` writes: each placement is then O(1), whatever
    // order a hostile blob chose.
    mrs.sort_unstable_by_key(|e| e.0);
    cqs_live.sort_unstable_by_key(|e| e.0);
    srqs_live.sort_unstable_by_key(|e| e.0);
    ahs.sort_unstable_by_key(|e| e.0);
    qps.sort_unstable_by_key(|q| q.qpn.0);
    let mut vf = Vf::new(s.identity.into(), mem);
    vf.key_byte = s.identity.key_byte;
    // The checks proved every number fits and is unique; a refusal here is a bug, still an
    // error.
    let put = |r: Result<(), table::PlaceError>, what: &str| {
        r.or_else(|e| invalid(format!("{what} could not be placed: {e}")))
    };
    for p in pds {
        put(vf.res.pds.insert_at(p, Pd), "PD")?;
    }
    for (i, m) in mrs {
        put(vf.res.mrs.insert_at(i, m), "MR")?;
    }
    for (i, f) in s.fast_reg_mrs {
        windows::apply_fast_reg(i, f, vf.res.mrs.get_mut(i))?;
    }
    mws.sort_unstable_by_key(|e| e.0);
    for (i, w) in mws {
        put(vf.res.mws.insert_at(i, w), "MW")?;
    }
    for (i, c) in cqs_live {
        put(vf.res.cqs.insert_at(i, c), "CQ")?;
    }
    for (i, q) in srqs_live {
        put(vf.res.srqs.insert_at(i, q), "SRQ")?;
    }
    for (i, a) in ahs {
        put(vf.res.ahs.insert_at(i, a), "AH")?;
    }
    for mut q in qps {
        q.req.deadline = rebase(q.req.deadline, now, true);
        q.req.rnr_until = rebase(q.req.rnr_until, now, true);
        let n = q.qpn.0;
        if n == gsi {
            put(vf.qps.insert_reserved(n, q), "QP")?;
        } else {
            put(vf.qps.insert_at(n, q), "QP")?;
        }
    }
    vf.res.async_events = s.events.async_events.into_iter().collect();
    vf.res.cq_events = s.events.cq_events.into_iter().collect();
    vf.res.counters = s.counters.into();
    for n in qpns {
        vf.schedule(n);
    }
    Ok(vf)
}

/// Loads a full blob (v1 or v2) into a VF over `mem`, its clock now at `now`, on a destination that allows its
/// VFs `dest`.
pub fn load_with_limits(
    blob: &[u8],
    mem: SharedMemory,
    now: Nanos,
    dest: &VfLimits,
) -> Result<Vf, CheckpointError> {
    let (_, state) = decode(blob)?;
    restore(state, mem, now, dest)
}

/// Loads a blob on a destination whose policy is this build's default limits (what every PF
/// of vhca gives its VFs today; [`load_with_limits`] takes another).
pub fn load(blob: &[u8], mem: SharedMemory, now: Nanos) -> Result<Vf, CheckpointError> {
    load_with_limits(blob, mem, now, &VfLimits::default())
}

#[cfg(test)]
mod tests {
    use static_assertions::assert_not_impl_any;

    // The live types are not the format: none of them may (de)serialize, or a refactor of
    // the device would silently be a format change again.
    assert_not_impl_any!(crate::qp::Qp: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::qp::requester::Requester: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::qp::requester::SendWqe: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::qp::responder::Responder: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::mr::Mr: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::cq::Cq: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::srq::Srq: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::resources::Ah: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::resources::Counters: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::vf::Vf: serde::Serialize, serde::de::DeserializeOwned);
    assert_not_impl_any!(crate::vf::VfIdentity: serde::Serialize, serde::de::DeserializeOwned);
}
