//! Checkpoints: a VF's whole state as a versioned, self-describing blob.
//!
//! Layout (docs/checkpoint-format.md): a 16-byte header — magic `VHCA`, format version (u16
//! LE), codec (0 binary, 1 JSON), reserved, payload length (u32 LE), CRC-32 of the payload
//! (u32 LE) — then the payload: the serde encoding of [`VfStateV1`] in that codec. The binary
//! codec (postcard: varints, no field names) is what migration sends; JSON is for people.
//!
//! A blob is untrusted input: it may be truncated, corrupted or hostile. Loading checks the
//! header, the checksum, then every object and every cross-reference before a single one is
//! put into a VF, so a bad blob is an error value, never a panic or a half-built VF.

use crate::cq::Cq;
use crate::memory::{SharedMemory, VecMemory};
use crate::mr::{Mr, MrMap, MR_PAGE_SHIFTS};
use crate::qp::requester::{SendWqe, MAX_PKT_PER_ACK};
use crate::qp::responder::{InMessage, Outgoing, RdAtomicResource};
use crate::qp::Qp;
use crate::resources::{Ah, Counters, Pd};
use crate::srq::Srq;
use crate::table;
use crate::types::{CqHandle, Nanos, PdHandle, Psn, Qpn};
use crate::verbs::{AsyncEvent, QpState, QpType, RecvWr, SendOp, VfLimits};
use crate::vf::{Vf, VfIdentity, FIRST_QPN};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const MAGIC: [u8; 4] = *b"VHCA";
pub const HEADER_LEN: usize = 16;
/// The format version this build writes. Every older version it can read is listed in
/// [`SUPPORTED_VERSIONS`] and has a golden fixture in tests.
pub const CURRENT_VERSION: u16 = 1;
pub const SUPPORTED_VERSIONS: [u16; 1] = [1];
/// Upper bound on a payload, far above any real VF, so a hostile length cannot make a reader
/// allocate gigabytes.
pub const MAX_PAYLOAD: usize = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    Binary,
    Json,
}

impl Codec {
    fn byte(self) -> u8 {
        match self {
            Codec::Binary => 0,
            Codec::Json => 1,
        }
    }
}

/// The fixed header of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Header {
    pub version: u16,
    pub codec: Codec,
    pub payload_len: u32,
    pub crc32: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint truncated: {0}")]
    Truncated(&'static str),
    #[error("not a vhca checkpoint (bad magic)")]
    BadMagic,
    #[error("checkpoint format version {0} is not supported by this build (supported: 1)")]
    UnknownVersion(u16),
    #[error("unknown checkpoint codec {0}")]
    UnknownCodec(u8),
    #[error("checkpoint payload is corrupted (CRC mismatch)")]
    Checksum,
    #[error("checkpoint payload does not decode: {0}")]
    Decode(String),
    #[error("checkpoint is inconsistent: {0}")]
    Invalid(String),
}

fn invalid<T>(what: impl Into<String>) -> Result<T, CheckpointError> {
    Err(CheckpointError::Invalid(what.into()))
}

/// Version 1 of a VF's state: identity, every object table as (number, object) pairs, and the
/// events not yet delivered. QP timers are stored as time remaining, not as absolute times:
/// the destination's clock has another origin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VfStateV1 {
    pub identity: VfIdentity,
    pub key_byte: u8,
    pub pds: Vec<u32>,
    pub mrs: Vec<(u32, Mr)>,
    pub cqs: Vec<(u32, Cq)>,
    pub srqs: Vec<(u32, Srq)>,
    pub ahs: Vec<(u32, Ah)>,
    pub qps: Vec<Qp>,
    pub async_events: Vec<AsyncEvent>,
    pub cq_events: Vec<CqHandle>,
    pub counters: Counters,
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

/// The state of `vf` at `now`.
pub fn state_of(vf: &Vf, now: Nanos) -> VfStateV1 {
    let res = &vf.res;
    VfStateV1 {
        identity: vf.identity,
        key_byte: vf.key_byte,
        pds: res.pds.iter().map(|(i, _)| i).collect(),
        mrs: res.mrs.iter().map(|(i, m)| (i, m.clone())).collect(),
        cqs: res.cqs.iter().map(|(i, c)| (i, c.clone())).collect(),
        srqs: res.srqs.iter().map(|(i, s)| (i, s.clone())).collect(),
        ahs: res.ahs.iter().map(|(i, a)| (i, a.clone())).collect(),
        qps: vf
            .qps
            .iter()
            .map(|(_, q)| {
                let mut q = q.clone();
                q.req.deadline = rebase(q.req.deadline, now, false);
                q.req.rnr_until = rebase(q.req.rnr_until, now, false);
                q
            })
            .collect(),
        async_events: res.async_events.iter().copied().collect(),
        cq_events: res.cq_events.iter().copied().collect(),
        counters: res.counters.clone(),
    }
}

/// Encodes a state into a blob.
pub fn encode(state: &VfStateV1, codec: Codec) -> Vec<u8> {
    let payload = match codec {
        // Serializing plain data into a Vec cannot fail; an empty payload would fail to load.
        Codec::Binary => postcard::to_stdvec(state).unwrap_or_default(),
        Codec::Json => serde_json::to_vec_pretty(state).unwrap_or_default(),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&CURRENT_VERSION.to_le_bytes());
    out.push(codec.byte());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Saves `vf` at `now`.
pub fn save(vf: &Vf, now: Nanos, codec: Codec) -> Vec<u8> {
    encode(&state_of(vf, now), codec)
}

/// Reads and checks a blob's header.
pub fn header(blob: &[u8]) -> Result<Header, CheckpointError> {
    let h = blob
        .get(..HEADER_LEN)
        .ok_or(CheckpointError::Truncated("header"))?;
    if h[..4] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CheckpointError::UnknownVersion(version));
    }
    let codec = match h[6] {
        0 => Codec::Binary,
        1 => Codec::Json,
        c => return Err(CheckpointError::UnknownCodec(c)),
    };
    let payload_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let crc32 = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    Ok(Header {
        version,
        codec,
        payload_len,
        crc32,
    })
}

/// Decodes a blob into its header and state, checking the checksum (not yet the contents).
pub fn decode(blob: &[u8]) -> Result<(Header, VfStateV1), CheckpointError> {
    let h = header(blob)?;
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
    if crc32fast::hash(payload) != h.crc32 {
        return Err(CheckpointError::Checksum);
    }
    let state: VfStateV1 = match h.codec {
        Codec::Binary => {
            postcard::from_bytes(payload).map_err(|e| CheckpointError::Decode(e.to_string()))?
        }
        Codec::Json => {
            serde_json::from_slice(payload).map_err(|e| CheckpointError::Decode(e.to_string()))?
        }
    };
    Ok((h, state))
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

/// The destination's checks of a state against its policy `dest`: every number, count, size
/// and reference, before anything is allocated for it. [`restore`] runs exactly these.
fn check(s: &VfStateV1, dest: &VfLimits) -> Result<(), CheckpointError> {
    let l: &VfLimits = &s.identity.limits;
    limits_within(l, dest)?;
    let pds = numbers_of("PD", s.pds.iter().copied(), 1, l.max_pd)?;
    let has_pd = |p: u32| pds.binary_search(&p).is_ok();
    let cqs = numbers_of("CQ", s.cqs.iter().map(|c| c.0), 1, l.max_cq)?;
    let srqs = numbers_of("SRQ", s.srqs.iter().map(|c| c.0), 1, l.max_srq)?;
    numbers_of("MR", s.mrs.iter().map(|c| c.0), 1, l.max_mr)?;
    numbers_of("AH", s.ahs.iter().map(|c| c.0), 1, l.max_ah)?;
    let qpns = numbers_of("QP", s.qps.iter().map(|q| q.qpn.0), FIRST_QPN, l.max_qp)?;
    if let Some(n) = qpns.last().filter(|n| **n > Qpn::MASK) {
        return invalid(format!("QP number {n} is beyond 24 bits"));
    }
    for (i, m) in &s.mrs {
        if m.key.index() != *i
            || !has_pd(m.pd.0)
            || m.len > l.max_mr_size
            || m.iova.checked_add(m.len).is_none()
        {
            return invalid(format!(
                "MR {i}: key index, PD, or length {} (limit {}) out of range",
                m.len, l.max_mr_size
            ));
        }
        if let MrMap::Pages { page_shift, pages } = &m.map {
            if !MR_PAGE_SHIFTS.contains(page_shift)
                || pages.len() as u64 > (m.len >> page_shift) + 2
            {
                return invalid(format!("MR {i} page list"));
            }
        }
    }
    for (i, c) in &s.cqs {
        if c.capacity == 0 || c.capacity > l.max_cqe || c.entries.len() as u64 > c.capacity as u64 {
            return invalid(format!(
                "CQ {i}: capacity {} (limit max_cqe {}) or {} completions above it",
                c.capacity,
                l.max_cqe,
                c.entries.len()
            ));
        }
    }
    for (i, q) in &s.srqs {
        if !has_pd(q.pd.0)
            || q.max_wr == 0
            || q.max_wr > l.max_srq_wr
            || q.max_sge > l.max_sge
            || q.queue.len() as u64 > q.max_wr as u64
            || q.limit > q.max_wr
        {
            return invalid(format!(
                "SRQ {i}: PD, sizes (max_wr {}, max_sge {}), {} WQEs or limit {} out of range",
                q.max_wr,
                q.max_sge,
                q.queue.len(),
                q.limit
            ));
        }
        if q.queue.iter().any(|w| w.sgl.len() as u32 > q.max_sge) {
            return invalid(format!("SRQ {i} WQE"));
        }
    }
    for (i, a) in &s.ahs {
        // What create_ah refuses: an AH of an unknown PD, or one without a GID (RoCE).
        if !has_pd(a.pd.0) || a.attr.dgid.is_zero() {
            return invalid(format!("AH {i}: unknown PD {} or no GID", a.pd.0));
        }
    }
    let has = |v: &Vec<u32>, x: u32| v.binary_search(&x).is_ok();
    // A UD send WQE may name an AH destroyed after it was posted (it completes with an
    // error when it is sent), so AH references are not checked; SRQ ones are.
    let mut srq_pds: Vec<(u32, PdHandle)> = s.srqs.iter().map(|(i, q)| (*i, q.pd)).collect();
    srq_pds.sort_unstable();
    let srq_pd = |x: u32| {
        srq_pds
            .binary_search_by_key(&x, |e| e.0)
            .ok()
            .map(|k| srq_pds[k].1)
    };
    for q in &s.qps {
        validate_qp(
            q,
            l,
            &|p| has_pd(p),
            &|c| has(&cqs, c),
            &|x| has(&srqs, x),
            s.identity.port_mtu.bytes(),
        )?;
        // What create_qp refuses: an SRQ of another PD.
        if let Some(x) = q.init.srq {
            if srq_pd(x.0) != Some(q.init.pd) {
                return invalid(format!("QP {}: SRQ of another PD", q.qpn.0));
            }
        }
    }
    Ok(())
}

/// Whether a state would restore on a destination whose policy is `dest`: the destination's
/// own checks and then a real restore into a scratch VF, so `validate` accepts exactly what
/// [`restore`] (and [`load_with_limits`]) accept, with the same error.
pub fn validate(s: &VfStateV1, dest: &VfLimits) -> Result<(), CheckpointError> {
    // A restore never touches guest memory and its outcome does not depend on `now`: objects
    // keep their guest-physical addresses until the data path reaches them.
    restore(s.clone(), VecMemory::shared(0), Nanos(0), dest).map(drop)
}

fn psn_ok(p: Psn) -> bool {
    p.0 <= Psn::MASK
}

fn recv_ok(w: &RecvWr, max_sge: u32) -> bool {
    w.sgl.len() as u32 <= max_sge
}

fn validate_qp(
    q: &Qp,
    l: &VfLimits,
    has_pd: &dyn Fn(u32) -> bool,
    has_cq: &dyn Fn(u32) -> bool,
    has_srq: &dyn Fn(u32) -> bool,
    port_mtu: u32,
) -> Result<(), CheckpointError> {
    let n = q.qpn.0;
    let bad = |what: &str| invalid(format!("QP {n}: {what}"));
    if !(FIRST_QPN..=Qpn::MASK).contains(&n) {
        return bad("number");
    }
    let init = &q.init;
    if !has_pd(init.pd.0)
        || !has_cq(init.send_cq.0)
        || !has_cq(init.recv_cq.0)
        || init.srq.is_some_and(|s| !has_srq(s.0))
    {
        return bad("references an object that does not exist");
    }
    let c = &init.cap;
    if c.max_send_wr == 0
        || c.max_send_wr > l.max_qp_wr
        || c.max_recv_wr > l.max_qp_wr
        || c.max_send_sge > l.max_sge
        || c.max_recv_sge > l.max_sge
        || c.max_inline_data > l.max_inline_data
    {
        return bad("capacities");
    }
    let a = &q.attr;
    if a.cap != *c {
        return bad("attribute capacities differ from creation");
    }
    if a.timeout > 31
        || a.retry_cnt > 7
        || a.rnr_retry > 7
        || a.min_rnr_timer > 31
        || a.max_rd_atomic > l.max_qp_init_rd_atom
        || a.max_dest_rd_atomic > l.max_qp_rd_atom
    {
        return bad("attribute values");
    }
    if !psn_ok(a.rq_psn)
        || !psn_ok(a.sq_psn)
        || a.dest_qp_num.0 > Qpn::MASK
        || a.path_mtu.bytes() > port_mtu
    {
        return bad("PSN, QPN or MTU out of range");
    }
    if q.qp_type() == QpType::Ud
        && !matches!(a.qp_state, QpState::Reset | QpState::Init)
        && a.path_mtu.bytes() != port_mtu
    {
        return bad("UD path MTU");
    }
    // Receive side.
    if q.rq.len() as u64 > c.max_recv_wr as u64
        || q.rq.iter().any(|w| !recv_ok(w, c.max_recv_sge))
        || (init.srq.is_some() && !q.rq.is_empty())
    {
        return bad("receive queue");
    }
    let r = &q.req;
    if r.sq.len() as u64 > c.max_send_wr as u64 || r.next > r.sq.len() {
        return bad("send queue");
    }
    for p in [r.psn, r.una, r.sent_hw].into_iter().chain(r.retrying_from) {
        if !psn_ok(p) {
            return bad("requester PSN");
        }
    }
    // The counters count down from the 3-bit attributes; the ACK-request counter is reset
    // before it reaches MAX_PKT_PER_ACK (and `+ 1` on a hostile u32::MAX would overflow).
    if r.retry_left > 7 || r.rnr_left > 7 || r.since_ack_req >= MAX_PKT_PER_ACK {
        return bad("requester counters");
    }
    let mtu = a.path_mtu.bytes();
    for w in &r.sq {
        validate_wqe(w, c.max_send_sge, c.max_inline_data, l.max_msg_sz, mtu)
            .map_err(|e| CheckpointError::Invalid(format!("QP {n}: send WQE: {e}")))?;
    }
    if let Some(w) = r.sq.get(r.next) {
        if r.next_pkt > w.npkts.max(1) {
            return bad("requester packet index");
        }
    }
    let s = &q.resp;
    if !psn_ok(s.epsn)
        || s.msn.0 > Psn::MASK
        || s.resources.len() > a.max_dest_rd_atomic.max(1) as usize
        || s.out.len() > 4 * (a.max_dest_rd_atomic as usize + 4)
    {
        return bad("responder state");
    }
    let resource_ok = |r: &RdAtomicResource| match r {
        RdAtomicResource::Read { psn, npkts } => psn_ok(*psn) && *npkts <= l.max_msg_sz.max(1),
        RdAtomicResource::Atomic { psn, .. } => psn_ok(*psn),
    };
    let out_ok = |o: &Outgoing| match o {
        Outgoing::Ack { psn, msn, .. } | Outgoing::AtomicAck { psn, msn, .. } => {
            psn_ok(*psn) && msn.0 <= Psn::MASK
        }
        Outgoing::Read { psn, msn, left, .. } => {
            psn_ok(*psn) && msn.0 <= Psn::MASK && *left <= l.max_msg_sz
        }
    };
    if !s.resources.iter().all(resource_ok) || !s.out.iter().all(out_ok) {
        return bad("responder resources or responses owed");
    }
    let current_ok = match &s.current {
        Some(InMessage::Send { wqe, offset }) => {
            recv_ok(wqe, c.max_recv_sge.max(l.max_sge))
                && *offset as u64 <= crate::sgl::sgl_len(&wqe.sgl)
        }
        Some(InMessage::Write { len, offset, .. }) => offset <= len && *len <= l.max_msg_sz,
        None => true,
    };
    if !current_ok {
        return bad("message in progress");
    }
    Ok(())
}

fn validate_wqe(
    w: &SendWqe,
    max_sge: u32,
    max_inline: u32,
    max_msg: u32,
    mtu: u32,
) -> Result<(), &'static str> {
    match &w.inline {
        Some(d) => {
            if d.len() as u32 > max_inline || d.len() as u32 != w.len {
                return Err("inline data");
            }
        }
        None => {
            if w.sgl.len() as u32 > max_sge || crate::sgl::sgl_len(&w.sgl) != w.len as u64 {
                return Err("SGL");
            }
        }
    }
    if w.len > max_msg {
        return Err("length");
    }
    if w.started {
        let expect = match w.op {
            SendOp::LocalInv { .. } => 0,
            SendOp::CmpSwap { .. } | SendOp::FetchAdd { .. } => 1,
            _ => w.len.div_ceil(mtu).max(1),
        };
        if w.npkts != expect || w.resp_pkts > w.npkts || !psn_ok(w.first_psn) {
            return Err("transport progress");
        }
    }
    Ok(())
}

/// Builds a VF from a state, its clock now at `now`, on a destination whose policy is `dest`
/// (the limits it allows its own VFs). Everything is checked before anything is allocated:
/// the state's limits against `dest`, then every number, count and reference against the
/// state's limits, so no number in a blob makes a table grow beyond what the limits allow.
pub fn restore(
    mut s: VfStateV1,
    mem: SharedMemory,
    now: Nanos,
    dest: &VfLimits,
) -> Result<Vf, CheckpointError> {
    check(&s, dest)?;
    // Ascending numbers, the order `state_of` writes: each placement is then O(1), whatever
    // order a hostile blob chose.
    s.pds.sort_unstable();
    s.mrs.sort_unstable_by_key(|e| e.0);
    s.cqs.sort_unstable_by_key(|e| e.0);
    s.srqs.sort_unstable_by_key(|e| e.0);
    s.ahs.sort_unstable_by_key(|e| e.0);
    s.qps.sort_unstable_by_key(|q| q.qpn.0);
    let mut vf = Vf::new(s.identity, mem);
    vf.key_byte = s.key_byte;
    // `check` proved every number fits and is unique; a refusal here is a bug, still an error.
    let put = |r: Result<(), table::PlaceError>, what: &str| {
        r.or_else(|e| invalid(format!("{what} could not be placed: {e}")))
    };
    for p in s.pds {
        put(vf.res.pds.insert_at(p, Pd), "PD")?;
    }
    for (i, m) in s.mrs {
        put(vf.res.mrs.insert_at(i, m), "MR")?;
    }
    for (i, c) in s.cqs {
        put(vf.res.cqs.insert_at(i, c), "CQ")?;
    }
    for (i, q) in s.srqs {
        put(vf.res.srqs.insert_at(i, q), "SRQ")?;
    }
    for (i, a) in s.ahs {
        put(vf.res.ahs.insert_at(i, a), "AH")?;
    }
    // Bounded by the payload (one per QP decoded), and `check` bounded that by max_qp.
    let mut qpns = Vec::with_capacity(s.qps.len());
    for mut q in s.qps {
        q.req.deadline = rebase(q.req.deadline, now, true);
        q.req.rnr_until = rebase(q.req.rnr_until, now, true);
        q.scheduled = false;
        q.timer_entry = None;
        let n = q.qpn.0;
        put(vf.qps.insert_at(n, q), "QP")?;
        qpns.push(n);
    }
    vf.res.async_events = s.async_events.into_iter().collect();
    vf.res.cq_events = s.cq_events.into_iter().collect();
    vf.res.counters = s.counters;
    for n in qpns {
        vf.schedule(n);
    }
    Ok(vf)
}

/// Loads a blob into a VF over `mem`, its clock now at `now`, on a destination that allows its
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
