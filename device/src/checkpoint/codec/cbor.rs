//! CBOR (RFC 8949): a self-describing binary. Every struct carries its field names, as JSON
//! does, but integers and byte strings are binary: what self-description costs over postcard,
//! and what it saves over JSON, is the lesson (`vhca state bench`).

use super::{Codec, Visit};
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

impl Codec for Cbor {
    fn id(&self) -> u8 {
        2
    }
    fn name(&self) -> &'static str {
        "cbor"
    }
    fn about(&self) -> &'static str {
        "CBOR: self-describing binary, field names kept, integers binary"
    }
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
        cbor4ii::serde::to_vec(Vec::new(), &value).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
        let mut de = cbor4ii::serde::Deserializer::new(Bytes {
            rest: bytes,
            depth: 0,
        });
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)).map_err(|e| e.to_string())?;
        match de.into_inner().rest.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the value")),
        }
    }
}
