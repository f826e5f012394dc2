//! postcard: the serde data model with varints and no field names. Small and fast, and what
//! migration sends; it cannot be read without the structs (it is positional).

use super::{Codec, Visit};

pub(super) struct Postcard;
pub(super) static CODEC: Postcard = Postcard;

impl Codec for Postcard {
    fn id(&self) -> u8 {
        0
    }
    fn name(&self) -> &'static str {
        "binary"
    }
    fn about(&self) -> &'static str {
        "postcard: varints, positional, no field names (migration)"
    }
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(value).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
        let mut de = postcard::Deserializer::from_bytes(bytes);
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)).map_err(|e| e.to_string())?;
        match de.finalize() {
            Ok([]) => Ok(()),
            Ok(rest) => Err(format!("{} bytes after the value", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}
