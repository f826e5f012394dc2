//! Codecs: how a section's wire structs become bytes.
//!
//! A codec is one file in this directory implementing [`Format`] (its id, name, a line about
//! it, and two generic functions: a serde value to bytes and back), and one name in the
//! `codecs!` list below. That is all: `vhca state convert --to NAME`, the round-trip property
//! tests over generated VF states (`device/tests/checkpoint_v2.rs`) and `vhca state bench` all
//! iterate [`all`].
//!
//! Every [`Format`] is a [`Codec`], the object-safe face the rest of vhca holds (`&dyn
//! Codec`, a value in a list rather than a type parameter threaded through every caller). The
//! types a checkpoint holds at its top level are listed once ([`WireValue`]); a codec encodes
//! and decodes those monomorphized, so the hot path (a destination decoding 16,384 QPs in the
//! blackout) pays no dynamic dispatch per field. Any other serde value (the tools measure
//! parts of a QP) goes through erased-serde, slower and fine for tools.
//!
//! A codec decodes untrusted bytes: it must return an error, never panic, refuse bytes left
//! over after the value, and never allocate more than the bytes it has actually decoded
//! justify (serde's sequence visitors already cap what a length prefix preallocates; a
//! decompressing codec caps its output at [`MAX_SECTION_LEN`]).

use super::v1::VfStateV1;
use super::v2::*;
use super::windows::{FastRegStateV2, MwStateV2};
use super::CheckpointError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest section payload a codec produces or accepts once decoded (bytes), far above any
/// real VF: 16,384 QPs with full queues are tens of megabytes.
pub const MAX_SECTION_LEN: usize = 1 << 30;

/// What a codec author writes: one serde value to bytes, and back from all of the bytes.
pub trait Format: Sync + 'static {
    /// The byte in a blob's header that names this codec. Never reused.
    const ID: u8;
    /// The name `vhca state` takes (`--to NAME`) and prints.
    const NAME: &'static str;
    /// One line: what the codec is and what it teaches.
    const ABOUT: &'static str;
    fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String>;
    /// Decodes a `T` from all of `bytes`; bytes left over are an error.
    fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String>;
}

/// Declares the top-level wire types: `Name(RefType => OwnedType)`.
macro_rules! wire {
    ($($name:ident($r:ty => $t:ty)),* $(,)?) => {
        /// Which top-level wire type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Wire { $($name),* }
        /// A decoded top-level wire value.
        // Moved once, from a decoder to its caller: boxing the large variants buys nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum WireValue { $($name($t)),* }
        /// A top-level wire value to encode.
        #[derive(Clone, Copy, Debug)]
        pub enum WireRef<'a> { $($name(&'a $r)),* }
        $(
            impl WireType for $t {
                const WIRE: Wire = Wire::$name;
                fn wire_ref(&self) -> WireRef<'_> {
                    WireRef::$name(self)
                }
                fn from_wire(v: WireValue) -> Option<Self> {
                    match v {
                        WireValue::$name(x) => Some(x),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*
        fn encode_typed<F: Format>(v: WireRef<'_>) -> Result<Vec<u8>, String> {
            match v { $(WireRef::$name(x) => F::to_bytes(x)),* }
        }
        fn decode_typed<F: Format>(w: Wire, b: &[u8]) -> Result<WireValue, String> {
            match w { $(Wire::$name => F::from_bytes::<$t>(b).map(WireValue::$name)),* }
        }
    };
}

wire!(
    Identity(IdentityStateV2 => IdentityStateV2),
    Base(BaseStateV2 => BaseStateV2),
    Removed(RemovedStateV2 => RemovedStateV2),
    Numbers([u32] => Vec<u32>),
    Mrs([(u32, MrStateV2)] => Vec<(u32, MrStateV2)>),
    Cqs([(u32, CqStateV2)] => Vec<(u32, CqStateV2)>),
    Srqs([(u32, SrqStateV2)] => Vec<(u32, SrqStateV2)>),
    Ahs([(u32, AhStateV2)] => Vec<(u32, AhStateV2)>),
    Qps([QpStateV2] => Vec<QpStateV2>),
    Events(EventsStateV2 => EventsStateV2),
    Counters(CountersStateV2 => CountersStateV2),
    Mws([(u32, MwStateV2)] => Vec<(u32, MwStateV2)>),
    FastRegMrs([(u32, FastRegStateV2)] => Vec<(u32, FastRegStateV2)>),
    StateV1(VfStateV1 => VfStateV1),
);

/// A top-level wire type: what [`decode_value`] returns and [`encode_wire`] takes.
pub trait WireType: Sized {
    const WIRE: Wire;
    fn wire_ref(&self) -> WireRef<'_>;
    fn from_wire(v: WireValue) -> Option<Self>;
}

/// One way of turning the wire structs into bytes and back, as the rest of vhca holds it.
pub trait Codec: Sync {
    fn id(&self) -> u8;
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// Encodes a top-level wire value.
    fn encode_wire(&self, v: WireRef<'_>) -> Result<Vec<u8>, String>;
    /// Decodes a top-level wire value of type `w` from all of `bytes`.
    fn decode_wire(&self, w: Wire, bytes: &[u8]) -> Result<WireValue, String>;
    /// Encodes any other serde value (through erased-serde).
    fn encode_any(&self, v: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String>;
}

impl<F: Format> Codec for F {
    fn id(&self) -> u8 {
        F::ID
    }
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn about(&self) -> &'static str {
        F::ABOUT
    }
    fn encode_wire(&self, v: WireRef<'_>) -> Result<Vec<u8>, String> {
        encode_typed::<F>(v)
    }
    fn decode_wire(&self, w: Wire, bytes: &[u8]) -> Result<WireValue, String> {
        decode_typed::<F>(w, bytes)
    }
    fn encode_any(&self, v: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
        F::to_bytes(v)
    }
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

fn encode_error(codec: &dyn Codec, e: String) -> CheckpointError {
    CheckpointError::Encode(format!("{}: {e}", codec.name()))
}

/// Encodes a top-level wire value with `codec`. The wire structs are plain data, so an error
/// here is a codec that cannot express them (a bug), still reported.
pub fn encode_wire(codec: &dyn Codec, v: WireRef<'_>) -> Result<Vec<u8>, CheckpointError> {
    codec.encode_wire(v).map_err(|e| encode_error(codec, e))
}

/// Encodes any serde value with `codec` (through erased-serde; the tools' measurements).
pub fn encode_value<T: Serialize>(
    codec: &dyn Codec,
    value: &T,
) -> Result<Vec<u8>, CheckpointError> {
    codec.encode_any(value).map_err(|e| encode_error(codec, e))
}

/// Decodes a top-level wire value from all of `bytes` with `codec`.
pub fn decode_value<T: WireType>(codec: &dyn Codec, bytes: &[u8]) -> Result<T, CheckpointError> {
    let v = codec
        .decode_wire(T::WIRE, bytes)
        .map_err(CheckpointError::Decode)?;
    T::from_wire(v)
        .ok_or_else(|| CheckpointError::Decode(format!("{}: another type", codec.name())))
}
