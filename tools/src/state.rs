//! `vhca state`: inspect, convert, diff and validate checkpoint files.

use serde_json::Value;
use std::fmt::Write as _;
use thiserror::Error;
use vhca_device::checkpoint::{self, CheckpointError, Codec, VfStateV1};
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
}

/// A one-screen summary of a checkpoint.
pub fn inspect(blob: &[u8]) -> Result<String, CheckpointError> {
    let (h, s) = checkpoint::decode(blob)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vhca checkpoint: format version {}, codec {:?}, {} payload bytes, crc32 {:08x}",
        h.version, h.codec, h.payload_len, h.crc32
    );
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
        s.async_events.len(),
        s.cq_events.len()
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
    match checkpoint::validate(&s, &VfLimits::default()) {
        Ok(()) => out.push_str("valid: yes\n"),
        Err(e) => {
            let _ = writeln!(out, "valid: NO: {e}");
        }
    }
    Ok(out)
}

/// Re-encodes a checkpoint with another codec (the state is validated first).
pub fn convert(blob: &[u8], to: Codec) -> Result<Vec<u8>, CheckpointError> {
    let (_, s) = checkpoint::decode(blob)?;
    checkpoint::validate(&s, &VfLimits::default())?;
    Ok(checkpoint::encode(&s, to))
}

/// Whether the blob would restore on a destination with the default limits (a real restore
/// into a scratch VF: what `vhca migrate` would accept).
pub fn validate(blob: &[u8]) -> Result<(), CheckpointError> {
    let (_, s) = checkpoint::decode(blob)?;
    checkpoint::validate(&s, &VfLimits::default())
}

fn to_value(s: &VfStateV1) -> Result<Value, serde_json::Error> {
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
pub fn sample(codec: Codec) -> Result<Vec<u8>, StateError> {
    use rand::SeedableRng;
    use vhca_fabric::{World, WorldConfig};
    let plan = crate::demo::plan(50);
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

    #[test]
    fn inspect_convert_diff_validate_on_a_live_checkpoint() {
        let bin = sample(Codec::Binary).unwrap();
        let text = inspect(&bin).unwrap();
        assert!(text.contains("valid: yes"), "{text}");
        assert!(text.contains("QP 0x000011"), "{text}");
        let json = convert(&bin, Codec::Json).unwrap();
        assert!(std::str::from_utf8(&json[checkpoint::HEADER_LEN..])
            .unwrap()
            .contains("\"identity\""));
        assert_eq!(
            diff(&bin, &json).unwrap(),
            Vec::<String>::new(),
            "same state, other codec"
        );
        let back = convert(&json, Codec::Binary).unwrap();
        assert_eq!(back, bin, "binary -> JSON -> binary is exact");
        let mut later = checkpoint::decode(&bin).unwrap().1;
        later.qps[0].req.psn = vhca_device::Psn(later.qps[0].req.psn.0 ^ 1);
        let d = diff(&bin, &checkpoint::encode(&later, Codec::Binary)).unwrap();
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
        assert!(validate(&checkpoint::encode(&huge, Codec::Binary)).is_err());
    }

    /// The sample (a VF mid-traffic, saved through the v1 wire structs) is byte for byte what
    /// the code before them wrote, which serialized the live types: the fixtures are its bytes.
    #[test]
    fn the_sample_saves_as_before_the_wire_structs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../device/tests/fixtures");
        for (codec, name) in [
            (Codec::Binary, "checkpoint-v1-sample.bin"),
            (Codec::Json, "checkpoint-v1-sample.json"),
        ] {
            let old = std::fs::read(dir.join(name)).unwrap();
            assert!(sample(codec).unwrap() == old, "{name}");
        }
    }
}
