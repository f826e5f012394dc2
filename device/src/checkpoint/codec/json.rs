//! JSON: the same serde data model with field names, pretty-printed. For people and for tools
//! outside vhca (`vhca state schema` prints the JSON Schema of `vhca state export`).

use super::Format;

pub(super) struct Json;
pub(super) static CODEC: Json = Json;

impl Format for Json {
    const ID: u8 = 1;
    const NAME: &'static str = "json";
    const ABOUT: &'static str =
        "JSON, pretty-printed: field names, readable by any tool (schema: vhca state schema)";

    fn to_bytes<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec_pretty(value).map_err(|e| e.to_string())
    }

    fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        // `from_slice` refuses anything but whitespace after the value.
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
