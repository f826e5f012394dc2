//! `vhca state`: inspect, convert, diff and validate checkpoint files (here), and the
//! experimenter's workbench around them, one module each:
//!
//! * [`sizes`]: where a checkpoint's bytes go, by section kind and by part of a QP.
//! * [`stats`]: `vhca state stats`, those sizes for one file.
//! * [`idle_vf`]: a VF of N idle connected RC QPs, made through the verbs API.
//! * [`bench`]: `vhca state bench`, every codec on such VFs: bytes, times, migration cost.
//! * [`export`]: `vhca state export` and `vhca state schema`, a checkpoint as one JSON
//!   document and the JSON Schema it follows.

pub mod bench;
pub mod export;
pub mod idle_vf;
pub mod sizes;
pub mod stats;

use serde_json::Value;
use std::fmt::Write as _;
use thiserror::Error;
use vhca_device::checkpoint::{self, CheckpointError, CheckpointV2, Codec, VfStateV2};
use vhca_device::VfLimits;

/// Why a checkpoint could not be compared or made.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// A decoded state that does not encode as JSON (it would compare as nothing).
    #[error("encoding the state as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The sample's workload could not be set up.
    #[error("setting up the sample's traffic: {0}")]
    Sample(#[from] vhca_device::VerbsError),
    /// The benchmark's VF could not be built through the verbs API.
    #[error("building a VF of {qps} idle RC QPs: {source}")]
    IdleVf {
        qps: u32,
        #[source]
        source: vhca_device::VerbsError,
    },
}

/// A one-screen summary of a checkpoint.
pub fn inspect(blob: &[u8]) -> Result<String, CheckpointError> {
    let (h, c) = checkpoint::decode_any(blob)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vhca checkpoint: format version {}, codec {}, {} bytes after the header{}",
        h.version,
        h.codec.name(),
        h.payload_len,
        if h.sections.is_empty() {
            String::new()
        } else {
            format!(", {} sections", h.sections.len())
        }
    );
    let s = match &c {
        CheckpointV2::Full(s) => s,
        CheckpointV2::Delta(d) => {
            let _ = writeln!(
                out,
                "delta against base {}: {} objects of the base removed",
                hex(&d.base.digest),
                d.removed.count()
            );
            &d.changed
        }
    };
    let id = &s.identity;
    let _ = writeln!(
        out,
        "VF: GID {} MAC {} node GUID {:016x} port MTU {}",
        id.gid,
        id.mac,
        id.node_guid.0,
        id.port_mtu.bytes()
    );
    let _ = writeln!(
        out,
        "objects: {} PDs, {} MRs, {} CQs, {} SRQs, {} AHs, {} QPs; {} async events and {} CQ events pending",
        s.pds.len(),
        s.mrs.len(),
        s.cqs.len(),
        s.srqs.len(),
        s.ahs.len(),
        s.qps.len(),
        s.events.async_events.len(),
        s.events.cq_events.len()
    );
    for q in &s.qps {
        let _ = writeln!(
            out,
            "  QP {:#08x} {:?} {:?} -> {} QP {:#08x}: sq_psn {} una {} epsn {} msn {}, {} send / {} recv WQEs, {} responses owed",
            q.qpn.0,
            q.qp_type(),
            q.state(),
            q.attr.ah_attr.dgid,
            q.attr.dest_qp_num.0,
            q.req.psn,
            q.req.una,
            q.resp.epsn,
            q.resp.msn.0,
            q.req.sq.len(),
            q.rq.len(),
            q.resp.out.len()
        );
    }
    match &c {
        CheckpointV2::Delta(_) => out.push_str("valid: only with its base (a delta)\n"),
        CheckpointV2::Full(s) => match checkpoint::validate(s, &VfLimits::default()) {
            Ok(()) => out.push_str("valid: yes\n"),
            Err(e) => {
                let _ = writeln!(out, "valid: NO: {e}");
            }
        },
    }
    Ok(out)
}

/// Lower-case hex of a digest.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Re-encodes a checkpoint with another codec, as v2 (a full state is validated first; a
/// delta cannot be without its base and is re-encoded as it is).
pub fn convert(blob: &[u8], to: &'static dyn Codec) -> Result<Vec<u8>, CheckpointError> {
    match checkpoint::decode_any(blob)?.1 {
        CheckpointV2::Full(s) => {
            checkpoint::validate(&s, &VfLimits::default())?;
            checkpoint::container::encode_full(&s, to)
        }
        CheckpointV2::Delta(d) => checkpoint::container::encode_delta(&d, to),
    }
}

/// Turns a v1 checkpoint into v2, in the same codec unless `to` names another. The state is
/// validated first: an upgrade never produces a v2 blob that would not load.
pub fn upgrade(blob: &[u8], to: Option<&'static dyn Codec>) -> Result<Vec<u8>, CheckpointError> {
    let (h, v1) = checkpoint::decode_v1(blob)?;
    let s = VfStateV2::from(v1);
    checkpoint::validate(&s, &VfLimits::default())?;
    checkpoint::container::encode_full(&s, to.unwrap_or(h.codec))
}

/// Whether the blob would restore on a destination with the default limits (a real restore
/// into a scratch VF: what `vhca migrate` would accept). A delta is refused: it needs its
/// base.
pub fn validate(blob: &[u8]) -> Result<(), CheckpointError> {
    let (_, s) = checkpoint::decode(blob)?;
    checkpoint::validate(&s, &VfLimits::default())
}

fn to_value(s: &VfStateV2) -> Result<Value, serde_json::Error> {
    serde_json::to_value(s)
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => walk(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k}: only in the first")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: only in the second"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(&format!("{path}[{i}]"), va, vb, out),
                    (Some(_), None) => out.push(format!("{path}[{i}]: only in the first")),
                    (None, Some(_)) => out.push(format!("{path}[{i}]: only in the second")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// The fields that differ between two checkpoints, as JSON paths.
pub fn diff(a: &[u8], b: &[u8]) -> Result<Vec<String>, StateError> {
    let (_, sa) = checkpoint::decode(a)?;
    let (_, sb) = checkpoint::decode(b)?;
    let mut out = Vec::new();
    walk("", &to_value(&sa)?, &to_value(&sb)?, &mut out);
    Ok(out)
}

/// A checkpoint of a VF in the middle of RC traffic: a small fixed demo plan run for a moment
/// of virtual time, then pf0/vf0 saved. For trying the tools.
pub fn sample(codec: &'static dyn Codec) -> Result<Vec<u8>, StateError> {
    use rand::SeedableRng;
    use vhca_fabric::{World, WorldConfig};
    let mut plan = crate::demo::plan(50);
    // The opcodes of the v1 fixtures' day: the sample must stay the state they hold.
    for rc in plan.rc.iter_mut() {
        rc.all_ops = false;
        rc.local_keys = false;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut w = World::new(WorldConfig {
        latency_ns: 1_000,
        vf_mem_bytes: plan.vf_mem_bytes,
        ..Default::default()
    });
    let mut c = crate::sim::check::Checker::default();
    let mut flows = crate::sim::flow::build(&mut w, &plan, &mut rng)?;
    for _ in 0..40 {
        for f in flows.iter_mut() {
            f.post_ready(&mut w, &mut rng, &mut c);
        }
        w.step();
        if let Some(t) = w.next_event() {
            w.now = w.now.max(t);
        }
    }
    let a = w.vfs()[0];
    Ok(checkpoint::save(w.vf(a), w.now, codec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpoint::codec::{BINARY, JSON};

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../device/tests/fixtures");
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn inspect_convert_diff_validate_on_a_live_checkpoint() {
        let bin = sample(BINARY).unwrap();
        assert_eq!(checkpoint::header(&bin).unwrap().version, 2);
        let text = inspect(&bin).unwrap();
        assert!(text.contains("valid: yes"), "{text}");
        assert!(text.contains("QP 0x000011"), "{text}");
        for to in checkpoint::codec::all() {
            let other = convert(&bin, *to).unwrap();
            assert_eq!(checkpoint::header(&other).unwrap().codec.name(), to.name());
            assert_eq!(
                diff(&bin, &other).unwrap(),
                Vec::<String>::new(),
                "same state, codec {}",
                to.name()
            );
            assert_eq!(
                convert(&other, BINARY).unwrap(),
                bin,
                "binary -> {} -> binary is exact",
                to.name()
            );
        }
        let json = convert(&bin, JSON).unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\"node_guid\""));
        let mut later = checkpoint::decode(&bin).unwrap().1;
        later.qps[0].req.psn = vhca_device::Psn(later.qps[0].req.psn.0 ^ 1);
        let d = diff(&bin, &checkpoint::encode(&later, BINARY)).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with(".qps[0].req.psn"), "{d:?}");
        let mut bad = bin.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(validate(&bad).is_err());
        assert!(validate(&bin).is_ok());
        // A number restore could not place (issue 9): validate refuses it too.
        let mut huge = checkpoint::decode(&bin).unwrap().1;
        huge.cqs.push((4_000_000_000, huge.cqs[0].1.clone()));
        assert!(validate(&checkpoint::encode(&huge, BINARY)).is_err());
    }

    /// The v1 sample fixtures (what the code before the wire structs wrote for this very
    /// sample) upgrade to exactly the v2 state the sample saves today, in both codecs.
    #[test]
    fn the_v1_sample_upgrades_to_the_v2_sample() {
        let now = checkpoint::decode(&sample(BINARY).unwrap()).unwrap().1;
        for (codec, name) in [
            (BINARY, "checkpoint-v1-sample.bin"),
            (JSON, "checkpoint-v1-sample.json"),
        ] {
            let old = fixture(name);
            assert_eq!(checkpoint::header(&old).unwrap().version, 1);
            let up = upgrade(&old, None).unwrap();
            let h = checkpoint::header(&up).unwrap();
            assert_eq!((h.version, h.codec.name()), (2, codec.name()), "{name}");
            assert!(checkpoint::decode(&up).unwrap().1 == now, "{name}");
            assert!(
                checkpoint::decode(&old).unwrap().1 == now,
                "{name} read directly"
            );
            assert_eq!(
                upgrade(&old, Some(BINARY)).unwrap(),
                sample(BINARY).unwrap()
            );
            // Upgrading a v2 blob is refused: it is not v1.
            assert!(upgrade(&up, None).is_err());
        }
    }
}
