//! Codecs: how a section's wire structs become bytes.
//!
//! A codec is one file in this directory implementing [`Codec`], and one name in the
//! `codecs!` list below. That is all: `vhca state convert --to NAME`, the round-trip
//! property tests over generated VF states (`device/tests/checkpoint_codecs.rs`) and
//! `vhca state bench` all iterate [`all`]. The trait is object-safe through `erased-serde`,
//! so a codec is a value in a list rather than a type parameter threaded through every caller.
//!
//! A codec decodes untrusted bytes: it must return an error, never panic, and never allocate
//! more than the bytes it has actually decoded justify (serde's sequence visitors already cap
//! what a length prefix preallocates; a decompressing codec caps its output at
//! [`MAX_SECTION_LEN`]).

use super::CheckpointError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest section payload a codec produces or accepts once decoded (bytes), far above any
/// real VF: 16,384 QPs with full queues are tens of megabytes.
pub const MAX_SECTION_LEN: usize = 1 << 30;

/// A visitor handed the codec's deserializer; it deserializes the value it wants from it.
pub type Visit<'v> =
    dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> + 'v;

/// One way of turning the wire structs into bytes and back.
pub trait Codec: Sync {
    /// The byte in a blob's header that names this codec. Never reused.
    fn id(&self) -> u8;
    /// The name `vhca state` takes (`--to NAME`) and prints.
    fn name(&self) -> &'static str;
    /// One line: what the codec is and what it teaches.
    fn about(&self) -> &'static str;
    /// Encodes one value.
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String>;
    /// Decodes one value from all of `bytes`: `visit` deserializes it from the codec's
    /// deserializer; bytes left over afterwards are an error.
    fn decode(&self, bytes: &[u8], visit: &mut Visit<'_>) -> Result<(), String>;
}

impl std::fmt::Debug for dyn Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for dyn Codec {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

/// Declares the codec modules and the list [`all`] returns, in ID order.
macro_rules! codecs {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*
        /// Every codec this build has.
        pub fn all() -> &'static [&'static dyn Codec] {
            static ALL: &[&dyn Codec] = &[$(&$module::CODEC),*];
            ALL
        }
    };
}

codecs!(binary, json, cbor, lz4);

/// postcard: what migration sends.
pub const BINARY: &dyn Codec = &binary::CODEC;
/// JSON: what people and outside tools read.
pub const JSON: &dyn Codec = &json::CODEC;

/// The codec with header byte `id`.
pub fn by_id(id: u8) -> Option<&'static dyn Codec> {
    all().iter().copied().find(|c| c.id() == id)
}

/// The codec called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Codec> {
    all().iter().copied().find(|c| c.name() == name)
}

/// Encodes `value` with `codec`. The wire structs are plain data, so an error here is a codec
/// that cannot express them (a bug), still reported.
pub fn encode_value<T: Serialize>(
    codec: &dyn Codec,
    value: &T,
) -> Result<Vec<u8>, CheckpointError> {
    codec
        .encode(value)
        .map_err(|e| CheckpointError::Encode(format!("{}: {e}", codec.name())))
}

/// Decodes a `T` from all of `bytes` with `codec`.
pub fn decode_value<T: DeserializeOwned>(
    codec: &dyn Codec,
    bytes: &[u8],
) -> Result<T, CheckpointError> {
    let mut out = None;
    codec
        .decode(bytes, &mut |d| {
            out = Some(erased_serde::deserialize::<T>(d)?);
            Ok(())
        })
        .map_err(CheckpointError::Decode)?;
    out.ok_or_else(|| CheckpointError::Decode(format!("{}: no value", codec.name())))
}
