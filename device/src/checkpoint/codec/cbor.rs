//! CBOR (RFC 8949): a self-describing binary. Every struct carries its field names, as JSON
//! does, but integers and byte strings are binary: what self-description costs over postcard,
//! and what it saves over JSON, is the lesson (`vhca state bench`).

use super::Format;
use cbor4ii::core::dec::{Read, Reference};

pub(super) struct Cbor;
pub(super) static CODEC: Cbor = Cbor;

/// Nesting deeper than this is refused: the wire structs nest a handful of levels, and a
/// hostile blob must not recurse the stack away.
const MAX_DEPTH: usize = 64;

/// A slice reader that bounds the nesting depth and tells what is left after the value.
struct Bytes<'a> {
    rest: &'a [u8],
    depth: usize,
}

impl<'de> Read<'de> for Bytes<'de> {
    type Error = std::convert::Infallible;

    fn fill<'short>(&'short mut self, want: usize) -> Result<Reference<'de, 'short>, Self::Error> {
        Ok(Reference::Long(&self.rest[..want.min(self.rest.len())]))
    }

    fn advance(&mut self, n: usize) {
        self.rest = &self.rest[n.min(self.rest.len())..];
    }

    fn step_in(&mut self) -> bool {
        self.depth += 1;
        self.depth <= MAX_DEPTH
    }

    fn step_out(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

impl Format for Cbor {
    const ID: u8 = 2;
    const NAME: &'static str = "cbor";
    const ABOUT: &'static str = "CBOR: self-describing binary, field names kept, integers binary";

    fn to_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
        cbor4ii::serde::to_vec(Vec::new(), &value).map_err(|e| e.to_string())
    }

    fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        let mut de = cbor4ii::serde::Deserializer::new(Bytes {
            rest: bytes,
            depth: 0,
        });
        let v = T::deserialize(&mut de).map_err(|e| e.to_string())?;
        match de.into_inner().rest.len() {
            0 => Ok(v),
            n => Err(format!("{n} bytes after the value")),
        }
    }
}
