//! Numbers in a checkpoint blob are bounded by the VF's limits and the destination's policy
//! before anything is allocated for them; `validate` accepts exactly what `restore` accepts.
//!
//! The allocator of this test binary counts, per thread and only while a test asks it to, the
//! bytes requested: "allocates nothing big" is asserted, not timed.

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use vhca_device::checkpoint::container::{assemble, sections};
use vhca_device::checkpoint::{
    self, codec, CheckpointError, Codec, SectionKind, VfStateV2, HEADER_LEN,
};
use vhca_device::memory::VecMemory;
use vhca_device::*;

/// Counts the bytes the current thread requests while its counter is armed.
struct Counting;

thread_local! {
    static REQUESTED: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: the slot may already be gone while a thread exits; const-initialized, so
    // reading it never allocates (no recursion into the allocator).
    let _ = REQUESTED.try_with(|r| {
        if let Some(n) = r.get() {
            r.set(Some(n + size as u64));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// GlobalAlloc's contract; the counting touches only a thread-local Cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the bytes it requested from the allocator.
fn counting<R>(f: impl FnOnce() -> R) -> (R, u64) {
    REQUESTED.with(|r| r.set(Some(0)));
    let out = f();
    let n = REQUESTED.with(|r| r.replace(None)).unwrap_or(0);
    (out, n)
}

fn mem() -> SharedMemory {
    VecMemory::shared(1 << 16)
}

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The golden v1 fixture's state: one object of every kind and an RC QP with work queued.
fn busy_state() -> VfStateV2 {
    checkpoint::decode(&fixture("checkpoint-v1.bin")).unwrap().1
}

/// A VF with one PD and one CQ: the smallest state that has an object number to patch.
fn small_state() -> VfStateV2 {
    let pf = Pf::new(0, 1);
    let mut vf = Vf::new(pf.default_identity(0), mem());
    vf.alloc_pd().unwrap();
    vf.create_cq(16).unwrap();
    checkpoint::state_of(&vf, Nanos(0))
}

fn invalid_saying(r: Result<(), CheckpointError>, words: &str) {
    match r {
        Err(CheckpointError::Invalid(m)) if m.contains(words) => {}
        other => panic!("expected an Invalid error saying {words:?}, got {other:?}"),
    }
}

/// What `vhca state validate` does and what a destination's load does, side by side.
fn validate_and_restore(s: &VfStateV2, lim: &VfLimits) -> [Result<(), CheckpointError>; 2] {
    [
        checkpoint::validate(s, lim),
        checkpoint::restore(s.clone(), mem(), Nanos(0), lim).map(drop),
    ]
}

#[test]
fn a_cq_number_of_four_billion_is_refused_before_anything_is_allocated() {
    let mut s = small_state();
    s.cqs[0].0 = 4_000_000_000;
    let blob = checkpoint::encode(&s, codec::BINARY);
    assert!(blob.len() < 300, "a tiny blob: {} bytes", blob.len());
    let (r, bytes) = counting(|| checkpoint::load(&blob, mem(), Nanos(0)).map(drop));
    invalid_saying(r, "CQ number 4000000000 is outside 1..65537");
    // The 64 KiB guest memory of `mem()` is the only sizeable allocation.
    assert!(
        bytes < 128 << 10,
        "{bytes} bytes allocated for a refused blob"
    );
    // The same for every table: a number just past the range is refused, by both paths.
    let lim = VfLimits::default();
    let mut s = small_state();
    s.pds = vec![1, 1 + lim.max_pd];
    for r in validate_and_restore(&s, &lim) {
        invalid_saying(r, "PD number 65537 is outside");
    }
}

#[test]
fn a_huge_claimed_length_is_not_preallocated_by_the_decoder() {
    // The PD section of a one-PD VF is postcard's [1, 1]: a count, then the number. Claim
    // 2^32 - 1 PDs in a blob of a few hundred bytes, checksums made to match.
    let a = checkpoint::encode(&small_state(), codec::BINARY);
    let (_, mut parts) = sections(&a).unwrap();
    let pds = parts.iter_mut().find(|p| p.0 == SectionKind::Pds).unwrap();
    assert_eq!(pds.2, [1, 1], "the PD section");
    pds.2 = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 1];
    let blob = reassemble(codec::BINARY, false, &parts);
    let (r, bytes) = counting(|| checkpoint::decode(&blob).map(drop));
    assert!(matches!(r, Err(CheckpointError::Decode(_))), "{r:?}");
    // serde preallocates at most 1 MiB per collection whatever length is claimed.
    assert!(
        bytes <= 2 << 20,
        "{bytes} bytes to decode a {}-byte blob",
        blob.len()
    );
    // The same claim in a v1 blob (one payload after a 16-byte header): the first byte that
    // differs between the fixture and the fixture with one more PD is the PD count.
    let v1 = fixture("checkpoint-v1.bin");
    let (_, mut more) = checkpoint::decode_v1(&v1).unwrap();
    more.pds.push(2);
    let b = checkpoint::encode_v1(&more, codec::BINARY).unwrap();
    let at = (HEADER_LEN..v1.len()).find(|&i| v1[i] != b[i]).unwrap();
    assert_eq!((v1[at], b[at]), (1, 2), "the PD count");
    let mut p = v1[HEADER_LEN..].to_vec();
    let at = at - HEADER_LEN;
    p.splice(at..at + 1, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    let (r, bytes) = counting(|| checkpoint::decode(&sealed_v1(&p, codec::BINARY)).map(drop));
    assert!(matches!(r, Err(CheckpointError::Decode(_))), "{r:?}");
    assert!(bytes <= 2 << 20, "{bytes} bytes for a v1 blob");
}

fn reassemble(c: &dyn Codec, delta: bool, parts: &[(SectionKind, u32, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(SectionKind, u32, &[u8])> = parts
        .iter()
        .map(|(k, n, b)| (*k, *n, b.as_slice()))
        .collect();
    assemble(c, delta, &refs)
}

#[test]
fn ah_number_u32_max_and_qpn_0xffffff_are_refused_by_validate_and_restore() {
    let lim = VfLimits::default();
    let mut s = busy_state();
    s.ahs[0].0 = u32::MAX;
    for r in validate_and_restore(&s, &lim) {
        invalid_saying(r, "AH number 4294967295 is outside");
    }
    let mut s = busy_state();
    s.qps[0].qpn = Qpn(0xff_ffff);
    for r in validate_and_restore(&s, &lim) {
        invalid_saying(r, "QP number 16777215 is outside 17..65553");
    }
    // Even a destination allowing every QPN: 24 bits is the wire's bound.
    let wide = VfLimits {
        max_qp: u32::MAX - 17,
        ..lim
    };
    let mut s = busy_state();
    s.identity.limits = wide;
    s.qps[0].qpn = Qpn(1 << 24);
    for r in validate_and_restore(&s, &wide) {
        invalid_saying(r, "beyond 24 bits");
    }
}

#[test]
fn a_qp_at_the_top_of_its_range_restores_and_costs_a_pointer_per_number() {
    let lim = VfLimits::default();
    let mut s = busy_state();
    let top = 17 + lim.max_qp - 1;
    s.qps[0].qpn = Qpn(top);
    let (vf, bytes) = counting(|| checkpoint::restore(s.clone(), mem(), Nanos(0), &lim));
    let mut vf = vf.unwrap();
    assert!(vf.qp(Qpn(top)).is_some());
    // 65553 boxed slots and the free list of the numbers below: well under 2 MiB, where
    // 65553 inline QPs would take tens of MiB.
    assert!(bytes < 2 << 20, "{bytes} bytes for one QP at QPN {top}");
    // The numbers below it are handed out afterwards; the table never grows past its range.
    let pd = PdHandle(s.pds[0]);
    let cq = CqHandle(s.cqs[0].0);
    let init = QpInitAttr {
        qp_type: QpType::Ud,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap::default(),
        sq_sig_all: false,
    };
    assert_eq!(vf.create_qp(init).unwrap(), Qpn(17));
}

#[test]
fn limits_above_the_destination_policy_are_refused() {
    let dest = VfLimits::default();
    type Raise = fn(&mut VfLimits);
    let raise: [(&str, Raise); 15] = [
        ("max_qp", |l| l.max_qp = u32::MAX),
        ("max_qp_wr", |l| l.max_qp_wr = u32::MAX),
        ("max_sge", |l| l.max_sge = u32::MAX),
        ("max_inline_data", |l| l.max_inline_data = u32::MAX),
        ("max_cq", |l| l.max_cq = u32::MAX),
        ("max_cqe", |l| l.max_cqe = u32::MAX),
        ("max_mr", |l| l.max_mr = u32::MAX),
        ("max_mr_size", |l| l.max_mr_size = u64::MAX),
        ("max_pd", |l| l.max_pd = u32::MAX),
        ("max_srq", |l| l.max_srq = u32::MAX),
        ("max_srq_wr", |l| l.max_srq_wr = u32::MAX),
        ("max_ah", |l| l.max_ah = u32::MAX),
        ("max_qp_rd_atom", |l| l.max_qp_rd_atom = u8::MAX),
        ("max_qp_init_rd_atom", |l| l.max_qp_init_rd_atom = u8::MAX),
        ("max_msg_sz", |l| l.max_msg_sz = u32::MAX),
    ];
    for (name, f) in raise {
        let mut s = busy_state();
        f(&mut s.identity.limits);
        for r in validate_and_restore(&s, &dest) {
            invalid_saying(r, &format!("limit {name} "));
        }
        // A destination whose policy is as generous takes it: the policy decides.
        let mut generous = dest;
        f(&mut generous);
        assert_eq!(
            validate_and_restore(&s, &generous),
            [Ok(()), Ok(())],
            "{name}"
        );
    }
    // A destination stricter than the blob's VF refuses it too.
    let strict = VfLimits { max_cq: 8, ..dest };
    for r in validate_and_restore(&busy_state(), &strict) {
        invalid_saying(r, "limit max_cq 65536 is above the destination's 8");
    }
}

#[test]
fn golden_v1_fixtures_load_and_save_as_their_upgrade() {
    for name in ["checkpoint-v1.bin", "checkpoint-v1.json"] {
        let blob = fixture(name);
        let (h, s) = checkpoint::decode(&blob).unwrap();
        assert_eq!(checkpoint::validate(&s, &VfLimits::default()), Ok(()));
        let vf = checkpoint::load(&blob, mem(), Nanos(0)).unwrap();
        assert_eq!(
            checkpoint::save(&vf, Nanos(0), h.codec),
            checkpoint::encode(&s, h.codec),
            "{name}"
        );
    }
}

/// A v1 blob with `payload` and a correct header: mutations get past the CRC to the decoder
/// and the checks.
fn sealed_v1(payload: &[u8], codec: &dyn Codec) -> Vec<u8> {
    let mut b = fixture("checkpoint-v1.bin")[..HEADER_LEN].to_vec();
    b[6] = codec.id();
    b[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// A v2 JSON blob whose sections are the fields of `v`, the JSON of a `VfStateV2` (perhaps
/// mutated into something no save would write): numbers the wire structs cannot hold reach
/// the decoder, the rest the checks.
fn sealed_v2_json(v: &serde_json::Value) -> Vec<u8> {
    let count = |x: &serde_json::Value| x.as_array().map_or(1, |a| a.len()) as u32;
    let mut parts = Vec::new();
    for (kind, field) in [
        (SectionKind::Identity, "identity"),
        (SectionKind::Pds, "pds"),
        (SectionKind::Mrs, "mrs"),
        (SectionKind::Cqs, "cqs"),
        (SectionKind::Srqs, "srqs"),
        (SectionKind::Ahs, "ahs"),
        (SectionKind::Qps, "qps"),
        (SectionKind::Events, "events"),
        (SectionKind::Counters, "counters"),
    ] {
        let x = &v[field];
        parts.push((kind, count(x), serde_json::to_vec(x).unwrap()));
    }
    reassemble(codec::JSON, false, &parts)
}

/// Numbers worth putting anywhere: limits and their neighbours, 24- and 32-bit edges.
fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(16),
        Just(17),
        Just(31),
        Just(32),
        Just(64),
        Just(65_536),
        Just(65_537),
        Just(65_552),
        Just(65_553),
        Just(0xff_ffff),
        Just(1 << 24),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 + 1),
        Just(4_000_000_000),
        any::<u32>().prop_map(u64::from),
        any::<u64>(),
    ]
}

/// Replaces the `k`-th number (in document order, modulo how many there are) of a JSON value.
fn replace_number(v: &mut serde_json::Value, k: usize, x: u64) {
    fn count(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Number(_) => 1,
            serde_json::Value::Array(a) => a.iter().map(count).sum(),
            serde_json::Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut serde_json::Value, k: &mut usize, x: u64) -> bool {
        match v {
            serde_json::Value::Number(_) => {
                if *k == 0 {
                    *v = x.into();
                    return true;
                }
                *k -= 1;
                false
            }
            serde_json::Value::Array(a) => a.iter_mut().any(|e| walk(e, k, x)),
            serde_json::Value::Object(o) => o.values_mut().any(|e| walk(e, k, x)),
            _ => false,
        }
    }
    let n = count(v);
    if n > 0 {
        let mut k = k % n;
        walk(v, &mut k, x);
    }
}

/// The property: on any blob, `validate` (what `vhca state validate` runs) and a destination's
/// load agree, with the same error, and neither panics. A VF that loaded is driven a little
/// (resume, transmit, timers) to show the state it accepted is one the transport can run.
fn agree(blob: &[u8]) {
    let lim = VfLimits::default();
    let v = checkpoint::decode(blob).and_then(|(_, s)| checkpoint::validate(&s, &lim));
    let r = checkpoint::load_with_limits(blob, mem(), Nanos(0), &lim);
    assert_eq!(v.is_ok(), r.is_ok());
    assert_eq!(v.as_ref().err(), r.as_ref().err());
    if let Ok(mut vf) = r {
        vf.resume(Nanos(0));
        for t in [0u64, 1_000_000, 1_000_000_000] {
            vf.handle_timeout(Nanos(t));
            for _ in 0..64 {
                if vf.poll_transmit(Nanos(t)).is_none() {
                    break;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Numbers anywhere in the state (object numbers, references, counts, sizes, PSNs,
    /// lengths) replaced by edge values, in both codecs.
    #[test]
    fn validate_and_restore_agree_on_mutated_numbers(
        edits in proptest::collection::vec((any::<usize>(), interesting()), 1..4),
        json in any::<bool>(),
    ) {
        let mut v = serde_json::to_value(busy_state()).unwrap();
        for (k, x) in edits {
            replace_number(&mut v, k, x);
        }
        // A number the schema cannot hold (a u64 in a u8) fails to decode: also a case.
        agree(&sealed_v2_json(&v));
        if let (false, Ok(s)) = (json, serde_json::from_value::<VfStateV2>(v)) {
            agree(&checkpoint::encode(&s, codec::BINARY));
        }
    }

    /// Bytes of a v1 binary payload overwritten, inserted or removed, the CRC made to match.
    #[test]
    fn validate_and_restore_agree_on_mutated_v1_bytes(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let blob = fixture("checkpoint-v1.bin");
        let mut p = blob[HEADER_LEN..].to_vec();
        mutate(&mut p, &edits);
        agree(&sealed_v1(&p, codec::BINARY));
    }

    /// Bytes of one section of a v2 blob, in any codec, overwritten, inserted or removed, the
    /// checksums made to match.
    #[test]
    fn validate_and_restore_agree_on_mutated_v2_sections(
        which in any::<usize>(),
        c in 0..codec::all().len(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let c = codec::all()[c];
        let blob = checkpoint::encode(&busy_state(), c);
        let (_, mut parts) = sections(&blob).unwrap();
        let n = parts.len();
        mutate(&mut parts[which % n].2, &edits);
        agree(&reassemble(c, false, &parts));
    }
}

fn mutate(p: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
    for &(at, byte, how) in edits {
        let i = at % (p.len() + 1);
        match how {
            0 if i < p.len() => p[i] = byte,
            1 => p.insert(i, byte),
            _ if i < p.len() => {
                p.remove(i);
            }
            _ => p.push(byte),
        }
    }
}
