//! JSON: the same serde data model with field names, pretty-printed. For people and for tools
//! outside vhca (`vhca state schema` prints its JSON Schema).

use super::{Codec, Visit};

pub(super) struct Json;
pub(super) static CODEC: Json = Json;

impl Codec for Json {
    fn id(&self) -> u8 {
        1
    }
    fn name(&self) -> &'static str {
        "json"
    }
    fn about(&self) -> &'static str {
        "JSON, pretty-printed: field names, readable by any tool (schema: vhca state schema)"
    }
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, String> {
        serde_json::to_vec_pretty(value).map_err(|e| e.to_string())
    }
    fn decode(&self, bytes: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de)).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())
    }
}
