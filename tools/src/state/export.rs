//! `vhca state export` and `vhca state schema`: any checkpoint as one JSON document, and the
//! JSON Schema that document follows, so tools outside vhca read states without knowing the
//! container, the codecs or v1.
//!
//! The document is `CheckpointV2` through serde_json: `{"Full": VfStateV2}` or
//! `{"Delta": DeltaV2}`, each object in the JSON codec's form. The schema is generated from the
//! same types (schemars), so it cannot drift from what export prints.

use super::StateError;
use vhca_device::checkpoint::{self, CheckpointV2};

/// The checkpoint in `blob` (v1 or v2, any codec, full or delta) as one pretty JSON document.
/// Checksums are checked; the contents are not judged (a delta has no base here).
pub fn export(blob: &[u8]) -> Result<String, StateError> {
    let (_, c) = checkpoint::decode_any(blob)?;
    Ok(serde_json::to_string_pretty(&c)?)
}

/// The JSON Schema (draft 2020-12) of what [`export`] prints.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(CheckpointV2)
}

/// [`schema`] as pretty JSON.
pub fn schema_text() -> Result<String, StateError> {
    Ok(serde_json::to_string_pretty(&schema())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpoint::codec::BINARY;

    /// Export reads every codec to the same document, and the document is the state.
    #[test]
    fn every_codec_exports_the_same_document() {
        let bin = crate::state::sample(BINARY).unwrap();
        let doc = export(&bin).unwrap();
        let back: CheckpointV2 = serde_json::from_str(&doc).unwrap();
        assert_eq!(
            back,
            CheckpointV2::Full(checkpoint::decode(&bin).unwrap().1)
        );
        for codec in checkpoint::codec::all() {
            let other = crate::state::convert(&bin, *codec).unwrap();
            assert_eq!(export(&other).unwrap(), doc, "{}", codec.name());
        }
    }

    #[test]
    fn the_schema_names_the_wire_structs() {
        let s = serde_json::to_value(schema()).unwrap();
        let defs = s["$defs"].as_object().expect("$defs");
        for name in ["VfStateV2", "QpStateV2", "DeltaV2", "RequesterStateV2"] {
            assert!(defs.contains_key(name), "{name} missing: {:?}", defs.keys());
        }
    }
}
